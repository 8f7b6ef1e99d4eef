"""Simulated tasks: what is in the scene, how it is randomised, when it is solved.

Two task sets share one mechanism (move one object into one target):

* ``pick_place`` — one red cube, one green target zone. Task name ``"pick_place"``.
* ``multi`` — red, green and blue cubes, a blue bowl and a yellow plate. Each task is named by its
  instruction, e.g. ``"put the red cube in the blue bowl"`` (3 objects x 2 targets = 6 tasks).

Randomisation is moderate on purpose: the scripted demonstrations must be learnable by a small
policy from ~50 episodes (cube x/y within ±7 cm, yaw within ±30°, targets within ±2 cm). A cube
has 90° symmetry, so yaw beyond ±45° would look the same while the expert's grasp angle would jump.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from robokit.errors import UserError
from robokit.hardware.sim.model import TOP_CAMERA, CameraPlacement, ObjectSpec, TargetSpec

if TYPE_CHECKING:
    from robokit.hardware.sim.env import PandaSimEnv
    from robokit.hardware.sim.expert import ScriptedExpert

PICK_PLACE_CUBE_HALF = 0.025  # 5 cm: large enough to see in a small image, 1.5 cm spare per finger
MULTI_CUBE_HALF = 0.02  # 4 cm: three cubes side by side leave room for the open fingers
YAW_RANGE = np.radians(30.0)

# (x, y) of an object and its yaw, per object name; (x, y) per target name.
Layout = tuple[dict[str, tuple[float, float, float]], dict[str, tuple[float, float]]]


@dataclass(frozen=True)
class TaskSetSpec:
    """The scene of a task set and its tasks (task name -> (object to move, target))."""

    name: str
    objects: tuple[ObjectSpec, ...]
    targets: tuple[TargetSpec, ...]
    tasks: dict[str, tuple[str, str]]
    instructions: dict[str, str]
    layout: Callable[[np.random.Generator], Layout] = field(repr=False)
    top_camera: CameraPlacement = TOP_CAMERA


def _pick_place_layout(rng: np.random.Generator) -> Layout:
    cube = (0.50 + rng.uniform(-0.07, 0.07), -0.12 + rng.uniform(-0.07, 0.07), rng.uniform(-YAW_RANGE, YAW_RANGE))
    target = (0.50 + rng.uniform(-0.02, 0.02), 0.18 + rng.uniform(-0.02, 0.02))
    return {"cube": cube}, {"target": target}


_MULTI_COLOURS = {"red": (0.85, 0.12, 0.1, 1.0), "green": (0.15, 0.7, 0.2, 1.0), "blue": (0.15, 0.3, 0.9, 1.0)}
_MULTI_SLOTS = ((0.38, -0.15), (0.51, -0.15), (0.64, -0.15))
# Above the front of the table, framing the cubes and targets only: at 64x80 the default 3/4 view
# shows a 4 cm cube as ~2x2 pixels, too few to tell its colour and place from the table's; this
# one shows it as ~7x7. The arm enters the view when it reaches.
_MULTI_TOP_CAMERA = CameraPlacement(pos=(1.0, 0.03, 0.8), look_at=(0.5, 0.03, 0.0), fovy=33.0)


def _multi_layout(rng: np.random.Generator) -> Layout:
    order = rng.permutation(len(_MULTI_SLOTS))
    objects = {}
    for colour, slot in zip(_MULTI_COLOURS, order):
        x, y = _MULTI_SLOTS[slot]
        objects[f"{colour}_cube"] = (x + rng.uniform(-0.02, 0.02), y + rng.uniform(-0.03, 0.03),
                                     rng.uniform(-YAW_RANGE, YAW_RANGE))
    targets = {
        "blue_bowl": (0.42 + rng.uniform(-0.02, 0.02), 0.19 + rng.uniform(-0.02, 0.02)),
        "yellow_plate": (0.62 + rng.uniform(-0.02, 0.02), 0.19 + rng.uniform(-0.02, 0.02)),
    }
    return objects, targets


def _multi_tasks() -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    tasks: dict[str, tuple[str, str]] = {}
    for target, phrase in (("blue_bowl", "in the blue bowl"), ("yellow_plate", "on the yellow plate")):
        for colour in _MULTI_COLOURS:
            tasks[f"put the {colour} cube {phrase}"] = (f"{colour}_cube", target)
    return tasks, {name: name for name in tasks}


_multi_task_map, _multi_instructions = _multi_tasks()

TASK_SETS: dict[str, TaskSetSpec] = {
    "pick_place": TaskSetSpec(
        name="pick_place",
        objects=(ObjectSpec("cube", PICK_PLACE_CUBE_HALF, (0.85, 0.12, 0.1, 1.0)),),
        targets=(TargetSpec("target", "zone", 0.06, (0.2, 0.75, 0.3, 1.0)),),
        tasks={"pick_place": ("cube", "target")},
        instructions={"pick_place": "put the red cube in the green zone"},
        layout=_pick_place_layout,
    ),
    "multi": TaskSetSpec(
        name="multi",
        objects=tuple(ObjectSpec(f"{c}_cube", MULTI_CUBE_HALF, rgba) for c, rgba in _MULTI_COLOURS.items()),
        targets=(
            TargetSpec("blue_bowl", "bowl", 0.075, (0.2, 0.35, 0.85, 1.0)),
            TargetSpec("yellow_plate", "plate", 0.07, (0.95, 0.8, 0.15, 1.0)),
        ),
        tasks=_multi_task_map,
        instructions=_multi_instructions,
        layout=_multi_layout,
        top_camera=_MULTI_TOP_CAMERA,
    ),
}


def list_tasks(task_set: str) -> list[str]:
    """Task names of a task set: ``["pick_place"]`` or the ``multi`` instructions."""
    if task_set not in TASK_SETS:
        raise UserError(f"unknown task set {task_set!r}; known task sets: {', '.join(TASK_SETS)}")
    return list(TASK_SETS[task_set].tasks)


def resolve_task(task: str) -> tuple[str, str | None]:
    """Map a task set name or a task name to (task set, task name or None = draw from the seed)."""
    key = " ".join(str(task).strip().split())
    if key in TASK_SETS:
        spec = TASK_SETS[key]
        return key, (next(iter(spec.tasks)) if len(spec.tasks) == 1 else None)
    for spec in TASK_SETS.values():
        for name, instruction in spec.instructions.items():
            if key.lower() in (name.lower(), instruction.lower()):
                return spec.name, name
    known = [name for spec in TASK_SETS.values() for name in spec.tasks]
    raise UserError(
        f"unknown sim task {task!r}; known tasks: {'; '.join(known)} (or a task set: {', '.join(TASK_SETS)})"
    )


class SimTask:
    """One task in a live scene: move ``object_name`` into ``target_name``.

    ``name`` is what :func:`list_tasks` returns and ``env.reset(task=...)`` accepts; ``instruction``
    is the text stored in episodes and given to goal-conditioned policies.
    """

    #: Success tolerances: object centre this far inside the target's rim, resting within this
    #: height of the target surface, slower than this.
    _RIM_MARGIN = 0.015
    _REST_HEIGHT = 0.015
    _REST_SPEED = 0.05
    #: Suggested time limit for evaluating a policy on this task (twice the expert's 5 s).
    max_duration_s = 10.0

    def __init__(self, env: PandaSimEnv, task_set: TaskSetSpec, name: str) -> None:
        self._env = env
        self.task_set = task_set.name
        self.name = name
        self.instruction = task_set.instructions[name]
        self.object_names = [o.name for o in task_set.objects]
        self.target_names = [t.name for t in task_set.targets]
        self.object_name, self.target_name = task_set.tasks[name]
        self.object_spec = next(o for o in task_set.objects if o.name == self.object_name)
        self.target_spec = next(t for t in task_set.targets if t.name == self.target_name)

    def __repr__(self) -> str:
        return f"SimTask({self.name!r})"

    def object_in_target(self) -> bool:
        """The object's centre is inside the target and it rests on the target's surface."""
        pos, _ = self._env.object_pose(self.object_name)
        target = self._env.target_position(self.target_name)
        horizontal = float(np.linalg.norm(pos[:2] - target[:2]))
        rest_z = target[2] + self.target_spec.surface_z + self.object_spec.half_size
        return horizontal < self.target_spec.radius - self._RIM_MARGIN and abs(pos[2] - rest_z) < self._REST_HEIGHT

    def success(self) -> bool:
        """Object resting inside the target, still, and released (no finger touches it)."""
        return (
            self.object_in_target()
            and self._env.object_speed(self.object_name) < self._REST_SPEED
            and not self._env.fingers_touch(self.object_name)
        )

    def expert(self, start_phase: str = "pre_grasp") -> ScriptedExpert:
        """A scripted expert for this task, starting from the current state of the scene (at
        ``start_phase``: "lift" when the object is already in the hand)."""
        from robokit.hardware.sim.expert import ScriptedExpert

        return ScriptedExpert(self._env, self.object_name, self.target_name, start_phase=start_phase)
