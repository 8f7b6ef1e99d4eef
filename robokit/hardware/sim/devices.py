"""Robot and Camera views of a :class:`~robokit.hardware.sim.env.PandaSimEnv` (DESIGN §3)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from robokit.errors import HardwareFault, UserError
from robokit.hardware.base import PANDA_READY_POSE, Camera, Frame, Robot, RobotState

if TYPE_CHECKING:
    from robokit.hardware.sim.env import PandaSimEnv

log = logging.getLogger(__name__)


class SimRobot(Robot):
    """The simulated arm. ``command`` sets the position servos' targets; physics runs in ``env.step()``.

    Joint targets outside the limits are clamped (never sent as given) and reported: a warning is
    logged, ``clamp_count`` counts such commands and ``last_clamp`` describes the latest one.
    """

    kind = "sim"

    def __init__(self, env: PandaSimEnv) -> None:
        self._env = env
        self.clamp_count = 0
        self.last_clamp: str | None = None

    def _on_reset(self) -> None:
        self.last_clamp = None

    def read(self) -> RobotState:
        return self._env._read_state()

    def command(self, qpos_target: np.ndarray, gripper: float) -> None:
        q = np.asarray(qpos_target, dtype=float).reshape(-1)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise UserError(f"joint target must be 7 finite numbers, got {np.asarray(qpos_target)!r}")
        g = float(gripper)
        if not np.isfinite(g):
            raise UserError(f"gripper target must be a finite number in 0..1, got {gripper!r}")
        q_min, q_max = self.joint_limits
        clamped = np.clip(q, q_min, q_max)
        outside = np.flatnonzero(clamped != q)
        if outside.size:
            details = ", ".join(f"joint{i + 1} {q[i]:+.4f} -> {clamped[i]:+.4f}" for i in outside)
            self.clamp_count += 1
            self.last_clamp = f"joint target outside the limits clamped: {details}"
            log.warning("%s", self.last_clamp)
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

    def start(self) -> None:
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
