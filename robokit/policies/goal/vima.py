"""A VIMA-style prompt policy: a cross-attention GPT whose keys/values are a multimodal prompt.

Prompt (keys and values), built per sample::

    [PROMPT, instruction characters interleaved with object tokens]

* instruction characters: the fixed character tokenizer's trainable embedding (or a local
  pretrained encoder directory);
* object tokens: for every object in ``obs["objects"]`` (``{"name", "box": [x0, y0, x1, y1] pixels,
  "camera"}``, from ``env.object_box`` in sim or given by the user on a real robot) the crop of that
  camera's image through a small ViT, fused with a bounding-box MLP. An object whose name (``_`` read
  as a space) appears in the instruction sits right after that mention ("put the red cube <obj> in
  the blue bowl <obj>"); the others follow the text. Interleaving is done through the position
  embedding (the prompt encoder is bidirectional, so this is the same as reordering the tokens) which
  keeps the text one contiguous segment for attention capture.
* a small bidirectional transformer over the prompt.

Queries, per step of history (oldest first, ``history_len`` steps, causal over steps)::

    [camera tokens (a conv stem pooled to ``obs_grid`` per camera), END-EFFECTOR token, ACTION token]

The end-effector token encodes the TCP pose ``fk(qpos)`` (relative orientation as two rotation
columns), the gripper and the normalised joints. The ACTION token of a past step embeds the action
taken then; the current step's is a learned query whose output feeds the heads. Layers (``n_layer``):
causal self-attention (``n_head``) -> cross-attention to the prompt (``xattn_n_heads``) -> MLP.

Actions: each chunk step is discretised per dimension (``action_space="cartesian"``: TCP x, y, z,
roll, pitch, yaw relative to the ready pose, gripper, 50/100/50 position and 50 rotation bins;
``"joint"``: every joint over the dataset's action range), trained with cross-entropy (soft
Gaussian targets with ``bin_sigma``) and decoded to continuous targets, Cartesian ones through IK,
so ``predict_chunk`` returns joint targets (chunk, action_dim) like every other policy. A done head
(a learned end-of-episode signal) is trained on the batch's ``done``.

Batch keys beyond base.py's, all optional (see docs/goal_policies.md):
``object_boxes`` float (B, N, 4) normalised [0, 1] boxes, ``object_camera`` int64 (B, N) camera
index, ``object_valid`` bool (B, N), ``object_names`` list (B) of lists (N) of str;
``history_images`` uint8 (B, Hh, K, 3, H, W), ``history_qpos`` (B, Hh, S), ``history_action``
(B, Hh, A), ``history_valid`` bool (B, Hh) for ``history_len = Hh + 1 > 1``.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from robokit.errors import ConfigError, UserError
from robokit.policies.base import Policy
from robokit.policies.goal.actions import CartesianCoder, UniformBins, kinematics
from robokit.policies.goal.common import (
    MLP,
    AttentionPool,
    Block,
    PatchEmbed,
    SpatialSoftmax,
    batch_tasks,
    done_loss,
    obs_images,
    obs_qpos,
    uint8_images_to_float,
)
from robokit.policies.goal.row_cache import RowCache
from robokit.policies.goal.tokenizer import make_text_encoder
from robokit.policies.goal.vima_config import VIMAConfig
from robokit.policies.goal.vima_layers import (
    ConvStem,
    ObjectEncoder,
    WordPromptEncoder,
    XAttnLayer,
    batch_objects,
    history_batch,
    interleave_positions,
    interleave_word_positions,
    observation_objects,
)
from robokit.policies.nn.object_pointer import ObjectPointer, pointer_loss
from robokit.policies.nn.task_conditioning import TaskEncoder, per_image
from robokit.policies.registry import register_policy

log = logging.getLogger(__name__)

@register_policy("vima")
class VIMAPolicy(Policy):
    """VIMA-style cross-attention prompt policy with discretised actions."""

    config_class = VIMAConfig
    objects_trained: torch.Tensor  # bool buffer: whether training batches carried object boxes

    def __init__(self, config: VIMAConfig) -> None:
        super().__init__(config)
        self.config: VIMAConfig = config
        c = config
        d = c.n_embd
        k = len(c.camera_names)
        # -- prompt
        words = c.tokenizer == "word"
        if words and not c.vocabulary:
            raise ConfigError("the VIMA word tokenizer needs the vocabulary of the training instructions "
                              "(robokit train fills it from the dataset): give vocabulary=[...] or use "
                              "tokenizer='char'")
        self.text_encoder: nn.Module = (
            WordPromptEncoder(c.vocabulary, d, c.max_words, c.unknown_words)
            if words and c.text_encoder == "char" else make_text_encoder(c.text_encoder, d, c.text_max_length))
        text_len = int(getattr(self.text_encoder, "max_length"))  # noqa: B009 (any of three encoders)
        self.obj_encoder = ObjectEncoder(d, c.obj_crop, c.obj_patch, k, c.dropout)
        self.prompt_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.prompt_pos = nn.Embedding(1 + text_len + c.max_objects, d)
        self.prompt_blocks = nn.ModuleList(Block(d, c.xattn_n_heads, 2.0, c.dropout) for _ in range(c.prompt_layers))
        # -- queries
        # The instruction steers what the camera encoder extracts through FiLM on every stage: the
        # word tokenizer's task vector, or (char) the pooled prompt as the first version did.
        self.task_encoder = TaskEncoder(c.vocabulary, c.task_dim, c.max_words, c.unknown_words) if words else None
        film_dim = (c.task_dim if words else d) if c.film else 0
        self.stem: nn.Module
        if c.stem == "groupnorm":
            self.stem = ConvStem(c.stem_channels, film_dim)
            self.stem_proj: nn.Module | None = nn.Conv2d(self.stem.num_channels, d, 1)
            fmap_channels = self.stem.num_channels
        else:
            self.stem = PatchEmbed(3, d, 8, "conv", film_dim=film_dim)
            self.stem_proj = None
            fmap_channels = self.stem.feature_channels
        self.stem_head = nn.Sequential(nn.GELU(), nn.AdaptiveAvgPool2d(c.obs_grid))
        self.prompt_pool = AttentionPool(d, c.xattn_n_heads) if c.film and not words else None
        self.prompt_norm = nn.LayerNorm(d) if c.film and not words else None
        # Spatial-softmax keypoints per camera: one token each, and read directly by the heads.
        self.spatial_softmax = SpatialSoftmax(fmap_channels, c.keypoints) if c.keypoints else None
        self.kp_embedding = nn.Linear(2 * c.keypoints, d) if c.keypoints else None
        n_kp_tok = k if c.keypoints else 0
        self.pointer = ObjectPointer(fmap_channels, d) if c.object_pointer else None
        n_kp_tok += k if self.pointer is not None else 0
        self.tokens_per_step = k * c.obs_grid[0] * c.obs_grid[1] + n_kp_tok + 2
        ee_in = c.state_dim + (10 if c.use_ee else 0)
        self.ee_encoder = nn.Sequential(nn.Linear(ee_in, d), nn.GELU(), nn.Linear(d, d))
        self.action_encoder = nn.Sequential(nn.Linear(c.action_dim, d), nn.GELU(), nn.Linear(d, d))
        self.action_query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.token_pos = nn.Parameter(torch.randn(1, self.tokens_per_step, d) * 0.02)
        self.step_pos = nn.Parameter(torch.randn(1, c.history_len, 1, d) * 0.02)
        self.layers = nn.ModuleList(XAttnLayer(d, c.n_head, c.xattn_n_heads, c.xattn_ff_expanding, c.dropout)
                                    for _ in range(c.n_layer))
        self.norm = nn.LayerNorm(d)
        # -- actions
        self.bins = self._make_bins()
        self.readout_dim = (d + 2 * c.keypoints * k + (2 * k if self.pointer is not None else 0)
                            + (c.task_dim if words else 0))
        self.action_head = MLP(self.readout_dim, 2 * d, 0.0, out=c.chunk_size * self.bins.total)
        # Per bin, where in the bin the value sits (bin steps); zero-initialised: bin centres at first.
        self.offset_head = (MLP(self.readout_dim, 2 * d, 0.0, out=c.chunk_size * self.bins.total)
                            if c.action_head == "bins+offset" else None)
        if self.offset_head is not None:
            last = cast(nn.Linear, self.offset_head[-1])
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.done_head = nn.Linear(self.readout_dim, c.chunk_size)
        # A continuous head beside the bins (normalised joint actions, L1 as ACT's), for decode="regression".
        self.regression_head = (MLP(self.readout_dim, 2 * d, 0.0, out=c.chunk_size * c.action_dim)
                                if c.regression_weight > 0 else None)
        # Whether training batches carried object boxes: a model trained without object tokens
        # must not see any at inference (they would be inputs it never learnt), so obs["objects"]
        # is ignored then. Saved with the weights.
        self.register_buffer("objects_trained", torch.zeros((), dtype=torch.bool))
        self._coder: CartesianCoder | None = None
        # Training batches repeat the episodes' rows: their kinematics are computed once each.
        self._cartesian_rows = RowCache(self._to_cartesian)
        self._pose_rows = RowCache(self._pose_features)
        self._reference_R: np.ndarray | None = None
        if c.action_space == "cartesian" or c.use_ee:
            kinematics()  # fail at construction, not in the middle of training
        self._history: collections.deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = collections.deque(
            maxlen=max(c.history_len - 1, 0))

    # -- actions ---------------------------------------------------------------------------------
    def _make_bins(self) -> UniformBins:
        c = self.config
        if c.action_space == "cartesian":
            r = c.rot_range
            return UniformBins([*c.workspace_low, -r, -r, -r, 0.0], [*c.workspace_high, r, r, r, 1.0],
                               [*c.bins_xyz, c.bins_rot, c.bins_rot, c.bins_rot, c.bins_gripper])
        # Joint bins span the dataset's action range, known once norm stats are set (rebuilt then).
        lo = self.action_min.cpu().numpy().astype(np.float64)
        hi = self.action_max.cpu().numpy().astype(np.float64)
        hi = np.maximum(hi, lo + 1e-3)
        return UniformBins(lo, hi, [c.bins_joint] * c.action_dim)

    def set_norm_stats(self, stats: dict[str, np.ndarray]) -> None:
        super().set_norm_stats(stats)
        self.bins = self._make_bins()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        # Loading a checkpoint replaces action_min/max: joint bins must follow them.
        if self.config.action_space == "joint":
            self.bins = self._make_bins()

    @property
    def coder(self) -> CartesianCoder:
        if self._coder is None:
            self._coder = CartesianCoder(self.bins, np.asarray(self.config.reference_q))
        return self._coder

    def _to_cartesian(self, actions: np.ndarray) -> np.ndarray:
        return self.coder.to_cartesian(actions)

    def _pose_features(self, q: np.ndarray) -> np.ndarray:
        return self.coder.pose_features(q)

    def action_values(self, actions: np.ndarray, cached: bool = False) -> np.ndarray:
        """Joint-space actions ``(..., A)`` -> the values the bins cover ``(..., D)``: Cartesian TCP
        targets through fk (``cached``: each distinct row computed once), or the actions themselves."""
        if self.config.action_space == "cartesian":
            return self._cartesian_rows(actions) if cached else self.coder.to_cartesian(actions)
        return np.asarray(actions, dtype=np.float64)

    def action_targets(self, actions: np.ndarray) -> np.ndarray:
        """Joint-space actions ``(..., A)`` -> bin indices ``(..., D)`` the heads are trained on."""
        return self.bins.encode(self.action_values(actions))

    def decode_actions(self, logits: torch.Tensor, qpos: np.ndarray,
                       offsets: torch.Tensor | None = None) -> np.ndarray:
        """Logits (H, total) and per-bin offsets -> joint targets (H, A): bins to values, Cartesian
        ones through IK."""
        values = self.bins.decode_logits(logits, self.config.decode, offsets)
        if self.config.action_space == "cartesian":
            return self.coder.to_joints(values, qpos)
        return values.astype(np.float32)

    # -- encoders --------------------------------------------------------------------------------
    def ee_features(self, qpos: np.ndarray, cached: bool = False) -> np.ndarray:
        """Raw qpos ``(..., S)`` -> end-effector encoder input (TCP pose features + normalised qpos);
        ``cached``: the fk of each distinct joint row is computed once (training batches)."""
        q = np.asarray(qpos, dtype=np.float32)
        qn = (q - self.qpos_mean.cpu().numpy()) / self.qpos_std.cpu().numpy()
        if not self.config.use_ee:
            return qn
        arm = q[..., :7]
        pose = (self._pose_rows(arm) if cached else self.coder.pose_features(arm)).astype(np.float32)
        grip = q[..., 7:8] if q.shape[-1] > 7 else np.zeros_like(q[..., :1])
        return np.concatenate([pose, grip, qn], axis=-1)

    def encode_prompt(self, images: torch.Tensor, tasks: list[str], objects: dict[str, Any] | None,
                      need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[int]]]:
        """Prompt tokens (B, P, D), key mask (B, P) and the token layout of sample 0."""
        b = images.shape[0]
        dev = images.device
        text, text_mask = self.text_encoder(tasks, dev)
        L = text.shape[1]
        n_obj = 0 if objects is None else objects["boxes"].shape[1]
        obj_tok = text.new_zeros(b, n_obj, text.shape[-1])
        obj_valid = torch.zeros(b, n_obj, dtype=torch.bool, device=dev)
        text_pos = torch.zeros(b, L, dtype=torch.long, device=dev)
        obj_pos = torch.zeros(b, n_obj, dtype=torch.long, device=dev)
        names: list[list[str]] = [[""] * n_obj for _ in range(b)]
        if objects is not None:
            names = objects["names"]
            obj_valid = objects["valid"]
            sel = obj_valid.nonzero(as_tuple=False)
            if len(sel):
                enc = self.obj_encoder(images, objects["boxes"][sel[:, 0], sel[:, 1]],
                                       objects["camera"][sel[:, 0], sel[:, 1]], sel[:, 0])
                obj_tok = obj_tok.index_put((sel[:, 0], sel[:, 1]), enc.to(obj_tok.dtype))
        for i in range(b):
            n_chars = int(text_mask[i].sum())
            # Interleaving by character or word offsets only means something for the built-in
            # encoders; with a pretrained (subword) encoder the objects follow the text.
            nm = names[i] if n_obj and self.config.text_encoder == "char" else [""] * n_obj
            if isinstance(self.text_encoder, WordPromptEncoder):
                tp, op = interleave_word_positions(tasks[i], n_chars, nm)
            else:
                tp, op = interleave_positions(tasks[i][:n_chars], n_chars, nm)
            # Padding positions continue after the last real token (masked anyway).
            tp = tp + list(range(1 + n_chars + n_obj, 1 + n_chars + n_obj + L - n_chars))
            text_pos[i] = torch.tensor(tp[:L], device=dev)
            if n_obj:
                obj_pos[i] = torch.tensor(op, device=dev)
        tokens = torch.cat([self.prompt_token.expand(b, -1, -1) + self.prompt_pos.weight[0],
                            text + self.prompt_pos(text_pos.clamp_max(self.prompt_pos.num_embeddings - 1)),
                            obj_tok + self.prompt_pos(obj_pos.clamp_max(self.prompt_pos.num_embeddings - 1))],
                           dim=1)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=dev), text_mask, obj_valid], dim=1)
        for block in self.prompt_blocks:
            tokens, _ = block(tokens, mask=mask[:, None, None, :])
        layout: dict[str, list[int]] = {"prompt": [0, 1], "text": [1, 1 + L]}
        for j in range(n_obj):
            if n_obj and bool(obj_valid[0, j]):
                layout[f"object/{names[0][j]}"] = [1 + L + j, 2 + L + j]
        return tokens, mask, layout

    def step_tokens(self, images: torch.Tensor, ee_in: torch.Tensor, action_tok: torch.Tensor,
                    cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's query tokens (B, tokens_per_step, D) and keypoints (B, K*2*keypoints) from
        images (B, K, 3, H, W); ``cond`` (B, D) is the pooled prompt that FiLM-conditions the
        camera encoder."""
        b, k = images.shape[:2]
        cond_k = None if cond is None else per_image(cond, k)
        if self.stem_proj is not None:  # the GroupNorm stem
            fmap = self.stem(images.flatten(0, 1), cond_k)
            feat = self.stem_head(self.stem_proj(fmap))  # (B*K, D, gh, gw)
        else:
            h, w = images.shape[-2] // 8, images.shape[-1] // 8
            tok, fmap = cast(PatchEmbed, self.stem).features(images.flatten(0, 1), cond_k)
            feat = self.stem_head(tok.transpose(1, 2).reshape(b * k, -1, h, w))
        parts = [feat.flatten(2).transpose(1, 2).reshape(b, -1, feat.shape[1])]
        kp = images.new_zeros(b, 0)
        if self.spatial_softmax is not None and self.kp_embedding is not None:  # both or neither
            kp_k = self.spatial_softmax(fmap)  # (B*K, 2*keypoints)
            parts.append(self.kp_embedding(kp_k).view(b, k, -1))
            kp = kp_k.view(b, -1)
        if self.pointer is not None:  # its positions follow the keypoints in the readout
            xy, _, tok = self.pointer(fmap)
            parts.append(tok.view(b, k, -1))
            kp = torch.cat([kp, xy.to(kp.dtype).reshape(b, -1)], dim=1)
        parts += [self.ee_encoder(ee_in)[:, None], action_tok[:, None]]
        return torch.cat(parts, dim=1) + self.token_pos, kp

    def causal_mask(self, steps: int, device: torch.device) -> torch.Tensor:
        """(T, T) bool: a token sees earlier steps, and its own step's observation tokens; only the
        ACTION token of a step sees that step's action (VIMA's obs_t, act_t interleaving)."""
        n = self.tokens_per_step
        step = torch.arange(steps * n, device=device) // n
        is_act = (torch.arange(steps * n, device=device) % n) == n - 1
        same = step[:, None] == step[None, :]
        return (step[None, :] < step[:, None]) | (same & (~is_act[None, :] | is_act[:, None]))

    def forward_queries(self, images: torch.Tensor, ee_in: torch.Tensor, hist: dict[str, torch.Tensor] | None,
                        prompt: torch.Tensor, prompt_mask: torch.Tensor, task: torch.Tensor | None = None,
                        need_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Readout (B, readout_dim): the current step's ACTION token output, keypoints and the task
        vector ``task`` (B, task_dim) of the word tokenizer (the heads read them directly), and the
        cross-attention maps per layer."""
        b = images.shape[0]
        cond = task if self.config.film else None
        if self.prompt_norm is not None and self.prompt_pool is not None:  # both or neither (char + film)
            cond = self.prompt_norm(self.prompt_pool(prompt, prompt_mask))
        cur, kp = self.step_tokens(images, ee_in, self.action_query.expand(b, -1, -1)[:, 0], cond)
        seqs = []
        valid = []
        if hist is not None:
            hh = hist["images"].shape[1]
            for s in range(hh):
                act = self.action_encoder(hist["action"][:, s])
                seqs.append(self.step_tokens(hist["images"][:, s], hist["ee"][:, s], act, cond)[0])
                valid.append(hist["valid"][:, s:s + 1].expand(-1, self.tokens_per_step))
        seqs.append(cur)
        valid.append(torch.ones(b, self.tokens_per_step, dtype=torch.bool, device=images.device))
        n_steps = len(seqs)
        # The current step always sits at the last step position.
        x = torch.cat(seqs, dim=1).view(b, n_steps, self.tokens_per_step, -1)
        x = (x + self.step_pos[:, self.config.history_len - n_steps:]).flatten(1, 2)
        eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        # A token always sees itself, so no attention row is empty (an all-masked row gives NaN).
        mask = (self.causal_mask(n_steps, x.device) & torch.cat(valid, dim=1)[:, None, :]) | eye
        mask = mask[:, None]
        pmask = prompt_mask[:, None, None, :]
        maps = []
        for layer in self.layers:
            x, w = layer(x, mask, prompt, pmask, need_weights=need_weights)
            if w is not None:
                maps.append(w)
        parts = [self.norm(x[:, -1]), kp] + ([task] if task is not None else [])
        return torch.cat(parts, dim=1), maps

    def pointer_xy(self, readout: torch.Tensor) -> torch.Tensor:
        """The pointer's positions (B, K, 2) inside a readout of :meth:`forward_queries`."""
        c = self.config
        k = len(c.camera_names)
        start = c.n_embd + 2 * c.keypoints * k
        return readout[:, start:start + 2 * k].view(-1, k, 2)

    def task_vector(self, tasks: list[str], device: torch.device) -> torch.Tensor | None:
        """The word tokenizer's task vectors (B, task_dim), one per instruction; None for char."""
        return None if self.task_encoder is None else self.task_encoder(tasks, device)

    # -- batch / observation plumbing ------------------------------------------------------------
    def _obs_objects(self, obs: dict[str, Any]) -> dict[str, Any] | None:
        """``obs["objects"]`` (pixel boxes) -> the normalised tensor form used in batches."""
        objs = obs.get("objects")
        if not objs:
            return None
        if not bool(self.objects_trained):
            log.debug("ignoring obs['objects']: this model was trained without object boxes")
            return None
        return observation_objects(obs, self.config.camera_names, self.config.max_objects, self.device)

    def _batch_history(self, batch: dict[str, Any], size: tuple[int, int]) -> dict[str, torch.Tensor] | None:
        return history_batch(batch, self.config.history_len, size, self.device, self.ee_features,
                             self.normalize_action)

    # -- training --------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.config
        size = c.image_hw
        images = torch.as_tensor(batch["images"], device=self.device)
        if images.ndim != 5 or images.shape[1] != len(c.camera_names):
            raise UserError(f"batch images must be (B, {len(c.camera_names)}, 3, H, W), got {tuple(images.shape)}")
        images = uint8_images_to_float(images, size)
        b = images.shape[0]
        tasks = batch_tasks(batch, b)
        if tasks is None:
            raise UserError("the VIMA-style policy needs an instruction ('task') per sample; the dataset has none")
        qpos = np.asarray(torch.as_tensor(batch["qpos"]).cpu(), dtype=np.float32)
        ee_in = torch.from_numpy(self.ee_features(qpos, cached=True)).to(self.device)
        objects = batch_objects(batch, b, self.config.max_objects, self.device)
        if objects is not None and self.training:
            self.objects_trained.fill_(True)
        prompt, pmask, _ = self.encode_prompt(images, tasks, objects)
        task = self.task_vector(tasks, self.device)
        out, _ = self.forward_queries(images, ee_in, self._batch_history(batch, size), prompt, pmask, task)
        logits = self.action_head(out).view(b, c.chunk_size, self.bins.total)
        actions = np.asarray(torch.as_tensor(batch["action"]).cpu(), dtype=np.float32)
        if actions.shape[1:] != (c.chunk_size, c.action_dim):
            raise UserError(f"batch actions are {actions.shape}, the policy predicts "
                            f"({c.chunk_size}, {c.action_dim}) per sample")
        index, offset = self.bins.encode_with_offset(self.action_values(actions, cached=True))
        targets = torch.from_numpy(index).to(self.device)
        true_offset = torch.from_numpy(offset).to(self.device)
        positions = targets + true_offset  # in bin steps
        is_pad = torch.as_tensor(batch["is_pad"], device=self.device).bool()
        ce = self.bins.cross_entropy(logits, targets, ~is_pad, c.label_smoothing, positions, c.bin_sigma)
        done = done_loss(self.done_head(out), batch)
        with torch.no_grad():
            hit = (self.bins.argmax(logits) == targets).all(-1).float()
            acc = (hit * (~is_pad)).sum() / (~is_pad).sum().clamp_min(1)
        terms = {"loss": ce + c.done_weight * done, "ce": ce.detach(), "done_bce": done.detach(),
                 "bin_accuracy": acc}
        predicted = None
        if self.offset_head is not None:
            predicted = self.offset_head(out).view(b, c.chunk_size, self.bins.total)
            l1 = self.bins.offset_loss(predicted, targets, true_offset, ~is_pad)
            terms["loss"] = terms["loss"] + c.offset_weight * l1
            terms["offset_l1"] = l1.detach()
        if self.regression_head is not None:
            predicted_actions = self.regression_head(out).view(b, c.chunk_size, c.action_dim)
            l1 = (predicted_actions - self.normalize_action(torch.from_numpy(actions).to(self.device))).abs().mean(-1)
            l1 = (l1 * ~is_pad).sum() / (~is_pad).sum().clamp_min(1)
            terms["loss"] = terms["loss"] + c.regression_weight * l1
            terms["regression_l1"] = l1.detach()
        if c.expectation_weight > 0:
            expected = self.bins.expectation_loss(logits, predicted, positions, ~is_pad)
            terms["loss"] = terms["loss"] + c.expectation_weight * expected
            terms["expectation_l1"] = expected.detach()
        if self.pointer is not None:
            if batch.get("task_object_xy") is None:
                raise UserError("this VIMA policy learns an object pointer and needs the batch's task_object_xy "
                                "(episodes with object boxes; the trainer adds them)")
            pointing = pointer_loss(self.pointer_xy(out).float(), batch["task_object_xy"].to(self.device),
                                    batch["task_object_valid"].to(self.device))
            terms["loss"] = terms["loss"] + c.pointer_weight * pointing
            terms["pointer_l1"] = pointing.detach()
        return terms

    # -- inference -------------------------------------------------------------------------------
    def reset(self) -> None:
        self._history.clear()

    @torch.no_grad()
    def predict_chunk(self, obs: dict[str, Any],
                      capture_attention: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
        c = self.config
        size = c.image_hw
        frames = obs_images(obs, c.camera_names, size)  # uint8 (K, 3, H, W)
        qpos = obs_qpos(obs, c.state_dim)
        task = obs.get("task") or ""
        if not isinstance(task, str) or not task:
            raise UserError("the VIMA-style policy needs an instruction: give the observation a 'task' string")
        images = uint8_images_to_float(torch.from_numpy(frames).to(self.device)[None], size)
        ee_in = torch.from_numpy(self.ee_features(qpos[None])).to(self.device)
        objects = self._obs_objects(obs)
        prompt, pmask, layout = self.encode_prompt(images, [task], objects)
        hist = None
        if c.history_len > 1 and self._history:
            h_img = np.stack([h[0] for h in self._history])[None]
            hist = {"images": uint8_images_to_float(torch.from_numpy(h_img).to(self.device), size),
                    "ee": torch.from_numpy(self.ee_features(np.stack([h[1] for h in self._history])[None])).to(self.device),
                    "action": self.normalize_action(torch.from_numpy(np.stack([h[2] for h in self._history])[None])
                                                    .to(self.device)),
                    "valid": torch.ones(1, len(self._history), dtype=torch.bool, device=self.device)}
        out, maps = self.forward_queries(images, ee_in, hist, prompt, pmask, self.task_vector([task], self.device),
                                         need_weights=capture_attention)
        logits = self.action_head(out).view(c.chunk_size, self.bins.total)
        offsets = None if self.offset_head is None else self.offset_head(out).view(c.chunk_size, self.bins.total)
        if c.decode == "regression" and self.regression_head is not None:  # the config checks it is there
            chunk = self.denormalize_action(self.regression_head(out).view(c.chunk_size, c.action_dim)).cpu().numpy()
        else:
            chunk = self.decode_actions(logits, qpos, offsets)
        if c.history_len > 1:
            self._history.append((frames, qpos, chunk[0].astype(np.float32)))
        extras: dict[str, Any] = {"done": float(torch.sigmoid(self.done_head(out)[0, 0]))}
        if self.pointer is not None:  # where it thinks the instructed object is, (x, y) image fractions per camera
            extras["pointer"] = self.pointer_xy(out)[0].float().cpu().numpy()
        if capture_attention:
            rows = torch.stack([m[0, :, -1:, :] for m in maps])  # ACTION query -> prompt tokens
            extras["attention"] = {"maps": rows.cpu().numpy().astype(np.float32), "query_kind": "action",
                                   "layout": layout}
        return chunk.astype(np.float32), extras
