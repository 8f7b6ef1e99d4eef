"""VLA: segmentation instances and an instruction into an encoder–decoder transformer that writes
the action chunk step by step and says when the episode is over (the fifth seed's model).

Encoder input, one sequence per sample::

    [STATE, instance tokens of camera 1 .. camera K, SEP, instruction tokens]

* **instance tokens** come from a segmentation model (:mod:`robokit.segmentation`, frozen: trained
  before with `robokit seg train`, its weights copied into the policy). For every instance of its
  table (the arm's links, the gripper's parts, each object and target) and every camera, the
  instance's soft mask pools the segmenter's last feature map and the image's colour, and gives
  the instance's centroid, spread and area; a linear layer makes that a token, plus a learned
  embedding of the instance and of the camera. An instance out of view has area 0.
* **SEP** (learned) separates the image part from the instruction's words (a trainable word
  embedding, or a local text-encoder directory as ``tokenizer``).
* ``enc_layers`` pre-norm transformer blocks over the whole sequence.

Decoder: ``dec_layers`` blocks of causal self-attention over the action tokens, cross-attention to
the encoder's output and an MLP. Its input at step k is START (k = 0) or the normalised action
of step k - 1 through a linear layer, plus a position embedding: in training the demonstration's
chunk shifted right (teacher forcing); at inference the actions it has written so far, one step at
a time, with the encoder computed once per query (in training the previous actions are noised and
hidden at random, so that the decoder reads the scene rather than copying its last output). Each
output gives that step's action (masked L1
on normalised actions, as ACT) and an END logit (binary cross-entropy against the episode's done
flags; steps past the end count as ended): ``predict_chunk`` returns the END probability of the
first step as ``done``, which ends a deploy episode.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robokit.errors import ConfigError
from robokit.policies.base import Policy
from robokit.policies.goal.common import (
MLP,
    Attention,
    Block,
    batch_tasks,
    done_loss,
    masked_mean,
    obs_images,
    obs_qpos,
)
from robokit.policies.goal.tokenizer import make_text_encoder
from robokit.policies.goal.vla_config import VLAConfig
from robokit.policies.nn.task_conditioning import WordTokenizer, instruction_words
from robokit.policies.registry import register_policy

__all__ = ["VLAConfig", "VLAPolicy"]

GEOMETRY = 6  # centroid x, y, spread x, y, area, present
#: Sines and cosines of the centroid at these multiples of pi: a linear layer alone resolves a
#: coordinate only coarsely, and a grasp needs its centimetres.
FOURIER = (1.0, 2.0, 4.0, 8.0, 16.0)
#: Frames whose segmentation a training run keeps (about 1 KB each).
SEGMENT_CACHE_FRAMES = 300_000


def with_fourier(inputs: torch.Tensor) -> torch.Tensor:
    """:meth:`VLAPolicy.segment` rows (..., F) with the sines and cosines of their centroid appended."""
    centroid = inputs[..., -GEOMETRY:-GEOMETRY + 2]  # (..., 2): x, y in -1..1 (0 when absent)
    angles = torch.cat([centroid * (math.pi * f) for f in FOURIER], dim=-1)
    present = inputs[..., -1:]
    return torch.cat([inputs, torch.sin(angles) * present, torch.cos(angles) * present], dim=-1)


def unit_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (..., 3, h, w) -> float (..., 3, H, W) in 0..1 at ``size``: what the segmenter was trained on."""
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="area")
    return x.reshape(*lead, 3, *size)


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: causal self-attention, cross-attention to the encoder, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.cross_attn = Attention(dim, heads, dropout)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = x.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        x = x + self.self_attn(self.norm1(x), mask=causal)[0]
        y, weights = self.cross_attn(self.norm2(x), context=memory, mask=memory_mask[:, None, None, :],
                                     need_weights=need_weights)
        x = x + y
        return x + self.mlp(self.norm3(x)), weights


