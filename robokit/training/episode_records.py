"""What a dataset keeps in RAM about each episode, and what it computes from all of them:
metadata and low-dimensional arrays, consistency checks, normalisation statistics, object slots
and batch collation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import default_collate

from robokit.episodes.format import INTERVENTION
from robokit.episodes.reader import Episode, open_episode
from robokit.errors import DataError
from robokit.policies.base import NormStats

STD_FLOOR = 1e-2  # as ACT clips the std of qpos and action


@dataclass
class EpisodeRecord:
    """What a dataset keeps in RAM about one episode: metadata and its low-dimensional arrays."""

    path: Path
    layout: str
    length: int
    camera_names: list[str]
    image_shapes: dict[str, tuple[int, int, int]]
    state_dim: int
    action_dim: int
    fps: float | None
    task: str | None
    sim: bool | None
    qpos: np.ndarray  # float32 (T, S)
    action: np.ndarray  # float32 (T, A)
    done: np.ndarray  # bool (T,)
    goal_cameras: list[str] = field(default_factory=list)
    # camera -> object name -> int32 (T, 4) pixel boxes [x0, y0, x1, y1], -1 rows = not visible
    # (simulated robokit recordings only; a few bytes per step, so always read).
    object_boxes: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    success: bool | None = None  # the episode's label, where it has one
    # Deploy rollouts with takeover: True where a person commanded the step (None: not a rollout
    # with takeover, e.g. a demonstration).
    intervention: np.ndarray | None = None
    # Steps whose actions a policy learns from (None: all); a chunk's rows past them are padding.
    # Set by :func:`robokit.training.corrections.weigh_episodes`.
    trainable: np.ndarray | None = None
    # Relative chance of each start step being drawn (None: 1 each); see the same function.
    weights: np.ndarray | None = None


def close_episode(ep: Episode) -> None:
    close = getattr(ep, "close", None)
    if callable(close):
        close()
    else:
        ep.__exit__(None, None, None)


def _as_bool(value: Any) -> bool | None:
    if value is None:
        return None
    try:
        return bool(np.asarray(value).item())
    except (TypeError, ValueError):
        return None


def read_episode_record(path: str | Path) -> EpisodeRecord:
    """Open one episode, check it and keep its metadata and low-dimensional arrays.

    Raises :class:`DataError` naming the file for an empty episode or non-finite qpos/actions.
    """
    path = Path(path)
    with open_episode(path) as ep:
        length = int(ep.length)
        if length <= 0:
            raise DataError(f"{path}: the episode has no steps; delete it or record it again")
        qpos = np.ascontiguousarray(ep.qpos(), dtype=np.float32)
        action = np.ascontiguousarray(ep.action(), dtype=np.float32)
        done = np.asarray(ep.done(), dtype=bool)
        cams = list(ep.camera_names)
        shapes = {cam: ep.image_shape(cam) for cam in cams}
        goal_cams = [cam for cam in cams if _has_goal_image(ep, cam)]
        boxes = {cam: found for cam in cams if (found := ep.object_boxes(cam))}
        intervention = (ep.step_extra(INTERVENTION) if INTERVENTION in ep.step_extra_names else None)
        record = EpisodeRecord(
            path=path, layout=str(ep.layout), length=length, camera_names=cams, image_shapes=shapes,
            state_dim=int(ep.state_dim), action_dim=int(ep.action_dim),
            fps=None if ep.fps is None else float(ep.fps), task=ep.task or None,
            sim=_as_bool(ep.attrs.get("sim")), qpos=qpos, action=action, done=done,
            goal_cameras=goal_cams, object_boxes=boxes, success=ep.success,
            intervention=None if intervention is None else np.nan_to_num(intervention.reshape(length, -1)[:, 0]) > 0.5)
    for name, values in (("/action", action), ("/observations/qpos", qpos)):
        bad = ~np.isfinite(values)
        if bad.any():
            step, col = (int(v) for v in np.argwhere(bad)[0])
            raise DataError(f"{path}: {name} holds NaN or inf (first at step {step}, column {col}); "
                            "fix or remove this episode")
    if qpos.shape[0] != length or action.shape[0] != length or done.shape[0] != length:
        raise DataError(f"{path}: qpos/action/done lengths {qpos.shape[0]}/{action.shape[0]}/"
                        f"{done.shape[0]} differ from the episode length {length}")
    return record


def _has_goal_image(ep: Episode, cam: str) -> bool:
    try:
        return ep.goal_image(cam) is not None
    except (KeyError, DataError):
        return False


def check_consistent(records: Sequence[EpisodeRecord], camera_names: Sequence[str],
                     image_size: tuple[int, int] | None) -> None:
    """Every episode must have the chosen cameras and the first episode's dimensions."""
    first = records[0]
    for rec in records:
        missing = [cam for cam in camera_names if cam not in rec.camera_names]
        if missing:
            raise DataError(f"{rec.path}: has no camera {', '.join(repr(c) for c in missing)} "
                            f"(it has {', '.join(rec.camera_names) or 'none'}); choose cameras "
                            "every episode has with --camera, or remove this episode")
        for name in ("state_dim", "action_dim"):
            if getattr(rec, name) != getattr(first, name):
                raise DataError(f"{rec.path}: {name} is {getattr(rec, name)} but {first.path.name} "
                                f"has {getattr(first, name)}; all episodes of a dataset must match")
        if image_size is None:
            for cam in camera_names:
                if rec.image_shapes[cam] != first.image_shapes[cam]:
                    raise DataError(
                        f"{rec.path}: camera '{cam}' images are {_fmt_shape(rec.image_shapes[cam])} "
                        f"but {first.path.name} has {_fmt_shape(first.image_shapes[cam])}; "
                        "pass an image size (e.g. --image-size 240x320) to resize at load time")
    if image_size is None:
        shapes = {cam: first.image_shapes[cam] for cam in camera_names}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{cam} {_fmt_shape(s)}" for cam, s in shapes.items())
            raise DataError(f"{first.path.parent}: cameras have different image sizes ({listed}); "
                            "pass an image size (e.g. --image-size 240x320) to resize at load time")


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]}"


