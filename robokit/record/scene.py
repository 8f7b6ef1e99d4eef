"""What a recording session does with the simulator: the task of the next episode, scene resets,
the episode attributes, the task check and the pixel boxes of the task's objects."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robokit.errors import UserError
from robokit.hardware.base import Camera

if TYPE_CHECKING:
    from robokit.hardware.sim import PandaSimEnv

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


class SimScene:
    """The simulated scene of a recording session (``env``) seen through the session's ``cameras``;
    with ``segmentation`` its episodes store every camera's instance masks."""

    def __init__(self, env: PandaSimEnv, cameras: Mapping[str, Camera], segmentation: bool = False) -> None:
        self.env = env
        #: The task a person chose for the next episodes (None: each scene draw's own).
        self.pinned_task: str | None = None
        # Episode camera name -> simulator camera, for the cameras that render the scene: their
        # episodes store where each object is in the image.
        self.box_cameras = {name: cam.name for name, cam in cameras.items() if env.cameras.get(cam.name) is cam}
        # Scene seeds the output folder already holds: a fresh draw skips them, so that a second
        # session into the same folder (after a crash, say) never records a scene twice.
        self._used_seeds: set[int] = set()
        #: Whether episodes store instance masks (every camera must then render the scene).
        self.segmentation = segmentation
        others = [name for name in cameras if name not in self.box_cameras]
        if segmentation and others:
            raise UserError(f"--segmentation stores the simulator's masks: camera(s) {', '.join(others)} do "
                            "not render the scene; use sim cameras (NAME=sim) only")

    def avoid_seeds(self, seeds: Iterable[int]) -> None:
        """Never draw these scene seeds for a fresh scene (those of the episodes already saved)."""
        self._used_seeds.update(int(s) for s in seeds)

    def _fresh_seed(self) -> int:
        seed = self.env.draw_seed()
        while seed in self._used_seeds:
            seed = self.env.draw_seed()
        self._used_seeds.add(seed)
        return seed

    @property
    def instruction(self) -> str:
        """The instruction of the current scene."""
        return self.env.task.instruction

    def pin_task(self, text: str) -> None:
        """Reset to the task that ``text`` names (its instruction, or its number from 1 in the task
        set), with the same layout; later resets keep it. Raises :class:`UserError` listing the tasks."""
        self.pinned_task = task_name(self.env, text)
        self.reset(same=True)

    def reset(self, same: bool) -> str:
        """The same scene again, or a fresh draw of layout and instruction (a pinned task stays);
        returns what happened, for the session's messages."""
        if same:
            self.env.reset(seed=self.env.seed, task=self.pinned_task or self.env.task.name)
            return "scene reset"
        self.env.reset(seed=self._fresh_seed(), task=self.pinned_task)
        return f"new scene (seed {self.env.seed})"

    def reset_for(self, source_name: str, source_attrs: Mapping[str, Any]) -> None:
        """A scene for an unattended episode: a replay gets the scene its episode was recorded on,
        anything else a fresh draw."""
        seed = source_attrs.get("sim_seed")
        if source_name == "replay" and seed is not None:
            self.env.reset(seed=int(seed), task=source_attrs.get("sim_task"))
        else:
            self.env.reset(seed=self._fresh_seed())

    def episode_attrs(self) -> dict[str, Any]:
        """Attributes stored with an episode recorded on the current scene."""
        return {"sim_seed": int(self.env.seed), "sim_task": self.env.task.name}

    def box_objects(self) -> dict[str, list[str]]:
        """Episode camera -> the objects whose boxes its episode stores."""
        return {name: list(self.env.task.object_names) for name in self.box_cameras}

    def object_boxes(self) -> dict[str, dict[str, Box | None]]:
        """Where each of the task's objects is in each box camera's current frame."""
        names = self.env.task.object_names
        return {cam: {name: self.env.object_box(sim_cam, name) for name in names}
                for cam, sim_cam in self.box_cameras.items()}

    def mask_instances(self) -> list[tuple[str, str]] | None:
        """The id table of the masks this session stores (None: it stores none)."""
        return self.env.instance_table() if self.segmentation else None

    def masks(self) -> dict[str, np.ndarray]:
        """Each box camera's instance mask of the current frame (empty: the session stores none)."""
        if not self.segmentation:
            return {}
        return {cam: self.env.camera_mask(sim_cam) for cam, sim_cam in self.box_cameras.items()}

    def success(self) -> bool | None:
        """The task check of the current scene (None when the check itself fails)."""
        try:
            return bool(self.env.task.success())
        except Exception:
            log.exception("the task's success check failed")
            return None


def episode_seeds(paths: Iterable[Path]) -> set[int]:
    """The ``sim_seed`` attributes of these episode files (files without one, or unreadable, add none)."""
    import h5py

    seeds = set()
    for path in paths:
        try:
            with h5py.File(path, "r") as f:
                seed = f.attrs.get("sim_seed")
        except OSError:
            continue
        if seed is not None:
            seeds.add(int(seed))
    return seeds


def task_name(env: PandaSimEnv, text: str) -> str:
    """The task of ``env``'s task set that ``text`` names (an instruction or its number from 1)."""
    from robokit.hardware.sim import TASK_SETS, resolve_task

    instructions = TASK_SETS[env.task_set].instructions  # task name -> instruction
    names = list(instructions)
    if text.isdigit() and 1 <= int(text) <= len(names):
        return names[int(text) - 1]
    try:
        task_set, name = resolve_task(text)
    except UserError:
        task_set, name = None, None
    if task_set != env.task_set or name is None:
        numbered = "; ".join(f"{i}: {instructions[n]}" for i, n in enumerate(names, 1))
        raise UserError(f"{text!r} is not a task of the {env.task_set} scene; type one of them or its "
                        f"number: {numbered}")
    return name
