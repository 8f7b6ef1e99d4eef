"""robokit episodes -> a LeRobotDataset v3.0 folder (see :mod:`robokit.lerobot.layout` for the mapping).

    report = export_lerobot("data/pick", "exports/pick", repo_id="lab/pick")
    print(report.frames_per_s)

The export is written into a hidden sibling folder and renamed into place when complete, so an
interrupted export leaves nothing half-written under the requested name, and an existing non-empty
folder is never written into. The episodes are only read.

Not carried over (LeRobot has no place for them): goal images, object boxes, instance masks and a
rollout's predicted chunks. Everything else of an episode is: states, actions, velocities, done
flags, every clock reading, the task, and the file's attributes (in the episodes table).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robokit.episodes.reader import Episode, list_episodes, open_episode
from robokit.errors import DataError, UserError
from robokit.lerobot import layout as L
from robokit.lerobot import stats as S
from robokit.lerobot.tables import DataFileWriter, write_episodes_table, write_tasks_table
from robokit.lerobot.video import DEFAULT_CRF, DEFAULT_GOP, VideoWriter, pick_codec, video_info

log = logging.getLogger(__name__)

#: Frames read from an episode file per block while encoding (bounds memory on long episodes).
_BLOCK = 64


@dataclass
class ExportReport:
    """What :func:`export_lerobot` wrote and how long it took."""

    out: Path
    episodes: int
    frames: int
    cameras: list[str]
    fps: int
    codec: str
    tasks: list[str]
    seconds: float
    bytes: int = 0
    features: list[str] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        """Exported frames (steps, all cameras each) per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else math.inf


def _integer_fps(value: float | None, override: float | None, name: str) -> int:
    fps = override if override is not None else value
    if fps is None:
        raise UserError(f"{name} does not say its frame rate; pass --fps")
    if abs(fps - round(fps)) > 1e-6 or round(fps) <= 0:
        raise UserError(f"{name}: LeRobot datasets have a whole-number fps, this one is {fps:g}; "
                        "pass --fps N to declare one")
    return round(fps)


def _plain_attrs(attrs: dict[str, Any]) -> str:
    kept = {k: v for k, v in attrs.items() if k not in L.STRUCTURAL_ATTRS}
    return json.dumps(kept, default=str, sort_keys=True)


