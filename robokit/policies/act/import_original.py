"""Convert a checkpoint trained with the original ACT code (``tonyzhaozh/act``) into a robokit one.

The original saves ``ACTPolicy.state_dict()`` with ``torch.save`` (``policy_best.ckpt``: tensors
only, read here with ``weights_only=True``) and its normalisation statistics with ``pickle``
(``dataset_stats.pkl``: numpy arrays), which is read with a restricted unpickler that admits only
numpy arrays, numpy dtypes/scalars and plain containers.

Everything the architecture needs is inferred from tensor shapes (hidden size, chunk size, layer
counts, state/action sizes, backbone, pre-norm) except the number of attention heads (8 in the
original) and the camera names and their order, which the caller gives.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robokit.errors import CheckpointError, ConfigError
from robokit.policies.act.model import ACTConfig, ACTPolicy
from robokit.policies.base import NormStats
from robokit.policies.nn.transformer import sinusoid_table_1d

MAX_STATS_BYTES = 16 * 1024 * 1024

# (module, name) pairs a numpy-array pickle needs, for numpy 1.x and 2.x module paths.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol-2 pickles store bytes as encode(str, "latin1"): harmless
}


class _StatsUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, source: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise CheckpointError(f"{self.source} contains '{module}.{name}', which is not a numpy array or "
                              "plain container; refusing to unpickle it (a stats pickle can run code)")

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self.source} uses pickle persistent ids; not a plain stats file")


def read_act_stats(path: str | Path) -> dict[str, np.ndarray]:
    """The original ACT ``dataset_stats.pkl`` as a dict of numeric numpy arrays (safe to call on any file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"stats file {path} does not exist")
    if path.stat().st_size > MAX_STATS_BYTES:
        raise CheckpointError(f"{path} is {path.stat().st_size} bytes; too large for an ACT stats file")
    try:
        stats = _StatsUnpickler(path.read_bytes(), path).load()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read ACT stats {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(stats, dict):
        raise CheckpointError(f"{path} holds a {type(stats).__name__}, expected a dict of arrays")
    out: dict[str, np.ndarray] = {}
    for key, value in stats.items():
        if isinstance(value, (np.ndarray, np.generic, float, int, list)):
            arr = np.asarray(value)
            if arr.dtype.kind in "biuf":
                out[str(key)] = arr
    # (entries of other kinds, e.g. a note string in some forks, are not statistics: skipped)
    for key in ("qpos_mean", "qpos_std", "action_mean", "action_std"):
        if key not in out:
            raise CheckpointError(f"{path} lacks '{key}'; is it ACT's dataset_stats.pkl?")
    return out


def load_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The original checkpoint's tensors with keys as in the original ``ACTPolicy`` (``model.``...)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ACT checkpoint {path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path} holds objects other than tensors; refusing to unpickle it "
                              f"({str(exc).splitlines()[0]})") from exc
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read ACT checkpoint {path}: truncated or not a torch file ({first})") from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors")
    if sd.get("format") == "robokit.checkpoint":
        raise CheckpointError(f"{path} is already a robokit checkpoint")
    if not any(k.startswith("model.") for k in sd) and any(k.startswith("transformer.") for k in sd):
        sd = {f"model.{k}": v for k, v in sd.items()}  # saved from policy.model instead of policy
    if "model.query_embed.weight" not in sd:
        raise CheckpointError(f"{path} is not an ACT checkpoint (no model.query_embed.weight)")
    if "model.input_proj_env_state.weight" in sd:
        raise CheckpointError(f"{path} is a state-only ACT (no cameras); robokit imports image-based ACT only")
    return sd


def _count(sd: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd if (m := pattern.match(k))})


def infer_act_config(sd: dict[str, torch.Tensor], source: Path | str = "checkpoint") -> dict[str, Any]:
    """ACT architecture values read from tensor shapes (everything but the number of heads)."""
    try:
        hidden, = sd["model.query_embed.weight"].shape[1:]
        body = "model.backbones.0.0.body."
        if f"{body}layer1.0.conv3.weight" in sd:
            backbone = {6: "resnet50"}.get(_count(sd, f"{body}layer3."), "unsupported")
        else:
            backbone = {2: "resnet18", 6: "resnet34"}.get(_count(sd, f"{body}layer3."), "unsupported")
        if backbone == "unsupported":
            raise CheckpointError(f"{source}: unsupported backbone (robokit imports resnet18/34/50)")
        return {
            "backbone": backbone,
            "hidden_dim": int(hidden),
            "chunk_size": int(sd["model.query_embed.weight"].shape[0]),
            "state_dim": int(sd["model.input_proj_robot_state.weight"].shape[1]),
            "action_dim": int(sd["model.action_head.weight"].shape[0]),
            "dim_feedforward": int(sd["model.transformer.encoder.layers.0.linear1.weight"].shape[0]),
            "enc_layers": _count(sd, "model.transformer.encoder.layers."),
            "dec_layers": _count(sd, "model.transformer.decoder.layers."),
            "vae_enc_layers": _count(sd, "model.encoder.layers."),
            "latent_dim": int(sd["model.latent_out_proj.weight"].shape[1]),
            "pre_norm": "model.transformer.encoder.norm.weight" in sd,
        }
    except KeyError as exc:
        raise CheckpointError(f"{source} lacks {exc.args[0]}; is it an ACT (not CNN-MLP) checkpoint?") from exc


def _rename(key: str) -> str | None:
    """Original key -> robokit key (None: drop)."""
    key = key.removeprefix("model.")
    if key == "pos_table":
        return None  # fixed sinusoid table, rebuilt from the config
    if key.startswith("backbones.0.0."):
        return "model.backbone." + key.removeprefix("backbones.0.0.")
    return "model." + key


