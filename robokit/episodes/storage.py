"""The HDF5 side of writing a v1 episode: creating its datasets, appending steps, finishing the file.

:class:`EpisodeFile` owns the open ``.partial`` file of one episode and is driven by the
:class:`~robokit.episodes.writer.EpisodeWriter` thread; :func:`finalize_episode` turns a closed
partial file into an ``episode_<N>.hdf5`` (also used by the crash recovery).
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from robokit.episodes import format as fmt
from robokit.episodes.files import replace_durably, try_lock
from robokit.episodes.masks import MASK_INSTANCES, MASKS, UNLABELLED
from robokit.errors import DataError, UserError

__all__ = ["JPEG_CHUNK_BYTES", "STATE_CHUNK_ROWS", "EpisodeFile", "EpisodeStep", "ExtraUpdate",
           "finalize_episode"]

#: JPEG rows are stored in chunks of at most this many bytes (about 1/8 of the first frame); only the
#: chunks a frame touches are allocated, so a frame costs its JPEG size rounded up to a chunk.
JPEG_CHUNK_BYTES = 16384
#: Rows per chunk of the small per-step datasets (state, action, timestamps, boxes).
STATE_CHUNK_ROWS = 256


@dataclass
class EpisodeStep:
    """One step of an episode as :meth:`EpisodeWriter.append` takes it (also what a recorder holds
    back for a step whose action is only known one step later)."""

    qpos: np.ndarray
    qvel: np.ndarray
    action: np.ndarray
    images: dict[str, np.ndarray]
    t_robot: float
    t_images: dict[str, float]
    done: bool
    #: camera -> object name -> pixel box (x0, y0, x1, y1), None when not visible
    object_boxes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: extra per-step dataset name -> float array of its declared row shape (None: a NaN row)
    extras: dict[str, Any] = field(default_factory=dict)
    #: camera -> uint8 (H, W) instance ids, for an episode that stores masks
    masks: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtraUpdate:
    """A late value for row ``row`` of the extra dataset ``name`` (:meth:`EpisodeWriter.set_extra`)."""

    row: int
    name: str
    values: np.ndarray


class EpisodeFile:
    """The open ``.partial`` HDF5 file of one episode being recorded.

    Creates every dataset up front (JPEG rows excepted: their chunk size comes from the first
    frame), then appends batches of steps with :meth:`write`. After the first write the file is in
    HDF5's single-writer/multiple-reader mode, whose write ordering keeps the file on disk readable
    at every flush, and holds an advisory lock so that another recorder does not recover it.
    """

    def __init__(
        self,
        path: Path,
        camera_shapes: Mapping[str, tuple[int, int, int]],
        state_dim: int,
        action_dim: int,
        attrs: Mapping[str, Any],
        compress: str,
        jpeg_quality: int,
        box_objects: Mapping[str, list[str]],
        extra_shapes: Mapping[str, tuple[int, ...]],
        mask_instances: str | None = None,
    ) -> None:
        self.path = path
        self.mask_instances = mask_instances  # the id table (JSON); None: no masks
        self.camera_shapes = dict(camera_shapes)
        self.compress = compress
        self.jpeg_quality = jpeg_quality
        self.box_objects = dict(box_objects)
        self.extra_shapes = dict(extra_shapes)
        self.written = 0
        self._swmr = False
        self._lock_fd: int | None = None
        self._file = self._create(state_dim, action_dim, dict(attrs))

    def _create(self, state_dim: int, action_dim: int, attrs: dict[str, Any]) -> h5py.File:
        try:
            f = h5py.File(self.path, "w", libver="latest")
        except OSError as exc:
            raise UserError(f"cannot create {self.path} ({exc}); check that the output folder "
                            "is writable") from None
        try:
            cams = list(self.camera_shapes)
            nan = np.float32(np.nan)
            _series(f, fmt.ACTION, (action_dim,), np.float32, fill=nan)
            _series(f, fmt.QPOS, (state_dim,), np.float32, fill=nan)
            _series(f, fmt.QVEL, (state_dim,), np.float32, fill=nan)
            for cam, (h, w, c) in self.camera_shapes.items():
                # JPEG rows are created with the first frame, which tells their chunk size.
                if self.compress != "jpeg":
                    f.create_dataset(f"{fmt.IMAGES}/{cam}", shape=(0, h, w, c), maxshape=(None, h, w, c),
                                     dtype=np.uint8, chunks=(1, h, w, c), fillvalue=0,
                                     compression="lzf" if self.compress == "lzf" else None)
                _series(f, f"{fmt.TIMESTAMPS}/{cam}", (), np.float64, fill=np.float64(np.nan))
                if self.mask_instances is not None:  # ids compress to a few percent with lzf
                    f.create_dataset(f"{MASKS}/{cam}", shape=(0, h, w), maxshape=(None, h, w), dtype=np.uint8,
                                     chunks=(1, h, w), fillvalue=UNLABELLED, compression="lzf")
            _series(f, fmt.ROBOT_TIMESTAMPS, (), np.float64, fill=np.float64(np.nan))
            _series(f, fmt.DONE, (), np.bool_, fill=False)
            for cam, names in self.box_objects.items():
                for name in names:
                    _series(f, fmt.object_box_key(name, cam), (4,), np.int32, fill=np.int32(-1))
            for name, shape in self.extra_shapes.items():
                # ~64 KB chunks: a chunk per step would bloat the index, 256 rows of a
                # (100, 8) chunk would make every flush rewrite 800 KB.
                rows = int(np.clip(2**16 // (4 * max(1, math.prod(shape))), 1, STATE_CHUNK_ROWS))
                _series(f, name, shape, np.float32, fill=np.float32(np.nan), chunk_rows=rows)
            if self.compress == "jpeg":
                f.create_dataset(fmt.COMPRESS_LEN, shape=(len(cams), 0), maxshape=(len(cams), None),
                                 dtype=np.float32, chunks=(len(cams), STATE_CHUNK_ROWS), fillvalue=0)
            header = {
                "format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION,
                "task": "", "robot": "unknown", "sim": False, "source": "unknown",
                **attrs,
                "camera_names": cams, "action_space": fmt.ACTION_SPACE,
                "compress": self.compress == "jpeg", "image_compression": self.compress,
                "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "robokit_version": _robokit_version(),
            }
            if self.extra_shapes:
                header[fmt.EXTRA_STEP_DATASETS] = list(self.extra_shapes)
            if self.mask_instances is not None:
                header[MASK_INSTANCES] = self.mask_instances
            for key, value in header.items():
                if value is not None:
                    f.attrs[key] = value
        except BaseException:
            f.close()
            self.path.unlink(missing_ok=True)
            raise
        return f

    def write(self, items: list[EpisodeStep | ExtraUpdate]) -> None:
        """Append the steps of ``items`` and apply their late extra values, in order."""
        steps = [s for s in items if isinstance(s, EpisodeStep)]
        if steps:
            self._write_steps(steps)
        # Updates name rows appended before them: written by now (this batch or an earlier one).
        for update in items:
            if isinstance(update, ExtraUpdate):
                self._file[update.name][update.row] = update.values

    def flush(self) -> None:
        """Push what was written to disk (readable by a crash recovery from then on)."""
        self._file.flush()

    def close(self) -> None:
        """Close the file and release the lock. Idempotent; raises OSError if the last flush fails."""
        try:
            if self._file.id.valid:
                self._file.close()
        finally:
            if self._lock_fd is not None:  # after the HDF5 close: finishing reopens the file (and locks it)
                os.close(self._lock_fd)
                self._lock_fd = None

    def _write_steps(self, steps: list[EpisodeStep]) -> None:
        f, n, i0 = self._file, len(steps), self.written
        i1 = i0 + n
        cams = list(self.camera_shapes)
        if self.compress == "jpeg":
            lengths = np.zeros((len(cams), n), dtype=np.float32)
            encoded: dict[str, list[np.ndarray]] = {}
            for cam in cams:
                h, w, c = self.camera_shapes[cam]
                width = h * w * c + 4096  # a JPEG row never needs more than the raw frame
                encoded[cam] = [self._encode(cam, step.images[cam], width) for step in steps]
                key = f"{fmt.IMAGES}/{cam}"
                if key not in f:
                    # Chunks of ~1/8 of a frame: a frame wastes half a chunk on average (~6%) and
                    # only the chunks it touches are allocated; the padding costs nothing.
                    chunk = int(np.clip(1 << int(np.log2(max(encoded[cam][0].size // 8, 1))), 1024,
                                        JPEG_CHUNK_BYTES))
                    ds = f.create_dataset(key, shape=(0, width), maxshape=(None, width), dtype=np.uint8,
                                          chunks=(1, chunk), fillvalue=0)
                    ds.attrs["image_shape"] = np.array([h, w, c], dtype=np.int64)
            self._start_swmr()
            for k, cam in enumerate(cams):
                ds = f[f"{fmt.IMAGES}/{cam}"]
                ds.resize(i1, axis=0)
                for j, data in enumerate(encoded[cam]):
                    ds[i0 + j, : data.size] = data
                    lengths[k, j] = data.size
            lens = f[fmt.COMPRESS_LEN]
            lens.resize(i1, axis=1)
            lens[:, i0:i1] = lengths
        else:
            self._start_swmr()
            for cam in cams:
                ds = f[f"{fmt.IMAGES}/{cam}"]
                ds.resize(i1, axis=0)
                for j, step in enumerate(steps):
                    ds[i0 + j] = step.images[cam]
        if self.mask_instances is not None:
            for cam in cams:
                ds = f[f"{MASKS}/{cam}"]
                ds.resize(i1, axis=0)
                for j, step in enumerate(steps):
                    ds[i0 + j] = step.masks[cam]
        columns: list[tuple[str, np.ndarray]] = [
            (fmt.ACTION, np.stack([s.action for s in steps])),
            (fmt.QPOS, np.stack([s.qpos for s in steps])),
            (fmt.QVEL, np.stack([s.qvel for s in steps])),
            (fmt.DONE, np.array([s.done for s in steps], dtype=np.bool_)),
        ]
        columns += [(f"{fmt.TIMESTAMPS}/{cam}", np.array([s.t_images[cam] for s in steps]))
                    for cam in cams]
        columns += [(fmt.object_box_key(name, cam), np.stack([s.object_boxes[cam][name] for s in steps]))
                    for cam, names in self.box_objects.items() for name in names]
        columns += [(name, np.stack([s.extras[name] for s in steps])) for name in self.extra_shapes]
        # The robot timestamp goes last: recovery treats a row without it as incomplete.
        columns.append((fmt.ROBOT_TIMESTAMPS, np.array([s.t_robot for s in steps], dtype=np.float64)))
        for key, values in columns:
            ds = f[key]
            ds.resize(i1, axis=0)
            ds[i0:i1] = values
        self.written = i1

    def _start_swmr(self) -> None:
        """Every dataset exists now: from here on the file on disk is consistent at every flush
        (SWMR mode forbids creating objects later)."""
        if not self._swmr:
            self._file.swmr_mode = True
            self._swmr = True
            # HDF5 drops its own file lock in SWMR mode; hold one so that another recorder starting
            # in this folder does not "recover" an episode that is still being written.
            self._lock_fd = try_lock(self.path)

    def _encode(self, cam: str, image: np.ndarray, width: int) -> np.ndarray:
        quality = self.jpeg_quality
        while True:
            ok, data = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
            if not ok:
                raise DataError(f"JPEG encoding of a frame from camera '{cam}' failed")
            if data.size <= width or quality <= 10:
                break
            quality -= 20  # a pathological frame larger than raw: store it at lower quality
        if data.size > width:
            raise DataError(f"a frame from camera '{cam}' does not fit its JPEG row")
        return data.reshape(-1)


def finalize_episode(partial: Path, final: Path, attrs: Mapping[str, Any],
                     goal_images: Mapping[str, np.ndarray] | None = None) -> Path:
    """Add the closing attributes and goal images to a closed partial file and rename it atomically."""
    with h5py.File(partial, "r+") as f:
        n = int(f[fmt.QPOS].shape[0])
        f.attrs["num_steps"] = n
        ts = f[fmt.ROBOT_TIMESTAMPS][...] if fmt.ROBOT_TIMESTAMPS in f else np.zeros(0)
        if n > 1 and np.all(np.isfinite(ts[[0, -1]])):
            f.attrs["duration_s"] = float(ts[-1] - ts[0])
        for key, value in attrs.items():
            if value is not None:
                f.attrs[key] = value
        if fmt.COMPRESS_LEN in f and n:
            # Shrink the padded JPEG rows to the longest frame, as ALOHA's files are.
            longest = max(1, int(np.max(f[fmt.COMPRESS_LEN][...])))
            for cam in f[fmt.IMAGES]:
                ds = f[f"{fmt.IMAGES}/{cam}"]
                if ds.ndim == 2 and ds.shape[1] > longest:
                    ds.resize(longest, axis=1)
        for cam, image in (goal_images or {}).items():
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise DataError(f"goal image of camera '{cam}' must be uint8 (H, W, 3), got "
                                f"{image.dtype} {image.shape}")
            key = f"{fmt.GOAL_IMAGES}/{cam}"
            if key in f:
                del f[key]
            f.create_dataset(key, data=image)
    return replace_durably(partial, final)


def _series(f: h5py.File, key: str, row_shape: tuple[int, ...], dtype: Any, fill: Any,
            chunk_rows: int = STATE_CHUNK_ROWS) -> h5py.Dataset:
    return f.create_dataset(key, shape=(0, *row_shape), maxshape=(None, *row_shape), dtype=dtype,
                            chunks=(chunk_rows, *row_shape), fillvalue=fill)


@functools.lru_cache(maxsize=1)
def _robokit_version() -> str:
    try:
        return metadata.version("robokit")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"
