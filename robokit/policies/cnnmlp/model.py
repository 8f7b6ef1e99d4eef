"""CNN-MLP: the baseline of the ACT paper, registered as ``--policy cnnmlp``.

As the original (``tonyzhaozh/act``, ``CNNMLP`` in ``detr_vae.py``): one backbone per camera, a
down-projection of three 5x5 convolutions (512 -> 128 -> 64 -> 32 channels, no activation between
them), the flattened features of every camera concatenated with qpos, and an MLP (two hidden layers
of 1024 with ReLU) that predicts ONE action, trained with MSE against the first action of the chunk.

Chunks: CNN-MLP predicts only the next action, so ``chunk_size`` is 1 and :meth:`predict_chunk`
returns a (1, action_dim) chunk; deploy then queries it every control step (any mode works: a chunk
of one is executed and re-queried). Training batches may carry longer chunks; only step 0 is used.

Small images: the original's unpadded 5x5 convolutions need a feature map of at least 13x13 (ResNet
at 480x640 gives 15x20). ``down_proj_padding=None`` picks 0 (the original) when the map is large
enough and 2 ("same") otherwise, so low-resolution CPU configs work too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robokit.errors import ConfigError
from robokit.policies.base import Policy, PolicyConfig
from robokit.policies.nn.backbones import (
    BACKBONES,
    FusedBackboneCache,
    ImageNormalizer,
    backbone_param_groups,
    build_backbone,
    feature_grid,
)
from robokit.policies.preprocess import observation_to_tensors
from robokit.policies.registry import register_policy


@dataclass
class CNNMLPConfig(PolicyConfig):
    """CNN-MLP hyper-parameters (defaults as the original)."""

    chunk_size: int = 1
    backbone: str = "resnet18"
    pretrained_backbone: str | None = None
    mlp_hidden_dim: int = 1024
    mlp_depth: int = 2  # hidden layers
    down_proj_padding: int | None = None  # None: 0 if the feature map is >= 13x13, else 2
    lr: float = 1e-5
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.chunk_size != 1:
            raise ConfigError(f"CNN-MLP predicts one action per step: chunk_size must be 1, got {self.chunk_size}")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone '{self.backbone}'; choose one of: {', '.join(BACKBONES)}")
        if self.mlp_hidden_dim <= 0 or self.mlp_depth < 0:
            raise ConfigError("CNN-MLP mlp_hidden_dim must be positive and mlp_depth >= 0")
        if self.lr <= 0 or self.lr_backbone < 0 or self.weight_decay < 0:
            raise ConfigError("CNN-MLP lr must be positive; lr_backbone and weight_decay >= 0")
        h, w = feature_grid(self.backbone, *self.image_shape[:2])
        pad = self.padding()
        if min(h, w) + 6 * pad - 12 < 1:
            raise ConfigError(f"image_shape {self.image_shape} gives a {h}x{w} feature map, too small for "
                              f"the down-projection with padding {pad}; use down_proj_padding=2")

    def padding(self) -> int:
        if self.down_proj_padding is not None:
            return int(self.down_proj_padding)
        h, w = feature_grid(self.backbone, *self.image_shape[:2])
        return 0 if min(h, w) >= 13 else 2

    def flat_features(self) -> int:
        h, w = feature_grid(self.backbone, *self.image_shape[:2])
        p = self.padding()
        return 32 * (h + 6 * p - 12) * (w + 6 * p - 12)


def _mlp(in_dim: int, hidden: int, out_dim: int, depth: int) -> nn.Sequential:
    if depth == 0:
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.ReLU(inplace=True)]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(hidden, out_dim))
    return nn.Sequential(*layers)


class CNNMLPModel(nn.Module):
    def __init__(self, cfg: CNNMLPConfig) -> None:
        super().__init__()
        k = len(cfg.camera_names)
        backbones = [build_backbone(cfg.backbone, cfg.pretrained_backbone) for _ in range(k)]
        self.backbones = nn.ModuleList(backbones)
        p = cfg.padding()
        c = backbones[0].num_channels
        self.backbone_down_projs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, 128, 5, padding=p), nn.Conv2d(128, 64, 5, padding=p),
                          nn.Conv2d(64, 32, 5, padding=p)) for _ in range(k))
        self.mlp = _mlp(cfg.flat_features() * k + cfg.state_dim, cfg.mlp_hidden_dim, cfg.action_dim, cfg.mlp_depth)
        self.image_normalizer = ImageNormalizer()
        if cfg.lr_backbone == 0:
            self.backbones.requires_grad_(False)

    def forward(self, images: torch.Tensor, qpos: torch.Tensor, backbones: list[nn.Module] | None = None,
                ) -> torch.Tensor:
        """Normalised action (B, A) from uint8 images (B, K, 3, H, W) and normalised qpos (B, S)."""
        b = images.shape[0]
        feats = []
        for i, down in enumerate(self.backbone_down_projs):
            x = self.image_normalizer(images[:, i])
            if backbones is not None:
                x = x.contiguous(memory_format=torch.channels_last)
            f = (backbones[i] if backbones is not None else self.backbones[i])(x)
            feats.append(down(f).reshape(b, -1))
        return self.mlp(torch.cat([*feats, qpos], dim=1))


@register_policy("cnnmlp")
class CNNMLPPolicy(Policy):
    """CNN-MLP behind the :class:`~robokit.policies.base.Policy` interface."""

    config_class = CNNMLPConfig
    config: CNNMLPConfig

    def __init__(self, config: CNNMLPConfig) -> None:
        if not isinstance(config, CNNMLPConfig):
            raise ConfigError(f"CNNMLPPolicy needs a CNNMLPConfig, got {type(config).__name__}")
        super().__init__(config)
        self.model = CNNMLPModel(config)
        self._fused = FusedBackboneCache()

    def compute_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """MSE between the predicted and the first action of the chunk (normalised), as the original."""
        dev = self.device
        qpos = self.normalize_qpos(batch["qpos"].to(dev, non_blocking=True).float())
        target = self.normalize_action(batch["action"].to(dev, non_blocking=True).float()[:, 0])
        pred = self.model(batch["images"].to(dev, non_blocking=True), qpos)
        mse = F.mse_loss(pred, target)
        return {"mse": mse, "loss": mse}

    def optimizer_param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """The backbones at ``config.lr_backbone``, the rest at ``lr`` (as the original)."""
        return backbone_param_groups(self, "model.backbones.", lr, self.config.lr_backbone, weight_decay)

    def infer(self, images: torch.Tensor, qpos: torch.Tensor) -> torch.Tensor:
        """De-normalised actions (B, 1, A) for uint8 images (B, K, 3, H, W) and raw qpos (B, S)."""
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                fused = [self._fused.get(b) for b in self.model.backbones]
                pred = self.model(images.to(self.device), self.normalize_qpos(qpos.to(self.device).float()), fused)
                return self.denormalize_action(pred)[:, None]
        finally:
            self.train(was_training)

    def predict_chunk(self, obs: dict[str, Any], capture_attention: bool = False,
                      ) -> tuple[np.ndarray, dict[str, Any]]:
        """The next action as a (1, action_dim) float32 chunk. CNN-MLP has no attention to capture."""
        if capture_attention:
            raise ConfigError("CNN-MLP has no attention maps to capture")
        images, qpos = observation_to_tensors(obs, self.config, self.device)
        return self.infer(images, qpos)[0].float().cpu().numpy(), {}
