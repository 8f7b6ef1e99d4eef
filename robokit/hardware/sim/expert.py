"""Scripted pick-and-place expert: Cartesian waypoints through IK, closed-loop on privileged state.

The expert walks through fixed-duration phases (pre-grasp, grasp, close, lift, carry, place,
release, retreat). Each phase's goal is computed when the phase starts from the simulator's true
object and target poses (so a cube that slipped in the hand is still placed on target), and the
TCP moves there along a minimum-jerk straight line with the gripper pointing down. Every step's
pose goes through :func:`robokit.hardware.kinematics.ik`, seeded by the previous solution and
pulled toward the ready posture, so trajectories are smooth and look alike across seeds — which is
what makes them learnable by a small imitation policy from a few dozen demonstrations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from robokit.hardware.base import RobotState
from robokit.hardware.kinematics import fk, ik

if TYPE_CHECKING:
    from robokit.hardware.sim.env import PandaSimEnv

GRIPPER_OPEN = 0.0
GRIPPER_CLOSED = 1.0
LIFT_Z = 0.13  # TCP height while carrying (m above the table)
PRE_GRASP_ABOVE = 0.09
PLACE_ABOVE = 0.012  # release the object this far above the target surface
RETREAT_UP = 0.10

Pose = tuple[np.ndarray, float]  # TCP position (3,), yaw about the vertical (rad)


def tcp_rotation(yaw: float) -> np.ndarray:
    """Gripper pointing straight down, fingers closing along the rotated y axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def tcp_yaw(rotation: np.ndarray) -> float:
    return float(np.arctan2(rotation[1, 0], rotation[0, 0]))


def grasp_yaw(rotation: np.ndarray) -> float:
    """Yaw that aligns the fingers with a cube's faces, folded into [-45°, 45°)."""
    yaw = np.arctan2(rotation[1, 0], rotation[0, 0])
    return float((yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)


def min_jerk(s: float) -> float:
    """Minimum-jerk time scaling: 0 -> 1 with zero velocity and acceleration at both ends."""
    return s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)


@dataclass(frozen=True)
class _Phase:
    name: str
    seconds: float
    gripper: float
    goal: Callable[[Pose], Pose]


class ScriptedExpert:
    """Teleop source for the sim: ``next_action(state)`` -> (8,) float32 joint targets + gripper.

    Returns ``None`` once the object has been placed, released and the arm has retreated.
    """

    def __init__(self, env: PandaSimEnv, object_name: str, target_name: str, start_phase: str = "pre_grasp") -> None:
        self._env = env
        self.object_name = object_name
        self.target_name = target_name
        obj_half = env.object_half_size(object_name)
        surface_z = env.target_surface_z(target_name)
        self._phases = (
            _Phase("pre_grasp", 1.5, GRIPPER_OPEN, lambda p: self._above_object(PRE_GRASP_ABOVE)),
            _Phase("grasp", 0.5, GRIPPER_OPEN, lambda p: self._above_object(0.0)),
            _Phase("close", 0.3, GRIPPER_CLOSED, lambda p: p),
            _Phase("lift", 0.45, GRIPPER_CLOSED, lambda p: (np.array([p[0][0], p[0][1], LIFT_Z]), p[1])),
            _Phase("carry", 1.1, GRIPPER_CLOSED, lambda p: self._over_target(p, None)),
            _Phase("place", 0.45, GRIPPER_CLOSED,
                   lambda p: self._over_target(p, surface_z + obj_half + PLACE_ABOVE)),
            _Phase("release", 0.25, GRIPPER_OPEN, lambda p: p),
            _Phase("retreat", 0.4, GRIPPER_OPEN, lambda p: (p[0] + np.array([0.0, 0.0, RETREAT_UP]), p[1])),
        )
        dt = env.control_dt
        self._steps = [max(1, round(ph.seconds / dt)) for ph in self._phases]
        if start_phase not in self.phase_names:
            raise ValueError(f"unknown expert phase {start_phase!r}; phases: {', '.join(self.phase_names)}")
        # Starting later (taking over with the object already in the hand) skips the earlier phases.
        self._phase = self.phase_names.index(start_phase)
        self._k = 0
        self._start: Pose | None = None
        self._goal: Pose | None = None
        self._q: np.ndarray | None = None

    @property
    def total_steps(self) -> int:
        """Number of actions the expert emits (fixed for a control rate)."""
        return int(sum(self._steps))

    @property
    def phase_names(self) -> list[str]:
        """The phases in order."""
        return [ph.name for ph in self._phases]

    @property
    def phase(self) -> str:
        """Name of the current phase ("done" when finished)."""
        return self._phases[self._phase].name if self._phase < len(self._phases) else "done"

    def _above_object(self, height: float) -> Pose:
        pos, rot = self._env.object_pose(self.object_name)
        return np.array([pos[0], pos[1], pos[2] + height]), grasp_yaw(rot)

    def _over_target(self, current: Pose, object_z: float | None) -> Pose:
        """TCP pose that puts the held object over the target (at ``object_z``, or at carry height)."""
        obj_pos, _ = self._env.object_pose(self.object_name)
        target = self._env.target_position(self.target_name)
        tcp = current[0]
        offset = tcp - obj_pos  # where the object sits in the hand, from the true state
        goal = np.array([target[0] + offset[0], target[1] + offset[1], LIFT_Z])
        if object_z is not None:
            goal[2] = target[2] + object_z + offset[2]
        return goal, current[1]

    def next_action(self, state: RobotState) -> np.ndarray | None:
        """Next action for the measured ``state``, or ``None`` when the task is done."""
        if self._q is None:
            pos, rot = fk(state.qpos)
            self._q = np.asarray(state.qpos, dtype=float).copy()
            self._start = (pos, tcp_yaw(rot))
        while self._phase < len(self._phases) and self._k >= self._steps[self._phase]:
            self._start = self._goal
            self._goal = None
            self._phase += 1
            self._k = 0
        if self._phase >= len(self._phases):
            return None
        phase = self._phases[self._phase]
        start = self._start if self._start is not None else (fk(self._q)[0], 0.0)
        if self._goal is None:
            self._goal = phase.goal(start)
        self._k += 1
        s = min_jerk(self._k / self._steps[self._phase])
        pos = start[0] + s * (self._goal[0] - start[0])
        yaw = start[1] + s * (self._goal[1] - start[1])
        self._q = ik(pos, tcp_rotation(yaw), self._q)
        return np.concatenate([self._q, [phase.gripper]]).astype(np.float32)


@dataclass(frozen=True)
class ExpertResult:
    """Outcome of one scripted episode."""

    seed: int
    task: str
    success: bool
    steps: int


def run_expert_episode(env: PandaSimEnv, seed: int, task: str | None = None,
                       settle_steps: int = 5) -> ExpertResult:
    """Reset ``env`` to ``seed`` (and ``task``), run the scripted expert to the end, check success.

    ``settle_steps`` control periods after the last action let a released object come to rest.
    No images are rendered.
    """
    env.reset(seed=seed, task=task)
    expert = env.task.expert()
    steps = 0
    while (action := expert.next_action(env.robot.read())) is not None:
        env.robot.send_action(action)
        env.step()
        steps += 1
    for _ in range(settle_steps):
        env.step()
    return ExpertResult(seed=seed, task=env.task.name, success=env.task.success(), steps=steps)
