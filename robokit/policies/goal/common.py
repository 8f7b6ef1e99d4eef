"""Building blocks shared by the goal-conditioned policies (GRP and the VIMA-style policy).

Attention layers here compute their weights only when asked (``need_weights=True``, used by
attention capture for ``robokit viz attention``); otherwise they call
``torch.nn.functional.scaled_dot_product_attention`` so inference speed is unchanged.
Boolean masks follow one convention everywhere: True = this query MAY attend to this key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robokit.errors import UserError

# Image normalisation: pixel/255 then centred; the models are trained from scratch so the exact
# values only need to be fixed, not ImageNet's.
_PIX_MEAN, _PIX_STD = 0.5, 0.25


def uint8_images_to_float(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``uint8 (..., 3, h, w)`` -> normalised float ``(..., 3, H, W)`` at ``size`` = (H, W).

    Images of another size are resized with area interpolation (the same as cv2.INTER_AREA for
    downscaling), so a dataset recorded at another resolution still fits the model.
    """
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="area")
    x = (x - _PIX_MEAN) / _PIX_STD
    return x.reshape(*lead, 3, *size)


def resize_hwc(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize one uint8 (h, w, 3) image to (H, W) = ``size`` with cv2.INTER_AREA (no-op if equal)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def check_image(name: str, image: Any) -> np.ndarray:
    """A uint8 (H, W, 3) RGB image or a :class:`UserError` naming ``name``."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise UserError(f"{name} must be an (H, W, 3) RGB image, got shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        raise UserError(f"{name} must be uint8, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def obs_images(obs: dict[str, Any], camera_names: Sequence[str], size: tuple[int, int]) -> np.ndarray:
    """The observation's camera images as uint8 (K, 3, H, W) in ``camera_names`` order."""
    images = obs.get("images")
    if not isinstance(images, dict):
        raise UserError("observation lacks 'images' (a dict camera name -> (H, W, 3) uint8 image)")
    out = []
    for cam in camera_names:
        if cam not in images:
            raise UserError(f"observation lacks camera '{cam}' (the policy was trained with "
                            f"{', '.join(camera_names)}; got {', '.join(sorted(images)) or 'none'})")
        out.append(resize_hwc(check_image(f"image of camera '{cam}'", images[cam]), size).transpose(2, 0, 1))
    return np.stack(out)


def obs_qpos(obs: dict[str, Any], state_dim: int) -> np.ndarray:
    """The observation's qpos as float32 (state_dim,) or a clear :class:`UserError`."""
    if "qpos" not in obs:
        raise UserError("observation lacks 'qpos'")
    q = np.asarray(obs["qpos"], dtype=np.float32).reshape(-1)
    if q.shape != (state_dim,):
        raise UserError(f"observation qpos has {q.shape[0]} values, the policy expects {state_dim}")
    return q


def patchify(x: torch.Tensor, patch: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """ViT patches: ``(N, C, H, W)`` -> ``(N, h*w, C*patch*patch)`` in raster order, and (h, w)."""
    n, c, H, W = x.shape
    h, w = H // patch, W // patch
    x = x[:, :, : h * patch, : w * patch]
    x = x.reshape(n, c, h, patch, w, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, h * w, c * patch * patch), (h, w)


class FiLM(nn.Module):
    """Feature-wise linear modulation ``x * (1 + gamma(c)) + beta(c)`` over the channel axis.

    Zero-initialised, so a model starts out unconditioned and learns how much the goal should
    steer its visual features (RT-1 / BC-Z condition their image encoders on the instruction this
    way; without it a small policy learns to ignore the goal for a long time).
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, channel_dim: int) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=-1)
        shape = [cond.shape[0]] + [1] * (x.ndim - 1)
        shape[channel_dim] = gamma.shape[-1]
        return x * (1 + gamma.view(shape)) + beta.view(shape)


class AttentionPool(nn.Module):
    """Pool a token set (B, T, D) into one vector (B, D) with ``queries`` learned queries.

    A mean over an instruction's characters drowns the few that matter ("red" vs "blue" are 3-4
    of ~35 characters); learned queries can attend to them instead.
    """

    def __init__(self, dim: int, heads: int, queries: int = 4) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, queries, dim) * 0.02)
        self.attn = Attention(dim, heads)
        self.out = nn.Linear(queries * dim, dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` (B, T) True = may be pooled; every row needs at least one True."""
        q = self.queries.expand(tokens.shape[0], -1, -1)
        y, _ = self.attn(q, context=tokens, mask=mask[:, None, None, :])
        return self.out(y.flatten(1))


class PatchEmbed(nn.Module):
    """Image -> one token per ``patch`` x ``patch`` square, raster order: ``(N, C, H, W) -> (N, h*w, D)``.

    ``stem="linear"``: the ViT patch embedding (a linear map of the raw pixels of each patch, as the
    original GRP does). ``stem="conv"``: log2(patch) stride-2 3x3 convolutions reaching the same grid
    (an "early convolutions" hybrid ViT; it learns much faster from a few dozen demonstrations).
    ``film_dim > 0`` adds :class:`FiLM` conditioning (after every stem convolution but the last,
    or on the linear stem's output); ``forward(x, cond)`` with ``cond`` (N, film_dim), or None = none.
    """

    def __init__(self, in_channels: int, dim: int, patch: int, stem: str = "linear", film_dim: int = 0) -> None:
        super().__init__()
        self.patch, self.stem = patch, stem
        self.film: FiLM | None = None  # linear stem only
        if stem == "linear":
            self.proj: nn.Module = nn.Linear(in_channels * patch * patch, dim)
            self.film = FiLM(film_dim, dim) if film_dim else None
            return
        if stem != "conv":
            raise ValueError(f"unknown stem {stem!r}")
        n = patch.bit_length() - 1
        if 2 ** n != patch:
            raise ValueError(f"a conv stem needs a power-of-two patch size, got {patch}")
        convs: list[nn.Module] = []
        films: list[FiLM] = []
        ch = in_channels
        for i in range(n - 1):
            out = min(dim, 16 * 2 ** i)
            convs.append(nn.Conv2d(ch, out, 3, 2, 1))
            if film_dim:
                films.append(FiLM(film_dim, out))
            ch = out
        self.convs = nn.ModuleList(convs)
        # One FiLM per layer (as the FiLM paper): the first ones can select colours directly.
        self.films = nn.ModuleList(films)
        self.proj = nn.Conv2d(ch, dim, 3, 2, 1)

    @property
    def feature_channels(self) -> int:
        """Channels of the feature map :meth:`features` returns."""
        if self.stem == "linear":
            return cast(nn.Linear, self.proj).out_features
        return cast(nn.Conv2d, self.proj).in_channels

    def features(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (N, h*w, D) and a feature map (N, C, h', w'): the conv stem's last map before
        the token projection (twice the token grid's resolution), or the linear stem's token grid."""
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        if self.stem == "linear":
            y = self.proj(patchify(x, self.patch)[0])
            if cond is not None and self.film is not None:
                y = self.film(y, cond, channel_dim=2)
            return y, y.transpose(1, 2).reshape(y.shape[0], -1, h, w)
        y = x[..., : h * self.patch, : w * self.patch]
        for i, conv in enumerate(self.convs):
            y = conv(y)
            if cond is not None and len(self.films):
                y = self.films[i](y, cond, channel_dim=1)
            y = F.gelu(y)
        return self.proj(y).flatten(2).transpose(1, 2), y

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.features(x, cond)[0]


class SpatialSoftmax(nn.Module):
    """Feature map (N, C, h, w) -> ``keypoints`` expected image coordinates (N, 2 * keypoints).

    Each keypoint is a 1x1-conv channel turned into a probability map over the image whose
    expected (x, y) in [-1, 1] is returned (Levine et al. 2016; robomimic, diffusion policy). A
    policy learnt from scratch localises objects far faster through these coordinates than through
    attention over patch tokens.
    """

    def __init__(self, channels: int, keypoints: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, keypoints, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        k = self.conv(feat)
        n, c, h, w = k.shape
        p = k.flatten(2).softmax(-1).view(n, c, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=k.device, dtype=k.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=k.device, dtype=k.dtype)
        return torch.cat([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=1)


class Attention(nn.Module):
    """Multi-head attention (self or cross) with optional weight capture."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, kv_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, Q, D) attends to ``context`` (B, T, D) (itself when None).

        ``mask``: bool broadcastable to (B, heads, Q, T), True = may attend. Returns the output and,
        with ``need_weights``, the weights (B, heads, Q, T).
        """
        ctx = x if context is None else context
        b, q_len, d = x.shape
        t_len = ctx.shape[1]
        hd = d // self.heads
        q = self.q(x).view(b, q_len, self.heads, hd).transpose(1, 2)
        k, v = self.kv(ctx).view(b, t_len, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / (hd ** 0.5)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            y = F.dropout(weights, p) @ v
        else:
            weights = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(b, q_len, d)
        return self.out(y), weights


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, out: int | None = None) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out or dim))


class Block(nn.Module):
    """Pre-norm transformer encoder block (self-attention + MLP)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, w = self.attn(self.norm1(x), mask=mask, need_weights=need_weights)
        x = x + self.drop(y)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, w


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over entries where ``valid`` (broadcast) is True; 0 when none is."""
    valid = valid.to(values.dtype).expand_as(values)
    return (values * valid).sum() / valid.sum().clamp_min(1.0)


def done_loss(logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """BCE of the done head (B, H) against ``batch['done']``; past the episode end counts as done."""
    done = batch.get("done")
    is_pad = torch.as_tensor(batch["is_pad"], device=logits.device).bool()
    if done is None:
        target = is_pad.float()
    else:
        target = torch.maximum(torch.as_tensor(done, device=logits.device).float(), is_pad.float())
    return F.binary_cross_entropy_with_logits(logits, target)


def batch_tasks(batch: dict[str, Any], size: int) -> list[str] | None:
    """The batch's instruction strings (``task``) as a list of ``size`` strings, or None."""
    task = batch.get("task")
    if task is None:
        return None
    if isinstance(task, str):
        return [task] * size
    tasks = [t if isinstance(t, str) else "" for t in task]
    if len(tasks) != size:
        raise UserError(f"batch 'task' has {len(tasks)} entries for a batch of {size}")
    return tasks
