"""CNN-MLP baseline: the original's layout, one-action chunks, training signal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robokit.errors import ConfigError
from robokit.policies.cnnmlp.model import CNNMLPConfig, CNNMLPPolicy
from robokit.policies.registry import get_policy_class

CAMS = ["top", "wrist"]


def tiny(**overrides) -> CNNMLPPolicy:
    torch.manual_seed(0)
    values = {"camera_names": CAMS, "image_shape": (48, 64, 3), "backbone": "small", "mlp_hidden_dim": 32}
    values.update(overrides)
    return CNNMLPPolicy(CNNMLPConfig(**values))


def test_original_sizes_and_registry():
    cfg = CNNMLPConfig(camera_names=CAMS, image_shape=(480, 640, 3))
    assert cfg.padding() == 0 and cfg.flat_features() == 768  # as the original's "768 each"
    assert (cfg.mlp_hidden_dim, cfg.mlp_depth, cfg.chunk_size) == (1024, 2, 1)
    assert get_policy_class("cnnmlp") is CNNMLPPolicy
    with pytest.raises(ConfigError, match="chunk_size must be 1"):
        CNNMLPConfig(chunk_size=100)
    with pytest.raises(ConfigError, match="too small"):
        CNNMLPConfig(image_shape=(48, 64, 3), backbone="small", down_proj_padding=0)


def test_predicts_one_action_chunk_and_learns(fit_batch):
    policy = tiny()
    rng = np.random.default_rng(0)
    obs = {"qpos": rng.normal(size=8).astype(np.float32),
           "images": {c: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for c in CAMS}}
    chunk, extras = policy.predict_chunk(obs)
    assert chunk.shape == (1, 8) and chunk.dtype == np.float32 and extras == {}
    with pytest.raises(ConfigError):
        policy.predict_chunk(obs, capture_attention=True)

    g = torch.Generator().manual_seed(0)
    batch = {"images": torch.randint(0, 256, (4, 2, 3, 48, 64), generator=g, dtype=torch.uint8),
             "qpos": torch.randn(4, 8, generator=g), "action": torch.randn(4, 5, 8, generator=g),
             "is_pad": torch.zeros(4, 5, dtype=torch.bool)}
    groups = policy.optimizer_param_groups(lr=1e-3, weight_decay=0.0)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in policy.model.backbones.parameters()}
    assert groups[1]["lr"] == policy.config.lr_backbone

    policy = tiny(lr_backbone=0.0)  # frozen backbones: a cheaper learning check
    assert len(policy.optimizer_param_groups(lr=1e-3, weight_decay=0.0)) == 1
    first = policy.compute_loss(batch)["mse"]
    fit_batch(policy, batch, steps=15, lr=1e-3,
              param_groups=policy.optimizer_param_groups(lr=1e-3, weight_decay=0.0))
    assert policy.compute_loss(batch)["mse"] < 0.5 * first
    # only the first action of the chunk is the target
    batch["action"][:, 1:] += 100.0
    assert policy.compute_loss(batch)["mse"] < 0.5 * first
