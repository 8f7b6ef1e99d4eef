"""GRP: a goal-conditioned transformer policy that follows a text instruction OR a goal image.

Token sequence (one row per sample; the GRP seed's text / goal-image block mask, with action
queries as ACT's decoder has them)::

    [STATE, TASK, obs tokens cam_1 .. cam_K, GOAL_IMG, goal-image tokens, text tokens, action queries]

* the goal is first one **task vector** per sample: from the instruction's words
  (:class:`~robokit.policies.nn.task_conditioning.TaskEncoder`; ``tokenizer = "char"`` reads
  characters as the seed did) or from the goal image (a small GroupNorm conv net, max-pooled). It
  drives zero-initialised FiLM after every stage of the observation stem (a GroupNorm conv net,
  stride 16) and is the TASK token;
* **early fusion** of the goal image: the goal camera's stem sees the current frame and the goal
  image stacked along the channels (zeros when the sample follows text), so the first convolution
  can already compare the two;
* the text tokens (words) and the goal-image tokens (the goal net's feature map) are in the
  sequence under the seed's BLOCK MASK: per sample either the text or the goal image (GOAL_IMG +
  its tokens) is hidden from every query. In training the choice is random per sample
  (``goal_image_prob``) so one model follows both; at inference it follows what the observation
  gives;
* ``chunk_size`` learned action queries read the sequence; a linear head per query gives that
  step's action (masked L1 on normalised actions as ACT, ``loss = "mse"`` for the seed's) and a
  done logit. Nothing depends on the other samples of a batch.
* with ``object_pointer``, the policy also learns where the instructed object is in each camera
  (:mod:`robokit.policies.nn.object_pointer`: a spatial softmax over a FiLM-modulated stage of the
  stem, trained on the recorded boxes of the object each demonstration moves) and reads the
  position as one POINTER token per camera, after TASK.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from robokit.errors import ConfigError, UserError
from robokit.policies.base import DataNeeds, Policy, PolicyConfig
from robokit.policies.goal.common import (
    Block,
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
from robokit.policies.nn.backbones import SmallBackbone
from robokit.policies.nn.object_pointer import ObjectPointer, pointer_loss
from robokit.policies.nn.task_conditioning import UNKNOWN_WORDS, TaskEncoder, build_vocabulary, per_image
from robokit.policies.registry import register_policy

log = logging.getLogger(__name__)

GOAL_MODES = ("random", "text", "image")
LOSSES = ("l1", "mse")
VERSION = 2


@dataclass
class GRPConfig(PolicyConfig):
    """GRP options (see the module docstring). Defaults fit a CPU-trainable model."""

    version: int = VERSION
    image_shape: tuple[int, int, int] = (64, 80, 3)
    chunk_size: int = 20
    n_embd: int = 128
    n_head: int = 4
    n_blocks: int = 3
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    tokenizer: str = "word"        # word | char | a LOCAL pretrained text-encoder directory
    vocabulary: list[str] = field(default_factory=list)  # words of the training instructions ("word")
    max_words: int = 16
    unknown_words: str = "error"   # error | unk: what a word never seen in training does
    text_max_length: int = 48      # characters ("char") or encoder tokens (a local encoder)
    task_dim: int = 64             # the task vector driving FiLM
    loss: str = "l1"               # l1 (as ACT) | mse (the seed's)
    goal_mode: str = "random"      # training: "random" per sample, or always "text" / "image"
    goal_image_prob: float = 0.5   # "random": chance of the goal image when a sample has both
    goal_camera: str = ""          # camera the goal image shows; "" = the first camera
    done_weight: float = 1.0       # weight of the done-head loss
    # Learn where the instructed object is in each camera (a training target from the episodes'
    # object boxes) and read it as a token; weight of its L1 loss in image fractions.
    object_pointer: bool = False
    pointer_weight: float = 1.0
    pointer_stage: int = 2         # the stem stage it points in (2: stride 8)
    lr: float = 3e-4               # AdamW learning rate (`robokit train --lr` overrides)
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        self.vocabulary = [str(w) for w in self.vocabulary]
        if self.version != VERSION:
            raise ConfigError(f"GRP config version {self.version} is not this robokit's ({VERSION})")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"lr must be positive and weight_decay not negative, "
                              f"got {self.lr}, {self.weight_decay}")
        h, w, _ = self.image_shape
        if h % 16 or w % 16:
            raise ConfigError(f"GRP image_shape {h}x{w} must be a multiple of 16 (the stem's stride)")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd {self.n_embd} must be divisible by n_head {self.n_head}")
        for name in ("n_blocks", "text_max_length", "n_head", "max_words", "task_dim"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.task_dim % 4:
            raise ConfigError(f"task_dim must be a multiple of 4, got {self.task_dim}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")
        if self.unknown_words not in UNKNOWN_WORDS:
            raise ConfigError(f"unknown_words must be one of {', '.join(UNKNOWN_WORDS)}, got {self.unknown_words!r}")
        if not 0 <= self.pointer_stage < 5 or self.pointer_weight < 0:
            raise ConfigError(f"pointer_stage must be a stage of the stem (0-4) and pointer_weight >= 0, "
                              f"got {self.pointer_stage}, {self.pointer_weight}")
        if self.goal_mode not in GOAL_MODES:
            raise ConfigError(f"goal_mode must be one of {', '.join(GOAL_MODES)}, got '{self.goal_mode}'")
        if not 0.0 <= self.goal_image_prob <= 1.0:
            raise ConfigError(f"goal_image_prob must be in [0, 1], got {self.goal_image_prob}")
        if not self.camera_names:
            raise ConfigError("GRP needs at least one camera")
        if self.goal_camera and self.goal_camera not in self.camera_names:
            raise ConfigError(f"goal_camera '{self.goal_camera}' is not one of the cameras "
                              f"{', '.join(self.camera_names)}")

    @property
    def goal_camera_name(self) -> str:
        return self.goal_camera or self.camera_names[0]

    def data_needs(self) -> DataNeeds:
        """The instruction and goal images of ``goal_camera_name``."""
        return DataNeeds(camera_names=tuple(self.camera_names), goal_camera=self.goal_camera_name,
                         instruction=True, task_object=self.object_pointer)

    @classmethod
    def options_for_tasks(cls, values: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
        """The word tokenizer's vocabulary comes from the training instructions."""
        if values.get("tokenizer", "word") == "word" and not values.get("vocabulary") and tasks:
            return {**values, "vocabulary": build_vocabulary(tasks)}
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PolicyConfig:
        if "version" not in values and {"patch_size", "stem", "film", "keypoints"} & set(values):
            raise ConfigError("this is a version-1 GRP (the seed's patch ViT with character tokens and "
                              "MSE), which this robokit no longer runs; train it again with "
                              "`robokit train --policy grp` (version 2)")
        return super().from_dict(values)


