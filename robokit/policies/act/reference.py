"""A plain restatement of the original ACT network (``tonyzhaozh/act``), for verification only.

Same module tree and state-dict keys as the original ``ACTPolicy`` (``model.backbones.0.0.body.*``,
``model.transformer.*``, ``model.encoder.*``, ``model.pos_table`` ...), same computation as the
original's eager forward: sequence-first ``torch.nn.MultiheadAttention``, the cameras one at a time
through the backbone, every decoder layer run and the first layer's normed output kept.

Used by ``robokit import-act --verify`` (to check a conversion against the original layout), by
``benchmarks/act_inference.py`` (the eager baseline) and by the tests. Never used to serve a policy.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from robokit.policies.nn.backbones import IMAGENET_MEAN, IMAGENET_STD, FrozenBatchNorm2d
from robokit.policies.nn.transformer import sine_position_embedding_2d, sinusoid_table_1d


class _EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, src, mask=None, pos=None):
        if self.pre_norm:
            s = self.norm1(src)
            q = k = s if pos is None else s + pos
            src = src + self.dropout1(self.self_attn(q, k, value=s, key_padding_mask=mask)[0])
            s = self.norm2(src)
            return src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(s)))))
        q = k = src if pos is None else src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, value=src, key_padding_mask=mask)[0]))
        return self.norm2(src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(src))))))


class _DecoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, tgt, memory, pos, query_pos):
        if self.pre_norm:
            t = self.norm1(tgt)
            q = k = t + query_pos
            tgt = tgt + self.dropout1(self.self_attn(q, k, value=t)[0])
            t = self.norm2(tgt)
            tgt = tgt + self.dropout2(self.multihead_attn(t + query_pos, memory + pos, value=memory)[0])
            t = self.norm3(tgt)
            return tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(t)))))
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, value=tgt)[0]))
        tgt = self.norm2(tgt + self.dropout2(
            self.multihead_attn(tgt + query_pos, memory + pos, value=memory)[0]))
        return self.norm3(tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))


class _Encoder(nn.Module):
    def __init__(self, n: int, d: int, heads: int, ff: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_EncoderLayer(d, heads, ff, dropout, pre_norm) for _ in range(n))
        self.norm = nn.LayerNorm(d) if pre_norm else None

    def forward(self, src, pos=None, src_key_padding_mask=None):
        for layer in self.layers:
            src = layer(src, src_key_padding_mask, pos)
        return src if self.norm is None else self.norm(src)


class _Decoder(nn.Module):
    def __init__(self, n: int, d: int, heads: int, ff: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_DecoderLayer(d, heads, ff, dropout, pre_norm) for _ in range(n))
        self.norm = nn.LayerNorm(d)

    def forward(self, tgt, memory, pos, query_pos):
        intermediate = []
        for layer in self.layers:  # every layer runs, as in the original (return_intermediate=True)
            tgt = layer(tgt, memory, pos, query_pos)
            intermediate.append(self.norm(tgt))
        return torch.stack(intermediate)


class _Transformer(nn.Module):
    def __init__(self, d: int, heads: int, enc: int, dec: int, ff: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.encoder = _Encoder(enc, d, heads, ff, dropout, pre_norm)
        self.decoder = _Decoder(dec, d, heads, ff, dropout, pre_norm)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, query_embed, pos_embed, latent_input, proprio_input, additional_pos_embed):
        bs = src.shape[0]
        src = src.flatten(2).permute(2, 0, 1)  # (hw, B, D)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1).repeat(1, bs, 1)
        query_embed = query_embed.unsqueeze(1).repeat(1, bs, 1)
        pos_embed = torch.cat([additional_pos_embed.unsqueeze(1).repeat(1, bs, 1), pos_embed], dim=0)
        src = torch.cat([torch.stack([latent_input, proprio_input], dim=0), src], dim=0)
        tgt = torch.zeros_like(query_embed)
        memory = self.encoder(src, pos=pos_embed)
        hs = self.decoder(tgt, memory, pos_embed, query_embed)
        return hs.transpose(1, 2)  # (layers, B, queries, D)


class _Backbone(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        import torchvision
        from torchvision.models._utils import IntermediateLayerGetter

        resnet = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
        self.num_channels = 512 if name in ("resnet18", "resnet34") else 2048


class _Joiner(nn.Sequential):
    """backbone + sine position embedding, like the original's ``Joiner``."""

    hidden_dim: int

    def forward(self, x):
        feats = self[0].body(x)["0"]
        pos = sine_position_embedding_2d(feats.shape[-2], feats.shape[-1], self.hidden_dim,
                                         device=feats.device)[None]
        return [feats], [pos.to(feats.dtype)]


