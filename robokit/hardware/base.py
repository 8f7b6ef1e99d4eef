"""The hardware interfaces every backend implements.

``Robot`` and ``Camera`` are abstract base classes with one lifecycle: ``open()`` and ``close()``,
or a ``with`` block that does both. Joint space is the action space: an action is
``robot.num_joints`` joint targets followed by a normalised gripper value (0 open .. 1 closed),
``robot.action_dim`` values in all.
"""

from __future__ import annotations

import abc
import sys
from dataclasses import dataclass, field

import numpy as np

from robokit.errors import ConfigError

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

# Franka Panda / FR3 limits (Franka's published specifications). Backends may override with what the robot reports.
PANDA_Q_MIN = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
PANDA_Q_MAX = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
PANDA_DQ_MAX = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
PANDA_READY_POSE = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])
GRIPPER_MAX_WIDTH_M = 0.08
NUM_JOINTS = 7


@dataclass(frozen=True)
class RobotState:
    """One reading of the arm.

    ``t`` is ``time.monotonic()`` at the moment of the reading; ``gripper`` is normalised
    (0 = fully open, 1 = fully closed).
    """

    t: float
    qpos: np.ndarray
    qvel: np.ndarray
    gripper: float

    def as_vector(self) -> np.ndarray:
        """State vector stored in episodes: the joints then the gripper (float32)."""
        return np.concatenate([self.qpos, [self.gripper]]).astype(np.float32)

    def velocity_vector(self) -> np.ndarray:
        """Velocity vector stored in episodes: the joint velocities then 0 for the gripper."""
        return np.concatenate([self.qvel, [0.0]]).astype(np.float32)


@dataclass(frozen=True)
class Frame:
    """One camera image (H×W×3 uint8 RGB) with capture and receive times (``time.monotonic()``)."""

    image: np.ndarray
    t_capture: float
    t_receive: float
    index: int


@dataclass(frozen=True)
class JointLimits:
    """Position and velocity limits of the arm's joints (rad, rad/s)."""

    q_min: np.ndarray = field(default_factory=lambda: PANDA_Q_MIN.copy())
    q_max: np.ndarray = field(default_factory=lambda: PANDA_Q_MAX.copy())
    dq_max: np.ndarray = field(default_factory=lambda: PANDA_DQ_MAX.copy())


class Robot(abc.ABC):
    """An arm with a parallel gripper. Use as a context manager (``with robot: ...``)."""

    #: A short name stored in episode attributes ("sim", "franka").
    kind: str = "robot"
    #: How many joints the arm has: the length of ``qpos`` and of a joint target.
    num_joints: int = NUM_JOINTS
    #: Whether a gripper is attached (without one, the gripper value of an action is ignored).
    has_gripper: bool = True

    @property
    def action_dim(self) -> int:
        """Length of an action: the joint targets and the gripper value.

        The gripper value is part of every action, also for an arm without a gripper, so recorded
        data and policies have one layout per arm.
        """
        return self.num_joints + 1

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the connection. Idempotent."""

    def close(self) -> None:
        """Stop motion and release the connection. Idempotent."""

    @property
    def limits(self) -> JointLimits:
        """Joint position and speed limits: the Panda's for a 7-joint arm unless the backend knows
        better; an arm of another size must report its own (there is no safe guess)."""
        if self.num_joints != NUM_JOINTS:
            raise ConfigError(f"{type(self).__name__} has {self.num_joints} joints: it must report its "
                              "own joint limits (override Robot.limits)")
        return JointLimits()

    @property
    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(q_min, q_max) in rad."""
        return self.limits.q_min, self.limits.q_max

    @property
    def velocity_limits(self) -> np.ndarray:
        """Maximum joint speeds in rad/s."""
        return self.limits.dq_max

    @property
    def speed_factor(self) -> float:
        """The fraction of :attr:`velocity_limits` the arm is driven at (1: full speed). A Franka
        driven through franky at a relative dynamics factor moves at that fraction, whatever it is sent."""
        return 1.0

    @property
    def commanded_velocity_limits(self) -> np.ndarray:
        """The joint speeds (rad/s) the arm actually reaches as it is driven: targets that move faster
        only run ahead of it."""
        return np.asarray(self.velocity_limits, float) * self.speed_factor

    @abc.abstractmethod
    def read(self) -> RobotState:
        """Return the latest state (never blocks for longer than one control period)."""

    @abc.abstractmethod
    def command(self, qpos_target: np.ndarray, gripper: float) -> None:
        """Send joint targets (``num_joints``,) and a normalised gripper target; returns without waiting."""

    def send_action(self, action: np.ndarray) -> None:
        """:meth:`command` an action vector: ``num_joints`` joint targets, then the gripper value."""
        n = self.num_joints
        self.command(action[:n], float(action[n]))

    @abc.abstractmethod
    def home(self) -> None:
        """Move to the ready pose and open the gripper; blocks until there."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop all motion now and hold the current position."""


class Camera(abc.ABC):
    """A camera that captures in its own thread. Use as a context manager."""

    name: str = "camera"

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def open(self) -> None:
        """Open the device and start capturing."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop capturing and release the device. Idempotent."""

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the delivered images."""

    @abc.abstractmethod
    def read_latest(self, max_age_s: float = 0.5) -> Frame:
        """Newest frame; raises :class:`~robokit.errors.StaleFrame` if none is younger than
        ``max_age_s``, :class:`~robokit.errors.HardwareFault` if the device is gone."""

    def frames_after(self, index: int, max_age_s: float = 0.5) -> list[Frame]:
        """The frames newer than ``index`` that the camera still holds, oldest first.

        A loop that stores every frame in order reads these instead of only the newest, so a step
        that runs a little late does not skip a frame. This default holds just the newest frame;
        cameras with a capture thread keep a few. Raises like :meth:`read_latest`.
        """
        frame = self.read_latest(max_age_s)
        return [frame] if frame.index > index else []
