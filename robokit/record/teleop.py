"""Teleop sources: what produces the action of each recorded step.

Every source implements ``next_action(obs) -> np.ndarray (robot.action_dim,) | None``: one target
per joint and a gripper value (0 open .. 1 closed), or ``None`` once it has finished (scripted
expert done, replay exhausted). Sources:

- :class:`KeyboardJog`: Cartesian jog of the tool centre point (x/y/z, yaw) and a gripper toggle,
  turned into joint targets with :func:`robokit.hardware.kinematics.ik`. Works on the sim and the
  real arm (pure numpy). :class:`~robokit.record.spacemouse_teleop.SpaceMouseTeleop` moves the same
  target with a SpaceMouse.
- :class:`Kinesthetic`: the person moves the arm by hand (Franka zero-stiffness mode); the action of
  step t is the joint position measured at step t+1 (what the original Franka recorder stored as
  the action). The gripper toggles
  from the keyboard.
- :class:`Scripted`: the simulator's privileged scripted expert (sim only).
- :class:`Replay`: the actions of a recorded episode, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from robokit.errors import DataError, UserError
from robokit.hardware.base import NUM_JOINTS, RobotState

if TYPE_CHECKING:
    from robokit.hardware.sim import PandaSimEnv

__all__ = [
    "TELEOP_CHOICES",
    "KeyboardJog",
    "Kinesthetic",
    "Observation",
    "Replay",
    "Scripted",
    "TeleopSource",
    "check_teleop_spec",
    "make_teleop",
]

TELEOP_CHOICES = ("keyboard", "spacemouse[:DEVICE]", "kinesthetic", "scripted", "replay:PATH")


@dataclass
class Observation:
    """What a source sees at one step: the measured robot state and the camera images (RGB)."""

    state: RobotState
    images: dict[str, np.ndarray]


class TeleopSource:
    """Base of all sources. Subclasses override :meth:`next_action` and what else they need."""

    #: Stored as the episode attribute ``source``.
    name = "teleop"
    #: True: the action of step t is the state measured at step t+1 (the session fills it in).
    action_is_next_state = False
    #: True: the source finishes episodes by itself (scripted, replay): the session records
    #: unattended, starting and saving episodes without keys.
    autonomous = False
    #: (key, what it does) pairs shown in the live panel.
    key_help: tuple[tuple[str, str], ...] = ()

    def reset(self) -> None:
        """A new episode begins (or the scene was reset): forget per-episode state."""

    def handle_key(self, key: str) -> bool:
        """React to a key the session does not use itself; True if it was used."""
        return False

    def status(self) -> str:
        """One line for the live panel."""
        return ""

    def next_action(self, obs: Observation) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (e.g. leave kinesthetic mode)."""


