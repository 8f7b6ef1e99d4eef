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
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import nullcontext
from typing import Any, Protocol

import numpy as np

from robokit.deploy.client import InferResult, PolicyClient
from robokit.deploy.observation import Observation, prepare_observation
from robokit.deploy.protocol import PolicyInfo
from robokit.errors import ServerUnavailable

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
    """Chunks from a :class:`~robokit.deploy.server.PolicyServer` through a :class:`PolicyClient`.

    Every query gets the client's timeout except the first, which may take ``first_timeout_s``: a
    server's first answer can include lazy work (imports, kernel selection, a busy machine), and the
    arm is at rest while it waits for it.
    """

    def __init__(self, client: PolicyClient, hello_timeout_s: float = 10.0, first_timeout_s: float = 10.0) -> None:
        self.client = client
        self.info = client.info or client.hello(timeout_s=hello_timeout_s)
        self.first_timeout_s = max(float(first_timeout_s), client.timeout_s)
        self._calls = 0

    @property
    def timeout_s(self) -> float:
        """The client's request timeout: an :meth:`infer` raises ServerUnavailable after it."""
        return self.client.timeout_s

    def infer(self, obs: Observation) -> InferResult:
        timeout = self.first_timeout_s if self._calls == 0 else None
        self._calls += 1
        return self.client.infer(obs.qpos, obs.images, task=obs.task, goal_image=obs.goal_image,
                                 objects=obs.objects, timeout_s=timeout)

    def reset(self) -> None:
        self.client.reset()

    def close(self) -> None:
        self.client.close()


class LocalRunner:
    """Chunks from a policy object in this process (anything with ``config``, ``predict_chunk``,
    ``reset``), given the observation exactly as the server would give it
    (:func:`~robokit.deploy.observation.prepare_observation`).

    With a finite ``timeout_s`` the policy runs in a worker thread and an :meth:`infer` that takes
    longer raises :class:`ServerUnavailable`, so a policy that hangs cannot hold the control loop
    forever (the watchdog then stops the robot). The first call may take ``first_timeout_s``: it
    includes the model's lazy initialisation. A thread cannot be stopped, so while a timed-out
    call is still running every further call is refused at once. ``math.inf`` (the default) runs
    the policy in the caller's thread, as long as it takes.
    """

    def __init__(self, policy: Any, checkpoint_sha256: str | None = None, tasks: Sequence[str] = (),
                 timeout_s: float = math.inf, first_timeout_s: float = 60.0) -> None:
        from robokit.deploy.server import policy_info

        self.policy = policy
        self.info = policy_info(policy, checkpoint_sha256, tasks=tasks)
        self.timeout_s = float(timeout_s)
        self.first_timeout_s = max(float(first_timeout_s), self.timeout_s)
        self._executor: ThreadPoolExecutor | None = None
        self._running: Future | None = None
        self._calls = 0

    def _predict(self, policy_obs: dict[str, Any]) -> tuple[Any, Any, float]:
        t0 = time.perf_counter()
        with _no_grad():  # inside the thread that runs the model: grad mode is per thread
            chunk, extras = self.policy.predict_chunk(policy_obs)
        return chunk, extras, (time.perf_counter() - t0) * 1e3

    def infer(self, obs: Observation) -> InferResult:
        policy_obs = prepare_observation(obs, self.info)
        if math.isinf(self.timeout_s):
            chunk, extras, ms = self._predict(policy_obs)
        else:
            chunk, extras, ms = self._timed(policy_obs)
        done = (extras or {}).get("done")
        return InferResult(actions=np.asarray(chunk, dtype=np.float32), done=None if done is None else float(done),
                           model_ms=ms, server_ms=ms, rtt_ms=ms)

    def _timed(self, policy_obs: dict[str, Any]) -> tuple[Any, Any, float]:
        if self._running is not None and not self._running.done():
            raise ServerUnavailable("the in-process policy is still busy with a query it did not answer in time; "
                                    "it may hang (check the model), or give it more time with --timeout")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robokit-policy")
        limit = self.first_timeout_s if self._calls == 0 else self.timeout_s
        self._calls += 1
        future = self._executor.submit(self._predict, policy_obs)
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            self._running = future
            raise ServerUnavailable(f"the in-process policy did not answer within {limit:g} s") from None

    def reset(self) -> None:
        self.policy.reset()

    def close(self) -> None:
        """Let the worker thread go (without waiting for a call that hangs); the policy belongs to
        the caller."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _no_grad() -> Any:
    # A torch policy must not build autograd graphs here; a policy without torch needs no torch.
    torch = sys.modules.get("torch")
    return torch.no_grad() if torch is not None else nullcontext()
