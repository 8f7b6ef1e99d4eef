"""Image backbones shared by the ACT and CNN-MLP policies.

* ``resnet18`` / ``resnet34`` / ``resnet50``: torchvision ResNets cut after ``layer4`` (stride 32) with
  frozen batch norm, exactly as the original ACT code builds them, so its checkpoints load key for
  key (``body.conv1.weight``, ``body.layer1.0.bn1.running_mean``, ...). Pretrained weights come
  only from a local file (``pretrained_path``); nothing is ever downloaded.
* ``small``: five 3x3 convolutions, stride 16, for CPU demos and tests (about
  a second per batch-32 training step at 96x128 on two cores, where ResNet-18 takes several).

Both take images already normalised with the ImageNet statistics (see :class:`ImageNormalizer`) and
return one feature map ``(N, C, h, w)``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from robokit.errors import CheckpointError, ConfigError
from robokit.policies.nn.task_conditioning import FiLM

BACKBONES = ("resnet18", "resnet34", "resnet50", "small")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (buffers, never trained).

    Same buffers and arithmetic as the original ACT/DETR ``FrozenBatchNorm2d`` (eps 1e-5 inside the
    square root), so its checkpoints give the same activations.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # torchvision / plain BatchNorm state dicts carry a counter we have no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_and_shift()
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


class ImageNormalizer(nn.Module):
    """uint8 (..., 3, H, W) RGB -> float, scaled to 0..1 and normalised with ImageNet mean/std."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        # Non-persistent: constants, not learned, and not part of the checkpoint format.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.mean.dtype) / 255.0
        return (x - self.mean) / self.std


class Backbone(nn.Module):
    """Base of the image backbones: a module mapping normalised images to one feature map."""

    stride: int  # output pixels per feature cell along each axis
    num_channels: int  # channels of the feature map

    def fused_for_inference(self) -> nn.Module:
        """The same function for inference only, possibly rearranged to run faster. A backbone with
        nothing to fold returns itself."""
        return self


