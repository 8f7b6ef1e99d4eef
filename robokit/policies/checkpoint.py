"""Single-file policy checkpoints.

One ``.pt`` file holding only tensors and plain containers, so ``torch.load(weights_only=True)``
reads it and nothing in it can run code::

    {"format": "robokit.checkpoint", "version": 1, "policy_type": "act", "config": {...},
     "norm_stats": {"qpos_mean": tensor, ...}, "state_dict": {...}, "train_meta": {...}}

Writes are atomic (temporary file + rename), so a crash mid-save never leaves a truncated
``best.pt``. Every problem on reading raises :class:`~robokit.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robokit.errors import CheckpointError, ConfigError
from robokit.policies.base import Policy
from robokit.policies.registry import get_policy_class

FORMAT = "robokit.checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "policy_type", "config", "norm_stats", "state_dict", "train_meta")


def plain(value: Any, where: str = "train_meta") -> Any:
    """``value`` as plain containers (dict/list/str/int/float/bool/None) for a weights-only file."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v, f"{where}[]") for v in value]
    raise ConfigError(f"{where} holds a {type(value).__name__}, which a checkpoint cannot store "
                      "(use str, numbers, lists or dicts)")


def save_checkpoint(path: str | Path, policy: Policy, train_meta: dict[str, Any] | None = None) -> None:
    """Write ``policy`` (config, statistics, weights) and ``train_meta`` to ``path`` atomically."""
    path = Path(path)
    if not policy.name:
        raise ConfigError(f"{type(policy).__name__} is not a registered policy; cannot checkpoint it")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "policy_type": policy.name,
        "config": plain(policy.config.to_dict(), "config"),
        "norm_stats": {k: torch.as_tensor(v).float().clone() for k, v in policy.norm_stats().items()},
        "state_dict": {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()},
        "train_meta": plain(dict(train_meta or {})),
    }
    atomic_torch_save(payload, path)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file, flushed to disk, then renamed: a reader (or a crash)
    sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load and validate the payload; every failure is a CheckpointError naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    # torch.save always writes a zip archive; a file that is not one (truncated, or another kind of
    # file) would otherwise fail deep inside torch.load with an unrelated error.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or is not a "
                              "checkpoint (not a torch zip archive)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers; robokit refuses to "
            f"unpickle them (it could run code). {str(exc).splitlines()[0]}") from exc
    except Exception as exc:  # damaged archives fail in many ways: one clear message
        first = str(exc).split(". ")[0].splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or is not a "
                              f"checkpoint ({first})") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a robokit checkpoint (it holds a {type(payload).__name__})")
    if payload.get("format") != FORMAT:
        if any(isinstance(k, str) and k.startswith(("model.transformer.", "transformer.")) for k in payload):
            raise CheckpointError(f"{path} looks like an original ACT checkpoint; convert it first with "
                                  "`robokit import-act CKPT dataset_stats.pkl --camera NAME --out act.pt`")
        raise CheckpointError(f"{path} is not a robokit checkpoint (no format '{FORMAT}' marker)")
    version = payload.get("version")
    if not isinstance(version, int):
        raise CheckpointError(f"{path} has no valid format version")
    if version > VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}, newer than this robokit "
                              f"reads ({VERSION}); upgrade robokit to load it")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; the file is incomplete")
    if not isinstance(payload["config"], dict) or not isinstance(payload["state_dict"], dict):
        raise CheckpointError(f"{path} has a malformed config or state_dict")
    return payload


def read_payload(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The validated contents of a checkpoint file (for models that are not policies: a segmenter)."""
    return _read(path, map_location=map_location)


def read_checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Policy type, config, train_meta (and format version, parameter count) without building the model."""
    payload = _read(path, mmap=True)
    num_params = sum(int(t.numel()) for t in payload["state_dict"].values() if isinstance(t, torch.Tensor))
    return {"policy_type": payload["policy_type"], "config": payload["config"],
            "train_meta": payload["train_meta"], "format": payload["format"],
            "version": payload["version"], "num_tensor_values": num_params,
            "norm_stats": {k: v.numpy().copy() for k, v in payload["norm_stats"].items()
                           if isinstance(v, torch.Tensor)}}


def load_checkpoint(path: str | Path, map_location: Any = "cpu", expected_type: str | None = None,
                    ) -> tuple[Policy, dict[str, Any]]:
    """Build the policy stored in ``path`` (in eval mode, on ``map_location``) and return it with train_meta.

    ``expected_type`` (e.g. ``"act"``) rejects a checkpoint of another policy type.
    """
    payload = _read(path, map_location="cpu")
    policy_type = payload["policy_type"]
    if policy_type == "segmenter":
        raise CheckpointError(f"{path} is a segmentation model (robokit seg), not a policy; give it to the VLA "
                              f"policy with --set segmenter={path}")
    if expected_type is not None and policy_type != expected_type:
        raise CheckpointError(f"{path} holds a '{policy_type}' policy, not the expected '{expected_type}'")
    try:
        cls = get_policy_class(policy_type)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    values = dict(payload["config"])
    # The weights are in the state dict: never go looking for the pretrained file used at training
    # (build without it, then put the recorded value back so the config round-trips unchanged).
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    pretrained = values.get("pretrained_backbone") if "pretrained_backbone" in fields else None
    if pretrained is not None:
        values["pretrained_backbone"] = None
    try:
        config = cls.config_class.from_dict(values)
        policy = cls(config)
    except ConfigError as exc:
        raise CheckpointError(f"{path} has an invalid {policy_type} config: {exc}") from exc
    if pretrained is not None:
        # Only some config classes have this field (checked above), so not a typed attribute access.
        setattr(policy.config, "pretrained_backbone", pretrained)  # noqa: B010
    try:
        result = policy.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as exc:  # tensor shape mismatches
        raise CheckpointError(f"{path} does not match the {policy_type} model built from its config: "
                              f"{str(exc).splitlines()[-1].strip()}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not match the {policy_type} model built from its config: "
            f"missing {_few(result.missing_keys)}, unexpected {_few(result.unexpected_keys)}")
    policy.to(map_location)
    policy.eval()
    return policy, payload["train_meta"]


def _few(keys: list[str], n: int = 5) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
