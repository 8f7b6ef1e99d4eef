"""Hardware layer: one interface over the real Franka, the MuJoCo simulation and cameras."""

from robokit.hardware.base import Camera, Frame, Robot, RobotState

__all__ = ["Camera", "Frame", "Robot", "RobotState"]
