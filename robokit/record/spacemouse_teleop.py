"""SpaceMouse teleop: the cap's deflection is the velocity of the tool centre point.

Each step the twist (:class:`~robokit.hardware.inputs.SpaceMouseReader`, -1..1 per axis) is turned
into a Cartesian velocity in the robot's base frame, scaled by the speed setting, and integrated
into the target pose, which is clamped to the jog box. From there it is the keyboard jog's job:
:class:`~robokit.record.teleop.KeyboardJog` rate-limits the command toward the target and solves
inverse kinematics for the joint targets, so the SpaceMouse and the keys move the same target and
both work on the simulation and the real arm (only joint targets come out).

Frames: the device reports x right, y toward the person, z down. With ``operator_yaw_deg`` 0 the
person stands behind the robot, looking along its x axis: pushing the cap away moves the hand
away (+x), right moves it right (-y), lifting it moves it up (+z), twisting the cap
counter-clockwise turns the hand counter-clockwise about z. For a person at another side, give
the direction they face in the base frame (180: across the table, facing the robot).

Buttons: left toggles the gripper; right is the recorder's ``s`` key (start / stop and save),
delivered through :meth:`SpaceMouseTeleop.poll` as a key source beside the terminal.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from robokit.errors import ConfigError
from robokit.hardware.inputs import SpaceMouseReader, open_spacemouse
from robokit.record.teleop import KeyboardJog, Observation

__all__ = ["SpaceMouseTeleop"]

# Device axes (x right, y toward the person, z down) -> base frame of a robot the person stands behind.
_DEVICE_TO_BASE = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def _rotation(rotvec: np.ndarray) -> np.ndarray:
    """Rotation matrix of an axis-angle vector (Rodrigues)."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


class SpaceMouseTeleop(KeyboardJog):
    """Drive the tool centre point with a SpaceMouse (see the module docs); the jog keys still work.

    ``max_speed`` (m/s) and ``max_rot_speed`` (rad/s) are the velocities at full deflection and full
    speed; ``+`` / ``-`` halve or double the speed setting (1/8 .. 1). ``roll_pitch``: also tilt the
    hand (by default only translation and yaw, which keeps the gripper pointing down).
    """

    name = "spacemouse"
    SPEEDS: ClassVar[tuple[float, float]] = (0.125, 1.0)
    key_help: tuple[tuple[str, str], ...] = (("SpaceMouse", "push / lift / twist the cap"), ("left button, space / g", "gripper"),
                ("right button", "start / stop + save"), ("+ / -", "speed"))

    def __init__(self, reader: SpaceMouseReader, fps: float = 30.0, max_speed: float = 0.15,
                 max_rot_speed: float = 0.8, roll_pitch: bool = False, operator_yaw_deg: float = 0.0,
                 speed: float = 0.5,
                 workspace: tuple[tuple[float, float], ...] = ((0.2, 0.85), (-0.6, 0.6), (0.0, 0.9))) -> None:
        if not (max_speed > 0 and max_rot_speed > 0 and fps > 0):
            raise ConfigError(f"SpaceMouse teleop needs positive speeds and fps, got max_speed {max_speed}, "
                              f"max_rot_speed {max_rot_speed}, fps {fps}")
        super().__init__(max_speed=max_speed, max_yaw_rate=max_rot_speed, fps=fps, workspace=workspace)
        self.reader = reader
        self.dt = 1.0 / float(fps)
        self.max_speed, self.max_rot_speed = float(max_speed), float(max_rot_speed)
        self.roll_pitch = bool(roll_pitch)
        c, s = np.cos(np.radians(operator_yaw_deg)), np.sin(np.radians(operator_yaw_deg))
        self.frame = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ _DEVICE_TO_BASE
        self.speed = float(np.clip(speed, *self.SPEEDS))
        self._keys: list[str] = []

    @classmethod
    def open(cls, device: str = "", fps: float = 30.0) -> SpaceMouseTeleop:
        """Open the SpaceMouse ``device`` names (path or part of its name; empty: the first found)."""
        return cls(open_spacemouse(device), fps=fps)

    # -- keys and buttons ------------------------------------------------------------------------
    def _take_buttons(self) -> None:
        for button, pressed in self.reader.take_edges():
            if not pressed:
                continue
            if button == "left":
                self.gripper = 0.0 if self.gripper > 0.5 else 1.0
            elif button == "right":
                self._keys.append("s")

    def poll(self, timeout_s: float = 0.0) -> list[str]:
        """Session keys from the buttons since the last call (the right button is ``s``)."""
        self._take_buttons()
        keys, self._keys = self._keys, []
        return keys

    def handle_key(self, key: str) -> bool:
        if key in ("+", "-"):
            factor = 2.0 if key == "+" else 0.5
            self.speed = float(np.clip(self.speed * factor, *self.SPEEDS))
            return True
        return super().handle_key(key)

    def status(self) -> str:
        grip = "closed" if self.gripper > 0.5 else "open"
        line = (f"SpaceMouse {self.reader.name!r}: speed {self.speed * 100:.0f}% "
                f"(max {self.max_speed * self.speed * 100:.1f} cm/s), gripper {grip}")
        if self._target is not None:
            line += f", target xyz {np.round(self._target[0], 3).tolist()}"
        return f"{line}  {self.message}" if self.message else line

    # -- motion ----------------------------------------------------------------------------------
    def next_action(self, obs: Observation) -> np.ndarray:
        """Integrate the twist into the target, then the keyboard jog's rate limit and IK."""
        self.reader.check()  # a SpaceMouse that went away stops the loop with its message
        self._take_buttons()
        if self._q is not None and self._command is not None:  # anchored: move the target
            twist = self.reader.twist()
            velocity = self.frame @ twist[:3] * (self.max_speed * self.speed)
            omega = self.frame @ twist[3:] * (self.max_rot_speed * self.speed)
            if not self.roll_pitch:
                omega[:2] = 0.0
            # Within the jog's own rate limit, and one step ahead of the command: the hand stops when
            # the cap is released instead of catching up with a target that ran ahead.
            norm = float(np.linalg.norm(velocity))
            if norm > self.max_speed * self.speed:
                velocity *= self.max_speed * self.speed / norm
            if np.any(twist):
                pos, rot = self._command
                wanted = pos + velocity * self.dt
                new_pos = np.clip(wanted, self.workspace[:, 0], self.workspace[:, 1])
                self.message = "edge of the jog workspace" if not np.allclose(new_pos, wanted) else ""
                self._target = (new_pos, _rotation(omega * self.dt) @ rot)
        return super().next_action(obs)

    def close(self) -> None:
        self.reader.close()
