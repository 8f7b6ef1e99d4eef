"""Read episodes of every layout robokit knows behind one API.

    with open_episode("data/pick/episode_0.hdf5") as ep:
        qpos = ep.qpos()                 # float32 (T, S)
        frames = ep.images("top")        # uint8 (T, H, W, 3) RGB

Layouts: our v1 files, original ACT files, ALOHA's JPEG-compressed files and the files of the
original Franka recorder (``live-record``; see :mod:`robokit.episodes.layouts`). Whatever the layout, arrays come back as float32 state
and action, boolean done flags and RGB uint8 images. A file that is not an episode, or whose fields
disagree, raises :class:`~robokit.errors.DataError` naming the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from robokit.episodes import format as fmt
from robokit.episodes import layouts
from robokit.episodes.masks import MASK_INSTANCES, MASKS, Instance, check_masks, decode_instances
from robokit.errors import DataError

__all__ = ["Episode", "list_episodes", "open_episode"]


def list_episodes(folder: str | Path) -> list[Path]:
    """``episode_<N>.hdf5`` files of a dataset folder, sorted by N.

    Raises DataError if the folder does not exist or holds no episode (``.partial`` files of an
    unfinished recording are not episodes).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such dataset folder")
    found = [(fmt.episode_index(p), p) for p in folder.iterdir() if p.is_file()]
    episodes = [p for n, p in sorted((n, p) for n, p in found if n is not None)]
    if not episodes:
        partials = [p.name for p in folder.iterdir() if fmt.partial_index(p) is not None]
        hint = (f" (only unfinished recordings: {', '.join(sorted(partials))}; `robokit record --out "
                f"{folder}` recovers them)") if partials else ""
        raise DataError(f"{folder}: no episode_<N>.hdf5 files{hint}")
    return episodes


