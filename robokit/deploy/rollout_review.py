"""Why a simulated evaluation episode failed, and which object the gripper went to first.

An :class:`EpisodeReview` watches the simulator's true state at every control step of an episode
(it is an ``on_step`` hook of the control loop) and, at the end, says what went wrong::

    review = EpisodeReview(env)
    env.reset(seed=seed, task=task); review.start()
    loop.run_episode(..., on_step=review)
    verdict = review.finish(success)      # verdict.failure, verdict.first_object

Failure categories, checked in this order (a successful episode has none):

* ``wrong_object`` — another object than the named one was lifted before the named one was;
* ``grasp_missed`` — the named object was never lifted;
* ``wrong_target`` — the named object was lifted and ended in or over another target;
* ``not_released`` — the named object is still in the fingers at the end;
* ``time_out`` — everything else: put down outside every target, dropped, or still on its way.

``first_object`` is the object the gripper went to first: the first object whose centre the TCP
came near horizontally while the TCP was low; ``None`` when it went to none.

``grasp`` is where the hand was relative to the named object when the gripper was first commanded
to close (:class:`GraspAttempt`), and again :data:`CLOSE_STEPS` steps later, when the fingers have
shut: it tells a grasp missed beside the cube from one closed too high or at the wrong angle.

Thresholds, from the scenes' sizes (cubes are 4 cm in ``multi``, 5 cm in ``pick_place``; the
``multi`` cubes stand at least ~9 cm apart, the expert hovers its TCP 9 cm above a cube's centre
before it descends and carries at 13 cm above the table):

* lifted: the object's centre more than :data:`LIFT_HEIGHT` (3 cm) above where it rested at the
  start — three quarters of a small cube's height; a cube knocked over or pushed into a bowl or
  onto a plate rises by at most ~1 cm, so only a grasp lifts it that far;
* went to: the TCP within :data:`APPROACH_RADIUS` (3 cm) of the object's centre horizontally —
  inside the cube's footprint plus a centimetre, so at most one cube qualifies — while the TCP is
  less than :data:`APPROACH_ABOVE_TOP` (6 cm) above the object's top: below the expert's hover
  height, so hovering over a cube or carrying one over another does not count, descending does;
* in or over another target: the object's centre horizontally within that target's radius, at
  the end (at any height: held over it counts too);
* still in the fingers: a finger touches the object at the end and it is held off its support
  (centre more than its half size above its starting height, which is more than the highest
  target surface) or the gripper is being closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from robokit.deploy.loop import StepRecord

FAILURES = ("wrong_object", "grasp_missed", "wrong_target", "not_released", "time_out")

LIFT_HEIGHT = 0.03  # m above the starting height that counts as lifted
APPROACH_RADIUS = 0.03  # m, TCP to object centre, horizontally
APPROACH_ABOVE_TOP = 0.06  # m, TCP above the object's top at most
GRIPPER_CLOSING = 0.5  # gripper command (0 open, 1 closed) from which the hand holds
CLOSE_STEPS = 5  # control steps the fingers take to shut at 15 Hz (the expert's 0.3 s close phase)


@dataclass(frozen=True)
class GraspAttempt:
    """The named object seen from the TCP when the gripper closed (metres and degrees).

    ``across`` is along the fingers' closing direction (the cube fits while ``|across|`` is under
    the open fingers' half gap minus the cube's half size), ``along`` is perpendicular to it in the
    horizontal plane, ``height`` is the TCP above the object's centre and ``yaw_error`` the hand's
    yaw against the cube's nearest face, folded into [-45, 45). ``*_after`` are the same offsets
    :data:`CLOSE_STEPS` steps later (None if the episode ended before).
    """

    across: float
    along: float
    height: float
    yaw_error: float
    across_after: float | None = None
    along_after: float | None = None
    height_after: float | None = None

    @property
    def horizontal(self) -> float:
        """Horizontal distance from the TCP to the object's centre at the close command."""
        return float(np.hypot(self.across, self.along))


@dataclass(frozen=True)
class Verdict:
    """What an episode's review found: its failure category (None on success) and the object
    the gripper went to first (None if none)."""

    failure: str | None
    first_object: str | None
    grasp: GraspAttempt | None = None


