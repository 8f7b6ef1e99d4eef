"""Instance masks of the simulated scene, from MuJoCo's segmentation rendering.

Every pixel gets the id of the instance it shows: 0 for the background (floor, table, anything
else), then the robot's links, the gripper's parts, each object and each target of the task set,
in that order (:func:`instance_table`). The table is fixed for a task set: every object of the set
is in the scene of every one of its tasks, so the ids mean the same in every episode.
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np

__all__ = ["GRIPPER_PARTS", "ROBOT_LINKS", "geom_instances", "instance_table", "render_mask"]

#: The arm's bodies (kind ``robot``) and the hand's (kind ``gripper``), by body name -> instance name.
ROBOT_LINKS = {f"link{i}": f"link{i}" for i in range(8)}
GRIPPER_PARTS = {"hand": "hand", "finger_left_body": "finger_left", "finger_right_body": "finger_right"}


def instance_table(object_names: Sequence[str], target_names: Sequence[str]) -> list[tuple[str, str]]:
    """``(name, kind)`` of every instance; instance id = position + 1 (0 is the background)."""
    return ([(name, "robot") for name in ROBOT_LINKS.values()]
            + [(name, "gripper") for name in GRIPPER_PARTS.values()]
            + [(name, "object") for name in object_names]
            + [(name, "target") for name in target_names])


def geom_instances(model: mujoco.MjModel, object_names: Sequence[str], target_names: Sequence[str]) -> np.ndarray:
    """uint8 (ngeom,): the instance id each geom of ``model`` belongs to (0: background)."""
    body_names = {**ROBOT_LINKS, **GRIPPER_PARTS, **{n: n for n in object_names}, **{n: n for n in target_names}}
    ids = {name: i + 1 for i, (name, _) in enumerate(instance_table(object_names, target_names))}
    by_body = np.zeros(model.nbody, dtype=np.uint8)
    for body, instance in body_names.items():
        body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body)
        if body_id >= 0:
            by_body[body_id] = ids[instance]
    return by_body[model.geom_bodyid]


def render_mask(renderer: mujoco.Renderer, data: mujoco.MjData, camera: str, geom_ids: np.ndarray) -> np.ndarray:
    """uint8 (H, W) instance ids of what ``camera`` sees now (``geom_ids`` from :func:`geom_instances`)."""
    renderer.enable_segmentation_rendering()
    try:
        renderer.update_scene(data, camera=camera)
        seg = renderer.render()  # (H, W, 2) int32: object id, object type; -1 where nothing was drawn
    finally:
        renderer.disable_segmentation_rendering()
    ids, types = seg[..., 0], seg[..., 1]
    geoms = (types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (ids >= 0) & (ids < geom_ids.size)
    mask = np.zeros(ids.shape, dtype=np.uint8)
    mask[geoms] = geom_ids[ids[geoms]]
    return mask
