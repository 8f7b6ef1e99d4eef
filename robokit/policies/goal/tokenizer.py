"""Text for goal-conditioned policies: a fixed character tokenizer and an optional local encoder.

No pretrained text model can be downloaded here, so GRP and the VIMA-style policy read their
instruction through :class:`CharTokenizer`: one token per character over a FIXED vocabulary
(printable ASCII), so a checkpoint's token ids mean the same thing on every machine and no
vocabulary file travels with it. Characters outside the vocabulary are a :class:`UserError` that
names the character and its position (silently dropping them would change the instruction).

A lab that has a pretrained encoder on disk (e.g. a T5 directory) can plug it in with
:class:`LocalTextEncoder`; it loads ONLY from a local directory through ``transformers`` (never
downloads) and raises a clear error when ``transformers`` is not installed or the directory is not
there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robokit.errors import ConfigError, UserError

log = logging.getLogger(__name__)

#: Token id 0 pads; ids 1.. are the printable ASCII characters ' ' (32) .. '~' (126) in order.
PAD_ID = 0
_FIRST, _LAST = 32, 126
VOCAB = "".join(chr(c) for c in range(_FIRST, _LAST + 1))


class CharTokenizer:
    """Character-level tokenizer over printable ASCII with truncation and a padding mask.

    ``encode("pick the cube")`` gives ``(ids int64 (max_length,), mask bool (max_length,))`` where
    ``mask`` is True on real characters and False on padding. Instructions longer than
    ``max_length`` are truncated (the end is dropped; a debug log line says so).
    """

    vocab_size: int = len(VOCAB) + 1  # + PAD

    def __init__(self, max_length: int = 64, lowercase: bool = False) -> None:
        if int(max_length) <= 0:
            raise ConfigError(f"tokenizer max_length must be positive, got {max_length}")
        self.max_length = int(max_length)
        self.lowercase = bool(lowercase)

    def ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without truncation or padding."""
        if not isinstance(text, str):
            raise UserError(f"instruction must be a string, got {type(text).__name__}")
        if self.lowercase:
            text = text.lower()
        out = []
        for pos, ch in enumerate(text):
            code = ord(ch)
            if not _FIRST <= code <= _LAST:
                raise UserError(
                    f"instruction {text!r} has character {ch!r} (U+{code:04X}) at position {pos} "
                    f"that the tokenizer does not know; use printable ASCII only (letters, digits, "
                    f"spaces and punctuation)")
            out.append(code - _FIRST + 1)
        return out

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int64 (max_length,), mask bool (max_length,))``; mask is True on characters."""
        ids = self.ids(text)
        if len(ids) > self.max_length:
            log.debug("instruction of %d characters truncated to %d", len(ids), self.max_length)
            ids = ids[: self.max_length]
        out = np.full(self.max_length, PAD_ID, dtype=np.int64)
        out[: len(ids)] = ids
        mask = np.zeros(self.max_length, dtype=bool)
        mask[: len(ids)] = True
        return out, mask

    def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int64 (B, max_length), mask bool (B, max_length))``."""
        pairs = [self.encode(t) for t in texts]
        if not pairs:
            return (np.zeros((0, self.max_length), np.int64), np.zeros((0, self.max_length), bool))
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Inverse of :meth:`ids` (padding ids are skipped)."""
        chars = []
        for i in np.asarray(ids).tolist():
            if i == PAD_ID:
                continue
            if not 1 <= i < self.vocab_size:
                raise UserError(f"token id {i} is outside the tokenizer's vocabulary (0..{self.vocab_size - 1})")
            chars.append(chr(i - 1 + _FIRST))
        return "".join(chars)


class CharTextEncoder(nn.Module):
    """Trainable character embedding: instruction strings -> ``(B, L, dim)`` tokens + key mask."""

    def __init__(self, dim: int, max_length: int, lowercase: bool = False) -> None:
        super().__init__()
        self.tokenizer = CharTokenizer(max_length, lowercase=lowercase)
        self.max_length = self.tokenizer.max_length
        self.embedding = nn.Embedding(CharTokenizer.vocab_size, dim, padding_idx=PAD_ID)

    def tokenize(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer.encode_batch(texts)
        return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)

    def forward(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens float (B, max_length, dim), mask bool (B, max_length) True on characters)``."""
        ids, mask = self.tokenize(texts, device)
        return self.embedding(ids), mask


class LocalTextEncoder(nn.Module):
    """A frozen pretrained encoder (e.g. T5) loaded from a LOCAL directory, projected to ``dim``.

    Only the projection is trained (and saved in checkpoints); the encoder weights stay in their
    directory, which must exist wherever the checkpoint is loaded. Nothing is ever downloaded.
    """

    def __init__(self, directory: str, dim: int, max_length: int) -> None:
        super().__init__()
        path = Path(directory).expanduser()
        if not path.is_dir():
            raise ConfigError(f"text encoder directory {str(path)!r} does not exist; give a local "
                              f"directory holding a pretrained encoder, or use text_encoder='char'")
        try:
            import transformers  # noqa: F401  (optional dependency)
        except ImportError as exc:
            raise ConfigError(f"text encoder {str(path)!r} needs the 'transformers' package, which is "
                              f"not installed; install it (pip install transformers) or use "
                              f"text_encoder='char'") from exc
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        try:
            self._hf_tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            hf_config = AutoConfig.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # transformers raises many types; report them as one
            raise ConfigError(f"cannot load a text encoder from {str(path)!r}: {exc}") from exc
        # Encoder-decoder models (T5): keep only the encoder.
        encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
        for p in encoder.parameters():
            p.requires_grad_(False)
        # Held outside the module tree so its weights are not written into robokit checkpoints.
        self.__dict__["_encoder"] = encoder.eval()
        hidden = int(getattr(hf_config, "d_model", 0) or getattr(hf_config, "hidden_size", 0))
        if hidden <= 0:
            raise ConfigError(f"cannot tell the hidden size of the text encoder in {str(path)!r}")
        self.max_length = int(max_length)
        self.proj = nn.Linear(hidden, dim)

    def forward(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self._hf_tokenizer(list(texts), padding="max_length", truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
        encoder = self.__dict__["_encoder"].to(device)
        with torch.no_grad():
            hidden = encoder(input_ids=enc["input_ids"].to(device),
                             attention_mask=enc["attention_mask"].to(device)).last_hidden_state
        return self.proj(hidden.float()), enc["attention_mask"].to(device).bool()


def make_text_encoder(kind: str, dim: int, max_length: int) -> nn.Module:
    """``"char"`` -> :class:`CharTextEncoder`; any other value is a local encoder directory."""
    if kind in ("char", "", None):
        return CharTextEncoder(dim, max_length)
    return LocalTextEncoder(kind, dim, max_length)


def check_instruction(text: str) -> None:
    """Raise the tokenizer's :class:`UserError` if ``text`` has characters it cannot encode."""
    CharTokenizer(1).ids(text)