def open_episode(path: str | Path) -> Episode:
    """Open one episode file for reading; use as a context manager (``with open_episode(p) as ep``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such episode file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give one episode_<N>.hdf5 file")
    if path.name.endswith(fmt.PARTIAL_SUFFIX):
        raise DataError(f"{path}: an unfinished recording; `robokit record --out {path.parent}` "
                        "recovers it into a complete episode")
    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({_short(exc)}); the file is corrupt, "
                        "truncated or of another type") from None
    try:
        return Episode(path, file)
    except BaseException:
        file.close()
        raise


class Episode:
    """One open episode file. Prefer :func:`open_episode` to constructing this directly.

    Attributes: ``layout`` ("robokit-v1" | "act" | "aloha-jpeg" | "live-record"), ``length`` (T),
    ``camera_names``, ``state_dim``, ``action_dim``, ``fps`` (None if the file does not say),
    ``task`` (None if unknown), ``success`` (None if unknown), ``attrs`` (all file attributes as
    plain Python values), ``image_compression`` ("none" | "lzf" | "jpeg" | other HDF5 filter name).
    """

    def __init__(self, path: Path, file: h5py.File) -> None:
        self.path = Path(path)
        self._f = file
        self.attrs: dict[str, Any] = {k: _plain(v) for k, v in file.attrs.items()}
        self.layout = layouts.detect_layout(file, self.attrs, self.path)
        self._jpeg = self.layout == fmt.LAYOUT_ALOHA_JPEG or (
            self.layout == fmt.LAYOUT_V1 and self.attrs.get("image_compression") == "jpeg")
        self._load_structure()

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> Episode:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file. Idempotent."""
        if self._f.id.valid:
            self._f.close()

    def __repr__(self) -> str:
        return (f"Episode({self.path.name}, layout={self.layout}, length={self.length}, "
                f"cameras={self.camera_names})")

    # -- structure -------------------------------------------------------------------------------
    def _load_structure(self) -> None:
        f, name = self._f, self.path
        for field in (fmt.ACTION, fmt.QPOS, fmt.IMAGES):
            if field not in f:
                raise DataError(f"{name}: missing /{field}")
        qpos, action = f[fmt.QPOS], f[fmt.ACTION]
        for field, ds in ((fmt.QPOS, qpos), (fmt.ACTION, action)):
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 2 or ds.dtype.kind not in "fiu":
                raise DataError(f"{name}: /{field} must be a 2-D numeric dataset (T, D), "
                                f"got {_describe(ds)}")
        self.length = int(qpos.shape[0])
        self.state_dim = int(qpos.shape[1]) - layouts.marker_columns(self.layout)
        self.action_dim = int(action.shape[1]) - layouts.marker_columns(self.layout)

        if self.layout == fmt.LAYOUT_V1:
            names = self.attrs.get("camera_names")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DataError(f"{name}: attribute 'camera_names' must be a list of names")
            self.camera_names = list(names)
        else:
            self.camera_names = list(f[fmt.IMAGES].keys())
        if not self.camera_names:
            raise DataError(f"{name}: the episode has no camera")

        # Every per-step field must have T rows; a mismatch means a broken or hand-edited file.
        per_step = [fmt.ACTION] + ([fmt.QVEL] if fmt.QVEL in f else [])
        for cam in self.camera_names:
            key = f"{fmt.IMAGES}/{cam}"
            if key not in f:
                raise DataError(f"{name}: camera '{cam}' is listed but /{key} is missing")
            ds = f[key]
            want_ndim = 2 if self._jpeg else 4
            if not isinstance(ds, h5py.Dataset) or ds.ndim != want_ndim or ds.dtype != np.uint8 or (
                    want_ndim == 4 and ds.shape[3] != 3):
                expect = "(T, L) uint8 JPEG rows" if self._jpeg else "(T, H, W, 3) uint8"
                raise DataError(f"{name}: /{key} must be {expect}, got {_describe(ds)}")
            per_step.append(key)
        if self.layout == fmt.LAYOUT_V1:
            if fmt.DONE in f:
                per_step.append(fmt.DONE)
            if fmt.ROBOT_TIMESTAMPS in f:
                per_step.append(fmt.ROBOT_TIMESTAMPS)
            for cam in self.camera_names:
                if f"{fmt.TIMESTAMPS}/{cam}" in f:
                    per_step.append(f"{fmt.TIMESTAMPS}/{cam}")
            per_step += self._box_keys()
            per_step += self.step_extra_names
        for key in per_step:
            ds = f[key]
            if not isinstance(ds, h5py.Dataset) or ds.ndim < 1 or ds.shape[0] != self.length:
                raise DataError(f"{name}: /{key} has {_describe(ds)}, but /{fmt.QPOS} has "
                                f"{self.length} steps")
        if self._jpeg and self.layout == fmt.LAYOUT_V1:
            lens = f.get(fmt.COMPRESS_LEN)
            if lens is None or lens.shape != (len(self.camera_names), self.length):
                raise DataError(f"{name}: /{fmt.COMPRESS_LEN} must be ({len(self.camera_names)}, "
                                f"{self.length}), got {_describe(lens)}")
        self._compress_len = (self._read(fmt.COMPRESS_LEN).astype(np.int64)
                              if self._jpeg and fmt.COMPRESS_LEN in f
                              and f[fmt.COMPRESS_LEN].shape == (len(self.camera_names), self.length)
                              else None)
        self._shapes: dict[str, tuple[int, int, int]] = {}

    # -- metadata --------------------------------------------------------------------------------
    @property
    def step_extra_names(self) -> list[str]:
        """Names of the extra per-step datasets (``/<name>``, e.g. ``predicted_chunks``); v1 only."""
        return fmt.extra_step_names(self._f) if self.layout == fmt.LAYOUT_V1 else []

    @property
    def fps(self) -> float | None:
        value = self.attrs.get("fps")
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def task(self) -> str | None:
        value = self.attrs.get("task")
        return value if isinstance(value, str) and value else None

    @property
    def success(self) -> bool | None:
        value = self.attrs.get("success")
        return bool(value) if isinstance(value, (bool, int)) else None

    @property
    def image_compression(self) -> str:
        if self._jpeg:
            return "jpeg"
        ds = self._f[f"{fmt.IMAGES}/{self.camera_names[0]}"]
        return ds.compression or "none"

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def duration_s(self) -> float | None:
        """Seconds from the first to the last robot reading (or length / fps without timestamps)."""
        ts = self.timestamps("robot")
        if ts is not None and self.length > 1 and np.all(np.isfinite(ts[[0, -1]])):
            return float(ts[-1] - ts[0])
        return self.length / self.fps if self.fps else None

    def image_shape(self, cam: str) -> tuple[int, int, int]:
        """(H, W, 3) of the decoded frames of ``cam``."""
        self._check_cam(cam)
        if cam not in self._shapes:
            ds = self._f[f"{fmt.IMAGES}/{cam}"]
            if not self._jpeg:
                self._shapes[cam] = tuple(int(v) for v in ds.shape[1:])  # type: ignore[assignment]
            elif "image_shape" in ds.attrs:
                self._shapes[cam] = tuple(int(v) for v in ds.attrs["image_shape"])  # type: ignore[assignment]
            elif self.length:
                self._shapes[cam] = self.image(cam, 0).shape  # type: ignore[assignment]
            else:
                raise DataError(f"{self.path}: /{fmt.IMAGES}/{cam} is empty; its image size is unknown")
        return self._shapes[cam]

    # -- arrays ----------------------------------------------------------------------------------
    def qpos(self) -> np.ndarray:
        """Measured state, float32 (T, S). For ``live-record`` files the end-marker column is dropped."""
        return self._state(fmt.QPOS)

    def action(self) -> np.ndarray:
        """Commanded action, float32 (T, A)."""
        return self._state(fmt.ACTION)

    def qvel(self) -> np.ndarray | None:
        """Measured velocities, float32 (T, S), or None if the file has none."""
        return self._state(fmt.QVEL) if fmt.QVEL in self._f else None

    def done(self) -> np.ndarray:
        """bool (T,): True on the final frames (all False if the file does not say)."""
        if self.layout == fmt.LAYOUT_LIVE_RECORD:
            return layouts.done_from_marker(self._read(fmt.QPOS))
        if fmt.DONE in self._f:
            return self._read(fmt.DONE).astype(bool).reshape(self.length)
        return np.zeros(self.length, dtype=bool)

    def timestamps(self, name: str) -> np.ndarray | None:
        """float64 (T,) times of ``"robot"`` or a camera name; None if the file has none."""
        key = f"{fmt.TIMESTAMPS}/{name}"
        if self.layout != fmt.LAYOUT_V1 or key not in self._f:
            return None
        return self._read(key).astype(np.float64)

    def image(self, cam: str, t: int) -> np.ndarray:
        """Frame ``t`` of ``cam``: uint8 (H, W, 3) RGB."""
        self._check_cam(cam)
        if not -self.length <= t < self.length:
            raise IndexError(f"step {t} out of range for an episode of {self.length} steps")
        t = t % self.length
        if self._jpeg:
            return self._decode(cam, t)
        image = self._read(f"{fmt.IMAGES}/{cam}", t)
        return self._to_rgb(image)

    def images(self, cam: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start..stop`` of ``cam``: uint8 (n, H, W, 3) RGB."""
        self._check_cam(cam)
        start, stop, _ = slice(start, stop).indices(self.length)
        if self._jpeg:
            out = np.empty((max(stop - start, 0), *self.image_shape(cam)), dtype=np.uint8)
            for i, t in enumerate(range(start, stop)):
                out[i] = self._decode(cam, t)
            return out
        return self._to_rgb(self._read(f"{fmt.IMAGES}/{cam}", slice(start, stop)))

    def object_boxes(self, cam: str) -> dict[str, np.ndarray]:
        """Per-step pixel boxes of the objects in ``cam``: name -> int32 (T, 4) [x0, y0, x1, y1].

        Rows are -1 where the object was outside the image (occlusion is not considered); an empty
        dict when the file has no boxes for ``cam`` (only simulated robokit recordings have them).
        """
        self._check_cam(cam)
        boxes = {}
        for key in self._box_keys():
            _, name, dataset = key.split("/")
            if dataset != f"box_{cam}":
                continue
            values = self._read(key)
            if values.shape != (self.length, 4) or values.dtype.kind not in "iu":
                raise DataError(f"{self.path}: /{key} must be int32 ({self.length}, 4), got "
                                f"{_describe(self._f[key])}")
            boxes[name] = values.astype(np.int32)
        return boxes

    def step_extra(self, name: str) -> np.ndarray | None:
        """Extra per-step dataset ``/<name>`` as float32 (T, ...), or None if the file has none.

        NaN rows are steps the recorder gave no value for.
        """
        if name not in self.step_extra_names:
            return None
        ds = self._f[name]
        if not isinstance(ds, h5py.Dataset) or ds.dtype.kind != "f":
            raise DataError(f"{self.path}: /{name} must be a float32 (T, ...) dataset, got {_describe(ds)}")
        return np.asarray(self._read(name), dtype=np.float32)

    def predicted_chunks(self) -> np.ndarray | None:
        """A deploy rollout's predicted action chunks: float32 (T, H, A), or None if not recorded.

        Row t is the chunk the policy predicted from the observation of step t (de-normalised joint
        targets + gripper; its row 0 is the action for step t); rows where no query was made at
        step t are all NaN.
        """
        chunks = self.step_extra(fmt.PREDICTED_CHUNKS)
        if chunks is not None and (chunks.ndim != 3 or chunks.shape[2] != self.action_dim):
            raise DataError(f"{self.path}: /{fmt.PREDICTED_CHUNKS} must be ({self.length}, H, {self.action_dim}) "
                            f"(one chunk of actions per step), got {_describe(self._f[fmt.PREDICTED_CHUNKS])}")
        return chunks

    @property
    def mask_cameras(self) -> list[str]:
        """The cameras with per-step instance masks (``/observations/masks/<cam>``)."""
        group = self._f.get(MASKS)
        return [c for c in self.camera_names if isinstance(group, h5py.Group) and c in group]

    @property
    def mask_instances(self) -> list[Instance]:
        """The masks' id table (id 1 is the first entry; 0 is the background); empty without masks."""
        text = self.attrs.get(MASK_INSTANCES)
        return [] if text is None else decode_instances(text, str(self.path))

    def masks(self, cam: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Instance ids uint8 (n, H, W) of ``cam`` for steps ``start:stop`` (see :mod:`robokit.episodes.masks`)."""
        if cam not in self.mask_cameras:
            raise DataError(f"{self.path}: no masks for camera '{cam}' (masks: {', '.join(self.mask_cameras) or 'none'}); "
                            "record with --segmentation")
        key, (h, w, _) = f"{MASKS}/{cam}", self.image_shape(cam)
        ds = self._f[key]
        if ds.dtype != np.uint8 or ds.shape != (self.length, h, w):
            raise DataError(f"{self.path}: /{key} is {_describe(ds)}, expected uint8 ({self.length}, {h}, {w}): "
                            "one mask per step at the image's size")
        return self._read(key, slice(start, stop))

    def goal_image(self, cam: str) -> np.ndarray | None:
        """The stored goal frame of ``cam`` (uint8 (H, W, 3) RGB) or None if there is none."""
        key = f"{fmt.GOAL_IMAGES}/{cam}"
        if key not in self._f:
            return None
        return np.asarray(self._read(key), dtype=np.uint8)

    # -- validation ------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Deeper checks than opening does: dtypes, attributes, timestamps, decodable frames.

        Returns the problems found (empty if none), each naming the file and the field.
        """
        name, f = self.path, self._f
        problems: list[str] = []
        if self.length == 0:
            problems.append(f"{name}: the episode has no steps")
        for field in (fmt.QPOS, fmt.ACTION, fmt.QVEL):
            if field in f:
                try:
                    values = self._read(field)
                except DataError as exc:
                    problems.append(str(exc))
                    continue
                if not np.all(np.isfinite(values)):
                    problems.append(f"{name}: /{field} contains NaN or infinite values")
        if self.layout == fmt.LAYOUT_V1:
            problems += self._check_v1()
        for cam in self.camera_names:
            for t in sorted({0, self.length - 1}) if self.length else []:
                try:
                    self.image(cam, t)
                except DataError as exc:
                    problems.append(str(exc))
        return problems + check_masks(self)

    def _check_v1(self) -> list[str]:
        name, f, attrs = self.path, self._f, self.attrs
        problems = [f"{name}: attribute '{key}' is missing" for key in fmt.REQUIRED_ATTRS
                    if key not in attrs]
        if attrs.get("image_compression", "none") not in fmt.COMPRESSIONS:
            problems.append(f"{name}: attribute 'image_compression' is {attrs['image_compression']!r}; "
                            f"expected one of {', '.join(fmt.COMPRESSIONS)}")
        if "fps" in attrs and self.fps is None:
            problems.append(f"{name}: attribute 'fps' must be a positive number, got {attrs['fps']!r}")
        for field, kind in ((fmt.QPOS, "float32"), (fmt.ACTION, "float32"), (fmt.QVEL, "float32"),
                            (fmt.DONE, "bool"), (fmt.ROBOT_TIMESTAMPS, "float64")):
            if field not in f:
                problems.append(f"{name}: /{field} is missing")
            elif f[field].dtype != np.dtype(kind):
                problems.append(f"{name}: /{field} is {f[field].dtype}, expected {kind}")
        for key in self._box_keys():
            ds = f[key]
            if ds.dtype != np.int32 or ds.shape != (self.length, 4):
                problems.append(f"{name}: /{key} is {_describe(ds)}, expected int32 ({self.length}, 4)")
        listed = attrs.get(fmt.EXTRA_STEP_DATASETS, [])
        for extra in [listed] if isinstance(listed, str) else listed:
            problem = fmt.check_extra_name(extra)
            if problem is not None:
                problems.append(f"{name}: attribute '{fmt.EXTRA_STEP_DATASETS}': {problem}")
            elif extra not in f:
                problems.append(f"{name}: /{extra} is listed in '{fmt.EXTRA_STEP_DATASETS}' but missing")
        for extra in self.step_extra_names:
            ds = f[extra]
            if ds.dtype != np.float32:
                problems.append(f"{name}: /{extra} is {_describe(ds)}, expected float32 ({self.length}, ...)")
            elif extra == fmt.PREDICTED_CHUNKS:
                try:
                    self.predicted_chunks()
                except DataError as exc:
                    problems.append(str(exc))
        for key in [fmt.ROBOT_TIMESTAMPS] + [f"{fmt.TIMESTAMPS}/{c}" for c in self.camera_names]:
            if key not in f:
                if key != fmt.ROBOT_TIMESTAMPS:
                    problems.append(f"{name}: /{key} is missing")
                continue
            ts = self._read(key)
            finite = ts[np.isfinite(ts)]
            if finite.size < ts.size:
                problems.append(f"{name}: /{key} has {ts.size - finite.size} missing (NaN) times")
            if finite.size > 1 and np.any(np.diff(finite) < 0):
                problems.append(f"{name}: /{key} goes back in time")
        return problems

    # -- helpers ---------------------------------------------------------------------------------
    def _box_keys(self) -> list[str]:
        """``objects/<name>/box_<cam>`` datasets of this file (v1 only) for its cameras."""
        group = self._f.get(fmt.OBJECTS) if self.layout == fmt.LAYOUT_V1 else None
        if not isinstance(group, h5py.Group):
            return []
        boxes = {f"box_{cam}" for cam in self.camera_names}
        return [f"{fmt.OBJECTS}/{name}/{key}" for name, obj in group.items() if isinstance(obj, h5py.Group)
                for key, ds in obj.items() if key in boxes and isinstance(ds, h5py.Dataset)]

    def _check_cam(self, cam: str) -> None:
        if cam not in self.camera_names:
            raise DataError(f"{self.path}: no camera '{cam}' (cameras: {', '.join(self.camera_names)})")

    def _read(self, key: str, sel: Any = ()) -> np.ndarray:
        try:
            return np.asarray(self._f[key][sel])
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{self.path}: cannot read /{key} ({_short(exc)}); the file is corrupt "
                            "or truncated") from None

    def _state(self, key: str) -> np.ndarray:
        values = self._read(key).astype(np.float32)
        return np.ascontiguousarray(layouts.state_columns(values, self.layout))

    def _to_rgb(self, image: np.ndarray) -> np.ndarray:
        return layouts.to_rgb(image, self.layout)

    def _decode(self, cam: str, t: int) -> np.ndarray:
        key = f"{fmt.IMAGES}/{cam}"
        if self._compress_len is not None:
            n = int(self._compress_len[self.camera_names.index(cam), t])
            row = self._read(key, (t, slice(0, n))) if n > 0 else np.zeros(0, np.uint8)
        else:  # ALOHA: the JPEG decoder stops at the end marker, the zero padding is ignored
            row = self._read(key, t)
        image = cv2.imdecode(row, cv2.IMREAD_COLOR) if row.size else None
        if image is None:
            raise DataError(f"{self.path}: /{key} step {t} is not a decodable JPEG image")
        # ALOHA and robokit encode RGB arrays as they are, so decoding gives RGB back.
        return image


def _plain(value: Any) -> Any:
    """HDF5 attribute -> plain Python value (str, bool, int, float, list)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _describe(ds: Any) -> str:
    if ds is None:
        return "nothing"
    if isinstance(ds, h5py.Dataset):
        return f"shape {ds.shape} {ds.dtype}"
    return type(ds).__name__


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."
