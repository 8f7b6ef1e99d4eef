"""Starting a training run from a trained policy's weights (fine-tuning, e.g. retraining on
demonstrations plus corrections from the policy that was deployed).

Only the network's weights are taken: the optimizer, the learning-rate schedule and the step count
start afresh, and the normalisation statistics are the new dataset's (the run's data defines them,
as for a run from scratch). The checkpoint must hold the same kind of policy with the same shapes:
same cameras, image size, chunk size and model sizes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from robokit.errors import CheckpointError
from robokit.policies.base import Policy

__all__ = ["warm_start"]


def warm_start(policy: Policy, path: str | Path, policy_type: str) -> None:
    """Copy the weights of the ``policy_type`` checkpoint at ``path`` into ``policy`` (same shapes), keeping
    ``policy``'s normalisation statistics. CheckpointError naming the file when they do not fit."""
    from robokit.policies.checkpoint import load_checkpoint

    source, _ = load_checkpoint(path, map_location="cpu", expected_type=policy_type)
    stats = set(policy.norm_stats())
    own = {k: v for k, v in policy.state_dict().items() if k not in stats}
    theirs = {k: v for k, v in source.state_dict().items() if k not in stats}
    missing, unexpected = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
    reshaped = sorted(k for k in set(own) & set(theirs) if own[k].shape != theirs[k].shape)
    if missing or unexpected or reshaped:
        details = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"not in this policy {', '.join(unexpected[:3])}" if unexpected else "",
            f"other shape {', '.join(f'{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}' for k in reshaped[:3])}"
            if reshaped else "") if part)
        raise CheckpointError(f"{path} does not fit this run's policy ({details}); --init-from needs a checkpoint "
                              "trained with the same cameras, image size, chunk size and model options")
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(theirs[key])
