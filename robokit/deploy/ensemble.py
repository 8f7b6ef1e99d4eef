"""Temporal ensembling of action chunks (as in ACT) and when to ask for the next chunk.

At control step t every chunk that covers t votes::

    a_t = Σ_i w_i · A_i[t] / Σ_i w_i,     w_i = exp(-k · i),   i = 0 the OLDEST vote for step t

(k = 0.01 by default; with k > 0 older predictions weigh more, as in ACT). ACT keeps a
T × (T + H) × A buffer of every chunk ever predicted. Here each of the next H steps keeps only a
running weighted mean, its weight sum and its number of votes, so the state is O(H × A) and an
update is O(H × A) whatever the episode length. Because votes for one step arrive oldest first, a
new vote's rank i is simply the number of votes that step already has: the result equals ACT's
formula exactly (the unit tests compare against a direct implementation of it).

:class:`ActionQueue` adds the three query modes on top:

* ``ensemble`` — query at every step (ACT's ``temporal_agg``), waiting for the reply;
* ``chunk`` — query every ``query_every`` steps (default: the whole chunk) and wait; overlapping
  chunks, if any, are blended the same way;
* ``async`` — the loop queries in the background; a chunk predicted from the observation at step s
  arrives some steps later, its rows for steps already executed are dropped and the rest are
  blended with the chunks in flight. A new query starts as soon as the previous one is answered
  (or every ``query_every`` steps), and always before the blended plan runs out.
"""

from __future__ import annotations

import math

import numpy as np

from robokit.errors import ConfigError

MODES = ("ensemble", "chunk", "async")


class TemporalEnsembler:
    """Streaming ACT temporal ensembling over a ring of ``chunk_size`` future steps."""

    def __init__(self, chunk_size: int, action_dim: int, k: float = 0.01) -> None:
        if chunk_size <= 0 or action_dim <= 0:
            raise ConfigError(f"chunk_size and action_dim must be positive, got {chunk_size}, {action_dim}")
        if not math.isfinite(k):
            raise ConfigError(f"ensembling coefficient k must be finite, got {k}")
        self.chunk_size = int(chunk_size)
        self.action_dim = int(action_dim)
        self.k = float(k)
        self._mean = np.zeros((self.chunk_size, self.action_dim))
        self._wsum = np.zeros(self.chunk_size)
        self._votes = np.zeros(self.chunk_size, dtype=np.int64)
        self._step = 0
        self._last_start: int | None = None

    @property
    def step(self) -> int:
        """The next step :meth:`pop` hands out."""
        return self._step

    def reset(self, step: int = 0) -> None:
        """Forget every chunk; the next action handed out is for ``step``."""
        self._mean[:] = 0.0
        self._wsum[:] = 0.0
        self._votes[:] = 0
        self._step = int(step)
        self._last_start = None

    def add(self, chunk: np.ndarray, start_step: int) -> None:
        """Add a chunk whose row 0 is the action for ``start_step`` (the step of its observation).

        Rows for steps already handed out are ignored. Chunks must arrive in the order of their
        ``start_step`` (that order defines "oldest"), and ``start_step`` cannot lie in the future.
        """
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[1] != self.action_dim or not 0 < chunk.shape[0] <= self.chunk_size:
            raise ValueError(f"chunk must be (<= {self.chunk_size}, {self.action_dim}), got {chunk.shape}")
        start = int(start_step)
        if start > self._step:
            raise ValueError(f"chunk starts at step {start}, after the current step {self._step}")
        if self._last_start is not None and start < self._last_start:
            raise ValueError(f"chunk for step {start} arrived after one for step {self._last_start}")
        self._last_start = start
        first = self._step - start  # rows before this are for steps already executed
        if first >= chunk.shape[0]:
            return
        rows = chunk[first:]
        slots = np.arange(self._step, self._step + rows.shape[0]) % self.chunk_size
        w = np.exp(-self.k * self._votes[slots])  # rank of this vote = votes the step already has
        wsum = self._wsum[slots] + w
        self._mean[slots] += (w / wsum)[:, None] * (rows - self._mean[slots])
        self._wsum[slots] = wsum
        self._votes[slots] += 1

    def covered_ahead(self) -> int:
        """How many consecutive steps from :attr:`step` on have at least one vote."""
        votes = np.roll(self._votes, -(self._step % self.chunk_size))
        empty = np.flatnonzero(votes == 0)
        return int(empty[0]) if empty.size else self.chunk_size

    def peek(self) -> np.ndarray | None:
        """The ensembled action for :attr:`step` without advancing, or None if nothing covers it."""
        slot = self._step % self.chunk_size
        if self._votes[slot] == 0:
            return None
        return self._mean[slot].astype(np.float32)

    def pop(self) -> np.ndarray | None:
        """The ensembled action for :attr:`step` (None if no chunk covers it); then advance one step."""
        action = self.peek()
        slot = self._step % self.chunk_size
        self._mean[slot] = 0.0
        self._wsum[slot] = 0.0
        self._votes[slot] = 0
        self._step += 1
        return action


class ActionQueue:
    """An ensembler plus the rule for when the control loop asks for the next chunk."""

    def __init__(self, mode: str, chunk_size: int, action_dim: int, k: float = 0.01,
                 query_every: int | None = None) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown deploy mode '{mode}'; choose one of: {', '.join(MODES)}")
        if query_every is None:
            query_every = chunk_size if mode == "chunk" else 1
        if not 1 <= int(query_every) <= chunk_size:
            raise ConfigError(f"query_every must be between 1 and the chunk size {chunk_size}, got {query_every}")
        self.mode = mode
        self.query_every = int(query_every)
        self.ensembler = TemporalEnsembler(chunk_size, action_dim, k)
        self._last_query: int | None = None
        self._latency_steps = 1.0  # running estimate of how many steps a reply takes (async)

    @property
    def blocking(self) -> bool:
        """Whether the loop waits for each reply (ensemble, chunk) or not (async)."""
        return self.mode != "async"

    @property
    def step(self) -> int:
        return self.ensembler.step

    def reset(self, step: int = 0) -> None:
        self.ensembler.reset(step)
        self._last_query = None

    def query_due(self, in_flight: bool = False) -> bool:
        """Whether to send a query with the observation of the current step."""
        if in_flight:
            return False
        step = self.ensembler.step
        if self._last_query is None or step - self._last_query >= self.query_every:
            return True
        ahead = self.ensembler.covered_ahead()
        if self.mode == "async":  # start early enough that the reply lands before the plan runs out
            return ahead <= math.ceil(self._latency_steps) + 1
        return ahead == 0

    def on_query(self) -> int:
        """Record that a query was sent for the current step; returns that step."""
        self._last_query = self.ensembler.step
        return self._last_query

    def on_query_failed(self) -> None:
        """The last query got no answer: make the next step query again at once."""
        self._last_query = None

    def add(self, chunk: np.ndarray, start_step: int) -> None:
        """A reply arrived (now, at the current step) for the query sent at ``start_step``."""
        lag = self.ensembler.step - start_step
        self._latency_steps = 0.8 * self._latency_steps + 0.2 * lag
        self.ensembler.add(chunk, start_step)

    def covered_ahead(self) -> int:
        return self.ensembler.covered_ahead()

    def pop(self) -> np.ndarray | None:
        """Action for the current step (None if nothing covers it), then advance."""
        return self.ensembler.pop()
