"""File-system helpers of episode folders: numbering, free space, durable renames and writer locks.

Nothing here knows HDF5; the writer and the crash recovery both build on these.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from robokit.episodes import format as fmt
from robokit.errors import DataError, UserError

__all__ = [
    "BROKEN_DIR",
    "DEFAULT_MIN_FREE_BYTES",
    "LowDiskSpace",
    "check_free_space",
    "hold_writer_lock",
    "in_use",
    "move_aside",
    "next_episode_index",
    "prepare_folder",
    "release_writer_lock",
    "replace_durably",
    "saved_episodes",
    "try_lock",
    "writer_lock_path",
]

#: Free space below which a recording is refused (and stopped when it falls below while recording).
DEFAULT_MIN_FREE_BYTES = 200 * 2**20
#: Sub-folder of a dataset folder where unrecoverable ``.partial`` files are moved.
BROKEN_DIR = "broken"


class LowDiskSpace(UserError):
    """The output folder's disk has less free space than the writer needs."""


def saved_episodes(folder: str | Path) -> list[Path]:
    """The ``episode_<N>.hdf5`` files of ``folder``, sorted by N (none if it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(fmt.episode_index(p), p) for p in folder.iterdir() if p.is_file()]
    return [p for n, p in sorted((n, p) for n, p in found if n is not None)]


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


def replace_durably(src: Path, dst: Path) -> Path:
    """Rename ``src`` to ``dst`` atomically, with both the file and the rename on disk when it returns."""
    _fsync(src)
    os.replace(src, dst)
    _fsync_dir(dst.parent)
    return dst


def move_aside(path: Path, broken: Path) -> Path:
    """Move ``path`` into the folder ``broken`` under a name not taken yet; returns the new path."""
    broken.mkdir(parents=True, exist_ok=True)
    target = broken / path.name
    k = 1
    while target.exists():
        target = broken / f"{path.name}.{k}"
        k += 1
    os.replace(path, target)
    return target


def try_lock(path: Path) -> int | None:
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


def writer_lock_path(partial: Path) -> Path:
    """The lock file a writer holds for the whole life of ``partial``: ``<partial>.lock``."""
    return partial.with_name(partial.name + ".lock")


def hold_writer_lock(partial: Path) -> int | None:
    """Take the writer lock of ``partial`` before the file exists (None where flock is missing).

    Raises :class:`DataError` when another process holds it. The lock lives in its own file
    because HDF5 locks (and, in SWMR mode, unlocks) the episode file itself: a lock on that
    file could only be taken after HDF5 let go of its own, which left a moment in which a
    second recorder could take a live recording for a crashed one.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no protection against a second recorder, nothing else changes
        return None
    path = writer_lock_path(partial)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise DataError(f"another recorder is writing {partial.name} in {partial.parent}; record into "
                        "another folder, or wait until it has finished") from None
    return fd


def release_writer_lock(partial: Path, fd: int | None) -> None:
    """Remove the lock file and let the lock go (after the episode is saved, discarded or left)."""
    if fd is None:
        return
    writer_lock_path(partial).unlink(missing_ok=True)
    os.close(fd)


def in_use(path: Path) -> bool:
    """True while a live writer holds ``path``: its writer lock, or (files written before the lock
    file existed) an advisory lock on the file itself or HDF5's own."""
    lock = writer_lock_path(path)
    if lock.exists():
        fd = try_lock(lock)
        if fd is None:
            return True
        os.close(fd)
    fd = try_lock(path)
    if fd is None:
        try:
            import fcntl  # noqa: F401
        except ImportError:
            return False
        return path.exists()
    os.close(fd)
    return False


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
