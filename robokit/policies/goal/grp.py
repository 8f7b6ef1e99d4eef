"""GRP: a goal-conditioned ViT policy that follows a text instruction OR a goal image.

Token sequence (one row per sample; the original GRP's order, plus a proprioception token)::

    [CLS, STATE, obs patches cam_1 .. cam_K, GOAL_IMG, goal-image patches, text tokens]

* observation patches: each camera is cut into ``patch_size`` squares (ViT style, raster order);
  with ``obs_stacking`` S > 1 the last S frames are stacked along the channels of each patch;
* goal-image patches: the goal image (one camera, ``goal_camera``) through its own patch embedding;
* text tokens: a small trainable character embedding (``robokit.policies.goal.tokenizer``) or a local
  pretrained encoder directory;
* a learned position embedding over the whole sequence, then ``n_blocks`` transformer blocks under
  a BLOCK MASK: per sample either the text tokens or the goal-image tokens (GOAL_IMG + patches) are
  hidden from every query. In training the choice is random per sample (``goal_image_prob``) so one
  model follows both; at inference it follows what the observation gives.
* heads on the CLS output: an MLP to ``chunk_size x action_dim`` (MSE on normalised actions; the
  original's action stacking is robokit's chunk, so deploy's temporal ensembler applies) and a done
  head (a learned end-of-episode signal) trained on the batch's ``done``.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robokit.errors import ConfigError, UserError
from robokit.policies.base import DataNeeds, Policy, PolicyConfig
from robokit.policies.goal.common import (
    MLP,
    AttentionPool,
    BatchStandardize,
    Block,
    PatchEmbed,
    SpatialSoftmax,
    batch_tasks,
    check_image,
    done_loss,
    masked_mean,
    obs_images,
    obs_qpos,
    resize_hwc,
    uint8_images_to_float,
)
from robokit.policies.goal.tokenizer import make_text_encoder
from robokit.policies.registry import register_policy

log = logging.getLogger(__name__)

GOAL_MODES = ("random", "text", "image")


@dataclass
class GRPConfig(PolicyConfig):
    """GRP options (see the module docstring). Defaults fit a CPU-trainable model."""

    image_shape: tuple[int, int, int] = (64, 80, 3)
    chunk_size: int = 20
    patch_size: int = 8
    stem: str = "linear"           # patch embedding: "linear" (ViT, the original's) or "conv" (hybrid)
    film: bool = True              # FiLM-condition the observation encoder on the pooled goal
    keypoints: int = 32            # spatial-softmax keypoints per camera -> one token each (0 = off)
    n_embd: int = 128
    n_head: int = 4
    n_blocks: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    obs_stacking: int = 1          # frames stacked per observation patch (1 = current frame only)
    text_max_length: int = 48      # the original's max_block_size: instructions are cut to this many tokens
    text_encoder: str = "char"     # "char" or a LOCAL pretrained encoder directory (needs transformers)
    goal_mode: str = "random"      # training: "random" per sample, or always "text" / "image"
    goal_image_prob: float = 0.5   # "random": chance of the goal image when a sample has both
    goal_camera: str = ""          # camera the goal image shows; "" = the first camera
    done_weight: float = 1.0       # weight of the done-head loss
    lr: float = 3e-4               # AdamW learning rate (`robokit train --lr` overrides)
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"lr must be positive and weight_decay not negative, "
                              f"got {self.lr}, {self.weight_decay}")
        h, w, _ = self.image_shape
        if self.patch_size <= 0 or h % self.patch_size or w % self.patch_size:
            raise ConfigError(f"image_shape {h}x{w} must be a multiple of patch_size {self.patch_size}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd {self.n_embd} must be divisible by n_head {self.n_head}")
        for name in ("n_blocks", "obs_stacking", "text_max_length", "n_head"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.stem not in ("linear", "conv"):
            raise ConfigError(f"stem must be 'linear' or 'conv', got '{self.stem}'")
        if self.stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ConfigError(f"stem='conv' needs a power-of-two patch_size, got {self.patch_size}")
        if self.goal_mode not in GOAL_MODES:
            raise ConfigError(f"goal_mode must be one of {', '.join(GOAL_MODES)}, got '{self.goal_mode}'")
        if not 0.0 <= self.goal_image_prob <= 1.0:
            raise ConfigError(f"goal_image_prob must be in [0, 1], got {self.goal_image_prob}")
        if not self.camera_names:
            raise ConfigError("GRP needs at least one camera")
        if self.keypoints < 0:
            raise ConfigError(f"keypoints must not be negative, got {self.keypoints}")
        if self.goal_camera and self.goal_camera not in self.camera_names:
            raise ConfigError(f"goal_camera '{self.goal_camera}' is not one of the cameras "
                              f"{', '.join(self.camera_names)}")

    @property
    def goal_camera_name(self) -> str:
        return self.goal_camera or self.camera_names[0]

    def data_needs(self) -> DataNeeds:
        """The stacked frames before t, the instruction, and goal images of ``goal_camera_name``."""
        return DataNeeds(camera_names=tuple(self.camera_names), history=self.obs_stacking - 1,
                         goal_camera=self.goal_camera_name, instruction=True)


@register_policy("grp")
class GRPPolicy(Policy):
    """Goal-conditioned ViT policy (text or goal image) predicting action chunks."""

    config_class = GRPConfig

    def __init__(self, config: GRPConfig) -> None:
        super().__init__(config)
        self.config: GRPConfig = config
        c = config
        h, w, _ = c.image_shape
        self.grid = (h // c.patch_size, w // c.patch_size)
        n_patch = self.grid[0] * self.grid[1]
        d = c.n_embd
        self.patch_embedding = PatchEmbed(3 * c.obs_stacking, d, c.patch_size, c.stem,
                                          film_dim=d if c.film else 0)
        if c.film:
            self.text_pool_block = Block(d, c.n_head, c.mlp_ratio, c.dropout)
            self.text_pool = AttentionPool(d, c.n_head)
            self.goal_pool = AttentionPool(d, c.n_head)
            self.text_standardize = BatchStandardize(d)
            self.goal_standardize = BatchStandardize(d)
            self.film_norm = nn.LayerNorm(d)
        # Without stacking the goal image goes through the observation's encoder: the model then
        # compares like with like. With stacking the channel counts differ: a separate encoder.
        self.goal_patch_embedding = (self.patch_embedding if c.obs_stacking == 1
                                     else PatchEmbed(3, d, c.patch_size, c.stem))
        self.text_encoder = make_text_encoder(c.text_encoder, d, c.text_max_length)
        self.state_embedding = nn.Linear(c.state_dim, d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.goal_img_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)

        # Token layout, fixed by the config (needed by the block mask and attention capture).
        k = len(c.camera_names)
        self.layout: dict[str, list[int]] = {"cls": [0, 1], "state": [1, 2]}
        pos = 2
        if c.keypoints:
            # One token per camera carrying its keypoints' coordinates (after the goal FiLM).
            self.spatial_softmax = SpatialSoftmax(self.patch_embedding.feature_channels, c.keypoints)
            self.kp_embedding = nn.Linear(2 * c.keypoints, d)
            self.layout["keypoints"] = [pos, pos + k]
            pos += k
        for cam in c.camera_names:
            self.layout[cam] = [pos, pos + n_patch, *self.grid]
            pos += n_patch
        self.layout["goal_token"] = [pos, pos + 1]
        self.layout["goal_image"] = [pos + 1, pos + 1 + n_patch, *self.grid]
        pos += 1 + n_patch
        self.layout["text"] = [pos, pos + c.text_max_length]
        self.seq_len = pos + c.text_max_length
        self.n_obs_patches = k * n_patch

        self.pos_embedding = nn.Parameter(torch.randn(1, self.seq_len, d) * 0.02)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(d, c.n_head, c.mlp_ratio, c.dropout) for _ in range(c.n_blocks))
        self.norm = nn.LayerNorm(d)
        # The heads read the CLS output and, directly, the keypoint coordinates: through attention
        # alone (a CLS attending to ~100 tokens) the keypoints' gradient is too weak to learn from.
        # With FiLM they also read the pooled goal itself: then "which keypoint to go to" is a
        # choice the head makes from the goal vector, instead of one the goal must first imprint on
        # the image features (measured: without it the policy ignored the colour word after 2000
        # steps and went for whichever cube it had learnt on average).
        self.readout_dim = d + (2 * c.keypoints * (k + 1) if c.keypoints else 0) + (d if c.film else 0)
        self.mlp_head = MLP(self.readout_dim, d * 2, 0.0, out=c.chunk_size * c.action_dim)
        self.done_head = nn.Linear(self.readout_dim, c.chunk_size)
        self._frames: collections.deque[np.ndarray] = collections.deque(maxlen=c.obs_stacking)

    # -- the network -----------------------------------------------------------------------------
    def key_mask(self, use_text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Block mask (B, seq_len), True = visible: hides the goal image OR the text per sample.

        ``use_text`` (B,) bool picks text (goal-image tokens hidden) or goal image (text hidden);
        ``text_mask`` (B, L) hides padding characters too.
        """
        b = use_text.shape[0]
        mask = torch.ones(b, self.seq_len, dtype=torch.bool, device=use_text.device)
        g0 = self.layout["goal_token"][0]
        g1 = self.layout["goal_image"][1]
        t0, t1 = self.layout["text"]
        mask[:, g0:g1] = ~use_text[:, None]
        mask[:, t0:t1] = text_mask & use_text[:, None]
        return mask

    def forward_tokens(self, images: torch.Tensor, qpos: torch.Tensor, tasks: list[str],
                       goal: torch.Tensor | None, use_text: torch.Tensor,
                       need_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Readout (B, readout_dim): the CLS output and the keypoints, and with ``need_weights``
        per-layer attention (B, heads, T, T).

        ``images``: float (B, K, 3*S, H, W) normalised; ``qpos`` normalised (B, S);
        ``goal``: float (B, 3, H, W) normalised or None (then every sample must use text).
        """
        b, k = images.shape[:2]
        dev = images.device
        d = self.config.n_embd
        n_goal = self.layout["goal_image"][1] - self.layout["goal_image"][0]
        n_kp = 2 * self.config.keypoints
        goal_head = self.goal_img_token.expand(b, -1, -1)
        goal_kp = torch.zeros(b, n_kp, device=dev)
        if goal is None:
            goal_tok = torch.zeros(b, n_goal, d, device=dev)
        else:
            goal_tok, goal_feat = self.goal_patch_embedding.features(goal)
            if self.config.keypoints and self.config.obs_stacking == 1:
                # Zeroed where the goal image is hidden, so it cannot leak past the block mask.
                goal_kp = self.spatial_softmax(goal_feat) * (~use_text)[:, None]
                goal_head = goal_head + self.kp_embedding(goal_kp)[:, None]
        text, text_mask = self.text_encoder(tasks, dev)
        cond = self.goal_vector(text, text_mask, goal_tok, use_text) if self.config.film else None
        patches, feat = self.patch_embedding.features(images.flatten(0, 1),
                                                      None if cond is None else cond.repeat_interleave(k, dim=0))
        obs = patches.reshape(b, k * patches.shape[1], -1)
        extra = []
        readout = []
        if self.config.keypoints:
            kp = self.spatial_softmax(feat)  # (B*K, 2*keypoints)
            extra.append(self.kp_embedding(kp).view(b, k, d))
            readout = [kp.view(b, -1), goal_kp]
        tokens = torch.cat([
            self.cls_token.expand(b, -1, -1),
            self.state_embedding(qpos)[:, None],
            *extra,
            obs,
            goal_head,
            goal_tok,
            text,
        ], dim=1)
        x = self.drop(tokens + self.pos_embedding)
        attn_mask = self.key_mask(use_text, text_mask)[:, None, None, :]
        maps = []
        for block in self.blocks:
            x, w = block(x, mask=attn_mask, need_weights=need_weights)
            if w is not None:
                maps.append(w)
        if cond is not None:
            readout.append(cond)
        return torch.cat([self.norm(x[:, 0]), *readout], dim=1), maps

    def goal_vector(self, text: torch.Tensor, text_mask: torch.Tensor, goal_tok: torch.Tensor,
                    use_text: torch.Tensor) -> torch.Tensor:
        """Pooled goal (B, D) that FiLM-conditions the observation encoder: the instruction (one
        transformer block over the characters, attention-pooled) or the goal image (its patch tokens,
        attention-pooled), per sample by the same choice as the block mask, so hidden tokens stay
        without influence."""
        t0, t1 = self.layout["text"]
        # A sample without characters (following its goal image) would have no key to attend to.
        keys = text_mask | ~text_mask.any(dim=1, keepdim=True)
        t, _ = self.text_pool_block(text + self.pos_embedding[:, t0:t1], mask=keys[:, None, None, :])
        # Plus the plain mean of the token embeddings: learned pooling alone can learn to look
        # away from a word before anything downstream needs it (measured: after 1000 steps the
        # pooled vectors of "red" / "green" / "blue" instructions had cosine similarity 0.999, only
        # the target word was kept), and then the colour never gets a gradient. The mean keeps
        # every word's contribution in the vector the heads read; standardising across the batch
        # (BatchStandardize) then lifts what differs between instructions above what they share.
        text_vec = self.text_pool(t, keys) + _mean_over(text, text_mask)
        goal_vec = (self.goal_pool(goal_tok, torch.ones(goal_tok.shape[:2], dtype=torch.bool, device=goal_tok.device))
                    + goal_tok.mean(dim=1))
        # Only a kind of goal some sample follows updates its statistics (a text-only batch has
        # zero goal-image tokens, which would poison the goal statistics).
        if use_text.any():
            text_vec = self.text_standardize(text_vec)
        if not use_text.all():
            goal_vec = self.goal_standardize(goal_vec)
        return self.film_norm(torch.where(use_text[:, None], text_vec, goal_vec))

    def heads(self, readout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised action chunk (B, H, A) and done logits (B, H)."""
        c = self.config
        return self.mlp_head(readout).view(-1, c.chunk_size, c.action_dim), self.done_head(readout)

    # -- training --------------------------------------------------------------------------------
    def _stacked_batch_images(self, batch: dict[str, Any]) -> torch.Tensor:
        images = torch.as_tensor(batch["images"], device=self.device)
        if images.ndim != 5 or images.shape[1] != len(self.config.camera_names):
            raise UserError(f"batch images must be (B, {len(self.config.camera_names)}, 3, H, W), "
                            f"got {tuple(images.shape)}")
        size = self.config.image_hw
        frames = uint8_images_to_float(images, size)
        s = self.config.obs_stacking
        if s == 1:
            return frames
        hist = batch.get("image_history")
        if hist is None:
            raise ConfigError(f"obs_stacking={s} needs 'image_history' (B, {s - 1}, K, 3, H, W) in the "
                              f"training batch, which this dataset does not provide; use obs_stacking=1")
        hist = uint8_images_to_float(torch.as_tensor(hist, device=self.device), size)
        if hist.shape[1] != s - 1:
            raise ConfigError(f"'image_history' holds {hist.shape[1]} frames, obs_stacking={s} needs {s - 1}")
        # (B, S, K, 3, H, W) oldest first -> (B, K, S*3, H, W)
        seq = torch.cat([hist, frames[:, None]], dim=1)
        return seq.permute(0, 2, 1, 3, 4, 5).flatten(2, 3)

    def _choose_goal(self, tasks: list[str] | None, has_goal: bool, b: int) -> torch.Tensor:
        """Per-sample True = text, False = goal image, following ``goal_mode``."""
        c = self.config
        texts = tasks or []
        has_text = any(texts)
        if c.goal_mode == "text" or (c.goal_mode == "random" and not has_goal):
            if not has_text:
                raise UserError("GRP needs an instruction ('task') in the batch to train on text goals; "
                                "the dataset has none (record episodes with a task, or give goal images)")
            return torch.ones(b, dtype=torch.bool, device=self.device)
        if not has_goal:
            raise UserError("GRP goal_mode='image' needs goal images in the batch ('goal_image'); the "
                            "dataset has none (record with goal images, or use goal_mode='text')")
        if c.goal_mode == "image" or not has_text:
            return torch.zeros(b, dtype=torch.bool, device=self.device)
        use_text = torch.rand(b, device=self.device) >= c.goal_image_prob
        # A sample with an empty instruction must use its goal image.
        empty = torch.tensor([not t for t in texts], device=self.device)
        return use_text & ~empty

    def compute_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.config
        images = self._stacked_batch_images(batch)
        b = images.shape[0]
        qpos = self.normalize_qpos(torch.as_tensor(batch["qpos"], device=self.device).float())
        tasks = batch_tasks(batch, b)
        goal_u8 = batch.get("goal_image")
        goal = None
        if goal_u8 is not None:
            goal = uint8_images_to_float(torch.as_tensor(goal_u8, device=self.device), c.image_hw)
        use_text = self._choose_goal(tasks, goal is not None, b)
        cls, _ = self.forward_tokens(images, qpos, tasks or [""] * b, goal, use_text)
        pred, done_logits = self.heads(cls)
        target = self.normalize_action(torch.as_tensor(batch["action"], device=self.device).float())
        is_pad = torch.as_tensor(batch["is_pad"], device=self.device).bool()
        if target.shape != pred.shape:
            raise UserError(f"batch actions are {tuple(target.shape)}, GRP predicts {tuple(pred.shape)} "
                            f"(chunk_size {c.chunk_size}, action_dim {c.action_dim})")
        mse = masked_mean(F.mse_loss(pred, target, reduction="none"), ~is_pad[..., None])
        done = done_loss(done_logits, batch)
        return {"loss": mse + c.done_weight * done, "mse": mse.detach(), "done_bce": done.detach(),
                "text_fraction": use_text.float().mean().detach()}

    # -- inference -------------------------------------------------------------------------------
    def reset(self) -> None:
        self._frames.clear()

    def _goal_from_obs(self, obs: dict[str, Any]) -> tuple[bool, np.ndarray | None, str]:
        """(use_text, goal image uint8 (3, H, W) or None, instruction) from what ``obs`` gives."""
        c = self.config
        task = obs.get("task") or ""
        if not isinstance(task, str):
            raise UserError(f"observation 'task' must be a string, got {type(task).__name__}")
        goal = obs.get("goal_image")
        if c.goal_mode == "image" or (c.goal_mode == "random" and goal is not None and not task):
            if goal is None:
                raise UserError("this GRP policy follows goal images (goal_mode='image') but the "
                                "observation has no 'goal_image'; send one with the request")
            img = resize_hwc(check_image("goal_image", goal), c.image_hw).transpose(2, 0, 1)
            return False, img, ""
        if task:
            return True, None, task
        if c.goal_mode == "text":
            raise UserError("this GRP policy follows text instructions (goal_mode='text') but the "
                            "observation has no 'task'; give the instruction")
        raise UserError("GRP needs a goal: give an instruction ('task') or a 'goal_image'")

    @torch.no_grad()
    def predict_chunk(self, obs: dict[str, Any],
                      capture_attention: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
        c = self.config
        size = c.image_hw
        frames = obs_images(obs, c.camera_names, size)
        qpos = obs_qpos(obs, c.state_dim)
        use_text, goal_img, task = self._goal_from_obs(obs)
        if not self._frames:
            for _ in range(c.obs_stacking - 1):
                self._frames.append(frames)  # episode start: repeat the first frame
        self._frames.append(frames)
        stack = np.stack(list(self._frames), axis=1)  # (K, S, 3, H, W)
        images = uint8_images_to_float(torch.from_numpy(stack).to(self.device)[None], size)
        images = images.flatten(2, 3)  # (1, K, S*3, H, W)
        goal = None
        if goal_img is not None:
            goal = uint8_images_to_float(torch.from_numpy(goal_img).to(self.device)[None], size)
        q = self.normalize_qpos(torch.from_numpy(qpos).to(self.device)[None])
        flag = torch.tensor([use_text], device=self.device)
        cls, maps = self.forward_tokens(images, q, [task], goal, flag, need_weights=capture_attention)
        pred, done_logits = self.heads(cls)
        chunk = self.denormalize_action(pred)[0].cpu().numpy().astype(np.float32)
        extras: dict[str, Any] = {"done": float(torch.sigmoid(done_logits[0, 0])),
                                  "goal_mode": "text" if use_text else "image"}
        if capture_attention:
            # CLS (the action token) row of every layer: (layers, heads, 1, tokens).
            rows = torch.stack([m[0, :, :1, :] for m in maps])
            extras["attention"] = {"maps": rows.cpu().numpy().astype(np.float32), "query_kind": "action",
                                   "layout": {k: list(v) for k, v in self.layout.items()},
                                   "goal_camera": c.goal_camera_name}
        return chunk, extras


def _mean_over(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-sample mean (B, D) of ``tokens`` (B, T, D) where ``valid`` (B, T); 0 for an empty row."""
    w = valid.to(tokens.dtype)[..., None]
    return (tokens * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
