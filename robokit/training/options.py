"""The options of one training run and what the trainer reports back: progress and result."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robokit.errors import ConfigError
from robokit.training.dataset import DEFAULT_CACHE_BYTES

DEFAULT_STEPS = 5000
# Options that define the data a run trains on: a resumed run keeps the original run's values.
DATA_OPTIONS = ("camera_names", "chunk_size", "image_size", "val_fraction", "seed", "goal_images", "rollouts",
                "act_real_shift", "policy", "policy_config")
# Config fields the trainer fills from the dataset (or from dedicated options), never overrides.
DATASET_FIELDS = ("camera_names", "state_dim", "action_dim", "image_shape")


LR_SCHEDULES = ("constant", "cosine")
LOGGERS = ("tensorboard", "wandb")  # experiment loggers next to metrics.jsonl (robokit.training.loggers)
# Validation samples per evaluation are at most this share of the training samples drawn since the
# last one: a forward pass without gradients costs about a third of a training step, so validation
# stays under ~15% of the run whatever --val-every, --val-samples and --batch-size say.
VAL_SHARE = 0.5


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` of ``total``: 1 for
    ``constant``; for ``cosine`` half a cosine from 1 at step 0 to 0 after the last step."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    return 1.0


@dataclass
class TrainOptions:
    """Everything one training run needs. ``robokit train`` builds this from flags and a TOML file."""

    data: str | Path
    out: str | Path
    policy: str = "act"
    steps: int | None = None  # optimizer steps in total (default DEFAULT_STEPS unless epochs)
    epochs: float | None = None  # passes over the training start steps (alternative to steps)
    batch_size: int = 8  # per process
    lr: float | None = None  # default: the policy config's `lr`, else 1e-4
    lr_schedule: str = "constant"  # constant (as the original ACT) | cosine (to 0 at the last step)
    weight_decay: float | None = None  # default: the policy config's `weight_decay`, else 1e-4
    grad_clip: float | None = None  # max gradient norm (ACT does not clip)
    camera_names: list[str] | None = None  # default: every camera of the first episode
    chunk_size: int | None = None  # default: the policy config's
    image_size: tuple[int, int] | None = None  # (H, W) to resize to at load time; default: native
    fps: float | None = None  # override the episodes' rate (ACT files do not record it)
    policy_config: dict[str, Any] = field(default_factory=dict)  # policy config overrides
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    seed: int = 0
    val_fraction: float = 0.2
    val_every: int | None = None  # steps; default: a tenth of the run (at most 1000)
    val_samples: int = 512  # at most this many validation start steps per evaluation (evenly spread)
    val_batch_size: int | None = None  # default: twice batch_size (no gradients to keep)
    log_every: int = 10
    num_workers: int | None = None  # default: 0 when the images are cached in RAM, else a few
    cache_gb: float = DEFAULT_CACHE_BYTES / 1024**3
    augment_shift: int = 0
    augment_color: float = 0.0
    goal_images: bool | None = None
    act_real_shift: bool = True
    #: Deploy rollout folders with takeover, trained on next to ``data`` (HG-DAgger): their
    #: intervention steps drawn ``intervention_weight`` times as often, the policy's own steps of
    #: failed rollouts left out unless ``keep_failed_policy_steps``.
    rollouts: list[str] = field(default_factory=list)
    intervention_weight: float = 1.0
    keep_failed_policy_steps: bool = False
    amp: bool = False  # bf16 autocast, CUDA only
    resume: bool = False
    #: A checkpoint whose weights the run starts from (fine-tuning): a fresh optimizer and schedule,
    #: the normalisation statistics of this run's data.
    init_from: str | None = None
    log: list[str] = field(default_factory=list)  # tensorboard | wandb (a "a,b" string is split)
    wandb_project: str | None = None  # a named project logs online unless WANDB_MODE says otherwise
    #: Simulation episodes per evaluation during training (0: none), every ``eval_every`` steps
    #: (default: as validation) and at the end, on seeds ``eval_seed``, ``eval_seed + 1``, ...
    eval_sim: int = 0
    eval_every: int | None = None
    eval_seed: int = 1000

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give --steps or --epochs, not both")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
        for name in ("steps", "epochs", "batch_size", "val_every", "log_every", "val_samples", "val_batch_size",
                     "chunk_size", "lr", "fps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {value}")
        for name in ("weight_decay", "grad_clip", "cache_gb", "augment_color", "augment_shift"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 0, got {value}")
        self.log = _log_targets(self.log)
        if self.init_from is not None:
            self.init_from = str(self.init_from)
            if not self.resume and not Path(self.init_from).is_file():  # a resumed run has its weights
                raise ConfigError(f"--init-from {self.init_from}: no such checkpoint file")
        if self.eval_sim < 0 or self.eval_seed < 0:
            raise ConfigError(f"eval-sim and eval-seed must be >= 0, got {self.eval_sim} and {self.eval_seed}")
        if self.eval_every is not None and self.eval_every <= 0:
            raise ConfigError(f"eval-every must be positive, got {self.eval_every}")
        if self.eval_every is not None and not self.eval_sim:
            raise ConfigError("--eval-every needs --eval-sim N (the simulation episodes per evaluation)")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num-workers must be >= 0, got {self.num_workers}")
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
            if min(self.image_size) <= 0:
                raise ConfigError(f"image size must be positive, got {self.image_size}")
        if self.camera_names is not None:
            self.camera_names = list(self.camera_names)
            if len(set(self.camera_names)) != len(self.camera_names):
                raise ConfigError(f"camera chosen twice: {self.camera_names}")
        if self.val_batch_size is None:
            self.val_batch_size = 2 * self.batch_size
        self.policy_config = dict(self.policy_config)
        # Dataset-defined fields have their own options.
        if "chunk_size" in self.policy_config:
            chunk = int(self.policy_config.pop("chunk_size"))
            if self.chunk_size is not None and self.chunk_size != chunk:
                raise ConfigError(f"chunk size given twice ({self.chunk_size} and {chunk})")
            self.chunk_size = chunk
        if "fps" in self.policy_config:
            self.fps = float(self.policy_config.pop("fps"))
        if "image_shape" in self.policy_config:
            shape = self.policy_config.pop("image_shape")
            self.image_size = (int(shape[0]), int(shape[1]))
        bad = sorted(set(self.policy_config) & set(DATASET_FIELDS))
        if bad:
            raise ConfigError(f"{', '.join(bad)} come from the dataset; choose cameras with --camera "
                              "and the image size with --image-size")

    def to_dict(self) -> dict[str, Any]:
        """Plain-container form (stored in train_state.pt)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else (
                list(value) if isinstance(value, tuple) else value)
        return out