@register_policy("vla")
class VLAPolicy(Policy):
    """See the module docstring."""

    config_class = VLAConfig
    config: VLAConfig
    kind_mask: torch.Tensor  # (2, N): the object / target instances each grounding query may point at

    def __init__(self, config: VLAConfig) -> None:
        super().__init__(config)
        from robokit.segmentation.models import SegmenterConfig, SmallSegNet

        c = config
        self.segmenter = SmallSegNet(SegmenterConfig.from_dict(dict(c.segmenter_config)))
        if c.segmenter is not None and Path(c.segmenter).is_file():
            from robokit.segmentation.train import load_segmenter

            self.segmenter.load_state_dict(load_segmenter(c.segmenter)[0].state_dict())
        self.segmenter.requires_grad_(False)
        self._segment_cache: dict[bytes, torch.Tensor] = {}  # frame digest -> segment() rows (training)
        self.num_instances = len(c.instances)
        d = c.d_model
        width = self.segmenter.feature_channels + 3 + GEOMETRY + 4 * len(FOURIER)
        self.instance_in = nn.Linear(width, d)
        self.instance_embed = nn.Parameter(torch.randn(self.num_instances, d) * 0.02)
        self.camera_embed = nn.Parameter(torch.randn(len(c.camera_names), d) * 0.02)
        self.state_in = nn.Linear(c.state_dim, d)
        self.sep = nn.Parameter(torch.randn(d) * 0.02)
        self.words: WordTokenizer | None = None
        if c.tokenizer == "word":
            if not c.vocabulary:
                raise ConfigError("the VLA with tokenizer='word' needs the training instructions' vocabulary "
                                  "(robokit train fills it in)")
            self.words = WordTokenizer(c.vocabulary, c.max_words, c.unknown_words)
            self.word_embed = nn.Embedding(self.words.size, d, padding_idx=0)
            self.word_position = nn.Parameter(torch.randn(c.max_words, d) * 0.02)
        else:
            self.text_encoder = make_text_encoder(c.tokenizer, d, c.text_max_length)
        self.encoder = nn.ModuleList([Block(d, c.n_head, c.mlp_ratio, c.dropout) for _ in range(c.enc_layers)])
        self.encoder_norm = nn.LayerNorm(d)
        # Grounding: OBJECT and TARGET queries point at the instances the instruction names.
        self.grounding_queries = nn.Parameter(torch.randn(1, 2, d) * 0.02)
        self.grounding_proj = nn.Linear(d, d)
        kinds = [kind for _, kind in c.instances]
        self.register_buffer("kind_mask", torch.tensor([[k == "object" for k in kinds], [k == "target" for k in kinds]]),
                             persistent=False)
        self.grounded_in = nn.Linear(len(c.camera_names) * width, d)
        self.start = nn.Parameter(torch.randn(d) * 0.02)
        self.action_in = nn.Linear(c.action_dim, d)
        self.masked_action = nn.Parameter(torch.randn(d) * 0.02)
        self.step_position = nn.Parameter(torch.randn(c.chunk_size, d) * 0.02)
        self.decoder = nn.ModuleList([DecoderBlock(d, c.n_head, c.mlp_ratio, c.dropout)
                                      for _ in range(c.dec_layers)])
        self.decoder_norm = nn.LayerNorm(d)
        self.action_head = nn.Linear(d, c.action_dim)
        self.end_head = nn.Linear(d, 1)

    def train(self, mode: bool = True) -> VLAPolicy:
        super().train(mode)
        self.segmenter.eval()  # frozen: its normalisation never follows the policy's batches
        return self

    # -- encoder ---------------------------------------------------------------------------------
    def instance_tokens(self, images: torch.Tensor, frames: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K·N, d) tokens of the N instances in each of the K cameras of float ``images``
        (B, K, 3, H, W) in 0..1, and what they were made from (B, K, N, F): :meth:`segment`'s rows
        with the centroid's Fourier features.

        While training, each distinct frame's segmentation is computed once and kept (the
        segmenter is frozen and the frames do not change): ``frames`` are the batch's uint8 images
        that key that store.
        """
        b, k = images.shape[:2]
        flat = images.flatten(0, 1)
        if frames is not None and self.training:
            inputs = self._cached_inputs(flat, frames.flatten(0, 1))
        else:
            inputs = self.segment(flat)
        inputs = with_fourier(inputs)
        tokens = self.instance_in(inputs).view(b, k, self.num_instances, -1)
        tokens = tokens + self.instance_embed[None, None] + self.camera_embed[None, :, None]
        return tokens.flatten(1, 2), inputs.view(b, k, self.num_instances, -1)

    @torch.no_grad()
    def segment(self, flat: torch.Tensor) -> torch.Tensor:
        """(F, N, C + 3 + 6) per instance of each frame (F, 3, H, W): the segmenter's features and
        the colour pooled under its soft mask, then centroid, spread, area and presence."""
        features = self.segmenter.features(flat)
        probs = self.segmenter.head(features).softmax(dim=1)[:, 1:]  # (F, N, H, W), background dropped
        h, w = flat.shape[-2:]
        weight_sum = probs.sum(dim=(2, 3)).clamp_min(1e-6)  # (F, N)
        pooled = torch.einsum("bnhw,bchw->bnc", probs, features) / weight_sum[..., None]
        colour = torch.einsum("bnhw,bchw->bnc", probs, flat) / weight_sum[..., None]
        ys = torch.linspace(-1, 1, h, device=flat.device)[None, None, :, None]
        xs = torch.linspace(-1, 1, w, device=flat.device)[None, None, None, :]
        cx = (probs * xs).sum(dim=(2, 3)) / weight_sum
        cy = (probs * ys).sum(dim=(2, 3)) / weight_sum
        sx = ((probs * (xs - cx[..., None, None]) ** 2).sum(dim=(2, 3)) / weight_sum).sqrt()
        sy = ((probs * (ys - cy[..., None, None]) ** 2).sum(dim=(2, 3)) / weight_sum).sqrt()
        area = weight_sum / (h * w)
        present = (area > 1e-3).float()
        geometry = torch.stack([cx * present, cy * present, sx * present, sy * present, area * 10, present], -1)
        return torch.cat([pooled, colour, geometry], dim=-1)

    def _cached_inputs(self, flat: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        keys = [hashlib.blake2b(f.cpu().numpy().tobytes(), digest_size=16).digest() for f in frames]
        missing = [i for i, key in enumerate(keys) if key not in self._segment_cache]
        if missing:
            computed = self.segment(flat[missing]).to(torch.float16).cpu()
            for i, value in zip(missing, computed, strict=True):
                if len(self._segment_cache) < SEGMENT_CACHE_FRAMES:
                    self._segment_cache[keys[i]] = value
            fresh = dict(zip(missing, computed, strict=True))
        else:
            fresh = {}
        rows = [fresh[i] if i in fresh else self._segment_cache[key] for i, key in enumerate(keys)]
        return torch.stack(rows).to(flat.device, torch.float32)

    def text_tokens(self, tasks: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.words is not None:
            ids, mask = self.words.encode_batch(tasks)
            ids_t, mask_t = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
            return self.word_embed(ids_t) + self.word_position[None], mask_t
        return self.text_encoder(tasks, device)

    def encode(self, images: torch.Tensor, qpos: torch.Tensor, tasks: list[str],
               frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output (B, T, d) and its validity mask (B, T) for float images (B, K, 3, H, W)
        in 0..1 and normalised qpos (``frames``: see :meth:`instance_tokens`)."""
        return self.encode_grounded(images, qpos, tasks, frames)[:2]

    def encode_grounded(self, images: torch.Tensor, qpos: torch.Tensor, tasks: list[str],
                        frames: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`encode` and the grounding logits over the instances (B, N) of the OBJECT and
        TARGET queries (each over the instances of its kind). What each query points at (its
        instance's inputs in every camera, weighted by the pointing) becomes a token of the memory."""
        inst, inputs = self.instance_tokens(images, frames)
        words, word_mask = self.text_tokens(tasks, images.device)
        b, k = images.shape[:2]
        queries = self.grounding_queries.expand(b, -1, -1)
        x = torch.cat([self.state_in(qpos)[:, None], queries, inst, self.sep.expand(b, 1, -1), words], dim=1)
        fixed = 3 + inst.shape[1] + 1
        valid = torch.cat([torch.ones(b, fixed, dtype=torch.bool, device=x.device), word_mask], 1)
        for block in self.encoder:
            x = block(x, mask=valid[:, None, None, :])[0]
        x = self.encoder_norm(x)
        # Which instance each query points at: its dot product with that instance's encodings,
        # averaged over the cameras; the pointed instance's geometry becomes two more tokens.
        encoded = x[:, 3:3 + inst.shape[1]].reshape(b, k, self.num_instances, -1)
        scores = torch.einsum("bqd,bknd->bqn", self.grounding_proj(x[:, 1:3]), encoded) / (x.shape[-1] ** 0.5 * k)
        scores = scores.masked_fill(~self.kind_mask[None], float("-inf"))
        weights = torch.nan_to_num(scores.softmax(-1))  # a kind with no instance points at nothing
        pointed = torch.einsum("bqn,bknf->bqkf", weights, inputs)
        extra = self.grounded_in(pointed.flatten(2))  # (B, 2, d)
        memory = torch.cat([x, extra], dim=1)
        valid = torch.cat([valid, torch.ones(b, 2, dtype=torch.bool, device=x.device)], 1)
        return memory, valid, scores[:, 0], scores[:, 1]

    def grounding_labels(self, tasks: list[str]) -> torch.Tensor:
        """(B, 2) ids (from 0) of the object and the target each instruction names: the instance of
        that kind whose name's parts follow each other in the instruction ("red_cube": "... red cube
        ..."); -100 when not exactly one does."""
        labels = torch.full((len(tasks), 2), -100, dtype=torch.long)
        for row, task in enumerate(tasks):
            text = f" {' '.join(instruction_words(task))} "
            for col, kind in enumerate(("object", "target")):
                hits = [i for i, (name, k) in enumerate(self.config.instances)
                        if k == kind and f" {' '.join(name.lower().split('_'))} " in text]
                if len(hits) == 1:
                    labels[row, col] = hits[0]
        return labels.to(self.device)

    # -- decoder ---------------------------------------------------------------------------------
    def decode(self, memory: torch.Tensor, valid: torch.Tensor, previous: torch.Tensor,
               need_weights: bool = False, hidden: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Actions (B, n, A) and END logits (B, n) for steps 0..n-1, given the normalised actions
        (B, n - 1, A) of steps 0..n-2 (teacher forcing, or what it wrote so far); where ``hidden``
        (B, n - 1) is True the previous action is replaced by a learned MASK token."""
        b, n = previous.shape[0], previous.shape[1] + 1
        prev = self.action_in(previous)
        if hidden is not None:
            prev = torch.where(hidden[..., None], self.masked_action.expand_as(prev), prev)
        x = torch.cat([self.start.expand(b, 1, -1), prev], dim=1) + self.step_position[None, :n]
        maps = []
        for block in self.decoder:
            x, weights = block(x, memory, valid, need_weights=need_weights)
            if weights is not None:
                maps.append(weights)
        x = self.decoder_norm(x)
        return self.action_head(x), self.end_head(x).squeeze(-1), maps

    # -- the policy interface --------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.config
        frames = torch.as_tensor(batch["images"])
        images = unit_images(frames.to(self.device), c.image_hw)
        qpos = self.normalize_qpos(torch.as_tensor(batch["qpos"], device=self.device).float())
        tasks = batch_tasks(batch, images.shape[0])
        if tasks is None:
            raise ConfigError("the VLA policy trains on instructions: the episodes need a task")
        target = self.normalize_action(torch.as_tensor(batch["action"], device=self.device).float())
        is_pad = torch.as_tensor(batch["is_pad"], device=self.device).bool()
        memory, valid, object_scores, target_scores = self.encode_grounded(images, qpos, tasks, frames)
        labels = self.grounding_labels(tasks)
        grounding = sum((F.cross_entropy(scores.masked_fill(scores.isinf(), -1e4), labels[:, i], ignore_index=-100)
                         for i, scores in enumerate((object_scores, target_scores)) if (labels[:, i] >= 0).any()),
                        torch.zeros((), device=self.device))
        # Teacher forcing alone teaches the decoder to copy the previous action (demonstrations are
        # smooth), and at inference its own first errors then carry through the chunk: the previous
        # actions it is given are noisy, and hidden (a MASK token) at random, so it reads the scene.
        previous = target[:, :-1] + c.previous_noise * torch.randn_like(target[:, :-1])
        hidden = torch.rand(previous.shape[:2], device=self.device) < c.previous_dropout
        pred, end_logits = self.decode(memory, valid, previous, hidden=hidden)[:2]
        l1 = masked_mean(F.l1_loss(pred, target, reduction="none"), ~is_pad[..., None])
        end = done_loss(end_logits, batch)
        return {"loss": l1 + c.done_weight * end + c.grounding_weight * grounding, "l1": l1.detach(),
                "end_bce": end.detach(), "grounding": grounding.detach()}

    @torch.no_grad()
    def predict_chunk(self, obs: dict[str, Any], capture_attention: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
        c = self.config
        was_training = self.training
        self.eval()
        try:
            frames = obs_images(obs, c.camera_names, c.image_hw)
            images = unit_images(torch.from_numpy(frames).to(self.device)[None], c.image_hw)
            qpos = self.normalize_qpos(torch.from_numpy(obs_qpos(obs, c.state_dim)).to(self.device)[None])
            task = obs.get("task")
            if not isinstance(task, str) or not task.strip():
                raise ConfigError("the VLA policy follows an instruction: the observation needs a 'task'")
            memory, valid = self.encode(images, qpos, [task])
            written = torch.zeros(1, 0, c.action_dim, device=self.device)
            for _ in range(c.chunk_size):  # autoregressive: each step reads the steps before it
                pred, end_logits, maps = self.decode(memory, valid, written, need_weights=capture_attention)
                written = torch.cat([written, pred[:, -1:]], dim=1)
        finally:
            self.train(was_training)
        chunk = self.denormalize_action(pred)[0].cpu().numpy().astype(np.float32)
        end = torch.sigmoid(end_logits[0]).cpu().numpy()
        extras: dict[str, Any] = {"done": float(end[0]), "done_chunk": end}
        if capture_attention:  # cross-attention of the last pass: (layers, heads, chunk, tokens)
            extras["attention"] = {"maps": torch.stack([m[0] for m in maps]).cpu().numpy().astype(np.float32),
                                   "query_kind": "action", "layout": self.token_layout()}
        return chunk, extras

    def token_layout(self) -> dict[str, list[int]]:
        """Where each part of the encoder's sequence is, (start, stop): the state, one
        ``object/<camera>:<instance>`` per instance token, SEP and the instruction's tokens (the
        layout `robokit viz attention` draws, the instances after the words)."""
        layout = {"state": [0, 1], "grounding": [1, 3]}
        pos = 3
        for cam in self.config.camera_names:
            for name, _ in self.config.instances:
                layout[f"object/{cam}:{name}"] = [pos, pos + 1]
                pos += 1
        words = self.config.max_words if self.words is not None else self.config.text_max_length
        layout["sep"] = [pos, pos + 1]
        layout["text"] = [pos + 1, pos + 1 + words]
        layout["pointed"] = [pos + 1 + words, pos + 3 + words]
        return layout

    def reset(self) -> None:
        """Nothing carries over between queries."""
