"""The workspace the hand never leaves: a box in the robot's base frame, its floor the table top.

Joint limits alone let a policy drive the hand into the table (the Franka's reflex then ends the
run) or sweep it across the room. A :class:`Workspace` is a box (metres, robot base frame) that
every checked point of the hand must stay in: the flange, the TCP and the ends of both fingers
(half the gripper's full opening either side of the TCP, ``finger_reach`` past it along the
approach axis, so a tilted hand is caught by the finger that dips first). The box's lower z is
the floor.

A joint target whose forward kinematics puts a point outside is **projected** back: the TCP target
is moved by the smallest per-axis shift that brings every point inside, keeping its orientation,
and inverse kinematics (warm-started from, and pulled toward, the target's own joints) turns it
back into joints. Projection rather than holding, because a policy that aims a centimetre into
the table while grasping should slide along the surface and close its fingers, not freeze. When
the projection cannot be solved (unreachable, or the box is narrower than the hand) the target is
refused and the caller holds the last safe command.

Configuration: :meth:`Workspace.from_toml` reads ``[workspace] low = [x, y, z]``, ``high = [...]``
(optional ``finger_reach``, ``finger_half_width``); :data:`SIM_TABLE` is the default, sized for the
simulated table (top at z = 0) and the arm's reach over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robokit.errors import ConfigError, UserError
from robokit.hardware import kinematics

__all__ = ["SIM_TABLE", "Workspace", "workspace_from_option"]

#: Flange to TCP along the approach axis (m): the flange point sits this far behind the TCP.
_FLANGE_BEHIND_TCP = kinematics.TCP_OFFSET
#: How far a projected target may still be outside (m): IK's own tolerance.
_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Workspace:
    """A box (``low``, ``high``: x, y, z in metres, robot base frame) for the hand's checked points."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]
    finger_reach: float = 0.01       # finger ends past the TCP along the approach axis (m)
    finger_half_width: float = 0.04  # half the gripper's full opening (m): the fingers at their widest

    def __post_init__(self) -> None:
        low, high = np.asarray(self.low, float), np.asarray(self.high, float)
        if low.shape != (3,) or high.shape != (3,) or not np.all(np.isfinite(np.r_[low, high])):
            raise ConfigError(f"a workspace box needs low and high as three finite numbers (x, y, z), got "
                              f"{self.low} and {self.high}")
        if np.any(high - low < 2 * self.finger_half_width):
            raise ConfigError(f"workspace box low {list(self.low)} / high {list(self.high)}: every side must be "
                              f"longer than the open hand ({2 * self.finger_half_width:.2f} m)")

    @classmethod
    def from_toml(cls, path: str | Path) -> Workspace:
        """Read ``[workspace]`` (``low``, ``high``, optional ``finger_reach``, ``finger_half_width``)."""
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ConfigError("a workspace file needs Python 3.11 or newer (tomllib)") from None
        path = Path(path)
        try:
            table = tomllib.loads(path.read_text()).get("workspace")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"cannot read the workspace file {path}: {exc}") from None
        if not isinstance(table, dict) or "low" not in table or "high" not in table:
            raise UserError(f"{path}: needs a [workspace] table with low = [x, y, z] and high = [x, y, z] "
                            "(metres, robot base frame)")
        unknown = set(table) - {"low", "high", "finger_reach", "finger_half_width"}
        if unknown:
            raise UserError(f"{path}: unknown [workspace] key(s) {', '.join(sorted(unknown))}")
        try:
            return cls(low=tuple(float(v) for v in table["low"]),  # type: ignore[arg-type]
                       high=tuple(float(v) for v in table["high"]),  # type: ignore[arg-type]
                       **{k: float(table[k]) for k in ("finger_reach", "finger_half_width") if k in table})
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: [workspace] values must be numbers: {exc}") from None

    def points(self, q: np.ndarray) -> np.ndarray:
        """The checked points (4, 3) of the hand at joints ``q``: flange, TCP, both finger ends."""
        pos, R = kinematics.fk(np.asarray(q, float)[:7])
        approach, across = R[:, 2], R[:, 1]
        tip = pos + self.finger_reach * approach
        return np.stack([pos - _FLANGE_BEHIND_TCP * approach, pos,
                         tip + self.finger_half_width * across, tip - self.finger_half_width * across])

    def shift(self, q: np.ndarray) -> np.ndarray:
        """The smallest per-axis move (3,) of the hand that brings every checked point inside
        (zeros when all are inside)."""
        p = self.points(q)
        low, high = np.asarray(self.low), np.asarray(self.high)
        below = np.maximum(low - p.min(axis=0), 0.0)
        above = np.maximum(p.max(axis=0) - high, 0.0)
        return below - above

    def contains(self, q: np.ndarray, tolerance: float = _TOLERANCE) -> bool:
        """Whether every checked point at joints ``q`` is inside the box (within ``tolerance`` m)."""
        return bool(np.all(np.abs(self.shift(q)) <= tolerance))

    def project(self, q: np.ndarray, near: np.ndarray | None = None) -> np.ndarray | None:
        """Joints (7,) whose hand is ``q``'s moved inside the box, orientation kept; ``q`` itself when
        it is inside; None when no such joints were found (the caller holds instead).

        ``near``: joints to solve from and stay close to (default ``q``); a filter passes its previous
        command, so that successive projections stay on one posture instead of jumping between
        the arm's redundant solutions."""
        q = np.asarray(q, float)[:7]
        move = self.shift(q)
        if not np.any(move):
            return q
        pos, R = kinematics.fk(q)
        anchor = q if near is None else np.asarray(near, float)[:7]
        candidate = anchor
        for _ in range(3):  # the shift of a tilted hand changes as it moves: a few rounds settle it
            try:
                candidate = kinematics.ik(pos + move, R, candidate, q_rest=anchor)
            except UserError:
                return None
            rest = self.shift(candidate)
            if np.all(np.abs(rest) <= _TOLERANCE):
                return candidate
            move = move + rest
        return None


#: The default box: the simulated table (top at z = 0, the robot's base on it) and the arm's reach
#: over it, with room for the ready pose (TCP at x 0.31, z 0.49).
SIM_TABLE = Workspace(low=(0.15, -0.55, 0.0), high=(0.85, 0.55, 0.75))


def workspace_from_option(value: str | None) -> Workspace | None:
    """``--workspace``: "default" (or None) = :data:`SIM_TABLE`, "none" = no box, else a TOML file."""
    if value is None or value == "default":
        return SIM_TABLE
    if value == "none":
        return None
    return Workspace.from_toml(value)