class _DETRVAE(nn.Module):
    pos_table: torch.Tensor

    def __init__(self, backbone: str, camera_names: list[str], state_dim: int, action_dim: int,
                 chunk: int, d: int, heads: int, ff: int, enc: int, dec: int, vae_enc: int,
                 latent_dim: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.num_queries, self.camera_names, self.latent_dim = chunk, camera_names, latent_dim
        self.transformer = _Transformer(d, heads, enc, dec, ff, dropout, pre_norm)
        self.encoder = _Encoder(vae_enc, d, heads, ff, dropout, pre_norm)
        self.action_head = nn.Linear(d, action_dim)
        self.is_pad_head = nn.Linear(d, 1)
        self.query_embed = nn.Embedding(chunk, d)
        body = _Backbone(backbone)
        joiner = _Joiner(body, nn.Identity())
        joiner.hidden_dim = d
        self.input_proj = nn.Conv2d(body.num_channels, d, kernel_size=1)
        self.backbones = nn.ModuleList([joiner])
        self.input_proj_robot_state = nn.Linear(state_dim, d)
        self.cls_embed = nn.Embedding(1, d)
        self.encoder_action_proj = nn.Linear(action_dim, d)
        self.encoder_joint_proj = nn.Linear(state_dim, d)
        self.latent_proj = nn.Linear(d, latent_dim * 2)
        self.register_buffer("pos_table", sinusoid_table_1d(2 + chunk, d)[None])
        self.latent_out_proj = nn.Linear(latent_dim, d)
        self.additional_pos_embed = nn.Embedding(2, d)

    def forward(self, qpos, image, env_state=None, actions=None, is_pad=None):
        bs = qpos.shape[0]
        if actions is not None:
            action_embed = self.encoder_action_proj(actions)
            qpos_embed = self.encoder_joint_proj(qpos)[:, None]
            cls_embed = self.cls_embed.weight[None].repeat(bs, 1, 1)
            encoder_input = torch.cat([cls_embed, qpos_embed, action_embed], dim=1).permute(1, 0, 2)
            mask = torch.cat([torch.zeros(bs, 2, dtype=torch.bool, device=qpos.device), is_pad], dim=1)
            pos = self.pos_table.clone().detach().permute(1, 0, 2)
            out = self.encoder(encoder_input, pos=pos, src_key_padding_mask=mask)[0]
            latent_info = self.latent_proj(out)
            mu, logvar = latent_info[:, : self.latent_dim], latent_info[:, self.latent_dim:]
            latent_sample = mu + (logvar / 2).exp() * torch.randn_like(mu)
        else:
            mu = logvar = None
            latent_sample = torch.zeros(bs, self.latent_dim, dtype=torch.float32, device=qpos.device)
        latent_input = self.latent_out_proj(latent_sample)
        all_features, all_pos = [], []
        for cam_id in range(len(self.camera_names)):  # one camera at a time, as the original
            features, pos = self.backbones[0](image[:, cam_id])
            all_features.append(self.input_proj(features[0]))
            all_pos.append(pos[0])
        proprio_input = self.input_proj_robot_state(qpos)
        src = torch.cat(all_features, dim=3)  # cameras folded along the width
        pos = torch.cat(all_pos, dim=3)
        hs = self.transformer(src, self.query_embed.weight, pos, latent_input, proprio_input,
                              self.additional_pos_embed.weight)[0]
        return self.action_head(hs), self.is_pad_head(hs), [mu, logvar]


class OriginalACT(nn.Module):
    """The original ``ACTPolicy`` wrapper: state-dict keys start with ``model.``.

    ``forward(qpos, image)`` takes normalised qpos (B, S) and float images (B, K, 3, H, W) in 0..1
    (as the original's ``get_image``) and returns the normalised action chunk (B, H, A).
    """

    _mean: torch.Tensor
    _std: torch.Tensor

    def __init__(self, camera_names: list[str], state_dim: int = 14, action_dim: int = 14,
                 chunk_size: int = 100, hidden_dim: int = 512, nheads: int = 8,
                 dim_feedforward: int = 3200, enc_layers: int = 4, dec_layers: int = 7,
                 vae_enc_layers: int | None = None, latent_dim: int = 32, dropout: float = 0.1,
                 pre_norm: bool = False, backbone: str = "resnet18") -> None:
        super().__init__()
        self.model = _DETRVAE(backbone, list(camera_names), state_dim, action_dim, chunk_size, hidden_dim,
                              nheads, dim_feedforward, enc_layers, dec_layers,
                              enc_layers if vae_enc_layers is None else vae_enc_layers, latent_dim,
                              dropout, pre_norm)
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).reshape(3, 1, 1), persistent=False)

    def forward(self, qpos: torch.Tensor, image: torch.Tensor, actions: torch.Tensor | None = None,
                is_pad: torch.Tensor | None = None):
        image = (image - self._mean) / self._std
        if actions is not None:
            return self.model(qpos, image, None, actions, is_pad)
        return self.model(qpos, image)[0]


def random_original_state_dict(model: OriginalACT, seed: int = 0) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor re-drawn (frozen-BN statistics included).

    A freshly built model has identity batch norms and zero biases, which would hide key-mapping
    mistakes; this makes every tensor distinctive.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, t in copy.deepcopy(model.state_dict()).items():
        if key.endswith("pos_table"):
            out[key] = t
        elif key.endswith("running_var"):
            out[key] = torch.rand(t.shape, generator=gen) + 0.5
        elif t.dim() == 1 and key.endswith("weight"):  # batch / layer norm scales
            out[key] = 1.0 + 0.1 * torch.randn(t.shape, generator=gen)
        elif t.dim() >= 2:
            fan_in = t[0].numel()
            out[key] = torch.randn(t.shape, generator=gen) / fan_in ** 0.5
        else:
            out[key] = torch.randn(t.shape, generator=gen) * 0.1
    return out