def convert_state_dict(sd: dict[str, torch.Tensor], policy: ACTPolicy, source: Path | str = "checkpoint",
                       ) -> None:
    """Load an original-layout ACT state dict into ``policy`` (which must have the matching config)."""
    if "model.pos_table" in sd:
        expected = sinusoid_table_1d(2 + policy.config.chunk_size, policy.config.hidden_dim)
        if tuple(sd["model.pos_table"].shape[-2:]) != tuple(expected.shape) or not torch.allclose(
                sd["model.pos_table"].reshape(expected.shape).float(), expected, atol=1e-5):
            raise CheckpointError(f"{source}: its CVAE position table differs from ACT's sinusoid table")
    renamed = {}
    for key, value in sd.items():
        if key.endswith("num_batches_tracked"):
            continue
        new = _rename(key)
        if new is not None:
            renamed[new] = value
    own = policy.state_dict()
    norm_keys = set(NormStats.KEYS)
    missing = [k for k in own if k not in renamed and k not in norm_keys]
    unexpected = [k for k in renamed if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match ACT's layout: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    for key, value in renamed.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, expected "
                                  f"{tuple(own[key].shape)}")
    policy.load_state_dict(renamed, strict=False)


def stats_for_policy(stats: dict[str, np.ndarray], state_dim: int, action_dim: int,
                     source: Path | str = "stats") -> dict[str, np.ndarray]:
    """ACT stats -> robokit NormStats arrays. The original has no min/max: those become -inf/+inf."""
    out: dict[str, np.ndarray] = {}
    for prefix, dim in (("qpos", state_dim), ("action", action_dim)):
        for kind in ("mean", "std", "min", "max"):
            key = f"{prefix}_{kind}"
            if key in stats:
                arr = np.asarray(stats[key], dtype=np.float32).reshape(-1)
            elif kind in ("min", "max"):
                arr = np.full(dim, -np.inf if kind == "min" else np.inf, dtype=np.float32)
            else:
                raise CheckpointError(f"{source} lacks '{key}'")
            if arr.shape != (dim,):
                raise CheckpointError(f"{source}: '{key}' has {arr.size} values, the checkpoint's model "
                                      f"has {prefix} size {dim}")
            out[key] = arr
    if np.any(out["qpos_std"] <= 0) or np.any(out["action_std"] <= 0):
        raise CheckpointError(f"{source}: a standard deviation is not positive")
    return out


def build_imported_policy(ckpt_path: str | Path, stats_path: str | Path, camera_names: list[str],
                          nheads: int = 8, image_shape: tuple[int, int, int] = (480, 640, 3),
                          fps: float = 50.0, expect: dict[str, Any] | None = None,
                          ) -> tuple[ACTPolicy, dict[str, torch.Tensor]]:
    """An :class:`ACTPolicy` equal to the original model, and the original state dict.

    ``expect`` holds values the user stated (e.g. ``{"chunk_size": 100}``); any that disagree with
    the checkpoint's shapes raise a CheckpointError rather than build a wrong model.
    """
    ckpt_path, stats_path = Path(ckpt_path), Path(stats_path)
    if not camera_names:
        raise ConfigError("give the original's camera names in its order, e.g. --camera top")
    sd = load_original_state_dict(ckpt_path)
    arch = infer_act_config(sd, ckpt_path)
    for key, value in (expect or {}).items():
        if value is not None and arch.get(key) != value:
            raise CheckpointError(f"{ckpt_path} has {key} = {arch.get(key)}, not {value} as given")
    stats = stats_for_policy(read_act_stats(stats_path), arch["state_dim"], arch["action_dim"], stats_path)
    try:
        config = ACTConfig(camera_names=list(camera_names), image_shape=image_shape, fps=fps,
                           nheads=nheads, dropout=0.1, done_weight=0.0, **arch)
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt_path}: {exc}") from exc
    policy = ACTPolicy(config)
    convert_state_dict(sd, policy, ckpt_path)
    policy.set_norm_stats(stats)
    policy.eval()
    return policy, sd


def verify_import(policy: ACTPolicy, sd: dict[str, torch.Tensor], image_hw: tuple[int, int] = (96, 128),
                  seed: int = 0) -> float:
    """Max abs difference between ``policy`` and the original-layout model on random inputs.

    Runs the plain restatement of the original network (:mod:`robokit.policies.act.reference`)
    with the original state dict; compares de-normalised action chunks.
    """
    from robokit.policies.act.reference import OriginalACT

    cfg = policy.config
    ref = OriginalACT(cfg.camera_names, cfg.state_dim, cfg.action_dim, cfg.chunk_size, cfg.hidden_dim,
                      cfg.nheads, cfg.dim_feedforward, cfg.enc_layers, cfg.dec_layers, cfg.vae_enc_layers,
                      cfg.latent_dim, cfg.dropout, cfg.pre_norm, cfg.backbone)
    ref.load_state_dict(sd, strict=True)
    ref.to(policy.device).eval()
    gen = torch.Generator().manual_seed(seed)
    k = len(cfg.camera_names)
    images = torch.randint(0, 256, (2, k, 3, *image_hw), generator=gen, dtype=torch.uint8)
    qpos = policy.qpos_mean.cpu() + policy.qpos_std.cpu() * torch.randn(2, cfg.state_dim, generator=gen)
    with torch.no_grad():
        expected = ref(policy.normalize_qpos(qpos.to(policy.device)), images.to(policy.device).float() / 255.0)
        expected = policy.denormalize_action(expected)
    # compare at the reference's resolution: call the batched path directly (no resize)
    got = policy.infer(images, qpos)["action"]
    return float((got - expected).abs().max())
