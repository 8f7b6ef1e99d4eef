"""The calls robokit makes on the Franka, on the older ``frankx`` (used only when franky is missing).

frankx has no wheels for current Pythons, cannot replace a running motion and cannot run a torque
controller: streaming targets and kinesthetic mode raise :class:`~robokit.errors.ConfigError`
asking for franky; reading the state, ``home()``, ``stop()`` and the gripper work. frankx always
enforces a real-time kernel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from robokit.errors import ConfigError
from robokit.hardware.franka.link_base import BaseLink

__all__ = ["FrankxLink", "ThreadFuture"]


class ThreadFuture:
    """A blocking call run in a thread, with franky's ``BoolFuture`` interface (``wait``, ``get``)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._done = threading.Event()
        self._result = False
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._result = bool(fn())
            except BaseException as exc:  # noqa: BLE001 - re-raised by get()
                self._error = exc
            finally:
                self._done.set()

        threading.Thread(target=run, daemon=True).start()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._done.wait(timeout_s)

    def get(self) -> bool:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


class FrankxLink(BaseLink):
    """:class:`~robokit.hardware.franka.link.FrankyLink`'s calls on frankx (see the module docstring)."""

    name = "frankx"

    def connect(self, host: str, realtime: str, dynamics: float, gripper: bool) -> None:
        if realtime != "enforce":
            raise ConfigError("frankx always needs a real-time kernel; install franky-control to use "
                              "`--realtime ignore`")
        self.robot = self.f.Robot(host)
        self.robot.set_default_behavior()
        self.robot.set_dynamic_rel(dynamics)
        if gripper:
            self.gripper = self.robot.get_gripper()

    def set_collision_thresholds(self, torque_nm: np.ndarray, force_n: np.ndarray) -> None:
        raise ConfigError("frankx cannot set the collision thresholds; install franky-control, or drop "
                          "--collision to keep the robot's defaults")

    def has_errors(self) -> bool:
        return False  # frankx does not expose it; recover() is harmless when there is nothing to recover

    def recover(self) -> bool:
        return bool(self.robot.recover_from_errors())

    def urdf(self) -> str | None:
        return None

    def q_dq(self) -> tuple[np.ndarray, np.ndarray]:
        state = self.robot.read_once()
        return np.asarray(state.q, dtype=float), np.asarray(state.dq, dtype=float)

    def move_async(self, q: np.ndarray) -> None:
        raise ConfigError("streaming joint targets needs franky (frankx cannot replace a running motion): "
                          "pip install franky-control")

    def move_blocking(self, q: np.ndarray, timeout_s: float) -> bool:
        return bool(self.robot.move(self.f.JointMotion(list(map(float, q)))))

    def poll(self) -> None:
        pass

    def stop(self) -> None:
        pass  # frankx motions are blocking: nothing runs between calls

    def start_kinesthetic(self, q: np.ndarray, damping: float, q_min: np.ndarray, q_max: np.ndarray) -> None:
        raise ConfigError("kinesthetic mode needs franky's joint impedance control: pip install franky-control")

    def gripper_width(self) -> float:
        return float(self.gripper.width())

    def gripper_move(self, width: float, speed: float) -> Any:
        return ThreadFuture(lambda: self.gripper.move(width))

    def gripper_grasp(self, speed: float, force: float) -> Any:
        return ThreadFuture(lambda: self.gripper.clamp())
