"""Memoised per-row functions of training arrays (the VIMA-style policy's forward kinematics).

A training batch's actions and joint positions are rows of the recorded episodes, so the same rows
come back every epoch. Forward kinematics of a row costs tens of microseconds in Python; a batch of
32 chunks of 20 steps is 640 of them. :class:`RowCache` computes each distinct row once (the first
epoch) and looks it up after that, which is the same as precomputing the Cartesian targets per
episode, without the dataset having to know about kinematics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class RowCache:
    """``fn`` over the rows of ``(..., D)`` arrays, each distinct row computed once.

    Rows are keyed on their float32 bytes. At most ``max_rows`` rows are kept; past that, new rows
    are computed but not stored (a dataset larger than that is still correct, only slower).
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_rows: int = 2_000_000) -> None:
        self.fn = fn
        self.max_rows = int(max_rows)
        self._rows: dict[bytes, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """``fn(values)`` row by row: ``(..., D)`` -> ``(..., E)``."""
        arr = np.ascontiguousarray(values, dtype=np.float32)
        flat = arr.reshape(-1, arr.shape[-1])
        keys = [row.tobytes() for row in flat]
        found = [self._rows.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            computed = np.asarray(self.fn(flat[missing].astype(np.float64)), dtype=np.float64)
            for i, row in zip(missing, computed):
                found[i] = row
                if len(self._rows) < self.max_rows:
                    self._rows[keys[i]] = row
        out = np.stack(found)  # type: ignore[arg-type]  # every entry filled above
        return out.reshape(*arr.shape[:-1], out.shape[-1])
