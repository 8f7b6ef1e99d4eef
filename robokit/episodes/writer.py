"""Streaming, crash-safe episode writer.

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
  that the file on disk is readable at every moment (:mod:`robokit.episodes.storage`). A ``kill -9``
  therefore loses only the steps not yet flushed: about ``queue_s + flush_interval_s`` (0.75 s by
  default).
- The episode is ``episode_<N>.hdf5.partial`` until :meth:`EpisodeWriter.save` renames it atomically;
  :func:`~robokit.episodes.recovery.recover_partial_episodes` turns what a crash left into a complete
  episode (truncated to the last step every field has) or moves it aside to ``broken/`` if it cannot
  be read at all.
- Free disk space is checked when the writer starts and every second while it writes; below
  ``min_free_bytes`` :meth:`append` raises :class:`~robokit.episodes.files.LowDiskSpace` and
  :meth:`save` still works.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robokit.episodes import format as fmt
from robokit.episodes.files import (
    DEFAULT_MIN_FREE_BYTES,
    LowDiskSpace,
    check_free_space,
    hold_writer_lock,
    prepare_folder,
    release_writer_lock,
)
from robokit.episodes.masks import encode_instances
from robokit.episodes.storage import EpisodeFile, EpisodeStep, ExtraUpdate, finalize_episode
from robokit.errors import DataError, UserError

__all__ = ["EmptyEpisode", "EpisodeStep", "EpisodeWriter"]

log = logging.getLogger(__name__)

_DISK_CHECK_INTERVAL_S = 1.0


class EmptyEpisode(UserError):
    """:meth:`EpisodeWriter.save` was called before any step was appended."""


_STOP = object()
_NO_BOX = np.full(4, -1, dtype=np.int32)


class EpisodeWriter:
    """Streams one episode into ``<folder>/episode_<index>.hdf5.partial`` (see module docs).

    ``camera_shapes`` maps camera name -> (H, W, 3); ``attrs`` must give ``fps`` and should give
    ``task``, ``robot``, ``sim`` and ``source``. ``compress`` is "none", "lzf"
    (lossless, HDF5 filter) or "jpeg" (ALOHA-compatible padded JPEG rows, ``jpeg_quality``).
    ``box_objects`` (camera -> object names) declares the per-step object boxes the episode
    stores in ``/objects/<name>/box_<cam>``. ``extra_step_datasets`` (name -> row shape) declares
    extra per-step float32 datasets ``/<name>`` of shape (T, *row shape), NaN where not given.
    ``mask_instances`` (``(name, kind)`` per instance id from 1) makes the episode store a uint8
    (H, W) instance mask per step and camera, given to every :meth:`append`
    (:mod:`robokit.episodes.masks`).
    """

    def __init__(
        self,
        folder: str | Path,
        index: int,
        camera_shapes: Mapping[str, Sequence[int]],
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
        mask_instances: Sequence[tuple[str, str]] | None = None,
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
        self.mask_table = encode_instances(mask_instances) if mask_instances is not None else None
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
        # Held from before the file exists until it is saved, discarded or left for recovery.
        self._lock = hold_writer_lock(self.partial_path)
        try:
            self._file = EpisodeFile(self.partial_path, self.camera_shapes, self.state_dim, self.action_dim,
                                     attrs, compress, self.jpeg_quality, self.box_objects, self.extra_shapes,
                                     self.mask_table)
        except BaseException:
            self._release()
            raise

        self._appended = 0
        self._error: BaseException | None = None
        self._low_disk: LowDiskSpace | None = None
        self._finished = False
        self._queue: queue.Queue = queue.Queue(maxsize=max(2, math.ceil(queue_s * float(fps))))
        self._thread = threading.Thread(target=self._run, name=f"episode-writer-{self.index}", daemon=True)
        self._thread.start()

    # -- public API ------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """Steps appended so far (some may still be on their way to disk)."""
        return self._appended

    @property
    def steps_written(self) -> int:
        """Steps the writer thread has put into the file so far (on disk after its next flush)."""
        return self._file.written

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
        masks: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Queue one step. Blocks only if the disk falls behind by more than ``queue_s``.

        ``object_boxes`` gives camera -> object -> (x0, y0, x1, y1) pixel box (None: not visible) for
        the objects declared in ``box_objects``; a missing one is stored as not visible.
        ``extras`` gives name -> array of the declared row shape for the ``extra_step_datasets``
        (copied; None or a missing name: a NaN row). ``masks`` gives camera -> uint8 (H, W)
        instance ids, required for every camera when the writer stores masks.
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
            if self.mask_table is not None:
                step.masks[cam] = self._mask(cam, (masks or {}).get(cam), shape[:2])
        self._enqueue(step)
        self._appended += 1

    def _mask(self, cam: str, mask: Any, size: tuple[int, ...]) -> np.ndarray:
        if mask is None:
            raise DataError(f"step {self._appended} has no mask from camera '{cam}' (this episode stores masks)")
        mask = np.asarray(mask)
        if mask.shape != size or mask.dtype != np.uint8:
            raise DataError(f"camera '{cam}' gave a {mask.dtype} mask of shape {mask.shape}; this episode "
                            f"stores uint8 {size} instance ids")
        return mask.copy()

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
        self._enqueue(ExtraUpdate(int(row), name, self._extra_row(name, values, int(row))))

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
        :func:`~robokit.episodes.recovery.recover_partial_episodes`).
        """
        self._stop_thread(drain=True)
        try:
            if self._error is not None:
                self._close_file()
                raise DataError(f"writing {self.partial_path} failed ({self._error}); the steps written "
                                "so far stay in the .partial file and the next `robokit record` into this "
                                "folder recovers them") from self._error
            self._close_file()
            if self._file.written == 0:
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
        finally:
            self._release()

    def discard(self) -> None:
        """Stop writing and delete the partial file."""
        self._stop_thread(drain=False)
        self._close_file()
        self.partial_path.unlink(missing_ok=True)
        self._release()

    def close(self) -> None:
        """Stop writing and close the file, leaving the ``.partial`` file for recovery. Idempotent."""
        if not self._finished:
            self._stop_thread(drain=True)
        self._close_file()
        self._release()

    def _release(self) -> None:
        release_writer_lock(self.partial_path, self._lock)
        self._lock = None

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
                    self._file.write(batch)
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
        try:
            self._file.close()
        except OSError as exc:  # disk full while flushing the last metadata
            if self._error is None:
                self._error = exc


def _check_shape(name: str, shape: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(int(v) for v in shape)
    if len(values) != 3 or values[2] != 3 or values[0] <= 0 or values[1] <= 0:
        raise UserError(f"camera '{name}': image shape must be (H, W, 3), got {values}")
    return values[0], values[1], values[2]


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
