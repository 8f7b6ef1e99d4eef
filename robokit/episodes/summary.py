"""The figures ``robokit inspect`` shows for an episode (length, duration, achieved rates, frame ages)
and what it checks across the episodes of a folder (the same cameras, dimensions and rate)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robokit.episodes.reader import Episode

__all__ = ["EpisodeShape", "episode_summary", "folder_mismatches"]


def episode_summary(ep: Episode) -> dict[str, Any]:
    """Steps, duration, declared and achieved fps, camera rates, frame ages (ms) and done count.

    ``camera_rates`` counts distinct frames per second (a camera slower than the loop repeats
    frames); ``frame_age_ms`` maps a camera to (median, max) of robot time minus capture time.
    Rates and ages are only known for files with timestamps.
    """
    out: dict[str, Any] = {"steps": ep.length, "duration_s": ep.duration_s, "fps": ep.fps,
                           "fps_achieved": None, "camera_rates": {}, "frame_age_ms": {},
                           "done_steps": int(ep.done().sum()) if ep.length else 0}
    ts = ep.timestamps("robot")
    if ts is not None and ep.length > 1 and np.all(np.isfinite(ts[[0, -1]])) and ts[-1] > ts[0]:
        span = float(ts[-1] - ts[0])
        out["fps_achieved"] = (ep.length - 1) / span
        for cam in ep.camera_names:
            tc = ep.timestamps(cam)
            if tc is None:
                continue
            finite = tc[np.isfinite(tc)]
            out["camera_rates"][cam] = max(len(np.unique(finite)) - 1, 0) / span if finite.size else 0.0
            age = (ts - tc)[np.isfinite(tc)]
            if age.size:
                out["frame_age_ms"][cam] = (float(np.median(age)) * 1e3, float(np.max(age)) * 1e3)
    return out


@dataclass(frozen=True)
class EpisodeShape:
    """What must agree across the episodes of one dataset for training to read them together."""

    path: Path
    cameras: tuple[str, ...]
    state_dim: int
    action_dim: int
    fps: float | None

    @classmethod
    def of(cls, ep: Episode) -> EpisodeShape:
        return cls(Path(ep.path), tuple(ep.camera_names), int(ep.state_dim), int(ep.action_dim),
                   None if ep.fps is None else round(float(ep.fps), 6))


def folder_mismatches(shapes: list[EpisodeShape]) -> list[str]:
    """One line per way the episodes of a folder disagree (cameras, state/action dimensions, rate),
    naming an odd episode and what to do; empty when `robokit train` can read them all together."""
    if len(shapes) < 2:
        return []
    problems = []
    common = set(shapes[0].cameras).intersection(*(s.cameras for s in shapes))
    odd = next((s for s in shapes if s.cameras != shapes[0].cameras), None)
    if odd is not None:
        fix = (f"train with --camera {' --camera '.join(sorted(common))} (the cameras every episode has)"
               if common else "no camera is in every episode")
        problems.append(f"{odd.path.name} has cameras {', '.join(odd.cameras) or 'none'} but "
                        f"{shapes[0].path.name} has {', '.join(shapes[0].cameras) or 'none'}: {fix}, "
                        "or move the odd episodes to another folder")
    for field, label in (("state_dim", "state (qpos) dimension"), ("action_dim", "action dimension"),
                         ("fps", "recording rate (fps)")):
        odd = next((s for s in shapes if getattr(s, field) != getattr(shapes[0], field)), None)
        if odd is not None:
            problems.append(f"{odd.path.name} has {label} {getattr(odd, field)} but {shapes[0].path.name} has "
                            f"{getattr(shapes[0], field)}: one dataset needs one robot and one rate; move the "
                            "odd episodes to another folder")
    return problems


def safety_brief(attrs: dict[str, Any]) -> str:
    """A rollout's safety record (its ``safety_*`` attributes) in a few words; "" when it has none.

    Clamps of every kind are summed (joint, velocity, gripper, workspace, rejected actions); the
    watchdog's holds, reflex stops and the largest command gap (rad) follow when they are not zero.
    """
    record = {key[len("safety_"):]: value for key, value in attrs.items() if key.startswith("safety_")}
    if not record:
        return ""
    clamps = sum(int(v) for k, v in record.items()
                 if k.endswith(("_clamps", "_projected", "_held")) or k == "rejected")
    parts = [f"{clamps} clamp{'s' if clamps != 1 else ''}"]
    holds, reflexes = int(record.get("watchdog_holds", 0)), int(record.get("reflex_stops", 0))
    if holds:
        parts.append(f"{holds} hold{'s' if holds != 1 else ''}")
    if reflexes:
        parts.append(f"{reflexes} reflex{'es' if reflexes != 1 else ''}")
    gap = record.get("max_command_gap_rad")
    if gap:
        parts.append(f"gap {float(gap):.3f}")
    return ", ".join(parts)
