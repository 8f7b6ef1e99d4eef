"""Robot and Camera views of a :class:`~robokit.hardware.sim.env.PandaSimEnv`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from robokit.errors import HardwareFault, UserError
from robokit.hardware.base import PANDA_READY_POSE, Camera, Frame, Robot, RobotState
from robokit.hardware.limits import ClampReport, clamp_joints

if TYPE_CHECKING:
    from robokit.hardware.sim.env import PandaSimEnv

log = logging.getLogger(__name__)


class SimRobot(Robot):
    """The simulated arm. ``command`` sets the position servos' targets; physics runs in ``env.step()``.

    Joint targets outside the limits are clamped (never sent as given) and reported: they are
    recorded in :attr:`clamps` (since the last ``env.reset()``) and logged as a warning (at most
    once a second).
    """

    kind = "sim"

    def __init__(self, env: PandaSimEnv) -> None:
        self._env = env
        #: The commands whose joint target was outside the limits (and was clamped).
        self.clamps = ClampReport()

    def _on_reset(self) -> None:
        self.clamps = ClampReport()

    def read(self) -> RobotState:
        return self._env._read_state()

    def command(self, qpos_target: np.ndarray, gripper: float) -> None:
        q = np.asarray(qpos_target, dtype=float).reshape(-1)
        if q.shape != (self.num_joints,) or not np.all(np.isfinite(q)):
            raise UserError(f"joint target must be {self.num_joints} finite numbers, got {np.asarray(qpos_target)!r}")
        g = float(gripper)
        if not np.isfinite(g):
            raise UserError(f"gripper target must be a finite number in 0..1, got {gripper!r}")
        q_min, q_max = self.joint_limits
        clamped = clamp_joints(q, q_min, q_max, self.clamps)
        self.clamps.warn(log)
        self._env._set_targets(clamped, float(np.clip(g, 0.0, 1.0)))

    def home(self, timeout_s: float = 5.0) -> None:
        """Drive to the ready pose with the gripper open, stepping the simulation until there."""
        self.command(PANDA_READY_POSE, 0.0)
        steps = int(timeout_s / self._env.control_dt)
        for _ in range(steps):
            state = self.read()
            if np.max(np.abs(state.qpos - PANDA_READY_POSE)) < 0.01 and state.gripper < 0.02:
                return
            self._env.step()
        raise HardwareFault(f"sim arm did not reach the ready pose within {timeout_s:.0f} s (blocked?)")

    def stop(self) -> None:
        """Hold the current joint positions (the gripper keeps its target)."""
        _, gripper = self._env._arm_targets()
        self._env._set_targets(self.read().qpos, gripper)


class SimCamera(Camera):
    """A camera of the simulated scene. Frames are rendered on demand, once per simulation step,
    and stamped with the simulation time (the same clock as ``RobotState.t``)."""

    def __init__(self, env: PandaSimEnv, name: str) -> None:
        self._env = env
        self.name = name

    def open(self) -> None:
        """Nothing to open: the scene is rendered on demand."""

    def close(self) -> None:
        """Nothing to release; the environment owns the renderer."""

    @property
    def shape(self) -> tuple[int, int, int]:
        height, width = self._env.image_size
        return height, width, 3

    def read_latest(self, max_age_s: float = 0.5) -> Frame:
        """The current step's image; a sim frame is never stale, so ``max_age_s`` is not used."""
        image = self._env._camera_image(self.name)
        t = self._env.time
        return Frame(image=image, t_capture=t, t_receive=t, index=self._env.step_count)
