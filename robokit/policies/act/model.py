"""ACT: Action Chunking with Transformers (Zhao et al. 2023), registered as ``--policy act``.

Faithful to the original code (``tonyzhaozh/act``, ``detr/models/detr_vae.py``):

* memory tokens = [latent z, proprioception, image features of every camera]; each camera's
  feature map gets the same normalised 2-D sine position embedding (ACT computes it per camera and
  folds the cameras along the width); the latent and proprio tokens have learned positions;
* a CVAE encoder over [CLS, qpos, action chunk] (1-D sinusoid positions, padded steps masked)
  gives the latent at training time; z = 0 at inference;
* the decoder's ``num_queries = chunk_size`` action queries start from zeros with learned query
  positions; ACT keeps only the FIRST decoder layer's (normed) output. The weights of all
  ``dec_layers`` layers exist (original checkpoints load), but only layer 0 is ever run;
* loss = L1 on the non-padded steps (mean over all steps, as the original) + ``kl_weight`` * KL.

Additions over the original: the ``is_pad_head`` is trained (BCE on "done or padded", weight
``done_weight``) so deploy can stop when the task is finished (``extras["done"]``); all cameras go
through the backbone as one batch; at inference the frozen batch norms are folded into the
convolutions (channels-last) and attention weights are formed only when asked for.

Multi-task ACT (MT-ACT style): trained on several instructions, the config holds their vocabulary
and the instruction becomes one task vector (:mod:`robokit.policies.nn.task_conditioning`) that
FiLM-modulates every stage of the ``small`` backbone and joins the memory and the CVAE encoder as
one token each. With ``object_pointer`` the policy also learns where the instructed object is in
each camera (:mod:`robokit.policies.nn.object_pointer`, trained on the recorded object boxes of
the object each demonstration moves) and reads that position as one more token per camera.

Token order: the image tokens are camera after camera, each in raster order (left to right, top to
bottom). ACT's width folding interleaves the cameras row by row instead; the encoder and the
cross-attention do not depend on token order (no masks, positions travel with the tokens), so the
two give the same result, and this order gives each camera one contiguous range for attention maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robokit.errors import ConfigError, UserError
from robokit.policies.base import DataNeeds, Policy, PolicyConfig
from robokit.policies.nn.backbones import (
    BACKBONES,
    FusedBackboneCache,
    ImageNormalizer,
    SmallBackbone,
    backbone_param_groups,
    build_backbone,
)
from robokit.policies.nn.object_pointer import ObjectPointer, pointer_loss
from robokit.policies.nn.task_conditioning import UNKNOWN_WORDS, TaskEncoder, build_vocabulary, per_image
from robokit.policies.nn.transformer import (
    Transformer,
    TransformerEncoder,
    sine_position_embedding_2d,
    sinusoid_table_1d,
)
from robokit.policies.preprocess import observation_to_tensors
from robokit.policies.registry import register_policy


@dataclass
class ACTConfig(PolicyConfig):
    """ACT hyper-parameters; defaults are the original ACT's (ALOHA paper, Table/README)."""

    chunk_size: int = 100
    backbone: str = "resnet18"  # resnet18 | resnet34 | resnet50 | small (CPU demos/tests)
    pretrained_backbone: str | None = None  # local torchvision ResNet state-dict file; never downloaded
    hidden_dim: int = 512
    nheads: int = 8
    dim_feedforward: int = 3200
    enc_layers: int = 4
    dec_layers: int = 7  # only the first one's output is used, as in the original
    vae_enc_layers: int = 4  # CVAE encoder depth (the original reuses enc_layers)
    latent_dim: int = 32
    dropout: float = 0.1
    pre_norm: bool = False
    kl_weight: float = 10.0
    done_weight: float = 1.0  # BCE weight of the done head; 0 = not trained, no extras["done"]
    lr: float = 1e-5
    lr_backbone: float = 1e-5  # 0 freezes the backbone
    weight_decay: float = 1e-4
    # Multi-task ACT: the words of the training instructions. Empty = one task, no instruction read.
    # The trainer fills it when the dataset holds more than one instruction.
    vocabulary: list[str] = field(default_factory=list)
    task_dim: int = 64  # size of the task vector that FiLM-modulates the stem and joins the memory
    max_words: int = 16
    unknown_words: str = "error"  # error | unk: what an instruction word never seen in training does
    # Learn where the instructed object is in each camera (a training target from the episodes'
    # object boxes) and read it as a token; weight of its L1 loss in image fractions.
    object_pointer: bool = False
    pointer_weight: float = 1.0
    pointer_stage: int = 2  # the small backbone's stage it points in (2: stride 8)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.vocabulary = [str(w) for w in self.vocabulary]
        if self.vocabulary and self.backbone != "small":
            raise ConfigError("multi-task ACT (several instructions) conditions the 'small' backbone; "
                              f"use --backbone small, not '{self.backbone}'")
        if self.unknown_words not in UNKNOWN_WORDS:
            raise ConfigError(f"ACT unknown_words must be one of {', '.join(UNKNOWN_WORDS)}, "
                              f"got {self.unknown_words!r}")
        if self.object_pointer and self.backbone != "small":
            raise ConfigError(f"the object pointer reads the 'small' backbone's stages; use --backbone small, "
                              f"not '{self.backbone}'")
        if not 0 <= self.pointer_stage < 5:
            raise ConfigError(f"ACT pointer_stage must be a stage of the small backbone (0-4), got {self.pointer_stage}")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone '{self.backbone}'; choose one of: {', '.join(BACKBONES)}")
        if self.pretrained_backbone is not None and self.backbone == "small":
            raise ConfigError("pretrained_backbone applies only to the ResNet backbones")
        for name in ("hidden_dim", "nheads", "dim_feedforward", "enc_layers", "dec_layers",
                     "vae_enc_layers", "latent_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"ACT {name} must be a positive integer, got {value!r}")
        if self.hidden_dim % self.nheads:
            raise ConfigError(f"ACT hidden_dim ({self.hidden_dim}) must be divisible by nheads ({self.nheads})")
        if self.hidden_dim % 4:
            # the 2-D sine embedding splits the channels into y/x halves of sin/cos pairs
            raise ConfigError(f"ACT hidden_dim must be a multiple of 4, got {self.hidden_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ACT dropout must be in [0, 1), got {self.dropout}")
        for name in ("kl_weight", "done_weight", "lr_backbone", "weight_decay", "pointer_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"ACT {name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"ACT lr must be positive, got {self.lr}")
        stride = 16 if self.backbone == "small" else 32
        if min(self.image_shape[:2]) < stride:
            raise ConfigError(f"image_shape {self.image_shape} is smaller than the {self.backbone} "
                              f"backbone's stride ({stride} pixels)")

    @property
    def multi_task(self) -> bool:
        """True when the policy follows an instruction (trained on several)."""
        return bool(self.vocabulary)

    def data_needs(self) -> DataNeeds:
        return DataNeeds(camera_names=tuple(self.camera_names), instruction=self.multi_task,
                         task_object=self.object_pointer)

    @classmethod
    def options_for_tasks(cls, values: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
        """Several instructions in the data make a multi-task ACT (unless a vocabulary is given)."""
        if len(set(tasks)) > 1 and not values.get("vocabulary"):
            return {**values, "vocabulary": build_vocabulary(tasks)}
        return values


class ACTModel(nn.Module):
    """The network. Module and parameter names follow the original ``DETRVAE`` for easy import."""

    pos_table: torch.Tensor  # (2 or 3 + chunk_size, hidden_dim) buffer of the CVAE encoder's positions

    def __init__(self, cfg: ACTConfig) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone, cfg.pretrained_backbone,
                                       film_dim=cfg.task_dim if cfg.multi_task else 0)
        self.input_proj = nn.Conv2d(self.backbone.num_channels, d, kernel_size=1)
        self.input_proj_robot_state = nn.Linear(cfg.state_dim, d)
        self.transformer = Transformer(d, cfg.nheads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward,
                                       cfg.dropout, cfg.pre_norm)
        self.query_embed = nn.Embedding(cfg.chunk_size, d)
        self.additional_pos_embed = nn.Embedding(2, d)  # positions of the latent and proprio tokens
        self.latent_out_proj = nn.Linear(cfg.latent_dim, d)
        self.action_head = nn.Linear(d, cfg.action_dim)
        self.is_pad_head = nn.Linear(d, 1)
        # CVAE encoder (training only)
        self.encoder = TransformerEncoder(cfg.vae_enc_layers, d, cfg.nheads, cfg.dim_feedforward,
                                          cfg.dropout, cfg.pre_norm)
        self.cls_embed = nn.Embedding(1, d)
        self.encoder_action_proj = nn.Linear(cfg.action_dim, d)
        self.encoder_joint_proj = nn.Linear(cfg.state_dim, d)
        self.latent_proj = nn.Linear(d, 2 * cfg.latent_dim)
        # A constant of the architecture: not stored in checkpoints.
        head_tokens = 3 if cfg.multi_task else 2  # CLS, qpos (, task)
        self.register_buffer("pos_table", sinusoid_table_1d(head_tokens + cfg.chunk_size, d), persistent=False)
        self.image_normalizer = ImageNormalizer()
        # Multi-task: the instruction's task vector modulates the stem and is one more memory token
        # (and one more token of the CVAE encoder, so the latent need not encode the task).
        self.task_encoder: TaskEncoder | None = None
        if cfg.multi_task:
            self.task_encoder = TaskEncoder(cfg.vocabulary, cfg.task_dim, cfg.max_words, cfg.unknown_words)
            self.task_proj = nn.Linear(cfg.task_dim, d)
            self.task_pos = nn.Parameter(torch.zeros(1, d))
            self.encoder_task_proj = nn.Linear(cfg.task_dim, d)
        self.pointer: ObjectPointer | None = None
        if cfg.object_pointer:
            self.pointer = ObjectPointer(cast(SmallBackbone, self.backbone).channels[cfg.pointer_stage], d)
            self.pointer_pos = nn.Parameter(torch.zeros(len(cfg.camera_names), d))
        if cfg.lr_backbone == 0:
            self.backbone.requires_grad_(False)
        # Parameters that can never receive a gradient: the decoder layers after the first (their
        # output is discarded, as in the original) and an untrained done head. Frozen so that the
        # optimizer and DDP do not carry them.
        self.transformer.decoder.layers[1:].requires_grad_(False)
        if cfg.done_weight == 0:
            self.is_pad_head.requires_grad_(False)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    # -- pieces ---------------------------------------------------------------------------------
    def image_position(self, h: int, w: int, num_cameras: int, device: torch.device) -> torch.Tensor:
        """(num_cameras * h * w, D) sine positions; every camera gets the same grid (as ACT)."""
        key = (h, w, num_cameras, str(device))
        pos = self._pos_cache.get(key)
        if pos is None:
            # Built outside inference mode so that the cached tensor is usable while training too.
            with torch.inference_mode(False), torch.no_grad():
                grid = sine_position_embedding_2d(h, w, self.cfg.hidden_dim, device=device)
                pos = grid.flatten(1).t().repeat(num_cameras, 1).contiguous()
            self._pos_cache[key] = pos
        return pos

    def encode_task(self, tasks: Any, batch_size: int, device: torch.device) -> torch.Tensor | None:
        """Task vectors (B, task_dim) of the batch's instructions; None for a single-task model."""
        if self.task_encoder is None:
            return None
        if tasks is None or isinstance(tasks, str) or len(tasks) != batch_size:
            raise ConfigError("this ACT policy was trained on several instructions and needs one per sample "
                              "(the episodes' task, or the observation's 'task')")
        return self.task_encoder([str(t) for t in tasks], device)

    def encode_latent(self, qpos: torch.Tensor, actions: torch.Tensor, is_pad: torch.Tensor,
                      task: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """CVAE posterior (mu, logvar), each (B, latent_dim), from normalised qpos and actions."""
        b = qpos.shape[0]
        head = [self.cls_embed.weight.expand(b, 1, -1), self.encoder_joint_proj(qpos)[:, None]]
        if task is not None:
            head.append(self.encoder_task_proj(task)[:, None])
        tokens = torch.cat([*head, self.encoder_action_proj(actions)], dim=1)
        mask = torch.cat([torch.zeros(b, len(head), dtype=torch.bool, device=qpos.device), is_pad], dim=1)
        out = self.encoder(tokens, self.pos_table[None, : tokens.shape[1]], mask)[:, 0]
        mu, logvar = self.latent_proj(out).split(self.cfg.latent_dim, dim=-1)
        return mu, logvar

    def decode(self, images: torch.Tensor, qpos: torch.Tensor, latent: torch.Tensor,
               backbone: nn.Module | None = None, need_weights: bool = False,
               task: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Action chunk (B, H, A) and done logits (B, H), both normalised, for one batch.

        ``images`` are uint8 (B, K, 3, H, W); ``qpos`` normalised (B, S); ``latent`` (B, latent_dim);
        ``task`` the task vectors (B, task_dim) of a multi-task model.
        ``backbone`` overrides ``self.backbone`` (the fused inference copy). With ``need_weights``
        the third value holds the decoder cross-attention weights and the token layout.
        """
        b, k = images.shape[:2]
        x = self.image_normalizer(images.flatten(0, 1))
        info: dict[str, Any] = {}
        pointer_tokens = None
        if self.pointer is not None:
            stages = cast(SmallBackbone, self.backbone).stages(x, None if task is None else per_image(task, k))
            xy, attention, tokens = self.pointer(stages[self.cfg.pointer_stage])
            info["pointer_xy"] = xy.view(b, k, 2)
            info["pointer_attention"] = attention.view(b, k, *attention.shape[1:])
            pointer_tokens = tokens.view(b, k, -1)
            feats = self.input_proj(stages[-1])
        elif task is not None:
            feats = self.input_proj(self.backbone(x, per_image(task, k)))
        else:
            if backbone is not None:
                x = x.contiguous(memory_format=torch.channels_last)
            feats = self.input_proj((self.backbone if backbone is None else backbone)(x))  # (B*K, D, h, w)
        return self._decode_tokens(feats, b, k, qpos, latent, task, pointer_tokens, need_weights, info)

    def decode_features(self, features: torch.Tensor, qpos: torch.Tensor, latent: torch.Tensor,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode` from the backbone's output instead of images (single-task ACT without an
        object pointer): ``features`` (B*K, C, h, w) for B samples of K cameras each, in camera order.
        Returns the normalised action chunk (B, H, A) and done logits (B, H). This is the part of the
        network an inference engine can run separately from the backbone."""
        b = qpos.shape[0]
        actions, done_logits, _ = self._decode_tokens(self.input_proj(features), b, features.shape[0] // b,
                                                      qpos, latent, None, None, False, {})
        return actions, done_logits

    def _decode_tokens(self, feats: torch.Tensor, b: int, k: int, qpos: torch.Tensor, latent: torch.Tensor,
                       task: torch.Tensor | None, pointer_tokens: torch.Tensor | None, need_weights: bool,
                       info: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """The transformer and heads of :meth:`decode` over the projected image features."""
        d, h, w = feats.shape[1:]
        img_tokens = feats.permute(0, 2, 3, 1).reshape(b, k * h * w, d)
        latent_tok = self.latent_out_proj(latent)
        proprio_tok = self.input_proj_robot_state(qpos)
        head = [latent_tok[:, None], proprio_tok[:, None]]
        head_pos = [self.additional_pos_embed.weight]
        if task is not None:
            head.append(self.task_proj(task)[:, None])
            head_pos.append(self.task_pos)
        if pointer_tokens is not None:
            head.append(pointer_tokens)
            head_pos.append(self.pointer_pos)
        src = torch.cat([*head, img_tokens], dim=1)
        pos = torch.cat([*head_pos, self.image_position(h, w, k, feats.device).to(src.dtype)], dim=0)[None]
        memory = self.transformer.encoder(src, pos)
        tgt = torch.zeros(b, self.cfg.chunk_size, d, dtype=src.dtype, device=src.device)
        hs, weights = self.transformer.decoder(tgt, memory, pos, self.query_embed.weight[None],
                                               num_layers=1, need_weights=need_weights)
        actions = self.action_head(hs)
        done_logits = self.is_pad_head(hs)[..., 0]
        if need_weights:
            info["weights"] = torch.stack(weights, dim=1)  # (B, layers, heads, H, tokens)
            info["grid"] = (h, w)
        return actions, done_logits, info


@register_policy("act")
class ACTPolicy(Policy):
    """ACT behind the :class:`~robokit.policies.base.Policy` interface."""

    config_class = ACTConfig
    config: ACTConfig

    def __init__(self, config: ACTConfig) -> None:
        if not isinstance(config, ACTConfig):
            raise ConfigError(f"ACTPolicy needs an ACTConfig, got {type(config).__name__}")
        super().__init__(config)
        self.model = ACTModel(config)
        self._fused = FusedBackboneCache()

    # -- training -------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """L1 (non-padded steps) + kl_weight * KL (+ done_weight * done BCE); see the module doc."""
        cfg = self.config
        dev = self.device
        images = batch["images"].to(dev, non_blocking=True)
        qpos = self.normalize_qpos(batch["qpos"].to(dev, non_blocking=True).float())
        actions = self.normalize_action(batch["action"].to(dev, non_blocking=True).float())
        is_pad = batch["is_pad"].to(dev, non_blocking=True).bool()
        done = batch.get("done")
        done = is_pad.float() if done is None else torch.maximum(done.to(dev).float(), is_pad.float())
        actions, is_pad, done = _fit_chunk(actions, is_pad, done, cfg.chunk_size)
        task = self.model.encode_task(batch.get("task"), qpos.shape[0], dev)

        mu, logvar = self.model.encode_latent(qpos, actions, is_pad, task)
        latent = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        pred, done_logits, info = self.model.decode(images, qpos, latent, task=task)

        pred, mu, logvar = pred.float(), mu.float(), logvar.float()  # losses in fp32 under autocast
        l1 = ((pred - actions).abs() * (~is_pad)[..., None]).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(dim=1).mean()
        out = {"l1": l1, "kl": kl}
        loss = l1 + cfg.kl_weight * kl
        if cfg.done_weight > 0:
            out["done_bce"] = F.binary_cross_entropy_with_logits(done_logits.float(), done)
            loss = loss + cfg.done_weight * out["done_bce"]
        if cfg.object_pointer:
            if "task_object_xy" not in batch:
                raise ConfigError("this ACT policy learns an object pointer and needs the batch's task_object_xy "
                                  "(episodes with object boxes; the trainer adds them)")
            out["pointer_l1"] = pointer_loss(info["pointer_xy"].float(), batch["task_object_xy"].to(dev),
                                             batch["task_object_valid"].to(dev))
            loss = loss + cfg.pointer_weight * out["pointer_l1"]
        out["loss"] = loss
        return out

    def optimizer_param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Two AdamW groups as the original: the backbone at ``config.lr_backbone``, the rest at ``lr``."""
        return backbone_param_groups(self, "model.backbone.", lr, self.config.lr_backbone, weight_decay)

    # -- inference ------------------------------------------------------------------------------
    def infer(self, images: torch.Tensor, qpos: torch.Tensor, capture_attention: bool = False,
              tasks: list[str] | None = None) -> dict[str, Any]:
        """Batched inference with z = 0 (the prior's mean).

        ``images`` uint8 (B, K, 3, H, W) at ``config.image_shape``; ``qpos`` (B, S) NOT normalised;
        ``tasks`` one instruction per sample for a multi-task model.
        Returns ``action`` (B, H, A) de-normalised, ``done`` (B, H) probabilities and, with
        ``capture_attention``, ``attention`` (B, layers, heads, H, tokens) and ``layout``.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                qpos_n = self.normalize_qpos(qpos.to(self.device).float())
                latent = torch.zeros(qpos_n.shape[0], self.config.latent_dim, device=self.device,
                                     dtype=qpos_n.dtype)
                task = self.model.encode_task(tasks, qpos_n.shape[0], self.device)
                actions, done_logits, info = self.model.decode(
                    images.to(self.device), qpos_n, latent, backbone=self._fused.get(self.model.backbone),
                    need_weights=capture_attention, task=task)
                out: dict[str, Any] = {"action": self.denormalize_action(actions),
                                       "done": torch.sigmoid(done_logits)}
                if capture_attention:
                    out["attention"] = info["weights"]
                    out["layout"] = self.token_layout(*info["grid"])
                if "pointer_xy" in info:
                    out["pointer"] = info["pointer_xy"]
                return out
        finally:
            self.train(was_training)

    def token_layout(self, h: int, w: int) -> dict[str, list[int]]:
        """Memory token ranges: latent, state, (task,) then each camera's (h, w) grid in raster order."""
        layout = {"latent": [0, 1], "state": [1, 2]}
        start = 2
        if self.config.multi_task:
            layout["task"] = [2, 3]
            start = 3
        if self.config.object_pointer:
            layout["pointer"] = [start, start + len(self.config.camera_names)]
            start += len(self.config.camera_names)
        for cam in self.config.camera_names:
            layout[cam] = [start, start + h * w, h, w]
            start += h * w
        return layout

    def predict_chunk(self, obs: dict[str, Any], capture_attention: bool = False,
                      ) -> tuple[np.ndarray, dict[str, Any]]:
        """Action chunk float32 (chunk_size, action_dim), de-normalised, for one observation.

        ``extras["done"]``: probability that the episode is finished by the next step (the done
        head's output for chunk step 1; only when it was trained, ``done_weight > 0``);
        ``extras["done_chunk"]`` the probability of "done or past the end" for every
        step of the chunk. With ``capture_attention`` also ``extras["attention"]``:
        the decoder cross-attention of the one decoder layer ACT uses, per head, from each action
        query to every memory token.
        """
        images, qpos = observation_to_tensors(obs, self.config, self.device)
        tasks = None
        if self.config.multi_task:
            task = obs.get("task")
            if not isinstance(task, str) or not task.strip():
                raise UserError("this ACT policy follows instructions; give the task in words (the "
                                f"'task' of the observation), e.g. {self.trained_instruction_hint()}")
            tasks = [task]
        out = self.infer(images, qpos, capture_attention, tasks)
        chunk = out["action"][0].float().cpu().numpy()
        extras: dict[str, Any] = {}
        if self.config.done_weight > 0:
            done = out["done"][0].float().cpu().numpy()
            # Step t+1, not t: "done or past the end" is never true for the current step of
            # data without /done flags, but is for the step after an episode's last frame.
            extras["done"] = float(done[min(1, len(done) - 1)])
            extras["done_chunk"] = done
        if capture_attention:
            extras["attention"] = {"maps": out["attention"][0].float().cpu().numpy(),
                                   "query_kind": "action", "layout": out["layout"]}
        if "pointer" in out:  # where it thinks the instructed object is, (x, y) image fractions per camera
            extras["pointer"] = out["pointer"][0].float().cpu().numpy()
        return chunk, extras


    def trained_instruction_hint(self) -> str:
        """Words the policy knows, for error messages."""
        return "an instruction using the words: " + ", ".join(self.config.vocabulary)


def _fit_chunk(actions: torch.Tensor, is_pad: torch.Tensor, done: torch.Tensor, chunk: int,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut the batch's chunk to ``chunk`` steps, or pad it (as padded steps) if it is shorter."""
    n = actions.shape[1]
    if n >= chunk:
        return actions[:, :chunk], is_pad[:, :chunk], done[:, :chunk]
    extra = chunk - n
    actions = F.pad(actions, (0, 0, 0, extra))
    is_pad = F.pad(is_pad, (0, extra), value=True)
    done = F.pad(done, (0, extra), value=1.0)
    return actions, is_pad, done
