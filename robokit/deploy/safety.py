"""The deploy safety filter: every command the control loop sends passes through it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from robokit.errors import ConfigError, UserError
from robokit.hardware.base import Robot
from robokit.hardware.limits import ClampReport, clamp_joints
from robokit.hardware.workspace import Workspace

__all__ = ["SafetyCounts", "SafetyFilter", "SafetyLimits"]


@dataclass(frozen=True)
class SafetyLimits:
    """Joint position and speed limits the commands must respect, and the gripper range."""

    q_min: np.ndarray
    q_max: np.ndarray
    dq_max: np.ndarray
    gripper_min: float = 0.0
    gripper_max: float = 1.0

    @classmethod
    def from_robot(cls, robot: Robot) -> SafetyLimits:
        """The robot's joint limits, and the joint speeds it reaches as it is driven (a Franka at a
        relative dynamics factor of 0.1 moves at a tenth of its top speed: a faster plan would only
        run ahead of the arm)."""
        q_min, q_max = robot.joint_limits
        return cls(np.asarray(q_min, float), np.asarray(q_max, float),
                   np.asarray(robot.commanded_velocity_limits, float))

    @property
    def num_joints(self) -> int:
        return len(self.q_min)


@dataclass
class SafetyCounts:
    """What the filter changed or refused."""

    joints: ClampReport = field(default_factory=ClampReport)  # commands moved inside the joint limits
    velocity: int = 0  # commands whose step was shortened to the velocity limit
    gripper: int = 0  # gripper commands clamped to the range
    rejected: int = 0  # non-finite actions refused
    workspace: int = 0  # commands whose hand left the workspace box, projected back inside
    workspace_held: int = 0  # commands that could not be projected inside: the previous one was held

    @property
    def position(self) -> int:
        """How many commands were moved inside the joint limits."""
        return self.joints.count

    def copy(self) -> SafetyCounts:
        """An independent snapshot."""
        return dataclasses.replace(self, joints=self.joints.copy())

    def since(self, earlier: SafetyCounts) -> dict[str, int]:
        """What the filter did after the snapshot ``earlier``, by kind (stored with each episode)."""
        return {"joint_clamps": self.position - earlier.position, "velocity_clamps": self.velocity - earlier.velocity,
                "gripper_clamps": self.gripper - earlier.gripper, "rejected": self.rejected - earlier.rejected,
                "workspace_projected": self.workspace - earlier.workspace,
                "workspace_held": self.workspace_held - earlier.workspace_held}


class SafetyFilter:
    """Make an action safe to send: joints within limits, per-step change bounded, the hand inside
    the workspace box, gripper in range.

    An action is the joint targets followed by the gripper value (``limits.num_joints + 1`` values;
    any further values are ignored). The per-step bound is ``velocity_scale * dq_max * dt`` relative
    to the previous command (the measured position at :meth:`reset`), so the commanded trajectory
    never asks for more speed than the joints have. With a ``workspace`` (7-joint arms), a command
    whose hand leaves the box is projected back inside (:meth:`Workspace.project`), or, when that
    fails, the previous command is held.
    """

    def __init__(self, limits: SafetyLimits, dt: float, velocity_scale: float = 1.0,
                 workspace: Workspace | None = None, max_lead_ticks: float | None = 4.0) -> None:
        if not 0.0 < velocity_scale <= 1.0:
            raise ConfigError(f"velocity_scale must be in (0, 1], got {velocity_scale}")
        if workspace is not None and limits.num_joints != 7:
            raise ConfigError(f"a workspace box needs the 7-joint arm's kinematics; this arm has "
                              f"{limits.num_joints} joints (use --workspace none)")
        self.limits = limits
        self.workspace = workspace
        self.num_joints = limits.num_joints
        self.max_step = np.asarray(limits.dq_max, float) * velocity_scale * float(dt)
        # How far a command may lead the measured joints: a lagging arm (slow dynamics, a blocked
        # joint) otherwise follows commands it is far behind along a joint path of its own, which
        # can leave the workspace even though every command is inside.
        self.max_lead = None if max_lead_ticks is None else self.max_step * float(max_lead_ticks)
        self.counts = SafetyCounts()
        self._prev: np.ndarray | None = None

    def reset(self, qpos: np.ndarray) -> None:
        """Start from the measured joint position (clamped into the limits)."""
        q = np.asarray(qpos, float)[: self.num_joints]
        self._prev = clamp_joints(q, self.limits.q_min, self.limits.q_max)

    @property
    def previous(self) -> np.ndarray | None:
        return None if self._prev is None else self._prev.copy()

    def apply(self, action: np.ndarray, measured: np.ndarray | None = None) -> np.ndarray | None:
        """The safe command (joints then gripper, float64) for ``action``, or None if it is not finite.
        ``measured``: the joints now, which the command may lead by ``max_lead_ticks`` speed-bound
        steps at most."""
        n = self.num_joints
        a = np.asarray(action, dtype=float).reshape(-1)
        if a.shape[0] < n + 1 or not np.all(np.isfinite(a[: n + 1])):
            self.counts.rejected += 1
            return None
        if self._prev is None:
            raise UserError("SafetyFilter.reset(qpos) must be called before apply()")
        lim = self.limits
        q = clamp_joints(a[:n], lim.q_min, lim.q_max, self.counts.joints)
        step = np.clip(q - self._prev, -self.max_step, self.max_step)
        if np.any(step != q - self._prev):
            self.counts.velocity += 1
        q = self._prev + step
        if measured is not None and self.max_lead is not None:
            now = np.asarray(measured, float)[:n]
            q = np.clip(q, now - self.max_lead, now + self.max_lead)
        if self.workspace is not None and not self.workspace.contains(q):
            q = self._inside(q, self.workspace, self._prev)
        g = float(np.clip(a[n], lim.gripper_min, lim.gripper_max))
        if g != a[n]:
            self.counts.gripper += 1
        self._prev = q
        return np.concatenate([q, [g]])

    def _inside(self, q: np.ndarray, box: Workspace, prev: np.ndarray) -> np.ndarray:
        """``q`` (within the speed bound of the previous command ``prev``) moved into ``box``, or
        ``prev`` when that cannot be done within the bound."""
        projected = box.project(q, near=prev)
        if projected is not None:
            moved = prev + np.clip(projected - prev, -self.max_step, self.max_step)
            if box.contains(moved):
                self.counts.workspace += 1
                return moved
        self.counts.workspace_held += 1
        return prev.copy()
