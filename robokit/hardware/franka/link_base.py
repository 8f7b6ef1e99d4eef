"""What the franky and frankx links share: the library module and the open arm and hand objects."""

from __future__ import annotations

from typing import Any


class BaseLink:
    """Holds the control library (``franky`` or ``frankx``) and, once connected, its robot and gripper."""

    name = "link"

    def __init__(self, library: Any) -> None:
        self.f = library
        self.robot: Any = None
        self.gripper: Any = None

    def close(self) -> None:
        # libfranka ends a session when its object is destroyed: dropping the last reference closes it.
        self.robot = None
        self.gripper = None

    # Gripper commands return a future (franky's own, or a thread for frankx) with wait() and get().

    @staticmethod
    def future_done(future: Any) -> bool:
        return bool(future.wait(0.0))

    @staticmethod
    def future_wait(future: Any, timeout_s: float) -> bool:
        return bool(future.wait(timeout_s))

    @staticmethod
    def future_result(future: Any) -> bool:
        return bool(future.get())
