"""The calls robokit makes on the Franka, on franky; :func:`make_link` picks franky or frankx."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from robokit.errors import ConfigError
from robokit.hardware.base import GRIPPER_MAX_WIDTH_M
from robokit.hardware.franka.errors import is_preemption
from robokit.hardware.franka.frankx_compat import FrankxLink
from robokit.hardware.franka.link_base import BaseLink

__all__ = ["FrankyLink", "Link", "make_link"]

log = logging.getLogger(__name__)


class FrankyLink(BaseLink):
    """The arm and hand through franky (PyPI ``franky-control``)."""

    name = "franky"

    def connect(self, host: str, realtime: str, dynamics: float, gripper: bool) -> None:
        rt = self.f.RealtimeConfig.Enforce if realtime == "enforce" else self.f.RealtimeConfig.Ignore
        self.robot = self.f.Robot(host, relative_dynamics_factor=dynamics, realtime_config=rt)
        if gripper:
            self.gripper = self.f.Gripper(host)

    def set_collision_thresholds(self, torque_nm: np.ndarray, force_n: np.ndarray) -> None:
        """The reflex thresholds: joint torques (7, Nm) and end-effector forces/torques (6, N / Nm)."""
        self.robot.set_collision_behavior(torque_nm.tolist(), force_n.tolist())

    def has_errors(self) -> bool:
        return bool(self.robot.has_errors)

    def recover(self) -> bool:
        return bool(self.robot.recover_from_errors())

    def urdf(self) -> str | None:
        try:
            return self.robot.model_urdf
        except Exception:  # noqa: BLE001 - older firmware does not serve a URDF
            return None

    def q_dq(self) -> tuple[np.ndarray, np.ndarray]:
        state = self.robot.current_joint_state
        return np.asarray(state.position, dtype=float), np.asarray(state.velocity, dtype=float)

    def move_async(self, q: np.ndarray) -> None:
        # return_when_finished=False: hold the target until the next one replaces it, so the control
        # loop keeps running between commands instead of restarting every tick.
        self.robot.move(self.f.JointMotion(q, return_when_finished=False), asynchronous=True)

    def move_blocking(self, q: np.ndarray, timeout_s: float) -> bool:
        self.robot.move(self.f.JointMotion(q, return_when_finished=True), asynchronous=True)
        return bool(self.robot.join_motion(timeout=timeout_s))

    def poll(self) -> None:
        try:
            self.robot.poll_motion()
        except Exception as exc:
            if not is_preemption(exc):  # a stop() from another thread is not a fault
                raise

    def stop(self) -> None:
        self.robot.stop()
        try:
            self.robot.join_motion(timeout=2.0)
        except Exception as exc:
            if not is_preemption(exc):
                raise

    def start_kinesthetic(self, q: np.ndarray, damping: float, q_min: np.ndarray, q_max: np.ndarray) -> None:
        motion = self.f.JointImpedanceMotion(
            q,
            stiffness=np.zeros(len(q)),
            damping=np.full(len(q), float(damping)),
            lower_joint_limits=q_min,
            upper_joint_limits=q_max,
        )
        self.robot.move(motion, asynchronous=True)

    def gripper_width(self) -> float:
        return float(self.gripper.width)

    def gripper_move(self, width: float, speed: float) -> Any:
        return self.gripper.move_async(width, speed)

    def gripper_grasp(self, speed: float, force: float) -> Any:
        # Close onto whatever is there: epsilons span the whole stroke, so any final width "succeeds"
        # and the hand keeps applying `force`.
        return self.gripper.grasp_async(0.0, speed, force, GRIPPER_MAX_WIDTH_M, GRIPPER_MAX_WIDTH_M)


Link = FrankyLink | FrankxLink


def make_link() -> Link:
    """A franky link, or a frankx one when only frankx is installed; ConfigError when neither is."""
    try:
        import franky
    except ImportError:
        try:
            import frankx
        except ImportError:
            raise ConfigError(
                "the Franka backend needs franky: pip install 'robokit[franka]' (PyPI franky-control); "
                "a Panda on older firmware needs franky built for its libfranka version (docs/hardware.md)"
            ) from None
        log.warning("franky is not installed; using frankx (no streaming, no kinesthetic mode)")
        return FrankxLink(frankx)
    return FrankyLink(franky)
