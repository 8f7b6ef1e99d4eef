"""Labelling a saved episode after the fact: the operator says whether it succeeded."""

from __future__ import annotations

from pathlib import Path

from robokit.errors import DataError

__all__ = ["label_episode"]


def label_episode(path: str | Path, success: bool) -> None:
    """Store ``success`` (and that an operator gave it) in the saved episode ``path``.

    A success the recorder had stored (the simulator's check) is kept as ``success_check``. Only
    attributes change; the recorded data is not touched. A file that cannot be opened for writing
    raises DataError naming it.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r+") as f:
            if "success" in f.attrs and f.attrs.get("success_source") != "operator":
                f.attrs["success_check"] = bool(f.attrs["success"])
            f.attrs["success"] = bool(success)
            f.attrs["success_source"] = "operator"
    except OSError as exc:
        raise DataError(f"{path}: cannot store the label ({exc}); is the file open elsewhere?") from None
