"""Streaming, crash-safe episode writer (contract §4, DESIGN §4).

    w = EpisodeWriter("data/pick", next_episode_index("data/pick"),
                      camera_shapes={"top": (240, 320, 3)},
                      attrs={"task": "pick the cube", "fps": 30, "robot": "sim", "sim": True,
                             "source": "scripted"},
                      compress="jpeg")
    for ...:
        w.append(qpos, qvel, action, images={"top": rgb}, t_robot=t, t_images={"top": t_cap})
    w.save(success=True)      # -> data/pick/episode_7.hdf5

Simulated recordings also store where each object is in each camera's image: declare the objects
with ``box_objects={"top": ["cube"]}`` and pass ``object_boxes={"top": {"cube": (x0, y0, x1, y1)}}``
(or None when it is not visible) to every :meth:`~EpisodeWriter.append`.

Extra per-step float arrays (a deploy rollout's predicted action chunks) are declared the same way,
``extra_step_datasets={"predicted_chunks": (H, A)}``, and given per step with
``append(..., extras={"predicted_chunks": chunk})`` (None or absent: a NaN row). A value that is
only known some steps later (a chunk from an asynchronous query) is filled in with
:meth:`~EpisodeWriter.set_extra`, streamed like the rest.

How it stays crash-safe and bounded:

- Each step goes through a small bounded queue (``queue_s`` seconds of steps) to a writer thread
  that JPEG-encodes if asked, appends to resizable chunked datasets and flushes at least every
  ``flush_interval_s``. Memory does not grow with the episode's length.
- The file is written in HDF5's single-writer/multiple-reader (SWMR) mode, which orders its writes so
  that the file on disk is readable at every moment. A ``kill -9`` therefore loses only the steps
  not yet flushed: about ``queue_s + flush_interval_s`` (0.75 s by default, under the 1 s promised).
- The episode is ``episode_<N>.hdf5.partial`` until :meth:`EpisodeWriter.save` renames it atomically;
  :func:`recover_partial_episodes` turns what a crash left into a complete episode (truncated to the
  last step every field has) or moves it aside to ``broken/`` if it cannot be read at all.
- Free disk space is checked when the writer starts and every second while it writes; below
  ``min_free_bytes`` :meth:`append` raises :class:`LowDiskSpace` and :meth:`save` still works.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

import robokit
from robokit.episodes import format as fmt
from robokit.errors import DataError, UserError

__all__ = [
    "BROKEN_DIR",
    "DEFAULT_MIN_FREE_BYTES",
    "EmptyEpisode",
    "EpisodeStep",
    "EpisodeWriter",
    "LowDiskSpace",
    "next_episode_index",
    "prepare_folder",
    "recover_partial_episodes",
]

log = logging.getLogger(__name__)

DEFAULT_MIN_FREE_BYTES = 200 * 2**20
BROKEN_DIR = "broken"
#: JPEG rows are stored in chunks of at most this many bytes (about 1/8 of the first frame); only the
#: chunks a frame touches are allocated, so a frame costs its JPEG size rounded up to a chunk.
JPEG_CHUNK_BYTES = 16384
_STATE_CHUNK_ROWS = 256
_DISK_CHECK_INTERVAL_S = 1.0


class LowDiskSpace(UserError):
    """The output folder's disk has less free space than the writer needs."""


class EmptyEpisode(UserError):
    """:meth:`EpisodeWriter.save` was called before any step was appended."""


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


@dataclass(frozen=True)
class _ExtraUpdate:
    """A late value for row ``row`` of the extra dataset ``name`` (:meth:`EpisodeWriter.set_extra`)."""

    row: int
    name: str
    values: np.ndarray


_STOP = object()
_NO_BOX = np.full(4, -1, dtype=np.int32)


