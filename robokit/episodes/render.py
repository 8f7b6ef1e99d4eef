"""Pictures of an episode: joint/action plots (PNG) and a side-by-side video of its cameras (MP4).

Used by ``robokit inspect --plot/--video``; works for every layout the reader opens.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from robokit.episodes.reader import Episode
from robokit.errors import UserError

__all__ = ["episode_summary", "plot_episode", "write_episode_video"]


def _time_axis(ep: Episode) -> tuple[np.ndarray, str]:
    ts = ep.timestamps("robot")
    if ts is not None and ep.length and np.all(np.isfinite(ts)):
        return ts - ts[0], "time (s)"
    if ep.fps:
        return np.arange(ep.length) / ep.fps, "time (s)"
    return np.arange(ep.length, dtype=np.float64), "step"


def episode_summary(ep: Episode) -> dict:
    """Figures ``robokit inspect`` shows: steps, duration, achieved rates, frame ages, done count."""
    out: dict = {"steps": ep.length, "duration_s": ep.duration_s, "fps": ep.fps,
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
            # A camera slower than the loop repeats frames: count the distinct ones.
            out["camera_rates"][cam] = max(len(np.unique(finite)) - 1, 0) / span if finite.size else 0.0
            age = (ts - tc)[np.isfinite(tc)]
            if age.size:
                out["frame_age_ms"][cam] = (float(np.median(age)) * 1e3, float(np.max(age)) * 1e3)
    return out


def plot_episode(ep: Episode, path: str | Path) -> Path:
    """Plot each state dimension (measured) against the commanded action; done steps are shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if ep.length == 0:
        raise UserError(f"{ep.path}: the episode has no steps to plot")
    path = Path(path)
    t, xlabel = _time_axis(ep)
    qpos, action, done = ep.qpos(), ep.action(), ep.done()
    dims = max(qpos.shape[1], action.shape[1])
    cols = 2 if dims > 4 else 1
    rows = int(np.ceil(dims / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 1.8 * rows + 0.8), sharex=True, squeeze=False)
    names = [f"joint {i + 1}" for i in range(7)] + ["gripper"] if dims == 8 else \
        [f"dim {i}" for i in range(dims)]
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= dims:
            ax.axis("off")
            continue
        if i < qpos.shape[1]:
            ax.plot(t, qpos[:, i], label="qpos (measured)", lw=1.2)
        if i < action.shape[1]:
            ax.plot(t, action[:, i], label="action (commanded)", lw=1.0, ls="--")
        if done.any():
            ax.axvspan(t[np.argmax(done)], t[-1], color="grey", alpha=0.2, lw=0)
        ax.set_ylabel(names[i] if i < len(names) else f"dim {i}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel(xlabel, fontsize=8)
    title = f"{ep.path.name} ({ep.layout}, {ep.length} steps)"
    if ep.task:
        title += f"\n{ep.task}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_episode_video(ep: Episode, path: str | Path, fps: float | None = None, height: int | None = None) -> Path:
    """Write an MP4 (mp4v) of all cameras side by side, one episode step per video frame.

    Frames are read one step at a time, so memory stays small whatever the episode length. Cameras
    of different heights are scaled to ``height`` (default: the tallest camera).
    """
    if ep.length == 0:
        raise UserError(f"{ep.path}: the episode has no frames to write")
    path = Path(path)
    shapes = {cam: ep.image_shape(cam) for cam in ep.camera_names}
    height = int(height or max(s[0] for s in shapes.values()))
    widths = {cam: round(s[1] * height / s[0]) for cam, s in shapes.items()}
    width = sum(widths.values())
    # mp4v wants even sizes.
    out_w, out_h = width + width % 2, height + height % 2
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps or ep.fps or 30.0),
                             (out_w, out_h))
    if not writer.isOpened():
        raise UserError(f"cannot write the video {path}: OpenCV has no mp4v encoder here")
    try:
        canvas = np.zeros((out_h, out_w, 3), dtype=np.uint8)
        for t in range(ep.length):
            x = 0
            for cam in ep.camera_names:
                image = ep.image(cam, t)
                if image.shape[0] != height:
                    image = cv2.resize(image, (widths[cam], height), interpolation=cv2.INTER_AREA)
                canvas[:height, x: x + widths[cam]] = image
                x += widths[cam]
            writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