class ResNetBackbone(Backbone):
    """A torchvision ResNet up to ``layer4`` with frozen batch norm; output stride 32."""

    stride = 32

    def __init__(self, name: str = "resnet18", pretrained_path: str | Path | None = None) -> None:
        super().__init__()
        import torchvision

        resnet = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
        # Same child names as torchvision's IntermediateLayerGetter in the original code.
        kept = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        self.body = nn.Sequential(OrderedDict((n, getattr(resnet, n)) for n in kept))
        self.num_channels = 512 if name in ("resnet18", "resnet34") else 2048
        if pretrained_path:
            load_pretrained_resnet(self.body, pretrained_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def fused_for_inference(self) -> nn.Module:
        """A copy with each frozen batch norm folded into the convolution before it, channels-last.

        The same function up to float rounding, with two fewer passes over every feature map and the
        memory layout oneDNN convolutions prefer on CPU (and tensor cores on GPU).
        """
        body = copy.deepcopy(self.body)
        with torch.no_grad():
            _fold(body, "conv1", "bn1")
            for layer_name in ("layer1", "layer2", "layer3", "layer4"):
                for block in getattr(body, layer_name):
                    for i in (1, 2, 3):
                        if hasattr(block, f"conv{i}"):
                            _fold(block, f"conv{i}", f"bn{i}")
                    if block.downsample is not None:
                        _fold(block.downsample, "0", "1")
        body.requires_grad_(False)
        return body.to(memory_format=torch.channels_last).eval()


def _fold(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    conv: nn.Conv2d = getattr(parent, conv_name)
    bn: FrozenBatchNorm2d = getattr(parent, bn_name)
    scale, shift = bn.scale_and_shift()
    padding = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, _pair(conv.kernel_size), _pair(conv.stride),
                      padding, _pair(conv.dilation), conv.groups, bias=True, device=conv.weight.device,
                      dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    cast(torch.Tensor, fused.bias).copy_(bias)  # made with bias=True, so never None
    setattr(parent, conv_name, fused)
    setattr(parent, bn_name, nn.Identity())


def _pair(value: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's stored size (always one int per axis) as the pair its constructor takes."""
    first, second = value
    return first, second


def load_pretrained_resnet(body: nn.Module, path: str | Path) -> None:
    """Load torchvision-format ResNet weights (``conv1.weight`` ... ``fc.*``) from a local file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained backbone weights {path} do not exist (robokit never downloads "
                          "weights: save torchvision's resnet state_dict to a file and pass its path)")
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read pretrained backbone weights {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a ResNet state dict")
    state = {k.removeprefix("body."): v for k, v in state.items()
             if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    result = body.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not match the backbone: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}")


class SmallBackbone(Backbone):
    """Five 3x3 convolutions (GroupNorm + ReLU), output stride 16: cheap enough for CPU training.

    With ``film_dim > 0`` a task vector modulates every stage after its GroupNorm through
    zero-initialised FiLM (``forward(x, cond)``), so one network can look for what the task names.
    """

    stride = 16

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 256, 256), film_dim: int = 0,
                 in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = in_channels
        for i, out_ch in enumerate(channels):
            stride = 2 if i < 4 else 1
            layers += [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                       nn.GroupNorm(8, out_ch), nn.ReLU(inplace=True)]
            in_ch = out_ch
        self.body = nn.Sequential(*layers)
        self.num_channels = in_ch
        self.films = nn.ModuleList(FiLM(film_dim, c) for c in channels) if film_dim > 0 else None
        self.channels = tuple(channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.films is None or cond is None:
            return self.body(x)
        return self.stages(x, cond)[-1]

    def stages(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The output of every stage (the last is :meth:`forward`'s), FiLM-modulated by ``cond``
        when the backbone has FiLM and ``cond`` is given."""
        outputs = []
        for stage in range(len(self.channels)):
            conv, norm, act = self.body[3 * stage: 3 * stage + 3]
            y = norm(conv(x))
            if self.films is not None and cond is not None:
                y = self.films[stage](y, cond)
            x = act(y)
            outputs.append(x)
        return outputs

    def fused_for_inference(self) -> nn.Module:
        return self if self.films is not None else self.body


def build_backbone(name: str, pretrained_path: str | Path | None = None, film_dim: int = 0) -> Backbone:
    """The backbone called ``name`` (one of :data:`BACKBONES`); ``film_dim``: task-conditioned stages
    (the ``small`` backbone only)."""
    if film_dim and name != "small":
        raise ConfigError(f"task conditioning (FiLM) of the image stem needs the 'small' backbone, not '{name}'")
    if name == "small":
        if pretrained_path:
            raise ConfigError("pretrained weights exist only for the ResNet backbones, not 'small'")
        return SmallBackbone(film_dim=film_dim)
    if name in ("resnet18", "resnet34", "resnet50"):
        return ResNetBackbone(name, pretrained_path)
    raise ConfigError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}")


def weights_fingerprint(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """Storage address and in-place version counter of each of a module's tensors.

    It changes whenever the weights do (optimizer steps and ``load_state_dict`` bump the version,
    ``.to(device)`` moves the storage), so a cached inference copy (``fused_for_inference``) knows
    when it is stale.
    """
    return tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))


class FusedBackboneCache:
    """Inference copies of backbones (``fused_for_inference``), rebuilt when the weights change.

    Held in a plain attribute (not a submodule), so it never appears in a state dict.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[tuple, nn.Module]] = {}

    def get(self, backbone: nn.Module) -> nn.Module:
        if not isinstance(backbone, Backbone):
            raise TypeError(f"{type(backbone).__name__} is not a Backbone: it has no inference copy")
        key = weights_fingerprint(backbone)
        entry = self._entries.get(id(backbone))
        if entry is None or entry[0] != key:
            # Built outside inference mode so the copy's tensors are ordinary ones.
            with torch.inference_mode(False), torch.no_grad():
                entry = (key, backbone.fused_for_inference())
            self._entries[id(backbone)] = entry
        return entry[1]

    def __deepcopy__(self, memo: dict) -> FusedBackboneCache:
        return FusedBackboneCache()  # a copied policy builds its own


def backbone_param_groups(module: nn.Module, backbone_prefix: str, lr: float, lr_backbone: float,
                          weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as the original ACT code makes them: parameters whose name starts with
    ``backbone_prefix`` at ``lr_backbone``, the rest at ``lr``; frozen parameters are left out."""
    backbone: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (backbone if name.startswith(backbone_prefix) else rest).append(p)
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
    if backbone:
        groups.append({"params": backbone, "lr": lr_backbone, "weight_decay": weight_decay})
    return groups


def feature_grid(name: str, height: int, width: int) -> tuple[int, int]:
    """(h, w) of the feature map the backbone ``name`` makes from an (height, width) image."""
    halvings = 4 if name == "small" else 5  # every stride-2 stage maps n -> ceil(n / 2)
    h, w = height, width
    for _ in range(halvings):
        h, w = -(-h // 2), -(-w // 2)
    return h, w
