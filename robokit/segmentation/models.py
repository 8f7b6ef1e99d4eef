"""Segmentation models: a small encoder–decoder for CPUs and torchvision's Mask R-CNN for GPUs.

Both label every pixel with an instance id of the dataset's fixed table (0 background; the robot's
links, the gripper's parts, each object and target), so they share one interface:

* ``loss(images, masks)`` — ``images`` float (B, 3, H, W) in 0..1, ``masks`` long (B, H, W) with
  255 where a pixel is not labelled; returns the loss terms, ``loss`` the one to minimise;
* ``predict(images)`` — uint8 (B, H, W) instance ids;
* ``features(images)`` — (B, C, H', W') the feature map a policy pools per instance.

The small model is a U-Net of four levels (``width``, 2×, 4×, 8× channels, GroupNorm) trained with
cross-entropy plus soft Dice, the Dice term keeping small instances (a cube is ~1 % of the image)
from being swamped by the background. Mask R-CNN is built without weights (``weights=None``) or
from a local file; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robokit.errors import ConfigError

__all__ = ["ARCHS", "IGNORE", "MaskRCNNSegmenter", "SegmenterConfig", "SmallSegNet", "build_segmenter"]

ARCHS = ("small", "maskrcnn")
IGNORE = 255  # a pixel without a label


@dataclass
class SegmenterConfig:
    """What a segmentation model is and what it was trained on."""

    arch: str = "small"
    image_size: tuple[int, int] = (64, 80)  # (H, W) the model sees; frames are resized to it
    cameras: list[str] = field(default_factory=lambda: ["top", "wrist"])
    #: ``[name, kind]`` per instance id from 1 (the dataset's mask table)
    instances: list[list[str]] = field(default_factory=list)
    width: int = 24  # small: channels of the first level
    dice_weight: float = 1.0  # small: weight of the soft Dice term next to cross-entropy

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown segmenter arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.instances = [[str(n), str(k)] for n, k in self.instances]
        if not self.instances:
            raise ConfigError("a segmenter needs the dataset's instance table (record with --segmentation)")

    @property
    def num_classes(self) -> int:
        return len(self.instances) + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SegmenterConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown segmenter setting(s) {', '.join(unknown)}")
        return cls(**values)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    groups = 8 if c_out % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(groups, c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.GroupNorm(groups, c_out), nn.ReLU(inplace=True))


class SmallSegNet(nn.Module):
    """A four-level U-Net predicting per-pixel instance logits at the input's resolution."""

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        c = int(config.width)
        self.enc = nn.ModuleList([_block(3, c), _block(c, 2 * c), _block(2 * c, 4 * c), _block(4 * c, 8 * c)])
        self.dec = nn.ModuleList([_block(8 * c + 4 * c, 4 * c), _block(4 * c + 2 * c, 2 * c), _block(2 * c + c, c)])
        self.head = nn.Conv2d(c, config.num_classes, 1)
        self.feature_channels = c

    def _decode(self, images: torch.Tensor) -> torch.Tensor:
        x = images - 0.5
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.dec, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, num_classes, H, W)."""
        return self.head(self._decode(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The last decoder level, (B, width, H, W): what a policy pools per instance."""
        return self._decode(images)

    def loss(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.logits(images)
        ce = F.cross_entropy(logits, masks, ignore_index=IGNORE)
        labelled = (masks != IGNORE).unsqueeze(1)
        probs = logits.softmax(dim=1) * labelled
        target = F.one_hot(masks.clamp(max=self.config.num_classes - 1), self.config.num_classes)
        target = target.permute(0, 3, 1, 2) * labelled
        inter = (probs * target).sum(dim=(0, 2, 3))
        total = probs.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
        present = target.sum(dim=(0, 2, 3)) > 0
        dice = 1.0 - ((2 * inter + 1.0) / (total + 1.0))[present].mean()
        return {"loss": ce + self.config.dice_weight * dice, "ce": ce.detach(), "dice": dice.detach()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(dim=1).to(torch.uint8)


class MaskRCNNSegmenter(nn.Module):
    """torchvision's Mask R-CNN (ResNet-50 FPN) with a class per instance of the table.

    Trained on the instances a mask shows (boxes from the masks); :meth:`predict` paints the best
    detection of each class whose score passes ``score_threshold``, lowest score first.
    """

    score_threshold = 0.5

    def __init__(self, config: SegmenterConfig, weights: str | Path | None = None) -> None:
        super().__init__()
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        self.config = config
        h, w = config.image_size
        self.model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=config.num_classes,
                                           min_size=min(h, w), max_size=max(h, w))
        if weights is not None:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            state = state.get("model", state) if isinstance(state, dict) else state
            # A COCO file has other class heads: keep what fits (backbone, FPN, RPN), as fine-tuning does.
            own = self.model.state_dict()
            kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            if not kept:
                raise ConfigError(f"--weights {weights} holds no Mask R-CNN (ResNet-50 FPN) weights")
            self.model.load_state_dict(kept, strict=False)
        self.feature_channels = 256

    def _targets(self, masks: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        targets = []
        for m in masks:
            ids = [int(i) for i in torch.unique(m) if 0 < int(i) < self.config.num_classes]
            binary = torch.stack([m == i for i in ids]) if ids else torch.zeros((0, *m.shape), dtype=torch.bool)
            boxes = []
            for b in binary:
                ys, xs = torch.nonzero(b, as_tuple=True)
                boxes.append(torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float())
            targets.append({"boxes": torch.stack(boxes) if boxes else torch.zeros((0, 4)),
                            "labels": torch.tensor(ids, dtype=torch.int64), "masks": binary.to(torch.uint8)})
        return targets

    def loss(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        self.model.train()
        targets = [{k: v.to(images.device) for k, v in t.items()} for t in self._targets(masks.cpu())]
        terms = self.model(list(images), targets)
        return {"loss": sum(terms.values()), **{k: v.detach() for k, v in terms.items()}}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        out = torch.zeros((images.shape[0], *images.shape[-2:]), dtype=torch.uint8, device=images.device)
        for b, det in enumerate(self.model(list(images))):
            keep = det["scores"] >= self.score_threshold
            for k in torch.argsort(det["scores"][keep]):  # the best one painted last
                label, mask = det["labels"][keep][k], det["masks"][keep][k, 0] > 0.5
                out[b][mask] = label.to(torch.uint8)
        return out

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        batch, _ = self.model.transform(list(images))
        return self.model.backbone(batch.tensors)["0"]


def build_segmenter(config: SegmenterConfig, weights: str | Path | None = None) -> nn.Module:
    """The model ``config.arch`` names (``weights``: a local Mask R-CNN file to start from)."""
    if config.arch == "maskrcnn":
        return MaskRCNNSegmenter(config, weights)
    if weights is not None:
        raise ConfigError("--weights applies to --arch maskrcnn; the small model trains from scratch")
    return SmallSegNet(config)
