"""Joint-limit clamping, shared by the robot drivers and the deploy safety filter.

A joint target outside the limits is never sent as it is: :func:`clamp_joints` moves it inside and
records what it changed in a :class:`ClampReport` (how many commands were clamped, and which joints
of the latest one, from what to what).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ClampReport", "clamp_joints"]


@dataclass
class ClampReport:
    """The commands whose joint target was moved inside the limits.

    ``count`` is how many; ``joints`` (0-based indices), ``requested`` and ``sent`` describe the
    latest one (empty / None before the first clamp).
    """

    count: int = 0
    joints: tuple[int, ...] = ()
    requested: np.ndarray | None = None
    sent: np.ndarray | None = None
    _unlogged: int = field(default=0, repr=False, compare=False)
    _logged_at: float = field(default=-math.inf, repr=False, compare=False)

    def record(self, requested: np.ndarray, sent: np.ndarray) -> None:
        """Count one clamped command: ``requested`` is what was asked, ``sent`` what was sent instead."""
        self.count += 1
        self._unlogged += 1
        self.joints = tuple(int(j) for j in np.flatnonzero(sent != requested))
        self.requested = np.array(requested, dtype=float)
        self.sent = np.array(sent, dtype=float)

    def describe(self) -> str:
        """The latest clamp, e.g. ``joint4 +1.0000 -> -0.0798`` (joints numbered from 1)."""
        if self.requested is None or self.sent is None:
            return "no clamp"
        return ", ".join(f"joint{j + 1} {self.requested[j]:+.4f} -> {self.sent[j]:+.4f}" for j in self.joints)

    def warn(self, logger: logging.Logger, every_s: float = 1.0) -> None:
        """Log the latest clamp as a warning, at most once per ``every_s`` seconds.

        A policy that keeps pushing into a limit clamps every tick; one line a second says so
        without flooding the log.
        """
        if not self._unlogged:
            return
        now = time.monotonic()
        if now - self._logged_at < every_s:
            return
        logger.warning("joint target outside the limits, clamped (%d since the last report): %s",
                       self._unlogged, self.describe())
        self._logged_at = now
        self._unlogged = 0

    def copy(self) -> ClampReport:
        """An independent snapshot."""
        return dataclasses.replace(
            self,
            requested=None if self.requested is None else self.requested.copy(),
            sent=None if self.sent is None else self.sent.copy(),
        )


def clamp_joints(
    q: np.ndarray, q_min: np.ndarray, q_max: np.ndarray, report: ClampReport | None = None
) -> np.ndarray:
    """``q`` clipped into ``[q_min, q_max]`` (float64); a change is recorded in ``report``."""
    requested = np.asarray(q, dtype=float)
    safe = np.clip(requested, q_min, q_max)
    if report is not None and np.any(safe != requested):
        report.record(requested, safe)
    return safe