# ---------------------------------------------------------------------------------------------
# Normalisation statistics
# ---------------------------------------------------------------------------------------------
def compute_norm_stats(qpos: Sequence[np.ndarray], action: Sequence[np.ndarray],
                       std_floor: float = STD_FLOOR) -> dict[str, np.ndarray]:
    """Mean/std (std floored at ``std_floor``, as ACT clips it) and min/max over every step.

    ``qpos`` and ``action`` are per-episode arrays (T_i, S) and (T_i, A). The std is the unbiased
    one (``torch.std``'s default, which ACT uses). Returns float32 arrays under
    :attr:`NormStats.KEYS`.
    """
    if len(qpos) == 0 or len(action) == 0:
        raise DataError("no episodes to compute normalisation statistics from")
    stats: dict[str, np.ndarray] = {}
    for key, arrays in (("qpos", qpos), ("action", action)):
        data = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays], axis=0)
        std = data.std(axis=0, ddof=1) if data.shape[0] > 1 else np.zeros(data.shape[1])
        stats[f"{key}_mean"] = data.mean(axis=0).astype(np.float32)
        stats[f"{key}_std"] = np.maximum(std, std_floor).astype(np.float32)
        stats[f"{key}_min"] = data.min(axis=0).astype(np.float32)
        stats[f"{key}_max"] = data.max(axis=0).astype(np.float32)
    return {key: stats[key] for key in NormStats.KEYS}


# ---------------------------------------------------------------------------------------------
# Object boxes
# ---------------------------------------------------------------------------------------------
def box_visible(raw: np.ndarray) -> np.ndarray:
    """bool (T,) of (T, 4) pixel boxes [x0, y0, x1, y1]: the object was seen (not a -1 row, not empty)."""
    return (raw[:, 0] >= 0) & (raw[:, 1] >= 0) & (raw[:, 2] > raw[:, 0]) & (raw[:, 3] > raw[:, 1])


def dataset_object_names(records: Sequence[EpisodeRecord], camera_names: Sequence[str]) -> list[str]:
    """Sorted names of the objects any episode has boxes for in any of ``camera_names``.

    These are a dataset's N object slots: every sample has all N, invalid where the object is not
    in its episode or not visible. Deploy sends a scene's objects in the same (sorted) order.
    """
    return sorted({name for rec in records for cam in camera_names for name in rec.object_boxes.get(cam, {})})