def _log_targets(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``--log`` values (repeated and/or comma-separated) as a list of known logger names."""
    items = [value] if isinstance(value, str) else list(value or [])
    names: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if name and name not in LOGGERS:
                raise ConfigError(f"unknown --log {name!r}; choose {' or '.join(LOGGERS)} "
                                  "(metrics.jsonl is always written)")
            if name and name not in names:
                names.append(name)
    return names


@dataclass
class TrainProgress:
    """What the progress callback receives (rank 0 only), after every step and validation."""

    #: "start" | "train" | "val" | "done", or the name of a stage run before the policy's training
    #: (``"segmenter"``: the VLA's segmenter, trained first when none is given)
    phase: str
    step: int
    total_steps: int
    epoch: float
    loss: float | None = None  # mean train loss over the last log interval
    lr: float = 0.0
    steps_per_s: float | None = None
    eta_s: float | None = None
    val_loss: float | None = None  # last validation loss
    best_val_loss: float | None = None
    terms: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    total_steps: int
    last_path: Path
    best_path: Path | None
    best_val_loss: float | None
    last_val_loss: float | None
    train_loss: float | None
    train_seconds: float
    interrupted: bool = False
    dataset: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    world_size: int = 1


ProgressCallback = Callable[[TrainProgress], None]


def validation_samples(available: int, opts: TrainOptions, val_every: int) -> int:
    """How many validation start steps one evaluation looks at: ``opts.val_samples`` at most, and
    no more than :data:`VAL_SHARE` of the training samples drawn between two evaluations (but at
    least one training batch, so a short run still gets a validation figure)."""
    share = max(opts.batch_size, int(VAL_SHARE * val_every * opts.batch_size))
    return max(1, min(available, opts.val_samples, share))
