"""Episode plots and videos: what the robot was told, what it did, what the cameras saw.

``render_episode(path, out_dir)`` writes::

    joints.png     one panel per joint + the gripper over time: commanded (/action) vs measured
                   (/observations/qpos); for a deploy rollout, the predicted chunks as thin lines
                   starting at the step they were predicted; done steps shaded
    cameras.mp4    every camera side by side (same height), step / time / task drawn on top
                   (MPEG-4 part 2, 'mp4v': VLC, mpv, ffplay play it; browsers may not)

Deploy rollouts are episode files (``robokit deploy --record``) that also hold
``/predicted_chunks`` float32 (T, H, A), read with :meth:`robokit.episodes.reader.Episode.predicted_chunks`:
row t is the de-normalised chunk the policy returned for the observation of step t, NaN where no
query was made at that step (chunked or asynchronous execution).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from robokit.errors import DataError, UserError

log = logging.getLogger(__name__)

MAX_CHUNKS_DRAWN = 40  # more than this and the chunk lines hide the trajectories


@dataclass
class EpisodeVizResult:
    plot: Path
    video: Path | None
    steps: int
    predicted_chunks: int  # chunks drawn (0 for a recorded demonstration)


def dim_names(n: int) -> list[str]:
    """Panel titles: Franka's 7 joints + gripper for 8 dims, else ``dim i``."""
    if n == 8:
        return [f"joint {i + 1}" for i in range(7)] + ["gripper"]
    return [f"dim {i}" for i in range(n)]