class _Shape:
    """What every episode of the export must share, taken from the first one."""

    def __init__(self, ep: Episode, fps: int) -> None:
        self.cameras = list(ep.camera_names)
        self.image_shapes = {c: ep.image_shape(c) for c in self.cameras}
        self.state_dim, self.action_dim, self.fps = ep.state_dim, ep.action_dim, fps
        qvel = ep.qvel()
        self.velocity = qvel is not None and bool(np.isfinite(qvel).any())
        self.clocks = [n for n in ["robot", *self.cameras] if ep.timestamps(n) is not None]

    def check(self, ep: Episode, fps: int) -> None:
        name = ep.path.name
        if list(ep.camera_names) != self.cameras:
            raise DataError(f"{name}: cameras {ep.camera_names} differ from the first episode's {self.cameras}; "
                            "a LeRobot dataset has one set of cameras")
        for cam in self.cameras:
            if ep.image_shape(cam) != self.image_shapes[cam]:
                raise DataError(f"{name}: camera {cam!r} is {ep.image_shape(cam)}, the first episode's is "
                                f"{self.image_shapes[cam]}")
        if (ep.state_dim, ep.action_dim) != (self.state_dim, self.action_dim):
            raise DataError(f"{name}: state/action dims {ep.state_dim}/{ep.action_dim} differ from the first "
                            f"episode's {self.state_dim}/{self.action_dim}")
        if fps != self.fps:
            raise DataError(f"{name}: {fps} fps, the first episode has {self.fps}; a LeRobot dataset has one fps")

    def features(self, video_infos: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        feats: dict[str, dict[str, Any]] = {
            L.STATE: {"dtype": "float32", "shape": [self.state_dim], "names": L.vector_names(self.state_dim)},
            L.ACTION: {"dtype": "float32", "shape": [self.action_dim], "names": L.vector_names(self.action_dim)},
        }
        if self.velocity:
            feats[L.VELOCITY] = {"dtype": "float32", "shape": [self.state_dim],
                                 "names": [n.replace(".pos", ".vel") for n in L.vector_names(self.state_dim)]}
        for cam in self.cameras:
            h, w, _ = self.image_shapes[cam]
            feats[L.video_key(cam)] = {"dtype": "video", "shape": [h, w, 3],
                                       "names": ["height", "width", "channels"], "info": video_infos[cam]}
        feats[L.DONE] = {"dtype": "bool", "shape": [1], "names": None}
        for clock in self.clocks:
            feats[L.ROBOKIT_TIMESTAMP_PREFIX + clock] = {"dtype": "float64", "shape": [1], "names": None}
        feats.update({k: dict(v) for k, v in L.DEFAULT_FEATURES.items()})
        return feats


class _Videos:
    """The MP4 writers of every camera, starting a new file once one passes LeRobot's file size."""

    def __init__(self, root: Path, shape: _Shape, codec: str, crf: int, threads: int | None) -> None:
        self.root, self.shape, self.codec, self.crf, self.threads = root, shape, codec, crf, threads
        self.file_numbers = dict.fromkeys(shape.cameras, 0)
        self.writers = {cam: self._open(cam) for cam in shape.cameras}
        self.first_files = {cam: w.path for cam, w in self.writers.items()}

    def _open(self, cam: str) -> VideoWriter:
        h, w, _ = self.shape.image_shapes[cam]
        path = self.root / L.VIDEO_PATH.format(video_key=L.video_key(cam), **L.chunk_file(self.file_numbers[cam]))
        return VideoWriter(path, self.shape.fps, h, w, self.codec, crf=self.crf, gop=DEFAULT_GOP,
                           threads=self.threads)

    def start_episode(self, cam: str) -> tuple[dict[str, int], float]:
        """The camera's file indices and the episode's start time in that file."""
        writer = self.writers[cam]
        if writer.frames_written and writer.size_bytes() >= L.VIDEO_FILE_MB * 1024 * 1024:
            writer.close()
            self.file_numbers[cam] += 1
            writer = self.writers[cam] = self._open(cam)
        return L.chunk_file(self.file_numbers[cam]), writer.frames_written / self.shape.fps

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def export_lerobot(data: str | Path, out: str | Path, repo_id: str | None = None, *, fps: float | None = None,
                   codec: str = "auto", crf: int = DEFAULT_CRF, threads: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> ExportReport:
    """Export the episodes of folder ``data`` to a LeRobot v3.0 dataset folder ``out``.

    ``repo_id`` names the dataset for LeRobot (default ``local/<out name>``; it goes into the dataset
    card, LeRobot reads a local folder under any id). ``fps`` overrides the episodes' rate (ACT files
    do not store one). ``codec`` is auto (AV1 where PyAV has libsvtav1, else H.264), av1 or h264;
    ``crf`` its quality (lower is better and larger; LeRobot's default is 30). ``progress(done, total)``
    is called after each episode. Raises UserError/DataError for bad input, before anything is
    written where possible; ``out`` is created only when the export is complete.
    """
    data, out = Path(data), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not empty; choose a new --out folder (robokit never writes "
                        "into an existing dataset)")
    paths = list_episodes(data)
    if not 0 <= crf <= 63:
        raise UserError(f"--crf must be 0..63, got {crf}")
    pq = L.require("pyarrow.parquet")
    chosen = pick_codec(codec)
    repo_id = repo_id or f"local/{out.name}"
    started = time.perf_counter()
    with L.staged_folder(out) as tmp:
        report = _export(paths, tmp, chosen, crf, threads, fps, progress, pq)
        _write_card(tmp, repo_id, report)
    report.out = out
    report.seconds = time.perf_counter() - started
    report.bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return report


def _export(paths: list[Path], root: Path, codec: str, crf: int, threads: int | None, fps_override: float | None,
            progress: Callable[[int, int], None] | None, pq: Any) -> ExportReport:
    tasks: dict[str, int] = {}
    episodes: list[dict[str, Any]] = []
    totals: dict[str, S.VectorAccumulator] = {}
    hists: dict[str, np.ndarray] = {}
    shape: _Shape | None = None
    videos: _Videos | None = None
    data_writer: DataFileWriter | None = None
    robot_types: set[str] = set()
    frames = 0
    try:
        for number, path in enumerate(paths):
            with open_episode(path) as ep:
                ep_fps = _integer_fps(ep.fps, fps_override, str(path))
                if shape is None:
                    shape = _Shape(ep, ep_fps)
                    videos = _Videos(root, shape, codec, crf, threads)
                    data_writer = DataFileWriter(root, pq)
                shape.check(ep, ep_fps)
                if videos is None or data_writer is None:  # set with shape above; narrows the types
                    raise RuntimeError("export writers missing")
                if ep.length == 0:
                    raise DataError(f"{path}: the episode has no steps")
                robot_types.add(str(ep.attrs.get("robot") or "unknown"))
                task = ep.task or ""
                task_index = tasks.setdefault(task, len(tasks))
                columns = _columns(ep, shape, number, frames, task_index)
                where = data_writer.write(columns)
                ep_stats = {name: S.vector_stats(values) for name, values in columns.items()}
                for name, values in columns.items():
                    totals.setdefault(name, S.VectorAccumulator()).add(values)
                row: dict[str, Any] = {
                    L.EPISODE_INDEX: number, "tasks": [task], "length": ep.length,
                    **where, "dataset_from_index": frames, "dataset_to_index": frames + ep.length,
                }
                for cam in shape.cameras:
                    files, start = videos.start_episode(cam)
                    key = L.video_key(cam)
                    hist = np.zeros((3, 256), np.int64)
                    for lo in range(0, ep.length, _BLOCK):
                        block = ep.images(cam, lo, min(lo + _BLOCK, ep.length))
                        videos.writers[cam].write(block)
                        hist += S.image_histogram(block)
                    hists[key] = hists[key] + hist if key in hists else hist
                    ep_stats[key] = S.histogram_stats(hist, ep.length)
                    row.update({f"videos/{key}/chunk_index": files["chunk_index"],
                                f"videos/{key}/file_index": files["file_index"],
                                f"videos/{key}/from_timestamp": start,
                                f"videos/{key}/to_timestamp": start + ep.length / shape.fps})
                row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
                row.update(S.flat_columns(ep_stats))
                row[L.ROBOKIT_SOURCE_COLUMN] = path.name
                row[L.ROBOKIT_ATTRS_COLUMN] = _plain_attrs(ep.attrs)
                episodes.append(row)
                frames += ep.length
            if progress is not None:
                progress(number + 1, len(paths))
    finally:
        if videos is not None:
            videos.close()
        if data_writer is not None:
            data_writer.close()
    if shape is None or videos is None:
        raise DataError("no episodes to export")
    all_stats = {name: acc.stats() for name, acc in totals.items()}
    all_stats.update({key: S.histogram_stats(h, frames) for key, h in hists.items()})
    infos = {cam: video_info(path, crf, DEFAULT_GOP) for cam, path in videos.first_files.items()}
    features = shape.features(infos)
    write_tasks_table(root / L.TASKS_PATH, list(tasks), pq)
    write_episodes_table(root / L.EPISODES_PATH.format(**L.chunk_file(0)), episodes, pq)
    (root / L.STATS_PATH).write_text(json.dumps(S.to_json(all_stats), indent=2))
    info = {
        "codebase_version": L.CODEBASE_VERSION,
        "robot_type": robot_types.pop() if len(robot_types) == 1 else "mixed",
        "total_episodes": len(episodes), "total_frames": frames, "total_tasks": len(tasks),
        "chunks_size": L.CHUNKS_SIZE, "data_files_size_in_mb": L.DATA_FILE_MB,
        "video_files_size_in_mb": L.VIDEO_FILE_MB, "fps": shape.fps,
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": L.DATA_PATH, "video_path": L.VIDEO_PATH, "features": features,
    }
    (root / L.INFO_PATH).write_text(json.dumps(info, indent=4))
    codec_name = next(iter(infos.values()))["video.codec"]
    return ExportReport(out=root, episodes=len(episodes), frames=frames, cameras=shape.cameras, fps=shape.fps,
                        codec=codec_name, tasks=list(tasks), seconds=0.0, features=list(features))


def _columns(ep: Episode, shape: _Shape, number: int, first_index: int, task_index: int) -> dict[str, np.ndarray]:
    """The data-table columns of one episode, in feature order."""
    n = ep.length
    steps = np.arange(n, dtype=np.int64)
    cols: dict[str, np.ndarray] = {L.STATE: ep.qpos().astype(np.float32), L.ACTION: ep.action().astype(np.float32)}
    if shape.velocity:
        qvel = ep.qvel()
        cols[L.VELOCITY] = (qvel.astype(np.float32) if qvel is not None
                            else np.full((n, shape.state_dim), np.nan, np.float32))
    cols[L.DONE] = ep.done().astype(bool)
    for clock in shape.clocks:
        ts = ep.timestamps(clock)
        cols[L.ROBOKIT_TIMESTAMP_PREFIX + clock] = (ts if ts is not None else np.full(n, np.nan)).astype(np.float64)
    cols[L.TIMESTAMP] = (steps / shape.fps).astype(np.float32)
    cols[L.FRAME_INDEX] = steps
    cols[L.EPISODE_INDEX] = np.full(n, number, np.int64)
    cols[L.INDEX] = steps + first_index
    cols[L.TASK_INDEX] = np.full(n, task_index, np.int64)
    return cols


def _write_card(root: Path, repo_id: str, report: ExportReport) -> None:
    """A short dataset card: what the folder is and how to load it with LeRobot."""
    text = f"""---
tags: [LeRobot, robokit]
---
# {repo_id}

LeRobotDataset v3.0 exported by robokit: {report.episodes} episodes, {report.frames} frames at {report.fps} fps,
cameras {", ".join(report.cameras)} ({report.codec}).

```python
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("{repo_id}", root="<this folder>")
```
"""
    (root / "README.md").write_text(text)