def episode_object_arrays(rec: EpisodeRecord, camera_names: Sequence[str], names: Sequence[str]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step object slots of one episode: boxes float32 (T, N, 4), camera int64 (T, N), valid bool (T, N).

    At each step an object's box is the one of the camera that sees it best (the largest box as a
    share of the image; the first in ``camera_names`` order on a tie), divided by that camera's
    recorded width/height, so boxes are in [0, 1] whatever size the images are resized to (as
    floats: nothing is rounded). Invalid slots hold a zero box and camera 0.
    """
    t, n = rec.length, len(names)
    boxes = np.zeros((t, n, 4), np.float32)
    cams = np.zeros((t, n), np.int64)
    valid = np.zeros((t, n), bool)
    best = np.zeros((t, n), np.float64)  # area of the chosen box, as a share of its image
    for j, name in enumerate(names):
        for k, cam in enumerate(camera_names):
            raw = rec.object_boxes.get(cam, {}).get(name)
            if raw is None:
                continue
            if raw.shape != (t, 4):
                raise DataError(f"{rec.path}: /objects/{name}/box_{cam} has shape {raw.shape}, "
                                f"expected ({t}, 4)")
            seen = box_visible(raw)
            h, w = rec.image_shapes[cam][:2]
            norm = np.clip(raw / np.array([w, h, w, h], np.float32), 0.0, 1.0)
            area = (norm[:, 2] - norm[:, 0]) * (norm[:, 3] - norm[:, 1])
            take = seen & (~valid[:, j] | (area > best[:, j]))
            best[take, j] = area[take]
            boxes[take, j] = norm[take]
            cams[take, j] = k
            valid[take, j] = True
    return boxes, cams, valid


def common_fps(records: Sequence[EpisodeRecord]) -> float | None:
    """The rate all the episodes were recorded at (None if none records it); DataError if they differ."""
    rates = {r.fps for r in records if r.fps is not None}
    if len(rates) > 1:
        by_rate: dict[float, str] = {}
        for r in records:
            if r.fps is not None:
                by_rate.setdefault(r.fps, r.path.name)
        listed = ", ".join(f"{name} at {fps:g} Hz" for fps, name in sorted(by_rate.items()))
        raise DataError(f"{records[0].path.parent}: episodes were recorded at different rates "
                        f"({listed}); train on episodes of one rate")
    return rates.pop() if rates else None


def moved_object(rec: EpisodeRecord, camera_names: Sequence[str]) -> str | None:
    """The object an episode moves: in its stillest camera (the one whose objects' boxes move the
    least, a fixed camera rather than one on the wrist), the object whose box centre ends farthest
    from where it started. None when no camera has boxes of any object.

    A demonstration moves the object its instruction names, so this labels which object the
    instruction is about without reading the instruction.
    """
    best: tuple[float, str] | None = None
    stillest = np.inf
    for cam in camera_names:
        travel: dict[str, float] = {}
        h, w = rec.image_shapes[cam][:2]
        for name, raw in rec.object_boxes.get(cam, {}).items():
            seen = np.flatnonzero(box_visible(raw))
            if len(seen) < 2:
                continue
            centre = (raw[:, :2] + raw[:, 2:]) / 2.0 / np.array([w, h], np.float32)
            travel[name] = float(np.linalg.norm(centre[seen[-1]] - centre[seen[0]]))
        if not travel:
            continue
        still = float(np.median(list(travel.values()))) if len(travel) > 1 else 0.0
        if still < stillest:
            stillest = still
            name = max(travel, key=lambda n: travel[n])
            best = (travel[name], name)
    return None if best is None else best[1]


def task_object_tracks(rec: EpisodeRecord, camera_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Where the episode's moved object (:func:`moved_object`) is in each camera at every step:
    box centres float32 (T, K, 2) as (x, y) fractions of the image, and valid bool (T, K) where the
    camera saw it. All invalid when the episode has no boxes."""
    t, k = rec.length, len(camera_names)
    xy = np.zeros((t, k, 2), np.float32)
    valid = np.zeros((t, k), bool)
    name = moved_object(rec, camera_names)
    if name is None:
        return xy, valid
    for j, cam in enumerate(camera_names):
        raw = rec.object_boxes.get(cam, {}).get(name)
        if raw is None:
            continue
        if raw.shape != (t, 4):
            raise DataError(f"{rec.path}: /objects/{name}/box_{cam} has shape {raw.shape}, expected ({t}, 4)")
        h, w = rec.image_shapes[cam][:2]
        valid[:, j] = box_visible(raw)
        xy[:, j] = np.clip((raw[:, :2] + raw[:, 2:]) / 2.0 / np.array([w, h], np.float32), 0.0, 1.0)
    xy[~valid] = 0.0
    return xy, valid


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader ``collate_fn`` for dataset samples: torch's default collation, except that
    ``object_names`` becomes a list (B) of lists (N) of names (default collation would transpose it)."""
    names = [s["object_names"] for s in samples] if samples and "object_names" in samples[0] else None
    batch = default_collate([{k: v for k, v in s.items() if k != "object_names"} for s in samples]
                            if names is not None else samples)
    if names is not None:
        batch["object_names"] = [list(n) for n in names]
    return batch
