"""Building blocks of the VIMA-style policy: prompt positions, the word prompt encoder, the
task-conditioned camera stem, the object encoder and the cross-attention decoder layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.ops import roi_align

from robokit.errors import ConfigError, UserError
from robokit.policies.goal.common import MLP, Attention, Block, patchify, uint8_images_to_float
from robokit.policies.nn.task_conditioning import FiLM, WordTokenizer, instruction_words


def _norm_name(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def interleave_positions(text: str, text_len: int, names: Sequence[str]) -> tuple[list[int], list[int]]:
    """Prompt positions (after the PROMPT token at 0) of ``text_len`` text tokens (characters of
    ``text``) and the objects.

    An object named in ``text`` goes right after its (first) mention; the others follow the text.
    """
    lowered = text.lower()
    inserts = []
    for name in names:
        at = lowered.find(_norm_name(name)) if name else -1
        inserts.append(min(at + len(_norm_name(name)), text_len) if at >= 0 else text_len)
    return _positions(text_len, inserts)


def interleave_word_positions(text: str, text_len: int, names: Sequence[str]) -> tuple[list[int], list[int]]:
    """:func:`interleave_positions` for word tokens: ``text_len`` words of ``text``; an object goes
    right after the first run of words that spells its name (``red_cube`` after "red cube")."""
    words = instruction_words(text)[:text_len]
    inserts = []
    for name in names:
        target = instruction_words(name.replace("_", " ")) if name else []
        at = next((i for i in range(len(words) - len(target) + 1)
                   if target and words[i:i + len(target)] == target), -1)
        inserts.append(at + len(target) if at >= 0 else text_len)
    return _positions(text_len, inserts)


def _positions(text_len: int, inserts: Sequence[int]) -> tuple[list[int], list[int]]:
    text_pos = [1 + i + sum(1 for e in inserts if e <= i) for i in range(text_len)]
    obj_pos = []
    for j, e in enumerate(inserts):
        before = sum(1 for e2 in inserts if e2 < e) + sum(1 for e2 in inserts[:j] if e2 == e)
        obj_pos.append(1 + e + before)
    return text_pos, obj_pos


class WordPromptEncoder(nn.Module):
    """Instruction words -> prompt tokens ``(B, max_words, dim)`` and a key mask (True on words),
    over the vocabulary stored in the config (see :class:`WordTokenizer` for unknown words)."""

    def __init__(self, vocabulary: Sequence[str], dim: int, max_words: int, unknown_words: str) -> None:
        super().__init__()
        self.tokenizer = WordTokenizer(vocabulary, max_words, unknown_words)
        self.max_length = self.tokenizer.max_words
        self.embedding = nn.Embedding(self.tokenizer.size, dim, padding_idx=0)

    def forward(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer.encode_batch(texts)
        return self.embedding(torch.from_numpy(ids).to(device)), torch.from_numpy(mask).to(device)


class ConvStem(nn.Module):
    """Camera stem: 3x3 convolutions, each followed by GroupNorm, zero-initialised FiLM from the
    task vector and GELU; stride 2 on every stage but the last, so ``len(channels) - 1`` halvings.

    GroupNorm normalises each image on its own (nothing depends on the rest of the batch), and
    FiLM after every stage lets the task pick what the first stages look for (a colour).
    ``forward(x, cond)`` -> feature map ``(N, channels[-1], h, w)``; ``cond`` None = unconditioned.
    """

    def __init__(self, channels: Sequence[int], film_dim: int) -> None:
        super().__init__()
        convs, norms = [], []
        ch = 3
        for i, out in enumerate(channels):
            convs.append(nn.Conv2d(ch, out, 3, stride=2 if i < len(channels) - 1 else 1, padding=1, bias=False))
            norms.append(nn.GroupNorm(min(8, out), out))
            ch = out
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.films = nn.ModuleList(FiLM(film_dim, c) for c in channels) if film_dim else None
        self.num_channels = ch
        self.stride = 2 ** (len(channels) - 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x))
            if self.films is not None and cond is not None:
                x = self.films[i](x, cond)
            x = nn.functional.gelu(x)
        return x


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


def batch_objects(batch: dict[str, Any], b: int, max_objects: int, device: torch.device) -> dict[str, Any] | None:
    """A training batch's object slots (``object_boxes`` etc.) as the policy's tensors, at most
    ``max_objects``; None when the batch has no boxes."""
    if batch.get("object_boxes") is None:
        return None
    boxes = torch.as_tensor(batch["object_boxes"], device=device).float()
    if boxes.ndim != 3 or boxes.shape[0] != b or boxes.shape[2] != 4:
        raise UserError(f"batch 'object_boxes' must be (B, N, 4) normalised boxes, got {tuple(boxes.shape)}")
    n = boxes.shape[1]
    cams = torch.as_tensor(batch.get("object_camera", torch.zeros(b, n, dtype=torch.long)),
                           device=device).long()
    valid = torch.as_tensor(batch.get("object_valid", torch.ones(b, n, dtype=torch.bool)),
                            device=device).bool()
    names = batch.get("object_names") or [[""] * n for _ in range(b)]
    if n > max_objects:
        boxes, cams, valid = boxes[:, :max_objects], cams[:, :max_objects], valid[:, :max_objects]
        names = [list(nm)[:max_objects] for nm in names]
    return {"boxes": boxes.clamp(0.0, 1.0), "camera": cams, "valid": valid, "names": [list(nm) for nm in names]}


def observation_objects(obs: dict[str, Any], camera_names: Sequence[str], max_objects: int,
                        device: torch.device) -> dict[str, Any]:
    """``obs["objects"]`` (pixel boxes, floats kept as given) -> the normalised batch form of one
    sample: ``boxes`` (1, N, 4) in [0, 1] of each object's camera image, ``camera`` (1, N),
    ``valid`` (1, N), ``names`` [[str]]; a malformed entry is a :class:`UserError` naming it."""
    boxes, cams, names = [], [], []
    for i, o in enumerate(obs["objects"][:max_objects]):
        if not isinstance(o, dict) or "box" not in o:
            raise UserError(f"observation object {i} must be a dict with 'name', 'box' and 'camera'")
        cam = o.get("camera", camera_names[0])
        if cam not in camera_names:
            raise UserError(f"object '{o.get('name', i)}' refers to camera '{cam}', which the policy does "
                            f"not use ({', '.join(camera_names)})")
        h, w = np.asarray(obs["images"][cam]).shape[:2]
        box = np.asarray(o["box"], dtype=np.float32).reshape(-1)
        if box.shape != (4,):
            raise UserError(f"box of object '{o.get('name', i)}' must be [x0, y0, x1, y1], got {o['box']}")
        boxes.append(box / np.array([w, h, w, h], np.float32))
        cams.append(list(camera_names).index(cam))
        names.append(str(o.get("name", "")))
    return {"boxes": torch.from_numpy(np.clip(np.stack(boxes), 0, 1))[None].to(device),
            "camera": torch.tensor([cams], device=device),
            "valid": torch.ones(1, len(boxes), dtype=torch.bool, device=device), "names": [names]}


def history_batch(batch: dict[str, Any], history_len: int, size: tuple[int, int], device: torch.device,
                  ee_features: Callable[[np.ndarray], np.ndarray],
                  normalize_action: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The training batch's history steps as the query encoder takes them (None for ``history_len``
    1): images (B, Hh, K, 3, H, W) float, ``ee`` encoder inputs, normalised actions, validity."""
    hh = history_len - 1
    if hh == 0:
        return None
    missing = [k for k in ("history_images", "history_qpos", "history_action") if batch.get(k) is None]
    if missing:
        raise ConfigError(f"history_len={history_len} needs {', '.join(missing)} in the training "
                          f"batch, which this dataset does not provide; use history_len=1")
    images = uint8_images_to_float(torch.as_tensor(batch["history_images"], device=device), size)
    if images.shape[1] != hh:
        raise ConfigError(f"'history_images' holds {images.shape[1]} steps, history_len {history_len} needs {hh}")
    qpos = np.asarray(batch["history_qpos"], dtype=np.float32)
    action = torch.as_tensor(batch["history_action"], device=device).float()
    valid = batch.get("history_valid")
    valid = (torch.ones(images.shape[:2], dtype=torch.bool) if valid is None else torch.as_tensor(valid))
    return {"images": images, "ee": torch.from_numpy(ee_features(qpos)).to(device),
            "action": normalize_action(action), "valid": valid.to(device).bool()}
