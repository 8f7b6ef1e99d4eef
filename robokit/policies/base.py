"""The policy interface: the :class:`Policy` base class, its config base and the data a policy needs.

Every policy is a ``torch.nn.Module`` with a config dataclass and normalisation statistics held as
buffers, so one ``state_dict`` carries everything needed to run it. A config declares what the
policy reads from the data (:meth:`PolicyConfig.data_needs`): the trainer builds its dataset from
that declaration, the server announces it in ``hello`` and the evaluation feeds observations by it.
``--policy NAME`` everywhere resolves through :func:`robokit.policies.registry.get_policy_class`.

Observation dict given to :meth:`Policy.predict_chunk` (one step, no batch dimension)::

    {"qpos": float32 (state_dim,),                 # measured joints + gripper, NOT normalised
     "images": {cam: uint8 (H, W, 3) RGB, ...},    # every camera in config.camera_names
     "task": str (optional),                       # instruction text for goal-conditioned policies
     "goal_image": uint8 (H, W, 3) (optional)}

Training batch given to :meth:`Policy.compute_loss` (built by ``robokit.training.dataset``)::

    {"images": uint8 (B, K, 3, H, W),   # K cameras in config.camera_names order
     "qpos": float32 (B, S),            # NOT normalised: the policy normalises with its buffers
     "action": float32 (B, H, A),       # chunk starting at t, NOT normalised, zero-padded
     "is_pad": bool (B, H),             # True past the end of the episode
     "done": float32 (B, H),            # optional: /done of the chunk's steps (1 on end frames)
     "task": list[str] (optional), "goal_image": uint8 (B, 3, H, W) (optional)}
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from robokit.errors import ConfigError


@dataclass(frozen=True)
class DataNeeds:
    """What a policy reads from a sample or an observation besides the current frames and qpos.

    One declaration serves the trainer (which dataset fields to build), the policy server (what it
    announces in ``hello``) and the evaluation (what each observation carries).
    """

    camera_names: tuple[str, ...]
    history: int = 0  # steps before t the policy looks back over (images, qpos, actions)
    object_boxes: bool = False  # per-step boxes of the scene's objects
    goal_camera: str | None = None  # camera its goal images show; None = it takes no goal image
    instruction: bool = False  # it reads the instruction text (``task``)
    # Training only: it learns where the object each episode moves is in every camera (a target
    # built from the episodes' object boxes, never an input at deploy).
    task_object: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "camera_names", tuple(self.camera_names))
        if self.history < 0:
            raise ConfigError(f"history must be >= 0 steps, got {self.history}")
        if self.goal_camera is not None and self.goal_camera not in self.camera_names:
            raise ConfigError(f"goal camera '{self.goal_camera}' is not one of the cameras "
                              f"{', '.join(self.camera_names)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-container form (what the policy server's ``hello`` reply carries as ``needs``)."""
        return {"camera_names": list(self.camera_names), "history": int(self.history),
                "object_boxes": bool(self.object_boxes), "goal_camera": self.goal_camera,
                "instruction": bool(self.instruction)}


@dataclass(frozen=True)
class RunSetup:
    """What a training run knows before it builds the policy's config: where the data is, where the
    run writes, the cameras and image size the policy will see. A policy that needs a model of its own
    trained first (the VLA's segmenter) reads it in :meth:`PolicyConfig.options_for_run`."""

    data: Path
    out: Path
    camera_names: tuple[str, ...]
    image_hw: tuple[int, int]
    seed: int = 0
    device: str = "cpu"
    processes: int = 1  # data-parallel processes of the run
    #: ``(stage, step, total, loss)`` after each step of a stage run before the policy's training
    progress: Callable[[str, int, int, float], None] | None = None


