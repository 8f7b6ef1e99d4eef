"""The Franka Panda / FR3 backend: :class:`FrankaRobot` on franky, ``frankx`` as a fallback.

Modules: ``robot`` (the driver), ``gripper`` (the hand's command state machine), ``errors``
(franky/libfranka exceptions as robokit errors with the recovery step), ``connection`` (checks made
before a session opens), ``link`` (the calls made on franky) and ``frankx_compat`` (the same on frankx).
Nothing here imports franky until a robot is opened.
"""

from robokit.hardware.franka.connection import FCI_COMMAND_PORT, check_fci_reachable, has_realtime_kernel
from robokit.hardware.franka.errors import translate_error
from robokit.hardware.franka.gripper import GRIPPER_MODES, FrankaGripper
from robokit.hardware.franka.robot import REALTIME_CHOICES, FrankaRobot

__all__ = [
    "FCI_COMMAND_PORT",
    "GRIPPER_MODES",
    "REALTIME_CHOICES",
    "FrankaGripper",
    "FrankaRobot",
    "check_fci_reachable",
    "has_realtime_kernel",
    "translate_error",
]
