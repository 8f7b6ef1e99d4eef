"""What the training loop runs on besides the model: the sampler of training batches, the module
DDP wraps, moving a batch to the device, and the training-state file that ``--resume`` reads.

``train_state.pt`` holds the optimizer state, the step and the RNG states: tensors and plain
containers only, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from robokit.errors import CheckpointError
from robokit.policies.base import Policy, PolicyConfig

TRAIN_STATE_FORMAT = "robokit.train_state"
TRAIN_STATE_VERSION = 1


class TrainBatches(Sampler[list[int]]):
    """Endless batches of a seeded per-epoch permutation, split across ranks, from a given step.

    Epoch ``e`` uses permutation ``seed + e``; each rank takes every world-th index of it (equal
    counts, so every rank runs the same number of steps), and one epoch has
    ``max(1, per_rank // batch_size)`` batches. Starting at ``start_step`` makes a resumed run
    continue with exactly the batches the interrupted run would have drawn.

    With ``weights`` (one per index, >= 0) an epoch is instead ``round(sum(weights))`` indices drawn
    with replacement in proportion to them: an index of weight 3 comes up three times as often as one
    of weight 1, one of weight 0 never.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world: int, start_step: int,
                 weights: np.ndarray | None = None) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.start_step = rank, world, start_step
        self.p: np.ndarray | None = None
        drawn = n
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"weights must be {n} finite values >= 0, not all 0")
            self.p, drawn = w / w.sum(), max(1, round(float(w.sum())))
        self.drawn = drawn
        self.per_rank = max(1, drawn // world)
        self.steps_per_epoch = max(1, self.per_rank // batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, k = divmod(self.start_step, self.steps_per_epoch)
        while True:
            rng = np.random.default_rng(self.seed + epoch)
            perm = rng.permutation(self.n) if self.p is None else rng.choice(self.n, size=self.drawn, p=self.p)
            mine = perm[self.rank::self.world][:self.per_rank]
            if len(mine) < self.per_rank:  # fewer samples than ranks: wrap around
                mine = np.resize(perm, self.per_rank)
            for b in range(k, self.steps_per_epoch):
                yield mine[b * self.batch_size:(b + 1) * self.batch_size].tolist()
            epoch, k = epoch + 1, 0


class LossModule(nn.Module):
    """DDP wraps forward(); policies expose compute_loss(), so forward() calls it."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.policy.compute_loss(batch)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v)
            for k, v in batch.items()}


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read train_state.pt (weights_only); CheckpointError naming the file if unusable."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: missing; it holds the optimizer state --resume needs "
                              "(start a new run with another --out)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file: one clear message
        raise CheckpointError(f"{path}: unreadable training state ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path}: not a robokit training state file")
    if int(state.get("version", 0)) > TRAIN_STATE_VERSION:
        raise CheckpointError(f"{path}: training state version {state.get('version')} is newer than "
                              f"this robokit reads ({TRAIN_STATE_VERSION}); upgrade robokit")
    return state


def config_default(config_class: type[PolicyConfig], name: str) -> Any:
    for f in dataclasses.fields(config_class):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
    return None
