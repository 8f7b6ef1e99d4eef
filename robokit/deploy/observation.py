"""One observation on its way to a policy: what the control loop gathers and what the policy is given.

:func:`prepare_observation` is the one place where camera images become the size the policy was
trained on: both the in-process :class:`~robokit.deploy.runner.LocalRunner` and the
:class:`~robokit.deploy.server.PolicyServer` call it, so a policy sees the same input whichever
way it is run. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robokit.deploy.protocol import PolicyInfo, scale_object_boxes
from robokit.policies.preprocess import resize_image


@dataclass
class Observation:
    """One observation as the loop gathers it (images by camera name, uint8 RGB, any size)."""

    qpos: np.ndarray
    images: dict[str, np.ndarray] = field(default_factory=dict)
    task: str | None = None
    goal_image: np.ndarray | None = None
    #: ``[{"name", "box": [x0, y0, x1, y1] pixels of that camera's image, "camera"}]`` or None
    objects: list[dict[str, Any]] | None = None


def prepare_observation(obs: Observation, info: PolicyInfo) -> dict[str, Any]:
    """The observation dict ``policy.predict_chunk`` takes, built from ``obs`` for the policy ``info``.

    Every camera of ``info.camera_names`` is resized to ``info.image_shape`` (area interpolation),
    the goal image too; object boxes move from pixels of the images as given to pixels of the
    resized ones; ``task``, ``goal_image`` and ``objects`` are present only when ``obs`` has them.
    """
    h, w, _ = info.image_shape
    policy_obs: dict[str, Any] = {
        "qpos": np.asarray(obs.qpos, dtype=np.float32),
        "images": {cam: resize_image(obs.images[cam], h, w) for cam in info.camera_names},
    }
    if obs.task is not None:
        policy_obs["task"] = obs.task
    if obs.goal_image is not None:
        policy_obs["goal_image"] = resize_image(obs.goal_image, h, w)
    if obs.objects is not None:
        sizes = {cam: obs.images[cam].shape[:2] for cam in info.camera_names}
        policy_obs["objects"] = scale_object_boxes(obs.objects, sizes, (h, w))
    return policy_obs