class GoalImageEncoder(nn.Module):
    """Goal image -> feature map tokens (B, h*w, C) and a max-pooled vector (B, C), stride 16."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 96, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False),
                       nn.GroupNorm(8, out_ch), nn.ReLU(inplace=True)]
            in_ch = out_ch
        self.body = nn.Sequential(*layers)
        self.channels = in_ch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.body(x)
        return feat.flatten(2).transpose(1, 2), feat.amax(dim=(2, 3))


@register_policy("grp")
class GRPPolicy(Policy):
    """Goal-conditioned transformer policy (text or goal image) predicting action chunks."""

    config_class = GRPConfig

    def __init__(self, config: GRPConfig) -> None:
        super().__init__(config)
        self.config: GRPConfig = config
        c = config
        h, w, _ = c.image_shape
        self.grid = (h // 16, w // 16)
        n_cell = self.grid[0] * self.grid[1]
        d = c.n_embd
        k = len(c.camera_names)
        self.goal_index = c.camera_names.index(c.goal_camera_name)

        # The instruction: word tokens and one task vector, or characters / a local encoder.
        if c.tokenizer == "word":
            if not c.vocabulary:
                raise ConfigError("GRP with tokenizer='word' needs the training instructions' vocabulary "
                                  "(`robokit train` fills it from the dataset)")
            self.words: TaskEncoder | None = TaskEncoder(c.vocabulary, c.task_dim, c.max_words, c.unknown_words)
            self.text_encoder: nn.Module | None = None
            text_len, text_dim = c.max_words, c.task_dim
        else:
            self.words = None
            self.text_encoder = make_text_encoder("char" if c.tokenizer == "char" else c.tokenizer, d,
                                                  c.text_max_length)
            self.text_vector = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, c.task_dim))
            text_len, text_dim = c.text_max_length, d
        self.text_proj = nn.Linear(text_dim, d)

        self.goal_encoder = GoalImageEncoder()
        self.goal_vector = nn.Sequential(nn.Linear(self.goal_encoder.channels, c.task_dim), nn.GELU(),
                                         nn.Linear(c.task_dim, c.task_dim))
        self.goal_proj = nn.Linear(self.goal_encoder.channels, d)
        # Every camera's stem input has 6 channels: its frame, then the goal image on the goal
        # camera (zeros elsewhere and when the sample follows text).
        self.stem = SmallBackbone(channels=(32, 64, 128, 128, 128), film_dim=c.task_dim, in_channels=6)
        self.obs_proj = nn.Linear(self.stem.num_channels, d)
        self.state_proj = nn.Linear(c.state_dim, d)
        self.task_proj = nn.Linear(c.task_dim, d)
        self.goal_img_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.action_queries = nn.Parameter(torch.randn(1, c.chunk_size, d) * 0.02)
        self.pointer = ObjectPointer(self.stem.channels[c.pointer_stage], d) if c.object_pointer else None

        self.layout: dict[str, list[int]] = {"state": [0, 1], "task": [1, 2]}
        pos = 2
        if self.pointer is not None:
            self.layout["pointer"] = [pos, pos + k]
            pos += k
        for cam in c.camera_names:
            self.layout[cam] = [pos, pos + n_cell, *self.grid]
            pos += n_cell
        self.layout["goal_token"] = [pos, pos + 1]
        self.layout["goal_image"] = [pos + 1, pos + 1 + n_cell, *self.grid]
        pos += 1 + n_cell
        self.layout["text"] = [pos, pos + text_len]
        pos += text_len
        self.layout["actions"] = [pos, pos + c.chunk_size]
        self.seq_len = pos + c.chunk_size
        self.n_obs_tokens = k * n_cell

        self.pos_embedding = nn.Parameter(torch.randn(1, self.seq_len, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, c.n_head, c.mlp_ratio, c.dropout) for _ in range(c.n_blocks))
        self.norm = nn.LayerNorm(d)
        self.action_head = nn.Linear(d, c.action_dim)
        self.done_head = nn.Linear(d, 1)

    # -- the network -----------------------------------------------------------------------------
    def key_mask(self, use_text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Block mask (B, seq_len), True = visible: hides the goal image OR the text per sample.

        ``use_text`` (B,) bool picks text (goal-image tokens hidden) or goal image (text hidden);
        ``text_mask`` (B, L) hides padding tokens too.
        """
        b = use_text.shape[0]
        mask = torch.ones(b, self.seq_len, dtype=torch.bool, device=use_text.device)
        g0 = self.layout["goal_token"][0]
        g1 = self.layout["goal_image"][1]
        t0, t1 = self.layout["text"]
        mask[:, g0:g1] = ~use_text[:, None]
        mask[:, t0:t1] = text_mask & use_text[:, None]
        return mask

    def encode_text(self, tasks: list[str], use_text: torch.Tensor,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Text tokens (B, L, D), their mask and the text task vectors (B, task_dim).

        Samples that follow their goal image may have no instruction: they get a placeholder that
        the block mask and the goal choice then hide."""
        dev = use_text.device
        if self.words is not None:
            texts = [t if use else (t or self.config.vocabulary[0]) for t, use in zip(tasks, use_text.tolist())]
            tokens, mask, vector = self.words.encode(texts, dev)
        else:
            tokens, mask = cast(nn.Module, self.text_encoder)(tasks, dev)
            weights = mask.to(tokens.dtype)[..., None]
            vector = self.text_vector((tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0))
        return self.text_proj(tokens), mask, vector

    def forward_tokens(self, images: torch.Tensor, qpos: torch.Tensor, tasks: list[str],
                       goal: torch.Tensor | None, use_text: torch.Tensor,
                       need_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """The action queries' outputs (B, chunk_size, D), with ``need_weights`` per-layer
        attention (B, heads, T, T), and the pointer's positions (B, K, 2) (None without a pointer).

        ``images``: float (B, K, 3, H, W) normalised; ``qpos`` normalised (B, S);
        ``goal``: float (B, 3, H, W) normalised or None (then every sample must use text).
        """
        b, k = images.shape[:2]
        dev = images.device
        text, text_mask, text_vec = self.encode_text(tasks, use_text)
        if goal is None:
            goal = torch.zeros(b, *images.shape[2:], device=dev, dtype=images.dtype)
        # A sample that follows text sees no goal image anywhere: zeros in the fused channels, and
        # its goal tokens are hidden by the block mask.
        goal = goal * (~use_text).to(goal.dtype)[:, None, None, None]
        goal_tokens, goal_pooled = self.goal_encoder(goal)
        cond = torch.where(use_text[:, None], text_vec, self.goal_vector(goal_pooled))

        fused = torch.zeros(b, k, 6, *images.shape[3:], device=dev, dtype=images.dtype)
        fused[:, :, :3] = images
        fused[:, self.goal_index, 3:] = goal
        stages = self.stem.stages(fused.flatten(0, 1), per_image(cond, k))
        feat = stages[-1]  # (B*K, C, h, w)
        obs = self.obs_proj(feat.flatten(2).transpose(1, 2)).reshape(b, -1, self.config.n_embd)
        head = [self.state_proj(qpos)[:, None], self.task_proj(cond)[:, None]]
        pointer_xy = None
        if self.pointer is not None:
            xy, _, pointer_tokens = self.pointer(stages[self.config.pointer_stage])
            pointer_xy = xy.view(b, k, 2)
            head.append(pointer_tokens.view(b, k, -1))
        tokens = torch.cat([
            *head,
            obs,
            self.goal_img_token.expand(b, -1, -1),
            self.goal_proj(goal_tokens),
            text,
            self.action_queries.expand(b, -1, -1),
        ], dim=1)
        x = tokens + self.pos_embedding
        attn_mask = self.key_mask(use_text, text_mask)[:, None, None, :]
        maps = []
        for block in self.blocks:
            x, w = block(x, mask=attn_mask, need_weights=need_weights)
            if w is not None:
                maps.append(w)
        a0, a1 = self.layout["actions"]
        return self.norm(x[:, a0:a1]), maps, pointer_xy

    def heads(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised action chunk (B, H, A) and done logits (B, H)."""
        return self.action_head(queries), self.done_head(queries)[..., 0]

    # -- training --------------------------------------------------------------------------------
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
        raw = torch.as_tensor(batch["images"], device=self.device)
        if raw.ndim != 5 or raw.shape[1] != len(c.camera_names):
            raise UserError(f"batch images must be (B, {len(c.camera_names)}, 3, H, W), got {tuple(raw.shape)}")
        images = uint8_images_to_float(raw, c.image_hw)
        b = images.shape[0]
        qpos = self.normalize_qpos(torch.as_tensor(batch["qpos"], device=self.device).float())
        tasks = batch_tasks(batch, b)
        goal_u8 = batch.get("goal_image")
        goal = None
        if goal_u8 is not None:
            goal = uint8_images_to_float(torch.as_tensor(goal_u8, device=self.device), c.image_hw)
        use_text = self._choose_goal(tasks, goal is not None, b)
        queries, _, pointer_xy = self.forward_tokens(images, qpos, tasks or [""] * b, goal, use_text)
        pred, done_logits = self.heads(queries)
        target = self.normalize_action(torch.as_tensor(batch["action"], device=self.device).float())
        is_pad = torch.as_tensor(batch["is_pad"], device=self.device).bool()
        if target.shape != pred.shape:
            raise UserError(f"batch actions are {tuple(target.shape)}, GRP predicts {tuple(pred.shape)} "
                            f"(chunk_size {c.chunk_size}, action_dim {c.action_dim})")
        error = (pred - target).abs() if c.loss == "l1" else (pred - target).pow(2)
        action_loss = masked_mean(error, ~is_pad[..., None])
        done = done_loss(done_logits, batch)
        out = {"loss": action_loss + c.done_weight * done, c.loss: action_loss.detach(),
               "done_bce": done.detach(), "text_fraction": use_text.float().mean().detach()}
        if pointer_xy is not None:
            if "task_object_xy" not in batch:
                raise UserError("this GRP policy learns an object pointer and needs the batch's task_object_xy "
                                "(episodes with object boxes; the trainer adds them)")
            pointing = pointer_loss(pointer_xy.float(), torch.as_tensor(batch["task_object_xy"], device=self.device),
                                    torch.as_tensor(batch["task_object_valid"], device=self.device))
            out["loss"] = out["loss"] + c.pointer_weight * pointing
            out["pointer_l1"] = pointing.detach()
        return out

    # -- inference -------------------------------------------------------------------------------
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
            img = check_image("goal_image", goal)
            (gh, gw), (h, w) = img.shape[:2], c.image_hw
            if abs(gw * h - gh * w) > 0.02 * gh * w:  # resizing would distort it
                raise UserError(f"goal_image is {img.shape[1]}x{img.shape[0]} (WxH) but the policy sees "
                                f"{c.image_hw[1]}x{c.image_hw[0]} images of camera '{c.goal_camera_name}'; "
                                "send the goal image as that camera shows it (same aspect ratio)")
            return False, resize_hwc(img, c.image_hw).transpose(2, 0, 1), ""
        if task.strip():
            return True, None, task
        if c.goal_mode == "text":
            raise UserError("this GRP policy follows text instructions (goal_mode='text') but the "
                            "observation has no 'task'; give the instruction")
        raise UserError("GRP needs a goal: give an instruction ('task') or a 'goal_image'")

    @torch.no_grad()
    def predict_chunk(self, obs: dict[str, Any],
                      capture_attention: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
        c = self.config
        was_training = self.training
        self.eval()
        try:
            frames = obs_images(obs, c.camera_names, c.image_hw)
            qpos = obs_qpos(obs, c.state_dim)
            use_text, goal_img, task = self._goal_from_obs(obs)
            images = uint8_images_to_float(torch.from_numpy(frames).to(self.device)[None], c.image_hw)
            goal = None
            if goal_img is not None:
                goal = uint8_images_to_float(torch.from_numpy(goal_img).to(self.device)[None], c.image_hw)
            q = self.normalize_qpos(torch.from_numpy(qpos).to(self.device)[None])
            flag = torch.tensor([use_text], device=self.device)
            queries, maps, pointer_xy = self.forward_tokens(images, q, [task], goal, flag,
                                                            need_weights=capture_attention)
            pred, done_logits = self.heads(queries)
        finally:
            self.train(was_training)
        chunk = self.denormalize_action(pred)[0].cpu().numpy().astype(np.float32)
        done = torch.sigmoid(done_logits[0]).cpu().numpy()
        extras: dict[str, Any] = {"done": float(done[min(1, len(done) - 1)]), "done_chunk": done,
                                  "goal_mode": "text" if use_text else "image"}
        if pointer_xy is not None:  # where it thinks the instructed object is, (x, y) image fractions per camera
            extras["pointer"] = pointer_xy[0].float().cpu().numpy()
        if capture_attention:
            a0, a1 = self.layout["actions"]
            # The action queries' rows of every layer: (layers, heads, chunk, tokens).
            rows = torch.stack([m[0, :, a0:a1, :] for m in maps])
            extras["attention"] = {"maps": rows.cpu().numpy().astype(np.float32), "query_kind": "action",
                                   "layout": {k: list(v) for k, v in self.layout.items()},
                                   "goal_camera": c.goal_camera_name}
        return chunk, extras