class EpisodeWriter:
    """Streams one episode into ``<folder>/episode_<index>.hdf5.partial`` (see module docs).

    ``camera_shapes`` maps camera name -> (H, W, 3); ``attrs`` must give ``fps`` and should give
    ``task``, ``robot``, ``sim`` and ``source`` (DESIGN §4). ``compress`` is "none", "lzf"
    (lossless, HDF5 filter) or "jpeg" (ALOHA-compatible padded JPEG rows, ``jpeg_quality``).
    ``box_objects`` (camera -> object names) declares the per-step object boxes the episode
    stores in ``/objects/<name>/box_<cam>``. ``extra_step_datasets`` (name -> row shape) declares
    extra per-step float32 datasets ``/<name>`` of shape (T, *row shape), NaN where not given.
    """

    def __init__(
        self,
        folder: str | Path,
        index: int,
        camera_shapes: Mapping[str, tuple[int, int, int]],
        state_dim: int = 8,
        action_dim: int = 8,
        attrs: Mapping[str, Any] | None = None,
        compress: str = "none",
        *,
        jpeg_quality: int = 90,
        flush_interval_s: float = 0.25,
        queue_s: float = 0.5,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        box_objects: Mapping[str, Sequence[str]] | None = None,
        extra_step_datasets: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        if compress not in fmt.COMPRESSIONS:
            raise UserError(f"unknown compression {compress!r}; choose one of {', '.join(fmt.COMPRESSIONS)}")
        attrs = dict(attrs or {})
        fps = attrs.get("fps")
        if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not fps > 0:
            raise UserError(f"episode attribute 'fps' must be a positive number, got {fps!r}")
        self.camera_shapes = {name: _check_shape(name, shape) for name, shape in camera_shapes.items()}
        if not self.camera_shapes:
            raise UserError("an episode needs at least one camera")
        self.box_objects = _check_box_objects(box_objects or {}, self.camera_shapes)
        self.extra_shapes = _check_extra_datasets(extra_step_datasets or {})
        self._nan_rows = {name: np.full(shape, np.nan, np.float32) for name, shape in self.extra_shapes.items()}
        self.folder = Path(folder)
        self.index = int(index)
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.compress = compress
        if not 1 <= int(jpeg_quality) <= 100:
            raise UserError(f"JPEG quality must be 1..100, got {jpeg_quality}")
        self.jpeg_quality = int(jpeg_quality)
        self.flush_interval_s = float(flush_interval_s)
        self.min_free_bytes = int(min_free_bytes)
        self.final_path = self.folder / fmt.episode_filename(self.index)
        self.partial_path = self.folder / fmt.partial_filename(self.index)

        prepare_folder(self.folder)
        check_free_space(self.folder, self.min_free_bytes)
        for existing in (self.final_path, self.partial_path):
            if existing.exists():
                raise DataError(f"{existing} already exists; robokit never overwrites an episode "
                                "(episode numbers continue after the highest one in the folder)")
        self._file = self._create_file(attrs)

        self._appended = 0
        self._written = 0
        self._swmr = False
        self._lock_fd: int | None = None
        self._error: BaseException | None = None
        self._low_disk: LowDiskSpace | None = None
        self._finished = False
        self._t0_robot: float | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(2, math.ceil(queue_s * float(fps))))
        self._thread = threading.Thread(target=self._run, name=f"episode-writer-{self.index}", daemon=True)
        self._thread.start()

    # -- public API ------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """Steps appended so far (some may still be on their way to disk)."""
        return self._appended

    @property
    def path(self) -> Path:
        """The ``.partial`` file being written."""
        return self.partial_path

    def append(
        self,
        qpos: np.ndarray,
        qvel: np.ndarray | None,
        action: np.ndarray,
        images: Mapping[str, np.ndarray],
        t_robot: float,
        t_images: Mapping[str, float] | None = None,
        done: bool = False,
        object_boxes: Mapping[str, Mapping[str, Sequence[int] | None]] | None = None,
        extras: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one step. Blocks only if the disk falls behind by more than ``queue_s``.

        ``object_boxes`` gives camera -> object -> (x0, y0, x1, y1) pixel box (None: not visible) for
        the objects declared in ``box_objects``; a missing one is stored as not visible.
        ``extras`` gives name -> array of the declared row shape for the ``extra_step_datasets``
        (copied; None or a missing name: a NaN row).
        Raises :class:`LowDiskSpace` when free space runs low (the episode can still be saved) and
        DataError if writing failed or a frame does not match the episode's camera shapes.
        """
        if self._finished:
            raise UserError("this episode writer is already saved, discarded or closed")
        self._raise_pending()
        step = EpisodeStep(
            qpos=_vector("qpos", qpos, self.state_dim),
            qvel=(_vector("qvel", qvel, self.state_dim) if qvel is not None
                  else np.full(self.state_dim, np.nan, np.float32)),
            action=_vector("action", action, self.action_dim),
            images={},
            t_robot=float(t_robot),
            t_images={cam: float((t_images or {}).get(cam, math.nan)) for cam in self.camera_shapes},
            done=bool(done),
            object_boxes=self._boxes(object_boxes or {}),
            extras={name: self._extra_row(name, (extras or {}).get(name), self._appended)
                    for name in self.extra_shapes},
        )
        unknown = [n for n in (extras or {}) if n not in self.extra_shapes]
        if unknown:
            raise DataError(f"step {self._appended}: extra dataset(s) {', '.join(map(repr, unknown))} were not "
                            "declared in extra_step_datasets")
        for cam, shape in self.camera_shapes.items():
            if cam not in images:
                raise DataError(f"step {self._appended} has no frame from camera '{cam}'")
            image = np.asarray(images[cam])
            if image.shape != shape or image.dtype != np.uint8:
                raise DataError(f"camera '{cam}' delivered a {image.dtype} frame of shape {image.shape}; "
                                f"this episode stores {shape} uint8")
            # A copy: cameras may reuse their buffers before the writer thread gets to this frame.
            step.images[cam] = image.copy()
        self._enqueue(step)
        self._appended += 1

    def set_extra(self, row: int, name: str, values: Any) -> None:
        """Set row ``row`` (a step appended earlier) of the extra dataset ``name`` to ``values``.

        For values known only after their step was appended, e.g. the chunk of an asynchronous
        policy query that returns some steps after the observation it was asked for. Streamed
        through the same queue as the steps (``values`` is copied); a crash before it reaches the
        disk leaves that row NaN.
        """
        if self._finished:
            raise UserError("this episode writer is already saved, discarded or closed")
        if name not in self.extra_shapes:
            raise DataError(f"extra dataset {name!r} was not declared in extra_step_datasets")
        if not 0 <= int(row) < self._appended:
            raise DataError(f"row {row} of /{name} is not a step of this episode (0..{self._appended - 1})")
        self._raise_pending()
        self._enqueue(_ExtraUpdate(int(row), name, self._extra_row(name, values, int(row))))

    def _enqueue(self, item: Any) -> None:
        """Hand ``item`` to the writer thread, waiting while the queue is full; a writer-thread
        error raised meanwhile (disk full, ...) surfaces here instead of blocking forever."""
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                self._raise_pending()

    def save(
        self,
        success: bool | None = None,
        extra_attrs: Mapping[str, Any] | None = None,
        goal_images: Mapping[str, np.ndarray] | None = None,
    ) -> Path:
        """Write the remaining steps, finish the file and rename it to ``episode_<N>.hdf5``.

        ``success`` is stored only when known; ``goal_images`` (camera -> uint8 (H, W, 3)) go to
        ``/goal_images/<cam>``. Raises :class:`EmptyEpisode` (and removes the partial file) if no step
        was appended, DataError if the data could not be written (the partial file is then kept for
        :func:`recover_partial_episodes`).
        """
        self._stop_thread(drain=True)
        if self._error is not None:
            self._close_file()
            raise DataError(f"writing {self.partial_path} failed ({self._error}); the steps written "
                            "so far stay in the .partial file and the next `robokit record` into this "
                            "folder recovers them") from self._error
        self._close_file()
        if self._written == 0:
            self.partial_path.unlink(missing_ok=True)
            raise EmptyEpisode("nothing was recorded: the episode has no steps")
        attrs: dict[str, Any] = dict(extra_attrs or {})
        if success is not None:
            attrs["success"] = bool(success)
        try:
            return finalize_episode(self.partial_path, self.final_path, attrs, goal_images)
        except OSError as exc:
            raise DataError(f"could not finish {self.partial_path} ({exc}); it is kept and the next "
                            "`robokit record` into this folder recovers it") from exc

    def discard(self) -> None:
        """Stop writing and delete the partial file."""
        self._stop_thread(drain=False)
        self._close_file()
        self.partial_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop writing and close the file, leaving the ``.partial`` file for recovery. Idempotent."""
        if not self._finished:
            self._stop_thread(drain=True)
        self._close_file()

    # -- file layout -----------------------------------------------------------------------------
    def _create_file(self, attrs: dict[str, Any]) -> h5py.File:
        try:
            f = h5py.File(self.partial_path, "w", libver="latest")
        except OSError as exc:
            raise UserError(f"cannot create {self.partial_path} ({exc}); check that the output folder "
                            "is writable") from None
        try:
            cams = list(self.camera_shapes)
            nan = np.float32(np.nan)
            _series(f, fmt.ACTION, (self.action_dim,), np.float32, fill=nan)
            _series(f, fmt.QPOS, (self.state_dim,), np.float32, fill=nan)
            _series(f, fmt.QVEL, (self.state_dim,), np.float32, fill=nan)
            for cam, (h, w, c) in self.camera_shapes.items():
                # JPEG rows are created with the first frame, which tells their chunk size.
                if self.compress != "jpeg":
                    f.create_dataset(f"{fmt.IMAGES}/{cam}", shape=(0, h, w, c), maxshape=(None, h, w, c),
                                     dtype=np.uint8, chunks=(1, h, w, c), fillvalue=0,
                                     compression="lzf" if self.compress == "lzf" else None)
                _series(f, f"{fmt.TIMESTAMPS}/{cam}", (), np.float64, fill=np.float64(np.nan))
            _series(f, fmt.ROBOT_TIMESTAMPS, (), np.float64, fill=np.float64(np.nan))
            _series(f, fmt.DONE, (), np.bool_, fill=False)
            for cam, names in self.box_objects.items():
                for name in names:
                    _series(f, fmt.object_box_key(name, cam), (4,), np.int32, fill=np.int32(-1))
            for name, shape in self.extra_shapes.items():
                # ~64 KB chunks: a chunk per step would bloat the index, 256 rows of a
                # (100, 8) chunk would make every flush rewrite 800 KB.
                rows = int(np.clip(2**16 // (4 * max(1, math.prod(shape))), 1, _STATE_CHUNK_ROWS))
                _series(f, name, shape, np.float32, fill=np.float32(np.nan), chunk_rows=rows)
            if self.compress == "jpeg":
                f.create_dataset(fmt.COMPRESS_LEN, shape=(len(cams), 0), maxshape=(len(cams), None),
                                 dtype=np.float32, chunks=(len(cams), _STATE_CHUNK_ROWS), fillvalue=0)
            header = {
                "format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION,
                "task": "", "robot": "unknown", "sim": False, "source": "unknown",
                **attrs,
                "camera_names": cams, "action_space": fmt.ACTION_SPACE,
                "compress": self.compress == "jpeg", "image_compression": self.compress,
                "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "robokit_version": robokit.__version__,
            }
            if self.extra_shapes:
                header[fmt.EXTRA_STEP_DATASETS] = list(self.extra_shapes)
            for key, value in header.items():
                if value is not None:
                    f.attrs[key] = value
        except BaseException:
            f.close()
            self.partial_path.unlink(missing_ok=True)
            raise
        return f

    # -- writer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        last_flush = last_disk_check = time.monotonic()
        dirty = False
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self.flush_interval_s)
                except queue.Empty:
                    item = None
                batch, stop = [], item is _STOP
                if item is not None and not stop:
                    batch.append(item)
                    while len(batch) < 32:  # take what else is waiting: fewer, larger writes
                        try:
                            nxt = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if nxt is _STOP:
                            stop = True
                            break
                        batch.append(nxt)
                if batch:
                    self._write(batch)
                    dirty = True
                now = time.monotonic()
                if dirty and (stop or now - last_flush >= self.flush_interval_s):
                    self._file.flush()
                    last_flush, dirty = now, False
                if now - last_disk_check >= _DISK_CHECK_INTERVAL_S:
                    last_disk_check = now
                    try:
                        check_free_space(self.folder, self.min_free_bytes)
                    except LowDiskSpace as exc:
                        self._low_disk = exc
                if stop:
                    return
        except BaseException as exc:  # surfaced to the caller by append()/save()
            log.exception("episode writer for %s failed", self.partial_path)
            self._error = exc
            self._drain_queue()

    def _write(self, items: list[EpisodeStep | _ExtraUpdate]) -> None:
        steps = [s for s in items if isinstance(s, EpisodeStep)]
        if steps:
            self._write_steps(steps)
        # Updates name rows appended before them: written by now (this batch or an earlier one).
        for update in items:
            if isinstance(update, _ExtraUpdate):
                self._file[update.name][update.row] = update.values

    def _write_steps(self, steps: list[EpisodeStep]) -> None:
        f, n, i0 = self._file, len(steps), self._written
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
        self._written = i1

    def _start_swmr(self) -> None:
        """Every dataset exists now: from here on the file on disk is consistent at every flush
        (SWMR mode forbids creating objects later)."""
        if not self._swmr:
            self._file.swmr_mode = True
            self._swmr = True
            # HDF5 drops its own file lock in SWMR mode; hold one so that another recorder starting
            # in this folder does not "recover" an episode that is still being written.
            self._lock_fd = _try_lock(self.partial_path)

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

    # -- helpers ---------------------------------------------------------------------------------
    def _boxes(self, given: Mapping[str, Mapping[str, Sequence[int] | None]]) -> dict[str, dict[str, np.ndarray]]:
        """The declared boxes of one step as int32 (4,) arrays (-1 for not visible)."""
        for cam, boxes in given.items():
            unknown = [n for n in boxes if n not in self.box_objects.get(cam, ())]
            if unknown:
                raise DataError(f"step {self._appended}: boxes of {', '.join(map(repr, unknown))} in camera "
                                f"'{cam}' were not declared in box_objects")
        out: dict[str, dict[str, np.ndarray]] = {}
        for cam, names in self.box_objects.items():
            out[cam] = {}
            for name in names:
                box = given.get(cam, {}).get(name)
                if box is None:
                    out[cam][name] = _NO_BOX
                    continue
                values = np.asarray(box).reshape(-1)
                if values.shape != (4,) or not np.all(np.isfinite(values)):
                    raise DataError(f"the box of '{name}' in camera '{cam}' must be 4 pixel numbers "
                                    f"(x0, y0, x1, y1), got {box!r}")
                out[cam][name] = values.astype(np.int32)
        return out

    def _extra_row(self, name: str, values: Any, row: int) -> np.ndarray:
        """One row of an extra dataset as a float32 copy (the shared NaN row for None)."""
        if values is None:
            return self._nan_rows[name]
        out = np.array(values, dtype=np.float32)  # a copy: the caller may reuse its buffer
        if out.shape != self.extra_shapes[name]:
            raise DataError(f"step {row}: /{name} rows are {self.extra_shapes[name]}, got {out.shape}")
        return out

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise DataError(f"writing {self.partial_path} failed ({self._error}); save or discard the "
                            "episode") from self._error
        if self._low_disk is not None:
            raise self._low_disk

    def _stop_thread(self, drain: bool) -> None:
        if self._finished:
            return
        self._finished = True
        if not drain:
            self._drain_queue()
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.2)
                break
            except queue.Full:
                continue
        self._thread.join()

    def _drain_queue(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _close_file(self) -> None:
        if self._file.id.valid:
            try:
                self._file.close()
            except OSError as exc:  # disk full while flushing the last metadata
                if self._error is None:
                    self._error = exc
        if self._lock_fd is not None:  # after the HDF5 close: finishing reopens the file (and locks it)
            os.close(self._lock_fd)
            self._lock_fd = None


# -- module functions ------------------------------------------------------------------------------
def next_episode_index(folder: str | Path) -> int:
    """1 + the highest N of ``episode_<N>.hdf5`` / ``.partial`` in ``folder`` (and ``broken/``); 0 if none."""
    folder = Path(folder)
    highest = -1
    for sub in (folder, folder / BROKEN_DIR):
        if not sub.is_dir():
            continue
        for p in sub.iterdir():
            n = fmt.episode_index(p)
            if n is None:
                n = fmt.partial_index(p)
            if n is not None:
                highest = max(highest, n)
    return highest + 1


def check_free_space(folder: str | Path, min_free_bytes: int) -> int:
    """Free bytes on ``folder``'s disk; raises :class:`LowDiskSpace` below ``min_free_bytes``."""
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise LowDiskSpace(f"only {free / 2**20:.0f} MB free on the disk of {folder} (need at least "
                           f"{min_free_bytes / 2**20:.0f} MB); free some space or record elsewhere with --out")
    return free


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
    _fsync(partial)
    os.replace(partial, final)
    _fsync_dir(final.parent)
    return final


def recover_partial_episodes(folder: str | Path) -> list[str]:
    """Turn ``.partial`` files left by a crash into episodes; return one message per file handled.

    A readable partial file is copied up to the last step that every field has, marked
    ``recovered=True`` and renamed to ``episode_<N>.hdf5``; one without a complete step is removed;
    one that cannot be read at all is moved to ``<folder>/broken/``. Saved episodes are never touched.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    messages = []
    for partial in sorted(folder.iterdir(), key=lambda p: fmt.partial_index(p) or -1):
        index = fmt.partial_index(partial)
        if index is None or not partial.is_file():
            continue
        final = folder / fmt.episode_filename(index)
        if _in_use(partial):
            messages.append(f"left {partial.name} alone: another recorder is writing it")
            continue
        try:
            if final.exists():
                raise DataError(f"{final.name} already exists")
            steps, seconds = _recover(partial, final)
        except Exception as exc:  # noqa: BLE001 - anything unreadable is set aside, never deleted
            target = _move_aside(partial, folder / BROKEN_DIR)
            messages.append(f"moved {partial.name} to {target.parent.name}/: it cannot be recovered "
                            f"({_reason(exc)})")
            continue
        if steps == 0:
            partial.unlink(missing_ok=True)
            messages.append(f"removed {partial.name}: the interrupted recording held no complete step")
        else:
            partial.unlink(missing_ok=True)
            took = f", {seconds:.1f} s" if seconds is not None else ""
            messages.append(f"recovered {final.name} from an interrupted recording ({steps} steps{took})")
    return messages


# -- recovery internals ------------------------------------------------------------------------------
def _open_partial(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError:
        # A writer killed in SWMR mode leaves the "open for writing" flag set; SWMR readers ignore it.
        return h5py.File(path, "r", libver="latest", swmr=True)


def _per_step_keys(f: h5py.File) -> list[str]:
    keys = [k for k in (fmt.ACTION, fmt.QPOS, fmt.QVEL, fmt.DONE) if k in f]
    for group in (fmt.IMAGES, fmt.TIMESTAMPS):
        if group in f:
            keys += [f"{group}/{name}" for name in f[group]]
    if fmt.OBJECTS in f:
        keys += [f"{fmt.OBJECTS}/{name}/{box}" for name in f[fmt.OBJECTS] for box in f[fmt.OBJECTS][name]]
    keys += fmt.extra_step_names(f)
    return keys


def _consistent_length(f: h5py.File) -> int:
    """Number of leading steps present in every field (rows a crash left half-written excluded)."""
    keys = _per_step_keys(f)
    if fmt.QPOS not in f or fmt.ACTION not in f:
        raise DataError("it lacks the episode datasets")
    if f[fmt.QPOS].shape[0] == 0:
        return 0  # stopped before its first step was written
    if not any(k.startswith(fmt.IMAGES) for k in keys):
        raise DataError("it has steps but no images")
    n = min(int(f[k].shape[0]) for k in keys)
    if fmt.COMPRESS_LEN in f:
        n = min(n, int(f[fmt.COMPRESS_LEN].shape[1]))

    cams = list(f[fmt.IMAGES])
    order = ([str(c) for c in f.attrs["camera_names"]] if "camera_names" in f.attrs else cams)

    def complete(t: int) -> bool:
        for key in (fmt.ACTION, fmt.QPOS, fmt.ROBOT_TIMESTAMPS):
            if key in f and not np.all(np.isfinite(f[key][t])):
                return False
        for cam in cams:
            ds = f[f"{fmt.IMAGES}/{cam}"]
            if (ds.ndim == 2 and fmt.COMPRESS_LEN in f and cam in order
                    and not f[fmt.COMPRESS_LEN][order.index(cam), t] > 0):
                return False
            # A frame whose first chunk was never written reads back as zeros: not a real frame.
            if ds.id.get_chunk_info_by_coord((t,) + (0,) * (ds.ndim - 1)).byte_offset is None:
                return False
        return True

    while n > 0 and not complete(n - 1):
        n -= 1
    return n


def _recover(partial: Path, final: Path) -> tuple[int, float | None]:
    tmp = partial.with_name(partial.name + ".recovering")
    with _open_partial(partial) as src:
        n = _consistent_length(src)
        if n == 0:
            return 0, None
        try:
            with h5py.File(tmp, "w", libver="latest") as dst:
                _copy_prefix(src, dst, n)
                for key, value in src.attrs.items():
                    dst.attrs[key] = value
                dst.attrs["recovered"] = True
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finalize_episode(tmp, final, {})
    with h5py.File(final, "r") as f:
        seconds = float(f.attrs["duration_s"]) if "duration_s" in f.attrs else None
    return n, seconds


def _copy_prefix(src: h5py.File, dst: h5py.File, n: int) -> None:
    """Copy the first ``n`` steps of every per-step dataset (and everything else as it is)."""
    row_width = None
    if fmt.COMPRESS_LEN in src:
        lens = src[fmt.COMPRESS_LEN][:, :n]
        dst.create_dataset(fmt.COMPRESS_LEN, data=lens, maxshape=(lens.shape[0], None),
                           chunks=(lens.shape[0], _STATE_CHUNK_ROWS))
        row_width = max(1, int(lens.max()))
    for key in _per_step_keys(src):
        ds = src[key]
        shape = list(ds.shape)
        shape[0] = n
        if ds.ndim == 2 and key.startswith(fmt.IMAGES) and row_width is not None:
            shape[1] = min(shape[1], row_width)
        chunks = (ds.chunks[0], *[min(c, s) for c, s in zip(ds.chunks[1:], shape[1:])])
        out = dst.create_dataset(key, shape=tuple(shape), maxshape=(None, *shape[1:]), dtype=ds.dtype,
                                 chunks=chunks, compression=ds.compression, fillvalue=ds.fillvalue)
        for name, value in ds.attrs.items():
            out.attrs[name] = value
        step = max(1, 2**24 // max(1, int(np.prod(shape[1:])) * ds.dtype.itemsize))  # ~16 MB blocks
        for start in range(0, n, step):
            stop = min(n, start + step)
            out[start:stop] = ds[(slice(start, stop), *[slice(0, s) for s in shape[1:]])]
    if fmt.GOAL_IMAGES in src:
        src.copy(src[fmt.GOAL_IMAGES], dst, name=fmt.GOAL_IMAGES)


def _try_lock(path: Path) -> int | None:
    """An exclusive advisory lock on ``path`` (None if it cannot be had); released by closing the fd."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no protection against a second recorder, nothing else changes
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _in_use(path: Path) -> bool:
    """True while a live writer holds ``path`` (our lock in SWMR mode, HDF5's own lock before)."""
    fd = _try_lock(path)
    if fd is None:
        try:
            import fcntl  # noqa: F401
        except ImportError:
            return False
        return path.exists()
    os.close(fd)
    return False


def _move_aside(path: Path, broken: Path) -> Path:
    broken.mkdir(parents=True, exist_ok=True)
    target = broken / path.name
    k = 1
    while target.exists():
        target = broken / f"{path.name}.{k}"
        k += 1
    os.replace(path, target)
    for leftover in path.parent.glob(path.name + ".recovering"):
        leftover.unlink(missing_ok=True)
    return target


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


# -- small utilities -------------------------------------------------------------------------------
def _series(f: h5py.File, key: str, row_shape: tuple[int, ...], dtype: Any, fill: Any,
            chunk_rows: int = _STATE_CHUNK_ROWS) -> h5py.Dataset:
    return f.create_dataset(key, shape=(0, *row_shape), maxshape=(None, *row_shape), dtype=dtype,
                            chunks=(chunk_rows, *row_shape), fillvalue=fill)


def _check_shape(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or shape[2] != 3 or shape[0] <= 0 or shape[1] <= 0:
        raise UserError(f"camera '{name}': image shape must be (H, W, 3), got {shape}")
    return shape  # type: ignore[return-value]


def _check_box_objects(box_objects: Mapping[str, Sequence[str]],
                       camera_shapes: Mapping[str, tuple[int, int, int]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for cam, names in box_objects.items():
        if cam not in camera_shapes:
            raise UserError(f"object boxes for camera '{cam}', which the episode does not record "
                            f"(cameras: {', '.join(camera_shapes)})")
        names = [str(n) for n in names]
        bad = [n for n in names if not n or "/" in n or n.startswith(".")]
        if bad or len(set(names)) != len(names):
            raise UserError(f"object names must be unique, non-empty and without '/', got {names}")
        out[cam] = names
    return out


def _check_extra_datasets(extras: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for name, shape in extras.items():
        problem = fmt.check_extra_name(name)
        if problem is not None:
            raise UserError(f"extra per-step dataset: {problem}")
        try:
            row = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(v) for v in shape)
        except (TypeError, ValueError):
            row = (0,)
        if any(v <= 0 for v in row):  # () is fine: one number per step
            raise UserError(f"extra per-step dataset {name!r}: row shape must be positive sizes, got {shape!r}")
        out[name] = row
    return out


def _vector(name: str, value: Any, dim: int) -> np.ndarray:
    out = np.asarray(value, dtype=np.float32).reshape(-1)
    if out.shape != (dim,):
        raise DataError(f"{name} has {out.size} values; this episode stores {dim}")
    return out


def prepare_folder(folder: str | Path, option: str = "--out") -> Path:
    """Create ``folder`` (with its parents) and check it is writable; raises :class:`UserError`
    naming the folder and the command-line ``option`` that chooses another."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {folder} ({exc.strerror or exc}); "
                        f"choose another with {option}") from None
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; choose another with {option}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"the output folder {folder} is not writable; fix its permissions or choose "
                        f"another with {option}")
    return folder


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
