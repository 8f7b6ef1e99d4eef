"""Crash recovery: turn the ``.partial`` files an interrupted recording left into episodes.

The writer streams into ``episode_<N>.hdf5.partial`` in HDF5's SWMR mode, so after a crash the
file is readable up to its last flush. :func:`recover_partial_episodes` keeps the steps that every
field has, and sets aside what cannot be read at all; it never touches a saved episode nor a
partial file that a live recorder still holds.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from robokit.episodes import format as fmt
from robokit.episodes.files import BROKEN_DIR, in_use, move_aside, writer_lock_path
from robokit.episodes.masks import MASKS
from robokit.episodes.storage import STATE_CHUNK_ROWS, finalize_episode
from robokit.errors import DataError

__all__ = ["recover_partial_episodes"]


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
        if in_use(partial):
            messages.append(f"left {partial.name} alone: another recorder is writing it")
            continue
        try:
            if final.exists():
                raise DataError(f"{final.name} already exists")
            steps, seconds = _recover(partial, final)
        except Exception as exc:  # noqa: BLE001 - anything unreadable is set aside, never deleted
            target = move_aside(partial, folder / BROKEN_DIR)
            _recovering(partial).unlink(missing_ok=True)
            messages.append(f"moved {partial.name} to {target.parent.name}/: it cannot be recovered "
                            f"({_reason(exc)})")
            continue
        partial.unlink(missing_ok=True)
        writer_lock_path(partial).unlink(missing_ok=True)  # left by the recorder that crashed
        if steps == 0:
            messages.append(f"removed {partial.name}: the interrupted recording held no complete step")
        else:
            took = f", {seconds:.1f} s" if seconds is not None else ""
            messages.append(f"recovered {final.name} from an interrupted recording ({steps} steps{took})")
    return messages


def _recovering(partial: Path) -> Path:
    """The temporary copy a recovery builds before renaming it to the episode."""
    return partial.with_name(partial.name + ".recovering")


def _open_partial(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError:
        # A writer killed in SWMR mode leaves the "open for writing" flag set; SWMR readers ignore it.
        return h5py.File(path, "r", libver="latest", swmr=True)


def _per_step_keys(f: h5py.File) -> list[str]:
    keys = [k for k in (fmt.ACTION, fmt.QPOS, fmt.QVEL, fmt.DONE) if k in f]
    for group in (fmt.IMAGES, fmt.TIMESTAMPS, MASKS):
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
    tmp = _recovering(partial)
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
                           chunks=(lens.shape[0], STATE_CHUNK_ROWS))
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


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