def plot_joints(
    qpos: np.ndarray,
    action: np.ndarray,
    times: np.ndarray,
    out_png: str | Path,
    *,
    predicted: np.ndarray | None = None,
    done: np.ndarray | None = None,
    title: str = "",
    time_label: str = "time [s]",
) -> int:
    """Commanded vs measured per dimension; returns how many predicted chunks were drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t_n = len(times)
    if qpos.shape[0] != t_n or action.shape[0] != t_n:
        raise DataError(f"qpos ({qpos.shape[0]}), action ({action.shape[0]}) and time ({t_n}) lengths differ")
    n = min(qpos.shape[1], action.shape[1])
    names = dim_names(n)
    cols = 2
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(12, 2.2 * rows + 0.6), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    drawn = 0
    chunk_rows: list[int] = []
    if predicted is not None:
        queried = [t for t in range(min(len(predicted), t_n)) if np.isfinite(predicted[t]).all()]
        stride = max(1, int(np.ceil(len(queried) / MAX_CHUNKS_DRAWN)))
        chunk_rows = queried[::stride]
        drawn = len(chunk_rows)
        dt = float(np.median(np.diff(times))) if t_n > 1 else 1.0
    done_spans = _spans(done) if done is not None else []
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= n:
            ax.set_visible(False)
            continue
        for a, b in done_spans:
            ax.axvspan(times[a], times[min(b, t_n - 1)], color="0.85", lw=0)
        ax.plot(times, action[:, i], color="tab:orange", lw=1.2, label="commanded (/action)")
        ax.plot(times, qpos[:, i], color="tab:blue", lw=1.0, label="measured (qpos)")
        for k, t in enumerate(chunk_rows):
            h = predicted.shape[1]
            ts = times[t] + dt * np.arange(h)
            ax.plot(
                ts,
                predicted[t, :, i],
                color="tab:green",
                lw=0.9,
                alpha=0.7,
                marker=None,
                label="predicted chunks" if k == 0 else None,
            )
        ax.set_title(names[i], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel(time_label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(str(out_png))
    return drawn


def _spans(flags: np.ndarray) -> list[tuple[int, int]]:
    out, start = [], None
    for t, f in enumerate(np.asarray(flags, bool)):
        if f and start is None:
            start = t
        if not f and start is not None:
            out.append((start, t - 1))
            start = None
    if start is not None:
        out.append((start, len(flags) - 1))
    return out


def write_mosaic_video(
    frames: Iterable[Sequence[np.ndarray]],
    out_path: str | Path,
    fps: float,
    times: np.ndarray,
    task: str = "",
    height: int | None = None,
) -> int:
    """Write RGB camera frames side by side as MP4 with a step/time overlay; returns frames written."""
    writer = None
    n = 0
    total = len(times)
    try:
        for t, cams in enumerate(frames):
            h = height or min(im.shape[0] for im in cams)
            row = [
                cv2.resize(
                    im, (max(1, round(im.shape[1] * h / im.shape[0])), h), interpolation=cv2.INTER_AREA
                )
                if im.shape[0] != h
                else im
                for im in cams
            ]
            mosaic = cv2.cvtColor(np.concatenate(row, axis=1), cv2.COLOR_RGB2BGR)
            if mosaic.shape[0] % 2 or mosaic.shape[1] % 2:  # many decoders need even sizes
                mosaic = np.pad(mosaic, ((0, mosaic.shape[0] % 2), (0, mosaic.shape[1] % 2), (0, 0)))
            label = f"step {t}/{total - 1}  t={times[t]:.2f}s"
            _overlay(mosaic, label, 0)
            if task:
                _overlay(mosaic, task[:80], 1)
            if writer is None:
                writer = cv2.VideoWriter(
                    str(out_path),
                    cv2.VideoWriter_fourcc(*"mp4v"),
                    float(fps),
                    (mosaic.shape[1], mosaic.shape[0]),
                )
                if not writer.isOpened():
                    raise UserError(f"cannot open an MP4 writer for {out_path} (OpenCV has no mp4v encoder?)")
            writer.write(mosaic)
            n += 1
    finally:
        if writer is not None:
            writer.release()
    return n


def _overlay(img: np.ndarray, text: str, line: int) -> None:
    y = 16 + 18 * line
    (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    img[y - 13 : y + 5, 2 : min(img.shape[1], w + 8)] //= 3
    cv2.putText(img, text, (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def render_episode(
    path: str | Path,
    out_dir: str | Path,
    *,
    video: bool = True,
    cameras: Sequence[str] | None = None,
    video_height: int | None = None,
) -> EpisodeVizResult:
    """Plots (and the camera video) of one episode or rollout file into ``out_dir``."""
    from robokit.episodes.reader import open_episode

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open_episode(path) as ep:
        qpos, action = ep.qpos(), ep.action()
        predicted = ep.predicted_chunks()  # the reader checks its length and action width
        stamps = ep.timestamps("robot")
        if stamps is not None and len(stamps) == ep.length and np.all(np.isfinite(stamps)):
            times, label = stamps - stamps[0], "time [s]"
        elif ep.fps:
            times, label = np.arange(ep.length) / float(ep.fps), "time [s] (from fps)"
        else:
            times, label = np.arange(ep.length, dtype=np.float64), "step"
        title = (
            f"{Path(ep.path).name}"
            + (f" - {ep.task}" if ep.task else "")
            + (f" - success: {ep.success}" if ep.success is not None else "")
        )
        plot = out / "joints.png"
        drawn = plot_joints(
            qpos, action, times, plot, predicted=predicted, done=ep.done(), title=title, time_label=label
        )
        mp4 = None
        cams = list(cameras) if cameras else list(ep.camera_names)
        unknown = [c for c in cams if c not in ep.camera_names]
        if unknown:
            raise UserError(
                f"{ep.path}: no camera {', '.join(unknown)}; it has {', '.join(ep.camera_names) or 'none'}"
            )
        if video and cams:
            mp4 = out / "cameras.mp4"
            block = 64

            def frames() -> Iterable[list[np.ndarray]]:
                for s in range(0, ep.length, block):
                    e = min(ep.length, s + block)
                    chunk = [ep.images(c, s, e) for c in cams]
                    for k in range(e - s):
                        yield [c[k] for c in chunk]

            write_mosaic_video(
                frames(),
                mp4,
                ep.fps or 30.0,
                times if label != "step" else np.arange(ep.length) / 30.0,
                ep.task or "",
                video_height,
            )
        elif video:
            log.info("%s has no cameras: no video", ep.path)
        return EpisodeVizResult(plot, mp4, ep.length, drawn)