class EpisodeReview:
    """Watches one simulated episode at a time and classifies it at the end (see the module doc).

    ``env`` is a :class:`~robokit.hardware.sim.PandaSimEnv`; call :meth:`start` after each reset,
    the review itself at every step (it is an ``on_step`` hook) and :meth:`finish` at the end.
    """

    def __init__(self, env: Any) -> None:
        self._env = env
        self._rest_z: dict[str, float] = {}
        self._first_lifted: str | None = None
        self._named_lifted = False
        self._first_object: str | None = None
        self._gripper = 0.0
        self._grasp: GraspAttempt | None = None
        self._since_close = -1

    def start(self) -> None:
        """Begin a new episode from the scene as it is now (just reset, objects at rest)."""
        env = self._env
        self._rest_z = {name: float(env.object_pose(name)[0][2]) for name in env.task.object_names}
        self._first_lifted = None
        self._named_lifted = False
        self._first_object = None
        self._gripper = 0.0
        self._grasp = None
        self._since_close = -1

    def __call__(self, record: StepRecord | None = None) -> None:
        """Observe the scene at one step (``record`` gives the gripper command sent)."""
        if record is not None and len(record.command):
            was_open = self._gripper < GRIPPER_CLOSING
            self._gripper = float(record.command[-1])
            if self._grasp is None and was_open and self._gripper >= GRIPPER_CLOSING:
                self._grasp = self._grasp_offsets()
                self._since_close = 0
        self._observe()
        if self._grasp is not None and self._since_close >= 0:
            self._since_close += 1
            if self._since_close == CLOSE_STEPS:
                later = self._grasp_offsets()
                self._grasp = GraspAttempt(self._grasp.across, self._grasp.along, self._grasp.height,
                                           self._grasp.yaw_error, later.across, later.along, later.height)

    def _grasp_offsets(self) -> GraspAttempt:
        """The named object's centre in the TCP's frame (see :class:`GraspAttempt`)."""
        env = self._env
        site = env.data.site("tcp")
        tcp = np.asarray(site.xpos, dtype=float)
        rot = np.asarray(site.xmat, dtype=float).reshape(3, 3)
        pos, cube_rot = env.object_pose(env.task.object_name)
        delta = pos - tcp
        # The fingers close along the TCP's y axis; its x axis is the other horizontal direction.
        across = float(delta[:2] @ _unit(rot[:2, 1]))
        along = float(delta[:2] @ _unit(rot[:2, 0]))
        hand_yaw = np.arctan2(rot[1, 0], rot[0, 0])
        cube_yaw = np.arctan2(cube_rot[1, 0], cube_rot[0, 0])
        error = (hand_yaw - cube_yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4
        return GraspAttempt(across, along, float(tcp[2] - pos[2]), float(np.degrees(error)))

    def _observe(self) -> None:
        env = self._env
        task = env.task
        if not self._rest_z:
            self.start()
        tcp = np.asarray(env.data.site("tcp").xpos, dtype=float)
        for name in task.object_names:
            pos, _ = env.object_pose(name)
            if pos[2] > self._rest_z[name] + LIFT_HEIGHT:
                if name == task.object_name:
                    self._named_lifted = True
                if self._first_lifted is None:
                    self._first_lifted = name
            if self._first_object is None:
                top = pos[2] + env.object_half_size(name)
                near = float(np.linalg.norm(tcp[:2] - pos[:2])) < APPROACH_RADIUS
                if near and tcp[2] < top + APPROACH_ABOVE_TOP:
                    self._first_object = name

    def finish(self, success: bool) -> Verdict:
        """Classify the episode from what was seen and the scene's final state."""
        self._observe()
        return Verdict(None if success else self._failure(), self._first_object, self._grasp)

    def _failure(self) -> str:
        env = self._env
        task = env.task
        named = task.object_name
        if self._first_lifted is not None and self._first_lifted != named:
            return "wrong_object"
        if not self._named_lifted:
            return "grasp_missed"
        pos, _ = env.object_pose(named)
        for target in task.target_names:
            if target == task.target_name:
                continue
            centre = env.target_position(target)
            radius = next(t.radius for t in _target_specs(task) if t.name == target)
            if float(np.linalg.norm(pos[:2] - centre[:2])) < radius:
                return "wrong_target"
        held_up = pos[2] > self._rest_z[named] + env.object_half_size(named)
        if env.fingers_touch(named) and (held_up or self._gripper >= GRIPPER_CLOSING):
            return "not_released"
        return "time_out"


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else v


def _target_specs(task: Any) -> Any:
    from robokit.hardware.sim.tasks import TASK_SETS

    return TASK_SETS[task.task_set].targets


def named_object(instruction: str) -> str | None:
    """The object a simulated task's instruction names (None for an instruction of no task set)."""
    from robokit.hardware.sim.tasks import TASK_SETS

    for spec in TASK_SETS.values():
        for name, text in spec.instructions.items():
            if text == instruction:
                return spec.tasks[name][0]
    return None


def count_failures(failures: Any) -> dict[str, int]:
    """Counts per category (every category, in :data:`FAILURES` order) of an iterable of
    categories; ``None`` (success) is not counted."""
    counts = dict.fromkeys(FAILURES, 0)
    for failure in failures:
        if failure is not None:
            counts[failure] = counts.get(failure, 0) + 1
    return counts


@dataclass(frozen=True)
class Grounding:
    """Does the gripper go to the named object first? Over the episodes with a first object."""

    correct: int  # episodes whose first object is the named one
    counted: int  # episodes with a first object
    without: int  # episodes where the gripper went to no object

    @property
    def accuracy(self) -> float | None:
        """``correct / counted``, None when no episode had a first object."""
        return self.correct / self.counted if self.counted else None
