"""One task vector from an instruction, and the FiLM layers it drives (RT-1, BAKU and MT-ACT style).

Instructions are read as words: lower-cased runs of letters and digits (``"Put the RED cube!"`` ->
``put the red cube``). The vocabulary is the sorted set of words of the training instructions; it is
stored in the policy's config, so the checkpoint carries it and ids mean the same wherever it is
loaded. Id 0 is padding and id 1 stands for a word the training set never had.

A word the policy never saw is an error by default (``unknown_words = "error"``): a typo would
otherwise silently turn into a different task. ``unknown_words = "unk"`` reads it as the unknown
token instead, for trying paraphrases ("place the red block on the dish").

:class:`TaskEncoder` turns the words into one vector per sample: embeddings with positions, one
self-attention layer (so word order counts: "red cube in the blue bowl" is not "blue cube in the red
bowl"), a masked mean and an MLP. Nothing in it looks at other samples of the batch, so a sample's
task vector is the same alone and inside any batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from robokit.errors import ConfigError, UserError

PAD_ID = 0
UNK_ID = 1
UNKNOWN_WORDS = ("error", "unk")
_WORD = re.compile(r"[a-z0-9]+")


def instruction_words(text: str) -> list[str]:
    """The words of an instruction: lower-cased runs of letters and digits, in order."""
    return _WORD.findall(str(text).lower())


def build_vocabulary(instructions: Iterable[str]) -> list[str]:
    """The sorted set of words of ``instructions`` (what a task-conditioned policy stores)."""
    return sorted({word for text in instructions for word in instruction_words(text)})


class WordTokenizer:
    """Instruction -> fixed-length word ids and a validity mask, from a stored vocabulary."""

    def __init__(self, vocabulary: Sequence[str], max_words: int = 16, unknown_words: str = "error") -> None:
        if not vocabulary:
            raise ConfigError("a word tokenizer needs a vocabulary (the words of the training instructions)")
        if unknown_words not in UNKNOWN_WORDS:
            raise ConfigError(f"unknown_words must be one of {', '.join(UNKNOWN_WORDS)}, got {unknown_words!r}")
        self.vocabulary = list(vocabulary)
        self.max_words = int(max_words)
        self.unknown_words = unknown_words
        self._ids = {word: i + 2 for i, word in enumerate(self.vocabulary)}

    @property
    def size(self) -> int:
        """Number of ids, padding and unknown included."""
        return len(self.vocabulary) + 2

    def words(self, text: str) -> list[str]:
        """The words of ``text`` as this tokenizer splits it."""
        return instruction_words(text)

    def ids(self, text: str) -> list[int]:
        """Word ids of one instruction, or a :class:`UserError` naming what is wrong with it."""
        words = instruction_words(text)
        if not words:
            raise UserError(f"instruction {text!r} has no words; give the task in words, e.g. "
                            f"{' '.join(self.vocabulary[:6])!r}")
        if len(words) > self.max_words:
            raise UserError(f"instruction {text!r} has {len(words)} words; this policy reads at most "
                            f"{self.max_words}")
        unknown = [w for w in words if w not in self._ids]
        if unknown and self.unknown_words == "error":
            raise UserError(f"instruction {text!r} has the word {unknown[0]!r} that the policy never saw in "
                            f"training; it knows: {', '.join(self.vocabulary)} (a policy built with "
                            "unknown_words='unk' reads unknown words as one unknown token instead)")
        return [self._ids.get(w, UNK_ID) for w in words]

    def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """int64 ids (B, max_words) padded with 0 and bool mask (B, max_words), True = a word."""
        ids = np.zeros((len(texts), self.max_words), np.int64)
        for row, text in enumerate(texts):
            word_ids = self.ids(text)
            ids[row, : len(word_ids)] = word_ids
        return ids, ids != PAD_ID


class TaskEncoder(nn.Module):
    """Instructions -> task vectors (B, dim), one per sample; see the module docstring."""

    def __init__(self, vocabulary: Sequence[str], dim: int, max_words: int = 16,
                 unknown_words: str = "error", heads: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"task vector size {dim} must be divisible by {heads} heads")
        self.tokenizer = WordTokenizer(vocabulary, max_words, unknown_words)
        self.embed = nn.Embedding(self.tokenizer.size, dim, padding_idx=PAD_ID)
        self.position = nn.Parameter(torch.randn(max_words, dim) * 0.02)
        self.block = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                                batch_first=True, norm_first=True)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def tokenize(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Word ids (B, max_words) and validity mask on ``device``."""
        ids, mask = self.tokenizer.encode_batch(texts)
        return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)

    def encode(self, texts: Sequence[str], device: torch.device,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Word tokens (B, max_words, dim), their validity mask (B, max_words) and the task vectors (B, dim)."""
        ids, mask = self.tokenize(texts, device)
        x = self.embed(ids) + self.position[None]
        # Each sample attends only to its own words: padding is masked out, never attended to.
        x = self.block(x, src_key_padding_mask=~mask)
        weights = mask.to(x.dtype)[..., None]
        pooled = (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return x, mask, self.out(pooled)

    def forward(self, texts: Sequence[str], device: torch.device) -> torch.Tensor:
        return self.encode(texts, device)[2]


class FiLM(nn.Module):
    """Feature-wise linear modulation ``x * (1 + gamma(c)) + beta(c)`` of (N, C, H, W) features.

    Zero-initialised: a model starts out unconditioned and learns how much the task should steer
    its visual features.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=-1)
        return x * (1 + gamma[..., None, None]) + beta[..., None, None]


def per_image(cond: torch.Tensor, images_per_sample: int) -> torch.Tensor:
    """Repeat each sample's task vector for its cameras (images flattened sample-major)."""
    return cond.repeat_interleave(images_per_sample, dim=0) if images_per_sample > 1 else cond