# -- keyboard jog ------------------------------------------------------------------------------------
def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class KeyboardJog(TeleopSource):
    """Jog the tool centre point with keys; each press moves the target by one jog step.

    Holding a key (terminal auto-repeat) moves continuously. The commanded pose follows the target
    at no more than ``max_speed`` m/s and ``max_yaw_rate`` rad/s, so a burst of key presses never
    makes the arm jump. A target the IK cannot reach is refused and the panel says so.
    """

    name = "keyboard"
    MOVES: ClassVar[dict[str, tuple[np.ndarray, float]]] = {
        "up": (np.array([1.0, 0, 0]), 0.0), "i": (np.array([1.0, 0, 0]), 0.0),
        "down": (np.array([-1.0, 0, 0]), 0.0), "k": (np.array([-1.0, 0, 0]), 0.0),
        "left": (np.array([0, 1.0, 0]), 0.0), "j": (np.array([0, 1.0, 0]), 0.0),
        "right": (np.array([0, -1.0, 0]), 0.0), "l": (np.array([0, -1.0, 0]), 0.0),
        "u": (np.array([0, 0, 1.0]), 0.0), "pageup": (np.array([0, 0, 1.0]), 0.0),
        "o": (np.array([0, 0, -1.0]), 0.0), "pagedown": (np.array([0, 0, -1.0]), 0.0),
        ",": (np.zeros(3), 1.0), "[": (np.zeros(3), 1.0),
        ".": (np.zeros(3), -1.0), "]": (np.zeros(3), -1.0),
    }
    key_help: tuple[tuple[str, str], ...] = (
        ("arrows / i k j l", "jog x / y"), ("u / o", "jog up / down"), (", / .", "yaw"),
        ("space / g", "gripper open/close"), ("+ / -", "jog step"))

    def __init__(self, step_m: float = 0.01, step_rad: float = np.radians(5.0), max_speed: float = 0.15,
                 max_yaw_rate: float = 1.0, fps: float = 30.0,
                 workspace: tuple[tuple[float, float], ...] = ((0.2, 0.85), (-0.6, 0.6), (0.0, 0.9))) -> None:
        self.step_m, self.step_rad = float(step_m), float(step_rad)
        self.max_step_m = float(max_speed) / float(fps)
        self.max_step_rad = float(max_yaw_rate) / float(fps)
        self.workspace = np.array(workspace, dtype=float)
        self.gripper = 0.0
        self.message = ""
        self._target: tuple[np.ndarray, np.ndarray] | None = None  # (pos, R) where the keys point
        self._command: tuple[np.ndarray, np.ndarray] | None = None  # (pos, R) commanded this step
        self._q: np.ndarray | None = None

    def reset(self) -> None:
        self._target = self._command = None
        self._q = None
        self.message = ""

    def handle_key(self, key: str) -> bool:
        if key in ("space", "g"):
            self.gripper = 0.0 if self.gripper > 0.5 else 1.0
            return True
        if key == "+":
            self.step_m, self.step_rad = min(self.step_m * 2, 0.08), min(self.step_rad * 2, np.radians(30))
            return True
        if key == "-":
            self.step_m, self.step_rad = max(self.step_m / 2, 0.00125), max(self.step_rad / 2, np.radians(0.625))
            return True
        move = self.MOVES.get(key)
        if move is None:
            return False
        if self._target is None:  # no state seen yet: the next step anchors the target
            return True
        direction, yaw = move
        self.message = ""
        pos, rot = self._target
        new_pos = np.clip(pos + direction * self.step_m, self.workspace[:, 0], self.workspace[:, 1])
        if not np.allclose(new_pos, pos + direction * self.step_m):
            self.message = "edge of the jog workspace"
        self._target = (new_pos, _rot_z(yaw * self.step_rad) @ rot)
        return True

    def status(self) -> str:
        grip = "closed" if self.gripper > 0.5 else "open"
        line = f"jog step {self.step_m * 100:.1f} cm / {np.degrees(self.step_rad):.1f}°, gripper {grip}"
        if self._target is not None:
            line += f", target xyz {np.round(self._target[0], 3).tolist()}"
        return f"{line}  {self.message}" if self.message else line

    def next_action(self, obs: Observation) -> np.ndarray:
        from robokit.hardware.kinematics import fk, ik, rotation_error

        if self._q is None or self._target is None or self._command is None:
            self._q = np.asarray(obs.state.qpos, dtype=float).copy()
            pos, rot = fk(self._q)
            self._target = self._command = (pos, rot)
            self.gripper = 1.0 if obs.state.gripper > 0.5 else 0.0
        # Move the commanded pose toward the target, rate-limited.
        cpos, crot = self._command
        tpos, trot = self._target
        delta = tpos - cpos
        dist = float(np.linalg.norm(delta))
        pos = tpos if dist <= self.max_step_m else cpos + delta * (self.max_step_m / dist)
        yaw_err = float(rotation_error(crot, trot)[2])
        rot = trot if abs(yaw_err) <= self.max_step_rad else _rot_z(np.sign(yaw_err) * self.max_step_rad) @ crot
        try:
            q = ik(pos, rot, self._q)
        except UserError:
            # Unreachable: stay where we are and pull the target back to the last reachable pose.
            self._target = self._command
            self.message = "target unreachable: jog back"
            q = self._q
        else:
            self._command = (pos, rot)
        self._q = q
        return np.concatenate([q, [self.gripper]]).astype(np.float32)


# -- kinesthetic -------------------------------------------------------------------------------------
class Kinesthetic(TeleopSource):
    """Guiding the real arm by hand. The session records the next measured qpos as the action."""

    name = "kinesthetic"
    action_is_next_state = True
    key_help = (("space / g", "gripper open/close"),)

    def __init__(self, robot: Any) -> None:
        set_mode = getattr(robot, "set_kinesthetic", None)
        if set_mode is None:
            raise UserError(f"kinesthetic teaching needs a robot you can guide by hand (--robot franka); "
                            f"the {getattr(robot, 'kind', 'robot')} robot cannot")
        self._robot = robot
        self._set_mode = set_mode
        self.gripper = 0.0
        self._on = False

    def start(self) -> None:
        """Switch the arm to zero-stiffness mode (call once the robot is open)."""
        self._set_mode(True)
        self._on = True

    def reset(self) -> None:
        """After a reset the arm must be guidable again: homing (key h) leaves zero-stiffness mode."""
        if self._on:
            self._set_mode(True)

    def handle_key(self, key: str) -> bool:
        if key in ("space", "g"):
            self.gripper = 0.0 if self.gripper > 0.5 else 1.0
            return True
        return False

    def status(self) -> str:
        return f"guide the arm by hand; gripper {'closed' if self.gripper > 0.5 else 'open'}"

    def next_action(self, obs: Observation) -> np.ndarray:
        if not self._on:
            self.start()
        return np.concatenate([obs.state.qpos, [self.gripper]]).astype(np.float32)

    def stop(self) -> None:
        """Leave zero-stiffness mode: the arm holds its pose again (a deploy takeover hands back)."""
        if self._on:
            self._on = False
            self._set_mode(False)

    def close(self) -> None:
        self.stop()


