"""Which layout an episode file has, and what reading a foreign layout changes.

The reader gives every layout the same arrays; the differences it irons out live here:

- ``robokit-v1``: robokit's own files (``format`` attribute); read as they are.
- ``act`` / ``aloha-jpeg``: original ACT files and ALOHA's JPEG-compressed ones; read as they are.
- ``live-record``: files of the original Franka recorder (``live_record.py``): qpos (T, 8) whose
  8th column is a 0/1 end marker, ``/action`` identical to qpos, BGR frames. The marker column
  becomes the done flags and is dropped from state and action; frames are flipped to RGB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robokit.episodes import format as fmt
from robokit.errors import DataError

__all__ = ["detect_layout", "done_from_marker", "marker_columns", "state_columns", "to_rgb"]

def detect_layout(f: h5py.File, attrs: dict[str, Any], path: Path) -> str:
    """The layout of the open file ``f`` (one of :data:`~robokit.episodes.format.LAYOUTS`).

    Raises DataError naming ``path`` for a robokit file of another format or a newer version, and
    for a file without the datasets every layout has.
    """
    if "format" in attrs:
        if attrs["format"] != fmt.FORMAT_NAME:
            raise DataError(f"{path}: attribute 'format' is {attrs['format']!r}, not {fmt.FORMAT_NAME!r}")
        version = attrs.get("version")
        if not isinstance(version, int):
            raise DataError(f"{path}: attribute 'version' is missing or not an integer")
        if version > fmt.FORMAT_VERSION:
            raise DataError(f"{path}: episode format version {version} is newer than this robokit "
                            f"reads ({fmt.FORMAT_VERSION}); upgrade robokit")
        if version < 1:
            raise DataError(f"{path}: attribute 'version' is {version}; expected {fmt.FORMAT_VERSION}")
        return fmt.LAYOUT_V1
    for field in (fmt.ACTION, fmt.QPOS, fmt.IMAGES):
        if field not in f:
            raise DataError(f"{path}: not an episode file: no /{field} (expected a robokit, ACT or "
                            "ALOHA episode)")
    images = f[fmt.IMAGES]
    if not isinstance(images, h5py.Group) or len(images) == 0:
        raise DataError(f"{path}: /{fmt.IMAGES} holds no camera")
    first = next(iter(images.values()))
    # Some ALOHA forks set `compress` for gzip-filtered (T, H, W, 3) images: only 2-D rows are JPEG.
    if attrs.get("compress") and isinstance(first, h5py.Dataset) and first.ndim == 2:
        return fmt.LAYOUT_ALOHA_JPEG
    if _looks_like_live_record(f, path):
        return fmt.LAYOUT_LIVE_RECORD
    return fmt.LAYOUT_ACT


def _looks_like_live_record(f: h5py.File, path: Path) -> bool:
    """qpos == action, 8 columns, the 8th a 0/1 end marker, no qvel."""
    qpos, action = f[fmt.QPOS], f[fmt.ACTION]
    if fmt.QVEL in f or qpos.ndim != 2 or qpos.shape[1] != 8 or action.shape != qpos.shape:
        return False
    q, a = _read(qpos, path), _read(action, path)
    marker = q[:, 7]
    return bool(np.all((marker == 0) | (marker == 1)) and np.array_equal(q, a))


def _read(ds: h5py.Dataset, path: Path) -> np.ndarray:
    try:
        return np.asarray(ds[()])
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read {ds.name} ({str(exc).strip()[:160]}); the file is corrupt "
                        "or truncated") from None


def marker_columns(layout: str) -> int:
    """Trailing columns of qpos/action that are not state (the end marker of ``live-record``)."""
    return 1 if layout == fmt.LAYOUT_LIVE_RECORD else 0


def state_columns(values: np.ndarray, layout: str) -> np.ndarray:
    """qpos/action rows without the columns that are not state."""
    drop = marker_columns(layout)
    return values[:, : values.shape[1] - drop] if drop else values


def done_from_marker(qpos: np.ndarray) -> np.ndarray:
    """bool (T,) done flags of a ``live-record`` file from its raw (T, 8) qpos."""
    return qpos[:, 7] > 0.5


def to_rgb(images: np.ndarray, layout: str) -> np.ndarray:
    """Frames as RGB: ``live-record`` files hold the BGR frames OpenCV captured."""
    if layout == fmt.LAYOUT_LIVE_RECORD:
        return np.ascontiguousarray(images[..., ::-1])
    return images
