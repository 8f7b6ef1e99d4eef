"""The validation pass of a training run: mean loss terms over held-out samples, with fixed noise."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from robokit.training.batches import to_device


@contextmanager
def fixed_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Run the body with torch's RNGs seeded with ``seed`` and give the caller's RNG states back after.

    Validation draws the same noise every time (CVAE sampling, dropout off), so validation losses
    are comparable between evaluations and the training RNG stream is left untouched.
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def validation_losses(policy: Any, loader: Iterable[dict[str, Any]], device: torch.device, seed: int,
                      amp: bool = False) -> dict[str, float]:
    """Sample-weighted mean of every scalar of ``policy.compute_loss`` over ``loader``, plus
    ``samples`` (how many were seen). The policy runs in eval mode without gradients (bf16 autocast
    when ``amp``) and is back in train mode afterwards."""
    sums: dict[str, float] = {}
    count = 0
    policy.eval()
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if amp else nullcontext()
    try:
        with torch.no_grad(), fixed_rng(device, seed), autocast:
            for batch in loader:
                b = int(batch["qpos"].shape[0])
                out = policy.compute_loss(to_device(batch, device))
                for k, v in out.items():
                    if torch.is_tensor(v) and v.numel() == 1:
                        sums[k] = sums.get(k, 0.0) + float(v.item()) * b
                count += b
    finally:
        policy.train()
    return {**{k: v / count for k, v in sums.items()}, "samples": count}
