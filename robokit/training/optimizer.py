"""The optimizer every policy trains with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def adamw(params: Iterable[Any], lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``params`` (tensors or parameter groups) on ``device``.

    On CPU and CUDA it is torch's fused kernel: one pass over all parameters instead of a dozen
    small operations per parameter tensor, which saves ~6% of the demo's ACT training step at
    batch 16 on a 2-core CPU. Same algorithm, other float rounding.
    """
    fused = True if torch.device(device).type in ("cpu", "cuda") else None
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a saved ``optimizer.state_dict()`` into ``optimizer`` keeping ``optimizer``'s own choice of
    kernel: torch would otherwise take the saved groups' ``fused``/``foreach`` flags too (a run saved
    before the fused kernel, or on another device, would resume with the other kernel)."""
    saved_groups = [dict(group) for group in state["param_groups"]]
    for group in saved_groups:
        for key in ("fused", "foreach"):
            if key in optimizer.defaults:
                group[key] = optimizer.defaults[key]
    optimizer.load_state_dict({**state, "param_groups": saved_groups})
