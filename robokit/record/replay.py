"""Replay a recorded episode's actions on the simulation or the robot (``robokit replay``).

In the simulation the scene is rebuilt from the episode's ``sim_seed``/``sim_task`` attributes when
it has them, so a replay of a sim recording reproduces it; the result reports how closely the
measured joints follow the recorded ones and whether the task check passes. On a real robot the
arm is first brought to the episode's first target slowly, then the actions stream at the
episode's rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from robokit.errors import UserError
from robokit.hardware.base import Robot
from robokit.record.capture import RateLoop
from robokit.record.teleop import Replay

if TYPE_CHECKING:
    from robokit.hardware.sim import PandaSimEnv
    from robokit.hardware.workspace import Workspace

__all__ = ["ReplayResult", "SpeedCheck", "check_replay_speed", "replay_episode"]


@dataclass
class ReplayResult:
    steps: int
    seconds: float
    max_joint_error: float  # rad, measured replay vs recorded qpos (joints only)
    mean_joint_error: float
    success: bool | None  # sim task check after the last action (None on a real robot)
    scene_restored: bool  # the sim scene was rebuilt from the episode's seed
    safety: dict[str, int] = field(default_factory=dict)  # what the safety filter changed, by kind


@dataclass
class SpeedCheck:
    """How fast a recording moves against how fast the arm moves as it is driven."""

    joint: int            # the joint (from 0) that needs the most of its speed
    needed: float         # its fastest recorded speed, rad/s
    available: float      # its speed limit as the arm is driven (velocity limit x speed factor), rad/s
    factor_needed: float  # the speed factor (Franka: --dynamics) that keeps up with the recording

    @property
    def keeps_up(self) -> bool:
        return self.needed <= self.available * (1 + 1e-6)


def check_replay_speed(actions: np.ndarray, fps: float, robot: Robot) -> SpeedCheck:
    """Compare the joint speeds of ``actions`` played at ``fps`` with what ``robot`` reaches: a Franka
    at a relative dynamics factor of 0.1 lags a recording made at full speed, and its tracking error
    grows with every step."""
    n = robot.num_joints
    speeds = np.abs(np.diff(np.asarray(actions, float)[:, :n], axis=0)) * float(fps)
    peak = speeds.max(axis=0) if len(speeds) else np.zeros(n)
    full = np.asarray(robot.velocity_limits, float)
    usage = peak / full
    joint = int(np.argmax(usage))
    return SpeedCheck(joint=joint, needed=float(peak[joint]),
                      available=float(robot.commanded_velocity_limits[joint]),
                      factor_needed=float(usage[joint]))


def replay_episode(source: Replay, robot: Robot, sim_env: PandaSimEnv | None = None, fps: float | None = None,
                   approach_speed: float = 0.3, sim_speed: float = 0.0,
                   on_step: Callable[[int, int], None] | None = None,
                   workspace: Workspace | None = None) -> ReplayResult:
    """Send every action of ``source`` to ``robot`` through deploy's safety filter (joint limits,
    the speed the arm is driven at, the ``workspace`` box); see the module docs.

    ``fps`` paces a real robot (default: the episode's rate, else 30). ``approach_speed`` (rad/s)
    limits the move to the first target on a real robot. In the simulation ``sim_speed`` is the
    playback speed against the wall clock (1 = as recorded, 2 = twice as fast) and 0 runs as fast
    as possible. ``on_step(t, total)`` reports progress.
    """
    from robokit.deploy.safety import SafetyCounts, SafetyFilter, SafetyLimits

    if sim_speed < 0:
        raise UserError(f"replay speed must be 0 (as fast as possible) or positive, got {sim_speed}")
    rate = fps or source.fps or 30.0
    actions = source.actions
    if actions.shape[1] != robot.action_dim:
        raise UserError(f"{source.path}: its actions have {actions.shape[1]} values, this robot takes "
                        f"{robot.action_dim} ({robot.num_joints} joints + gripper)")
    n = robot.num_joints
    recorded = source.recorded_qpos[:, :n] if source.recorded_qpos.shape[1] >= n else None
    restored = False
    if sim_env is not None:
        seed, task = source.attrs.get("sim_seed"), source.attrs.get("sim_task")
        if isinstance(seed, int):
            sim_env.reset(seed=seed, task=task if isinstance(task, str) else None)
            restored = True
    else:
        _approach(robot, actions[0], rate, approach_speed)
    if sim_env is None:
        loop: RateLoop | None = RateLoop(rate)
    else:
        loop = RateLoop(rate * sim_speed) if sim_speed > 0 else None
    safety = SafetyFilter(SafetyLimits.from_robot(robot), 1.0 / rate, workspace=workspace)
    safety.reset(robot.read().qpos)
    errors = []
    start = time.monotonic()
    for t, action in enumerate(actions):
        if loop is not None:
            loop.wait()
        state = robot.read()
        if recorded is not None and t < len(recorded):
            errors.append(float(np.max(np.abs(state.qpos - recorded[t]))))
        command = safety.apply(action, measured=state.qpos)
        if command is None:
            raise UserError(f"{source.path}: the action of step {t} is not finite (NaN or inf); the replay "
                            "stopped there")
        robot.send_action(command)
        if sim_env is not None:
            sim_env.step()
        if on_step is not None:
            on_step(t + 1, len(actions))
    if sim_env is not None:
        for _ in range(5):  # let a released object settle before the task check
            sim_env.step()
    success = bool(sim_env.task.success()) if sim_env is not None else None
    return ReplayResult(steps=len(actions), seconds=time.monotonic() - start,
                        max_joint_error=max(errors) if errors else float("nan"),
                        mean_joint_error=float(np.mean(errors)) if errors else float("nan"),
                        success=success, scene_restored=restored, safety=safety.counts.since(SafetyCounts()))


def _approach(robot: Robot, first: np.ndarray, fps: float, speed: float) -> None:
    """Interpolate from where the arm is to the first target at ``speed`` rad/s at most."""
    q0, n = robot.read().qpos, robot.num_joints
    distance = float(np.max(np.abs(first[:n] - q0)))
    steps = max(1, int(np.ceil(distance / speed * fps)))
    loop = RateLoop(fps)
    for k in range(1, steps + 1):
        loop.wait()
        robot.command(q0 + (first[:n] - q0) * (k / steps), float(first[n]))
    time.sleep(0.5)  # settle before the recorded motion starts
