"""Episode plots and videos: what the robot was told, what it did, what the cameras saw.

The one place robokit draws joint plots and writes camera videos:

- :func:`render_episode` (``robokit viz episode`` / ``rollout``, the demo) writes into a folder::

      joints.png     one panel per joint + the gripper over time: commanded (/action) vs measured
                     (/observations/qpos); for a deploy rollout, the predicted chunks as thin lines
                     starting at the step they were predicted; done steps shaded
      cameras.mp4    every camera side by side (same height), step / time / task drawn on top
                     (MPEG-4 part 2, 'mp4v': VLC, mpv, ffplay play it; browsers may not)

- :func:`plot_episode` and :func:`write_episode_video` draw the same from an open episode to the
  paths given (``robokit inspect --plot/--video``);
- :class:`MosaicVideoWriter` streams camera frames side by side into an MP4 as they arrive
  (``robokit deploy --video``).

Plots are drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas, so the caller's
matplotlib backend is never changed.

Deploy rollouts are episode files (``robokit deploy --record``) that also hold
``/predicted_chunks`` float32 (T, H, A), read with :meth:`robokit.episodes.reader.Episode.predicted_chunks`:
row t is the de-normalised chunk the policy returned for the observation of step t, NaN where no
query was made at that step (chunked or asynchronous execution).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from robokit.episodes.masks import mask_colors, overlay_mask
from robokit.episodes.reader import Episode, open_episode
from robokit.errors import DataError, UserError

__all__ = ["EpisodeVizResult", "MosaicVideoWriter", "dim_names", "plot_episode", "plot_joints",
           "render_episode", "write_episode_video"]

log = logging.getLogger(__name__)

MAX_CHUNKS_DRAWN = 40  # more than this and the chunk lines hide the trajectories
_READ_BLOCK = 64  # steps of frames read at once when writing an episode's video


@dataclass
class EpisodeVizResult:
    """What :func:`render_episode` wrote."""

    plot: Path
    video: Path | None
    steps: int
    predicted_chunks: int  # chunks drawn (0 for a recorded demonstration)


def dim_names(n: int) -> list[str]:
    """Panel titles: Franka's 7 joints + gripper for 8 dims, else ``dim i``."""
    if n == 8:
        return [f"joint {i + 1}" for i in range(7)] + ["gripper"]
    return [f"dim {i}" for i in range(n)]


# -- plots ------------------------------------------------------------------------------------------
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
    chunk_rows: list[int] = []
    dt = 1.0
    pred = np.zeros((0, 0, n), np.float32) if predicted is None else predicted
    if len(pred):
        queried = [t for t in range(min(len(pred), t_n)) if np.isfinite(pred[t]).all()]
        stride = max(1, int(np.ceil(len(queried) / MAX_CHUNKS_DRAWN)))
        chunk_rows = queried[::stride]
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
            ts = times[t] + dt * np.arange(pred.shape[1])
            ax.plot(ts, pred[t, :, i], color="tab:green", lw=0.9, alpha=0.7,
                    label="predicted chunks" if k == 0 else None)
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
    return len(chunk_rows)


def plot_episode(ep: Episode, path: str | Path) -> Path:
    """Write the joint plot of an open episode (predicted chunks included for a rollout) to ``path``."""
    path = Path(path)
    _plot_episode(ep, path)
    return path


