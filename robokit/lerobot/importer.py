"""A LeRobotDataset v3.0 folder -> robokit episodes (``episode_<N>.hdf5``, written by the episode writer).

    report = import_lerobot("exports/pick", "data/pick_again")

Reads robokit's own exports back exactly (states, actions, velocities, done flags, clock readings,
tasks, episode attributes; images within the video codec's loss) and LeRobot datasets from elsewhere:
those need ``observation.state``, ``action`` and at least one RGB image or video feature; their clock
is ``timestamp`` (seconds from the episode's start), their final step is marked done, their
velocities are zeros when they have none (as in ACT's files), and an episode with several tasks
keeps the first.

Like the export, the episodes are written into a hidden sibling folder that is renamed into place when
complete: an interrupted import leaves no partial dataset under the requested name.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from robokit.episodes.writer import EpisodeWriter
from robokit.errors import DataError, UserError
from robokit.lerobot import layout as L
from robokit.lerobot.tables import column_array, read_data, read_episodes, read_tasks
from robokit.lerobot.video import VideoCursor

log = logging.getLogger(__name__)


@dataclass
class ImportReport:
    """What :func:`import_lerobot` wrote."""

    out: Path
    episodes: int
    frames: int
    cameras: list[str]
    fps: int
    tasks: list[str]
    seconds: float


class _Videos:
    """One :class:`VideoCursor` per camera, moved to the next file when an episode's row says so."""

    def __init__(self, root: Path, info: dict[str, Any], fps: float) -> None:
        self.root, self.template, self.fps = root, str(info.get("video_path") or L.VIDEO_PATH), fps
        self.open: dict[str, tuple[Path, VideoCursor]] = {}

    def frames(self, key: str, row: dict[str, Any], first_ts: float, count: int) -> np.ndarray:
        try:
            where = {"chunk_index": int(row[f"videos/{key}/chunk_index"]),
                     "file_index": int(row[f"videos/{key}/file_index"])}
            start = float(row[f"videos/{key}/from_timestamp"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{self.root}: episode {row[L.EPISODE_INDEX]} does not say where its {key} frames "
                            "are (videos/... columns of meta/episodes)") from None
        path = self.root / self.template.format(video_key=key, **where)
        current = self.open.get(key)
        if current is None or current[0] != path:
            if current is not None:
                current[1].close()
            current = self.open[key] = (path, VideoCursor(path, self.fps))
        return current[1].take(start + first_ts, count)

    def close(self) -> None:
        for _, cursor in self.open.values():
            cursor.close()


def _decode_images(column: Any, name: str) -> np.ndarray:
    """An image feature stored in parquet (structs of encoded ``bytes``) -> uint8 (N, H, W, 3) RGB."""
    out = []
    for i, item in enumerate(column.to_pylist()):
        data = item.get("bytes") if isinstance(item, dict) else None
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            raise DataError(f"feature {name!r}: row {i} holds no decodable image")
        out.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return np.stack(out)


def _episode_attrs(row: dict[str, Any], info: dict[str, Any], root: Path) -> dict[str, Any]:
    text = row.get(L.ROBOKIT_ATTRS_COLUMN)
    attrs: dict[str, Any] = {}
    if isinstance(text, str):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            attrs = {k: v for k, v in loaded.items() if k not in L.STRUCTURAL_ATTRS and v is not None}
    if not attrs:  # a dataset from elsewhere: say where it came from
        attrs = {"robot": str(info.get("robot_type") or "unknown"), "sim": False, "source": "lerobot"}
    attrs["lerobot_episode_index"] = int(row[L.EPISODE_INDEX])
    attrs["imported_from"] = str(root.resolve())
    return attrs


def import_lerobot(root: str | Path, out: str | Path, *, compress: str = "none",
                   progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Convert the LeRobot v3.0 dataset in ``root`` into robokit episodes in the new folder ``out``.

    ``compress`` is the episode image storage (none | lzf | jpeg, as ``robokit record``).
    ``progress(done, total)`` is called after each episode. Raises DataError for an unsupported
    version or a feature layout robokit cannot map (naming the feature), UserError if ``out`` exists
    and is not empty.
    """
    started = time.perf_counter()
    root, out = Path(root), Path(out)
    info = L.read_info(root)
    mapping = L.map_features(root, info["features"])
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not empty; choose a new --out folder (robokit never writes "
                        "into an existing dataset)")
    pq = L.require("pyarrow.parquet")
    tasks = read_tasks(root, pq) if (root / L.TASKS_PATH).exists() else {}
    episodes = read_episodes(root, pq)
    if not episodes:
        raise DataError(f"{root}: the dataset has no episodes")
    with L.staged_folder(out) as tmp:
        frames = _import(root, tmp, info, mapping, tasks, episodes, compress, progress, pq)
    return ImportReport(out=out, episodes=len(episodes), frames=frames, cameras=list(mapping["cameras"]),
                        fps=int(info["fps"]), tasks=list(tasks.values()), seconds=time.perf_counter() - started)


def _import(root: Path, tmp: Path, info: dict[str, Any], mapping: dict[str, Any], tasks: dict[int, str],
            episodes: list[dict[str, Any]], compress: str, progress: Callable[[int, int], None] | None,
            pq: Any) -> int:
    features = info["features"]
    fps = float(info["fps"])
    cams: dict[str, str] = mapping["cameras"]
    clocks = [n for n in ["robot", *cams] if L.ROBOKIT_TIMESTAMP_PREFIX + n in features]
    wanted = [mapping["state"], mapping["action"], L.EPISODE_INDEX, L.FRAME_INDEX, L.TIMESTAMP, L.TASK_INDEX]
    wanted += [c for c in (mapping["velocity"], mapping["done"]) if c]
    wanted += [L.ROBOKIT_TIMESTAMP_PREFIX + n for n in clocks]
    image_columns = [key for key in cams.values() if features[key]["dtype"] == "image"]
    raw = read_data(root, wanted + image_columns, pq)
    ep_index = column_array(raw[L.EPISODE_INDEX], L.EPISODE_INDEX).astype(np.int64)
    order = np.lexsort((column_array(raw[L.FRAME_INDEX], L.FRAME_INDEX), ep_index))
    ep_sorted = ep_index[order]
    state = column_array(raw[mapping["state"]], mapping["state"], mapping["state_dim"])[order]
    action = column_array(raw[mapping["action"]], mapping["action"], mapping["action_dim"])[order]
    qvel = (column_array(raw[mapping["velocity"]], mapping["velocity"], mapping["state_dim"])[order]
            if mapping["velocity"] else None)
    done = column_array(raw[mapping["done"]], mapping["done"]).astype(bool)[order] if mapping["done"] else None
    stamp = column_array(raw[L.TIMESTAMP], L.TIMESTAMP).astype(np.float64)[order]
    # `timestamp` is float32 (0.06666667 for 1/15 s); where it is frame_index / fps, as LeRobot's writer
    # makes it, take that exactly.
    ideal = column_array(raw[L.FRAME_INDEX], L.FRAME_INDEX).astype(np.float64)[order] / fps
    stamp = np.where(np.abs(stamp - ideal) < 1e-4, ideal, stamp)
    task_index = column_array(raw[L.TASK_INDEX], L.TASK_INDEX).astype(np.int64)[order]
    clock_values = {n: column_array(raw[L.ROBOKIT_TIMESTAMP_PREFIX + n], n).astype(np.float64)[order]
                    for n in clocks}
    shapes = {cam: (*L.image_hw(key, features[key]), 3) for cam, key in cams.items()}
    videos = _Videos(root, info, fps)
    zeros = np.zeros(mapping["state_dim"], np.float32)  # no velocities: zeros, as ACT's files hold them
    frames = 0
    try:
        for number, row in enumerate(episodes):
            ep = int(row[L.EPISODE_INDEX])
            lo, hi = np.searchsorted(ep_sorted, [ep, ep + 1])
            n = int(hi - lo)
            if n != int(row["length"]) or n == 0:
                raise DataError(f"{root}: episode {ep} has {n} frames in data/ but length {row['length']} in "
                                "meta/episodes")
            images = {}
            for cam, key in cams.items():
                if key in image_columns:
                    taken = raw[key].take(order[lo:hi])
                    images[cam] = _decode_images(taken, key)
                else:
                    images[cam] = videos.frames(key, row, float(stamp[lo]), n)
                if images[cam].shape[1:] != shapes[cam]:
                    raise DataError(f"{root}: {key} frames of episode {ep} are {images[cam].shape[1:]}, "
                                    f"info.json says {shapes[cam]}")
            attrs = _episode_attrs(row, info, root)
            success = attrs.pop("success", None)
            attrs.update({"fps": fps, "task": tasks.get(int(task_index[lo]), "")})
            if len(set(task_index[lo:hi].tolist())) > 1:
                log.warning("episode %d has several tasks; robokit keeps the first, %r", ep, attrs["task"])
            writer = EpisodeWriter(tmp, number, shapes, mapping["state_dim"], mapping["action_dim"], attrs,
                                   compress)
            try:
                ep_done = done[lo:hi] if done is not None else np.arange(n) == n - 1
                t_robot = clock_values["robot"][lo:hi] if "robot" in clock_values else stamp[lo:hi]
                for t in range(n):
                    writer.append(state[lo + t], zeros if qvel is None else qvel[lo + t], action[lo + t],
                                  {cam: images[cam][t] for cam in cams}, float(t_robot[t]),
                                  {cam: float(clock_values[cam][lo + t] if cam in clock_values else stamp[lo + t])
                                   for cam in cams}, bool(ep_done[t]))
                writer.save(success=bool(success) if isinstance(success, bool) else None)
            except BaseException:
                writer.discard()
                raise
            frames += n
            if progress is not None:
                progress(number + 1, len(episodes))
    finally:
        videos.close()
    return frames
