"""An object pointer: where, in a camera's task-conditioned feature map, the instructed object is.

A multi-task policy told "put the red cube in the bowl" must find the red cube before it can reach
for it. Learnt from the action loss alone, that binding of a colour word to image features comes
slowly: on a few hundred demonstrations a policy learns the target word and reaches for a cube
picked by chance. The pointer makes the binding a direct training target: a 1x1 convolution scores
every cell of a FiLM-modulated feature map, a spatial softmax turns the scores into an expected
image position (x, y) in [0, 1] (finer than a cell), and an L1 loss pulls it to the centre of the
object the demonstration moved (:func:`pointer_loss`). The position also enters the policy as a
token, so the action decoder gets the object's coordinates explicitly.

At deploy the pointer needs nothing but the image and the instruction: the object boxes are a
training target only.
"""

from __future__ import annotations

import torch
from torch import nn


class ObjectPointer(nn.Module):
    """Scores (N, C, h, w) feature maps and returns the expected positions (N, 2) as (x, y)
    fractions of the image, the attention (N, h, w), and one ``d_model`` token per map."""

    def __init__(self, channels: int, d_model: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(channels, 1, kernel_size=1)
        self.embed = nn.Sequential(nn.Linear(2, d_model), nn.ReLU(inplace=True), nn.Linear(d_model, d_model))
        self._grids: dict[tuple[int, int, str, torch.dtype], torch.Tensor] = {}

    def _grid(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """(h*w, 2) cell centres as (x, y) fractions of the image, raster order."""
        key = (h, w, str(like.device), like.dtype)
        grid = self._grids.get(key)
        if grid is None:
            with torch.inference_mode(False), torch.no_grad():
                ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h
                xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w
                gy, gx = torch.meshgrid(ys, xs, indexing="ij")
                grid = torch.stack([gx.flatten(), gy.flatten()], dim=-1)
            self._grids[key] = grid
        return grid

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, _, h, w = feats.shape
        attention = self.score(feats).flatten(1).float().softmax(dim=-1)  # (N, h*w)
        xy = attention @ self._grid(h, w, attention)  # (N, 2)
        token = self.embed(xy.to(feats.dtype))
        return xy, attention.view(n, h, w), token


def pointer_loss(xy: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean L1 between predicted and true positions (..., 2) where ``valid`` (...) is True; 0 when
    nothing is valid (a batch whose cameras saw no moved object)."""
    weight = valid.to(xy.dtype)[..., None]
    count = weight.sum() * xy.shape[-1]
    return ((xy - target.to(xy.dtype)).abs() * weight).sum() / count.clamp(min=1.0)