def _plot_episode(ep: Episode, path: Path) -> int:
    if ep.length == 0:
        raise DataError(f"{ep.path}: the episode has no steps to plot")
    times, label = _episode_times(ep)
    title = (f"{ep.path.name}" + (f" - {ep.task}" if ep.task else "")
             + (f" - success: {ep.success}" if ep.success is not None else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    return plot_joints(ep.qpos(), ep.action(), times, path, predicted=ep.predicted_chunks(),
                       done=ep.done(), title=title, time_label=label)


def _episode_times(ep: Episode) -> tuple[np.ndarray, str]:
    """Seconds from the first step (from the robot timestamps, else from fps), or step numbers."""
    stamps = ep.timestamps("robot")
    if stamps is not None and len(stamps) == ep.length and ep.length and np.all(np.isfinite(stamps)):
        return stamps - stamps[0], "time [s]"
    if ep.fps:
        return np.arange(ep.length) / float(ep.fps), "time [s] (from fps)"
    return np.arange(ep.length, dtype=np.float64), "step"


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


# -- videos -----------------------------------------------------------------------------------------
class MosaicVideoWriter:
    """Stream RGB camera frames, side by side, into an MP4 (mp4v), one :meth:`add` per video frame.

    The output file is opened with the first frame, whose mosaic fixes the video size: ``height``
    (default: the smallest camera's) and the widths that keep each camera's aspect ratio. Use as a
    context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path, fps: float, height: int | None = None) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        self.height = height
        self.frames = 0
        self._writer: Any = None
        self._size: tuple[int, int] | None = None  # (width, height) of the video

    def add(self, images: Sequence[np.ndarray], lines: Sequence[str] = ()) -> None:
        """Append one video frame: ``images`` (uint8 (H, W, 3) RGB) left to right, ``lines`` of
        text drawn top left."""
        h = self.height or min(im.shape[0] for im in images)
        row = [im if im.shape[0] == h else
               cv2.resize(im, (max(1, round(im.shape[1] * h / im.shape[0])), h), interpolation=cv2.INTER_AREA)
               for im in images]
        mosaic = cv2.cvtColor(np.concatenate(row, axis=1), cv2.COLOR_RGB2BGR)
        if self._size is None:
            # Many decoders need even sizes.
            self._size = (mosaic.shape[1] + mosaic.shape[1] % 2, mosaic.shape[0] + mosaic.shape[0] % 2)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps,
                                           self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise UserError(f"cannot write the video {self.path}: OpenCV has no mp4v encoder here")
        if self._writer is None:
            raise UserError(f"the video {self.path} is already closed")
        w, h = self._size
        pad_h, pad_w = h - mosaic.shape[0], w - mosaic.shape[1]
        if pad_h in (0, 1) and pad_w in (0, 1):
            if pad_h or pad_w:
                mosaic = np.pad(mosaic, ((0, pad_h), (0, pad_w), (0, 0)))
        else:  # a camera changed size mid-video: keep the video's size
            mosaic = cv2.resize(mosaic, (w, h), interpolation=cv2.INTER_AREA)
        for k, text in enumerate(lines):
            _overlay(mosaic, text, k)
        self._writer.write(mosaic)
        self.frames += 1

    def close(self) -> int:
        """Finish the file; returns the frames written. Idempotent."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        return self.frames

    def __enter__(self) -> MosaicVideoWriter:  # noqa: PYI034
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _overlay(img: np.ndarray, text: str, line: int) -> None:
    y = 16 + 18 * line
    (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    img[y - 13 : y + 5, 2 : min(img.shape[1], w + 8)] //= 3
    cv2.putText(img, text, (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def write_episode_video(ep: Episode, path: str | Path, fps: float | None = None, height: int | None = None,
                        cameras: Sequence[str] | None = None, masks: bool = False) -> Path:
    """Write an MP4 of an open episode's cameras side by side, one step per frame, with the step,
    time and task drawn on top; with ``masks``, the episode's instance masks tinted over the frames.

    ``fps`` defaults to the episode's (else 30), ``height`` to the smallest camera's, ``cameras``
    to all of them. Frames are read a block of steps at a time, so memory stays small whatever the
    episode length.
    """
    if ep.length == 0:
        raise DataError(f"{ep.path}: the episode has no frames to write")
    cams = list(cameras) if cameras else list(ep.camera_names)
    unknown = [c for c in cams if c not in ep.camera_names]
    if unknown:
        raise UserError(f"{ep.path}: no camera {', '.join(unknown)}; it has {', '.join(ep.camera_names) or 'none'}")
    path = Path(path)
    rate = float(fps or ep.fps or 30.0)
    times, label = _episode_times(ep)
    if label == "step":
        times = times / rate
    task = (ep.task or "")[:80]
    with MosaicVideoWriter(path, rate, height) as video:
        for t, images in enumerate(_frames(ep, cams, masks)):
            lines = [f"step {t}/{ep.length - 1}  t={times[t]:.2f}s"] + ([task] if task else [])
            video.add(images, lines)
    return path


def _frames(ep: Episode, cams: Sequence[str], masks: bool = False) -> Iterator[list[np.ndarray]]:
    """Each step's frames of ``cams``; with ``masks``, the instance masks tinted over those that have them."""
    count = len(ep.mask_instances) if masks else 0
    masked = [c for c in cams if c in ep.mask_cameras] if masks else []
    for start in range(0, ep.length, _READ_BLOCK):
        stop = min(ep.length, start + _READ_BLOCK)
        block = [ep.images(c, start, stop) for c in cams]
        ids = {c: ep.masks(c, start, stop) for c in masked}
        for k in range(stop - start):
            yield [overlay_mask(frames[k], ids[c][k], count) if c in ids else frames[k]
                   for c, frames in zip(cams, block, strict=True)]


# -- one file into a folder -------------------------------------------------------------------------
def render_episode(
    path: str | Path,
    out_dir: str | Path,
    *,
    video: bool = True,
    cameras: Sequence[str] | None = None,
    video_height: int | None = None,
    masks: bool = True,
) -> EpisodeVizResult:
    """Plots (and the camera video) of one episode or rollout file into ``out_dir``; an episode
    with instance masks gets them tinted over its video (``masks``) and a colour legend."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open_episode(path) as ep:
        cams = list(cameras) if cameras else list(ep.camera_names)
        unknown = [c for c in cams if c not in ep.camera_names]
        if unknown:
            raise UserError(
                f"{ep.path}: no camera {', '.join(unknown)}; it has {', '.join(ep.camera_names) or 'none'}"
            )
        plot = out / "joints.png"
        drawn = _plot_episode(ep, plot)
        mp4 = None
        masks = masks and bool(ep.mask_cameras)
        if masks:
            write_mask_legend(ep, out / "mask_legend.png")
        if video and cams:
            mp4 = write_episode_video(ep, out / "cameras.mp4", height=video_height, cameras=cams, masks=masks)
        elif video:
            log.info("%s has no cameras: no video", ep.path)
        return EpisodeVizResult(plot, mp4, ep.length, drawn)


def write_mask_legend(ep: Episode, path: Path) -> Path:
    """A PNG listing each mask instance (id, name, kind) in the colour the video tints it with."""
    instances = ep.mask_instances
    colors = mask_colors(len(instances))
    row = 18
    image = np.full((row * (len(instances) + 1) + 6, 260, 3), 255, np.uint8)
    cv2.putText(image, "id  name (kind)", (6, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for inst in instances:
        y = row * inst.id
        cv2.rectangle(image, (6, y + 4), (20, y + 16), tuple(int(c) for c in colors[inst.id]), -1)
        cv2.putText(image, f"{inst.id:<3} {inst.name} ({inst.kind})", (26, y + 15), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path
