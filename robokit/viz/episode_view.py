"""Recorded episodes in rerun, scrubbable: what ``robokit view`` sends to the viewer.

Each episode is one rerun recording (named after its file) on two timelines, ``step`` and
``time`` (seconds from the first robot reading, or step / fps when the file has no timestamps)::

    cameras/<name>           the frames (JPEG), one per step
    robot/qpos               measured joints + gripper
    robot/action             the commanded action
    policy/predicted_chunk   rollouts: the chunk predicted at each step that queried the policy
    policy/intervention      rollouts with takeover: 1 where a person commanded the step
    policy/action            rollouts with takeover: what the policy's plan held for the step
    episode/done             1 on the final frames
    episode/info             the file's task, fps, layout and success (static text)

Scalars go in columns (one call per series); images per step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robokit.episodes.format import INTERVENTION, POLICY_ACTION
from robokit.episodes.reader import open_episode
from robokit.viz.rerun_sink import chunk_strips, encoded_image, import_rerun, joint_names

__all__ = ["log_episode"]


def _timeline(ep: Any) -> tuple[np.ndarray, np.ndarray]:
    """Steps and seconds of each step of ``ep``."""
    steps = np.arange(ep.length)
    stamps = ep.timestamps("robot")
    if stamps is not None and len(stamps) == ep.length and np.all(np.isfinite(stamps)):
        return steps, stamps - stamps[0]
    return steps, steps / (ep.fps or 30.0)


def log_episode(rec: Any, path: str | Path, jpeg_quality: int = 85,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Send the episode file ``path`` to the recording stream ``rec``; returns what was sent
    (``steps``, ``cameras``, ``extras``: the rollout series found). ``progress(t, T)`` after each
    step's images."""
    rr = import_rerun()
    with open_episode(path) as ep:
        steps, seconds = _timeline(ep)
        info = [f"file: {Path(path).name}", f"layout: {ep.layout}", f"steps: {ep.length}",
                f"fps: {ep.fps or 'unknown'}", f"task: {ep.task or '-'}",
                f"success: {'unknown' if ep.success is None else ep.success}"]
        rec.log("episode/info", rr.TextDocument("\n".join(info)), static=True)

        def columns(entity: str, values: np.ndarray) -> None:
            values = np.asarray(values, dtype=float)
            if values.ndim == 2:
                rec.log(entity, rr.SeriesLines(names=joint_names(values.shape[1])), static=True)
            rec.send_columns(entity, indexes=[rr.TimeColumn("step", sequence=steps),
                                              rr.TimeColumn("time", duration=seconds)],
                             columns=rr.Scalars.columns(scalars=values))

        columns("robot/qpos", ep.qpos())
        columns("robot/action", ep.action())
        columns("episode/done", ep.done().astype(float))
        extras = []
        intervention = ep.step_extra(INTERVENTION)
        if intervention is not None:
            columns("policy/intervention", np.nan_to_num(intervention.reshape(ep.length, -1)[:, 0]))
            extras.append(INTERVENTION)
        policy_action = ep.step_extra(POLICY_ACTION)
        if policy_action is not None:
            columns("policy/action", policy_action.reshape(ep.length, -1))
            extras.append(POLICY_ACTION)
        chunks = ep.predicted_chunks()
        if chunks is not None:
            extras.append("predicted_chunks")
        for t in range(ep.length):
            rec.set_time("step", sequence=int(steps[t]))
            rec.set_time("time", duration=float(seconds[t]))
            for cam in ep.camera_names:
                rec.log(f"cameras/{cam}", encoded_image(rr, ep.image(cam, t), jpeg_quality))
            if chunks is not None and np.all(np.isfinite(chunks[t])):
                rec.log("policy/predicted_chunk", chunk_strips(rr, t, chunks[t]))
            if progress is not None:
                progress(t + 1, ep.length)
        return {"steps": ep.length, "cameras": list(ep.camera_names), "extras": extras}