@dataclass
class PolicyConfig:
    """Fields every policy has. Subclasses add their own and validate in ``__post_init__``."""

    camera_names: list[str] = field(default_factory=lambda: ["top"])
    image_shape: tuple[int, int, int] = (240, 320, 3)  # (H, W, 3) the model expects
    state_dim: int = 8
    action_dim: int = 8
    chunk_size: int = 100
    fps: float = 30.0  # control rate of the training episodes; deploy's default loop rate

    def __post_init__(self) -> None:
        shape = tuple(int(v) for v in self.image_shape)  # lists and numpy ints from configs
        self.camera_names = list(self.camera_names)
        if len(shape) != 3 or shape[2] != 3:
            raise ConfigError(f"image_shape must be (H, W, 3), got {shape}")
        self.image_shape = (shape[0], shape[1], shape[2])
        for name in ("state_dim", "action_dim", "chunk_size"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.fps <= 0:
            raise ConfigError(f"fps must be positive, got {self.fps}")

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the images the model expects."""
        return self.image_shape[0], self.image_shape[1]

    def data_needs(self) -> DataNeeds:
        """What this policy reads from the data; the default is the cameras alone. Policies that
        look back, take a goal image, an instruction or object boxes override this."""
        return DataNeeds(camera_names=tuple(self.camera_names))

    @classmethod
    def options_for_tasks(cls, values: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
        """The config options ``values`` completed for a dataset of these instructions.

        The trainer calls it before building the config; a policy that reads instructions fills in
        what it learns from them (its vocabulary). The default changes nothing."""
        return values

    @classmethod
    def options_for_run(cls, values: dict[str, Any], run: RunSetup) -> dict[str, Any]:
        """The config options ``values`` completed before a training run builds its dataset.

        A policy that needs something made from the data first (a model it reads from) makes it here,
        under ``run.out``, and returns the options that point at it. The default changes nothing."""
        return values

    def to_dict(self) -> dict[str, Any]:
        """Plain-container form stored in checkpoints (no custom classes: weights_only loading)."""
        out = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PolicyConfig:
        """Build from a dict, rejecting unknown keys with a clear message."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}")
        return cls(**values)


class NormStats:
    """Names of the normalisation-statistics arrays every dataset computes (see robokit.training.episode_records)."""

    KEYS = ("qpos_mean", "qpos_std", "qpos_min", "qpos_max",
            "action_mean", "action_std", "action_min", "action_max")


class Policy(nn.Module, abc.ABC):
    """Base of every policy. Subclasses set ``name`` and ``config_class`` and register themselves."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig
    # Normalisation statistics, registered as buffers in __init__.
    qpos_mean: torch.Tensor
    qpos_std: torch.Tensor
    qpos_min: torch.Tensor
    qpos_max: torch.Tensor
    action_mean: torch.Tensor
    action_std: torch.Tensor
    action_min: torch.Tensor
    action_max: torch.Tensor

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        s, a = config.state_dim, config.action_dim
        # Identity statistics until set_norm_stats() is called with the dataset's.
        for key, dim in (("qpos", s), ("action", a)):
            self.register_buffer(f"{key}_mean", torch.zeros(dim))
            self.register_buffer(f"{key}_std", torch.ones(dim))
            self.register_buffer(f"{key}_min", -torch.ones(dim))
            self.register_buffer(f"{key}_max", torch.ones(dim))

    # -- normalisation -------------------------------------------------------------------------
    def set_norm_stats(self, stats: dict[str, np.ndarray]) -> None:
        """Copy dataset statistics (keys of :class:`NormStats`) into the buffers."""
        for key in NormStats.KEYS:
            if key not in stats:
                raise ConfigError(f"normalisation statistics lack '{key}'")
            buf: torch.Tensor = getattr(self, key)
            value = torch.as_tensor(np.asarray(stats[key]), dtype=buf.dtype)
            if value.shape != buf.shape:
                raise ConfigError(f"normalisation statistic '{key}' has shape {tuple(value.shape)}, "
                                  f"the policy expects {tuple(buf.shape)}")
            buf.copy_(value)

    def norm_stats(self) -> dict[str, np.ndarray]:
        return {key: getattr(self, key).detach().cpu().numpy() for key in NormStats.KEYS}

    def normalize_qpos(self, qpos: torch.Tensor) -> torch.Tensor:
        return (qpos - self.qpos_mean) / self.qpos_std

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self.action_mean) / self.action_std

    def denormalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return action * self.action_std + self.action_mean

    @property
    def device(self) -> torch.device:
        return self.qpos_mean.device

    # -- the interface -------------------------------------------------------------------------
    @abc.abstractmethod
    def compute_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Loss terms for a training batch; must include ``"loss"`` (the one to backpropagate)."""

    @abc.abstractmethod
    def predict_chunk(self, obs: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """Action chunk (chunk_size, action_dim) float32, de-normalised, for one observation.

        ``extras`` may hold ``"done"`` (probability the task is finished) and model-specific data.
        """

    def reset(self) -> None:
        """Clear per-episode state (observation/action history). Stateless policies do nothing."""

    def optimizer_param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Parameter groups for AdamW; override for per-part learning rates (ACT's backbone lr)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]
