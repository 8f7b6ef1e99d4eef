"""DETR-style transformer used by ACT: positions added to queries and keys in every attention.

Parameter names match the original ACT code (``self_attn.in_proj_weight``, ``multihead_attn``,
``linear1``, ``norm1`` ...) so its checkpoints load without renaming inside the transformer. Unlike
the original, tensors are batch-first, attention runs through ``scaled_dot_product_attention``, and
attention weights are materialised only when a caller asks for them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class MultiheadAttention(nn.Module):
    """Multi-head attention with the parameters (and state-dict keys) of ``torch.nn.MultiheadAttention``.

    Batch-first. ``need_weights=True`` also returns the per-head attention weights
    ``(B, heads, Lq, Lk)``; otherwise they are never formed (fused SDPA kernel).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.dropout = dim, heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.dim // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = False,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        d = self.dim
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key:  # self-attention: one matmul for q and k
            q, k = F.linear(query, w[: 2 * d], b[: 2 * d]).chunk(2, dim=-1)
        else:
            q = F.linear(query, w[:d], b[:d])
            k = F.linear(key, w[d: 2 * d], b[d: 2 * d])
        v = F.linear(value, w[2 * d:], b[2 * d:])
        q, k, v = self._split(q), self._split(k), self._split(v)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
            if key_padding_mask is not None:
                scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, p) @ v if p else weights @ v
        else:
            mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        bsz, _, n, _ = out.shape
        out = out.transpose(1, 2).reshape(bsz, n, d)
        return self.out_proj(out), weights


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class TransformerEncoderLayer(nn.Module):
    """Self-attention + feed-forward, post-norm (ACT default) or pre-norm."""

    def __init__(self, dim: int, heads: int, dim_feedforward: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_norm:
            x = self.norm1(src)
            qk = _with_pos(x, pos)
            src = src + self.dropout1(self.self_attn(qk, qk, x, key_padding_mask)[0])
            return src + self.dropout2(self._ff(self.norm2(src)))
        qk = _with_pos(src, pos)
        src = self.norm1(src + self.dropout1(self.self_attn(qk, qk, src, key_padding_mask)[0]))
        return self.norm2(src + self.dropout2(self._ff(src)))


class TransformerDecoderLayer(nn.Module):
    """Self-attention over the action queries, cross-attention to memory, feed-forward."""

    def __init__(self, dim: int, heads: int, dim_feedforward: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads, dropout)
        self.multihead_attn = MultiheadAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor | None,
                query_pos: torch.Tensor | None, need_weights: bool = False,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the new queries and, if asked, the cross-attention weights (B, heads, Lq, Lk)."""
        mem_k = _with_pos(memory, pos)
        if self.pre_norm:
            x = self.norm1(tgt)
            qk = _with_pos(x, query_pos)
            tgt = tgt + self.dropout1(self.self_attn(qk, qk, x)[0])
            x = self.norm2(tgt)
            attn, weights = self.multihead_attn(_with_pos(x, query_pos), mem_k, memory,
                                                need_weights=need_weights)
            tgt = tgt + self.dropout2(attn)
            x = self.norm3(tgt)
            return tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x))))), weights
        qk = _with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(qk, qk, tgt)[0]))
        attn, weights = self.multihead_attn(_with_pos(tgt, query_pos), mem_k, memory,
                                            need_weights=need_weights)
        tgt = self.norm2(tgt + self.dropout2(attn))
        tgt = self.norm3(tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))
        return tgt, weights


class TransformerEncoder(nn.Module):
    """A stack of encoder layers; a final LayerNorm only in the pre-norm variant (as DETR)."""

    def __init__(self, num_layers: int, dim: int, heads: int, dim_feedforward: int, dropout: float,
                 pre_norm: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(dim, heads, dim_feedforward, dropout, pre_norm) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim) if pre_norm else None

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos, key_padding_mask)
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(nn.Module):
    """A stack of decoder layers followed by a LayerNorm.

    ACT keeps only the first layer's (normed) output, so :meth:`forward` runs ``num_layers`` layers
    (1 by default) and never computes the rest; their weights stay so that checkpoints load.
    """

    def __init__(self, num_layers: int, dim: int, heads: int, dim_feedforward: int, dropout: float,
                 pre_norm: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(dim, heads, dim_feedforward, dropout, pre_norm) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor | None,
                query_pos: torch.Tensor | None, num_layers: int = 1, need_weights: bool = False,
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normed output after ``num_layers`` layers and the cross-attention weights of each (if asked)."""
        all_weights = []
        for layer in self.layers[:num_layers]:
            tgt, weights = layer(tgt, memory, pos, query_pos, need_weights)
            if weights is not None:
                all_weights.append(weights)
        return self.norm(tgt), all_weights


class Transformer(nn.Module):
    """Encoder over the memory tokens + decoder over the action queries (ACT's main transformer)."""

    def __init__(self, dim: int, heads: int, enc_layers: int, dec_layers: int, dim_feedforward: int,
                 dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.encoder = TransformerEncoder(enc_layers, dim, heads, dim_feedforward, dropout, pre_norm)
        self.decoder = TransformerDecoder(dec_layers, dim, heads, dim_feedforward, dropout, pre_norm)
        self.d_model, self.nhead = dim, heads
        # DETR's initialisation: Xavier on every matrix of the transformer.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)


def sine_position_embedding_2d(h: int, w: int, dim: int, temperature: float = 10000.0,
                               device: torch.device | str | None = None) -> torch.Tensor:
    """DETR's normalised sine embedding of an (h, w) feature grid -> float32 (dim, h, w).

    The first half of the channels encodes the row (y), the second the column (x); coordinates
    1..h (1..w) are scaled to (0, 2π], sin/cos interleaved, as ACT's ``PositionEmbeddingSine``.
    """
    npf = dim // 2
    scale = 2 * math.pi
    eps = 1e-6
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)[:, None].expand(h, w)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)[None, :].expand(h, w)
    y = y / (h + eps) * scale
    x = x / (w + eps) * scale
    dim_t = torch.arange(npf, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / npf)
    pos_x = x[:, :, None] / dim_t
    pos_y = y[:, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()), dim=3).flatten(2)
    pos_y = torch.stack((pos_y[:, :, 0::2].sin(), pos_y[:, :, 1::2].cos()), dim=3).flatten(2)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).contiguous()


def sinusoid_table_1d(n_position: int, dim: int) -> torch.Tensor:
    """The fixed 1-D sinusoid table of the CVAE encoder's tokens -> float32 (n_position, dim)."""
    pos = np.arange(n_position, dtype=np.float64)[:, None]
    j = np.arange(dim)[None, :]
    table = pos / np.power(10000, 2 * (j // 2) / dim)
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.from_numpy(table).float()