# -- scripted expert ---------------------------------------------------------------------------------
class Scripted(TeleopSource):
    """The simulator's scripted expert for the current scene (privileged state, sim only)."""

    name = "scripted"
    autonomous = True

    def __init__(self, env: PandaSimEnv) -> None:
        self._env = env
        self._expert: Any = None

    def reset(self) -> None:
        self._expert = None

    def status(self) -> str:
        phase = getattr(self._expert, "phase", "start") if self._expert is not None else "start"
        return f"scripted expert: {phase}"

    def next_action(self, obs: Observation) -> np.ndarray | None:
        if self._expert is None:
            self._expert = self._env.task.expert()
        return self._expert.next_action(obs.state)


# -- replay ------------------------------------------------------------------------------------------
class Replay(TeleopSource):
    """The recorded actions of an episode file, one per step.

    ``num_joints`` is the arm's: actions of one value per joint (no gripper column, as the original
    Franka recorder's) get an open gripper; any other width is refused with a clear error.
    """

    name = "replay"
    autonomous = True

    def __init__(self, path: str | Path, num_joints: int = NUM_JOINTS) -> None:
        from robokit.episodes.reader import open_episode

        self.path = Path(path)
        with open_episode(self.path) as ep:
            actions = ep.action()
            self.attrs = dict(ep.attrs)
            self.task = ep.task
            self.layout = ep.layout
            self.recorded_qpos = ep.qpos()
            self.fps = ep.fps
        if actions.shape[1] == num_joints:
            actions = np.concatenate([actions, np.zeros((len(actions), 1), np.float32)], axis=1)
        if actions.shape[1] != num_joints + 1 or len(actions) == 0:
            raise DataError(f"{self.path}: /action has shape {actions.shape}; replay on a {num_joints}-joint arm "
                            f"needs (T, {num_joints + 1}) joint targets + gripper (or {num_joints} joints)")
        if not np.all(np.isfinite(actions)):
            raise DataError(f"{self.path}: /action contains NaN or infinite values; refusing to replay it")
        self.actions = actions.astype(np.float32)
        self._t = 0

    @property
    def step(self) -> int:
        return self._t

    def reset(self) -> None:
        self._t = 0

    def status(self) -> str:
        return f"replaying {self.path.name}: step {self._t}/{len(self.actions)}"

    def next_action(self, obs: Observation) -> np.ndarray | None:
        if self._t >= len(self.actions):
            return None
        action = self.actions[self._t]
        self._t += 1
        return action


def check_teleop_spec(spec: str, sim: bool) -> tuple[str, str]:
    """Validate ``--teleop`` against ``--sim`` before any hardware is opened; returns (kind, argument)."""
    kind, _, arg = (spec or "").strip().partition(":")
    kind = kind.lower()
    if kind not in ("keyboard", "spacemouse", "kinesthetic", "scripted", "replay"):
        raise UserError(f"unknown --teleop {spec!r}; choose one of: {', '.join(TELEOP_CHOICES)}")
    if kind == "kinesthetic" and sim:
        raise UserError("--teleop kinesthetic guides the real arm by hand: use --robot franka --host IP "
                        "(in the simulation use --teleop keyboard or scripted)")
    if kind == "scripted" and not sim:
        raise UserError("--teleop scripted uses the simulator's expert: add --sim")
    if kind == "replay" and not arg:
        raise UserError("--teleop replay needs the episode: --teleop replay:path/to/episode_0.hdf5")
    return kind, arg


def make_teleop(spec: str, robot: Any, sim_env: PandaSimEnv | None, fps: float) -> TeleopSource:
    """Build the source ``--teleop`` names: keyboard | spacemouse[:DEVICE] | kinesthetic | scripted | replay:PATH."""
    kind, arg = check_teleop_spec(spec, sim_env is not None)
    if kind == "keyboard":
        return KeyboardJog(fps=fps)
    if kind == "spacemouse":
        from robokit.record.spacemouse_teleop import SpaceMouseTeleop

        return SpaceMouseTeleop.open(arg, fps=fps)
    if kind == "kinesthetic":
        return Kinesthetic(robot)
    if kind == "scripted":
        if sim_env is None:  # check_teleop_spec refuses it already; this keeps the type checker sure
            raise UserError("--teleop scripted uses the simulator's expert: add --sim")
        return Scripted(sim_env)
    return Replay(arg, num_joints=int(getattr(robot, "num_joints", NUM_JOINTS)))
