"""Where the control loop's action chunks come from: a policy in this process or a policy server.

Both runners take the same observation and give the same :class:`~robokit.deploy.client.InferResult`,
so :class:`~robokit.deploy.loop.ControlLoop` runs one code path whichever is used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from robokit.deploy.client import InferResult, PolicyClient
from robokit.deploy.protocol import PolicyInfo, scale_object_boxes
from robokit.policies.preprocess import resize_image


@dataclass
class Observation:
    """One observation as the loop gathers it (images by camera name, uint8 RGB)."""

    qpos: np.ndarray
    images: dict[str, np.ndarray] = field(default_factory=dict)
    task: str | None = None
    goal_image: np.ndarray | None = None
    #: ``[{"name", "box": [x0, y0, x1, y1] pixels of that camera's image, "camera"}]`` or None
    objects: list[dict[str, Any]] | None = None


class PolicyRunner(Protocol):
    """What the control loop needs from a policy source."""

    info: PolicyInfo

    def infer(self, obs: Observation) -> InferResult: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class RemoteRunner:
    """Chunks from a :class:`~robokit.deploy.server.PolicyServer` through a :class:`PolicyClient`."""

    def __init__(self, client: PolicyClient, hello_timeout_s: float = 10.0) -> None:
        self.client = client
        self.info = client.info or client.hello(timeout_s=hello_timeout_s)

    def infer(self, obs: Observation) -> InferResult:
        return self.client.infer(obs.qpos, obs.images, task=obs.task, goal_image=obs.goal_image,
                                 objects=obs.objects)

    def reset(self) -> None:
        self.client.reset()

    def close(self) -> None:
        self.client.close()


class LocalRunner:
    """Chunks from a policy object in this process (anything with ``config``, ``predict_chunk``,
    ``reset``); images are resized to the policy's ``image_shape`` like the server does."""

    def __init__(self, policy: Any, checkpoint_sha256: str | None = None) -> None:
        from robokit.deploy.server import policy_info

        self.policy = policy
        self.info = policy_info(policy, checkpoint_sha256)

    def infer(self, obs: Observation) -> InferResult:
        h, w, _ = self.info.image_shape
        policy_obs: dict[str, Any] = {
            "qpos": np.asarray(obs.qpos, dtype=np.float32),
            "images": {cam: resize_image(obs.images[cam], h, w) for cam in self.info.camera_names},
        }
        if obs.task is not None:
            policy_obs["task"] = obs.task
        if obs.goal_image is not None:
            policy_obs["goal_image"] = resize_image(obs.goal_image, h, w)
        if obs.objects is not None:  # boxes follow their images to the policy's size, as the server does
            sizes = {cam: obs.images[cam].shape[:2] for cam in self.info.camera_names}
            policy_obs["objects"] = scale_object_boxes(obs.objects, sizes, (h, w))
        t0 = time.perf_counter()
        with _no_grad():
            chunk, extras = self.policy.predict_chunk(policy_obs)
        ms = (time.perf_counter() - t0) * 1e3
        done = (extras or {}).get("done")
        return InferResult(actions=np.asarray(chunk, dtype=np.float32), done=None if done is None else float(done),
                           model_ms=ms, server_ms=ms, rtt_ms=ms)

    def reset(self) -> None:
        self.policy.reset()

    def close(self) -> None:
        """Nothing to release: the policy belongs to the caller."""


def _no_grad() -> Any:
    import sys
    from contextlib import nullcontext

    torch = sys.modules.get("torch")
    return torch.no_grad() if torch is not None else nullcontext()
