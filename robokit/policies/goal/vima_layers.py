"""Building blocks of the VIMA-style policy: prompt positions, the object encoder and the
cross-attention decoder layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import roi_align

from robokit.policies.goal.common import MLP, Attention, Block, patchify


def _norm_name(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def interleave_positions(text: str, text_len: int, names: Sequence[str]) -> tuple[list[int], list[int]]:
    """Prompt positions (after the PROMPT token at 0) of ``text_len`` text tokens and the objects.

    An object named in ``text`` goes right after its (first) mention; the others follow the text.
    """
    lowered = text.lower()
    inserts = []
    for name in names:
        at = lowered.find(_norm_name(name)) if name else -1
        inserts.append(min(at + len(_norm_name(name)), text_len) if at >= 0 else text_len)
    text_pos = [1 + i + sum(1 for e in inserts if e <= i) for i in range(text_len)]
    obj_pos = []
    for j, e in enumerate(inserts):
        before = sum(1 for e2 in inserts if e2 < e) + sum(1 for e2 in inserts[:j] if e2 == e)
        obj_pos.append(1 + e + before)
    return text_pos, obj_pos


class ObjectEncoder(nn.Module):
    """Object crop -> small ViT; box -> MLP; fused into one token (VIMA's obj_encoder + bbox MLP)."""

    def __init__(self, dim: int, crop: int, patch: int, n_cams: int, dropout: float) -> None:
        super().__init__()
        self.crop, self.patch = crop, patch
        n = (crop // patch) ** 2
        self.patch_embedding = nn.Linear(3 * patch * patch, dim)
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.block = Block(dim, 4 if dim % 4 == 0 else 1, 2.0, dropout)
        self.bbox_mlp = nn.Sequential(nn.Linear(4, dim), nn.GELU(), nn.Linear(dim, dim))
        self.cam = nn.Embedding(max(n_cams, 1), dim)
        self.fuse = nn.Linear(2 * dim, dim)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor, cams: torch.Tensor,
                sample: torch.Tensor) -> torch.Tensor:
        """``images`` float (B, K, 3, H, W); ``boxes`` (M, 4) normalised; ``cams``/``sample`` (M,)."""
        _b, k, _, h, w = images.shape
        scale = boxes.new_tensor([w, h, w, h])
        rois = torch.cat([(sample * k + cams).to(boxes.dtype)[:, None], boxes * scale], dim=1)
        crops = roi_align(images.flatten(0, 1), rois, output_size=self.crop, spatial_scale=1.0,
                          sampling_ratio=2, aligned=True)
        x = self.patch_embedding(patchify(crops, self.patch)[0]) + self.pos
        x, _ = self.block(x)
        return self.fuse(torch.cat([x.mean(1), self.bbox_mlp(boxes)], dim=-1)) + self.cam(cams)


class XAttnLayer(nn.Module):
    """Causal self-attention over queries, cross-attention to the prompt, MLP."""

    def __init__(self, dim: int, heads: int, xheads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.xattn = Attention(dim, xheads, dropout)
        self.mlp = MLP(dim, dim * ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: torch.Tensor, prompt: torch.Tensor, prompt_mask: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = x + self.drop(self.self_attn(self.norm1(x), mask=causal)[0])
        y, w = self.xattn(self.norm2(x), context=prompt, mask=prompt_mask, need_weights=need_weights)
        x = x + self.drop(y)
        return x + self.drop(self.mlp(self.norm3(x))), w
