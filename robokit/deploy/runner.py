"""Where the control loop's action chunks come from: a policy in this process or a policy server.

Both runners take the same :class:`~robokit.deploy.observation.Observation` and give the same
:class:`~robokit.deploy.client.InferResult`, so :class:`~robokit.deploy.loop.ControlLoop` runs one
code path whichever is used.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Protocol

import numpy as np

from robokit.deploy.client import InferResult, PolicyClient
from robokit.deploy.observation import Observation, prepare_observation
from robokit.deploy.protocol import PolicyInfo

__all__ = ["LocalRunner", "Observation", "PolicyRunner", "RemoteRunner"]


class PolicyRunner(Protocol):
    """What the control loop needs from a policy source."""

    #: The policy's description (shapes, cameras and what else it reads).
    info: PolicyInfo

    @property
    def timeout_s(self) -> float:
        """Longest an :meth:`infer` call may take before it gives up (``math.inf``: it never does);
        the loop counts a query that has run longer as overdue."""

    def infer(self, obs: Observation) -> InferResult: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class RemoteRunner:
    """Chunks from a :class:`~robokit.deploy.server.PolicyServer` through a :class:`PolicyClient`."""

    def __init__(self, client: PolicyClient, hello_timeout_s: float = 10.0) -> None:
        self.client = client
        self.info = client.info or client.hello(timeout_s=hello_timeout_s)

    @property
    def timeout_s(self) -> float:
        """The client's request timeout: an :meth:`infer` raises ServerUnavailable after it."""
        return self.client.timeout_s

    def infer(self, obs: Observation) -> InferResult:
        return self.client.infer(obs.qpos, obs.images, task=obs.task, goal_image=obs.goal_image,
                                 objects=obs.objects)

    def reset(self) -> None:
        self.client.reset()

    def close(self) -> None:
        self.client.close()


class LocalRunner:
    """Chunks from a policy object in this process (anything with ``config``, ``predict_chunk``,
    ``reset``), given the observation exactly as the server would give it
    (:func:`~robokit.deploy.observation.prepare_observation`)."""

    #: An inference in this process cannot be abandoned; it takes as long as it takes.
    timeout_s: float = math.inf

    def __init__(self, policy: Any, checkpoint_sha256: str | None = None, tasks: Sequence[str] = ()) -> None:
        from robokit.deploy.server import policy_info

        self.policy = policy
        self.info = policy_info(policy, checkpoint_sha256, tasks=tasks)

    def infer(self, obs: Observation) -> InferResult:
        policy_obs = prepare_observation(obs, self.info)
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
    # A torch policy must not build autograd graphs here; a policy without torch needs no torch.
    torch = sys.modules.get("torch")
    return torch.no_grad() if torch is not None else nullcontext()
