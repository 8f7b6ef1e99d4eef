"""Configuration of the VIMA-style prompt policy (see :mod:`robokit.policies.goal.vima`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

from robokit.errors import ConfigError
from robokit.hardware.base import PANDA_READY_POSE
from robokit.policies.base import DataNeeds, PolicyConfig
from robokit.policies.nn.task_conditioning import UNKNOWN_WORDS, build_vocabulary

ACTION_SPACES = ("cartesian", "joint")
DECODE_MODES = ("argmax", "expectation", "regression")
TOKENIZERS = ("word", "char")
STEMS = ("groupnorm", "thin")
ACTION_HEADS = ("bins+offset", "bins")
#: The checkpoint format of this policy. 1: character prompt, thin stem, argmax bins (no ``version``
#: field in the config); 2: adds the word tokenizer and task vector, the GroupNorm stem and the
#: offset head. A version-1 checkpoint is refused with a message (its weights do not fit).
VERSION = 2
# Every field a version-1 checkpoint's config holds (a saved config holds them all; options given
# to the trainer are a few of them).
_V1_FIELDS = frozenset((
    "camera_names", "image_shape", "state_dim", "action_dim", "chunk_size", "fps", "n_embd", "n_layer",
    "n_head", "xattn_n_heads", "xattn_ff_expanding", "prompt_layers", "dropout", "text_max_length",
    "text_encoder", "max_objects", "obj_crop", "obj_patch", "obs_grid", "history_len", "use_ee",
    "action_space", "bins_xyz", "bins_rot", "bins_gripper", "bins_joint", "workspace_low",
    "workspace_high", "rot_range", "decode", "label_smoothing", "done_weight", "lr", "weight_decay",
    "film", "keypoints", "reference_q"))


@dataclass
class VIMAConfig(PolicyConfig):
    """VIMA-style policy options (see the module docstring)."""

    image_shape: tuple[int, int, int] = (64, 80, 3)
    chunk_size: int = 10
    n_embd: int = 128
    n_layer: int = 2               # cross-attention GPT layers
    n_head: int = 4                # heads of the (causal) self-attention over query tokens
    xattn_n_heads: int = 4         # heads of the cross-attention to the prompt
    xattn_ff_expanding: int = 4    # MLP expansion inside the cross-attention layers
    prompt_layers: int = 1         # bidirectional self-attention layers over the prompt
    dropout: float = 0.1
    version: int = VERSION         # checkpoint format (see VERSION); never set it by hand
    tokenizer: str = "word"        # word: vocabulary + task vector (FiLM); char: the seed's characters
    vocabulary: list[str] = field(default_factory=list)  # words of the training instructions (trainer fills it)
    max_words: int = 16            # word tokenizer: words per instruction
    unknown_words: str = "error"   # error | unk: what a word never seen in training does
    task_dim: int = 64             # size of the task vector that FiLM-modulates the camera stem
    text_max_length: int = 48      # char tokenizer: characters per instruction
    text_encoder: str = "char"     # "char": the built-in embedding of `tokenizer`'s tokens; else a local directory
    stem: str = "groupnorm"        # groupnorm: GroupNorm + FiLM conv stages; thin: the seed's 3-conv stem
    stem_channels: tuple[int, ...] = (32, 64, 128, 128)  # groupnorm stem; stride 2 on all but the last
    max_objects: int = 8
    obj_crop: int = 16             # object crops are resized to obj_crop x obj_crop
    obj_patch: int = 4             # ... and cut into obj_patch squares for the object ViT
    obs_grid: tuple[int, int] = (4, 5)  # camera tokens per camera (rows, cols) after pooling
    history_len: int = 1           # steps of observation/action history (1 = the current step only)
    use_ee: bool = True            # end-effector pose through fk (needs 7 joints first in qpos)
    action_space: str = "cartesian"
    bins_xyz: tuple[int, int, int] = (50, 100, 50)
    bins_rot: int = 50
    bins_gripper: int = 2
    bins_joint: int = 100
    workspace_low: tuple[float, float, float] = (0.2, -0.5, 0.0)   # TCP range, robot base frame (m)
    workspace_high: tuple[float, float, float] = (0.8, 0.5, 0.6)
    rot_range: float = math.pi     # relative roll/pitch/yaw range is [-rot_range, rot_range]
    action_head: str = "bins+offset"  # bins + a continuous offset within the bin, or plain "bins"
    offset_weight: float = 1.0     # weight of the L1 loss on the offset (in bin steps)
    decode: str = "expectation"    # "expectation" over bins (centre + offset each), the "argmax" bin, or "regression"
    label_smoothing: float = 0.0
    # Soft bin targets: a normal of this width (bin steps) around the true value instead of its one
    # bin, so the loss grows with how far off a prediction is (0 = one-hot targets).
    bin_sigma: float = 0.0
    # Weight of an L1 loss (bin steps) on the expectation decode itself: trains the value that
    # decode="expectation" returns, not only the bin probabilities (0 = off).
    expectation_weight: float = 0.0
    # Weight of a continuous head's L1 loss on the normalised joint actions (0 = no such head);
    # decode="regression" then takes the chunk from it instead of from the bins.
    regression_weight: float = 0.0
    done_weight: float = 1.0
    lr: float = 3e-4               # AdamW learning rate (`robokit train --lr` overrides)
    weight_decay: float = 1e-4
    film: bool = True              # FiLM-condition the camera encoder on the pooled prompt
    keypoints: int = 32            # spatial-softmax keypoints per camera (0 = off)
    # Learn where the instructed object is in each camera (a training target from the episodes'
    # object boxes, robokit.policies.nn.object_pointer): one more token per camera and step, and
    # the positions go to the heads with the keypoints. Weight of its L1 loss in image fractions.
    object_pointer: bool = False
    pointer_weight: float = 1.0
    reference_q: list[float] = field(default_factory=lambda: PANDA_READY_POSE.tolist())

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"lr must be positive and weight_decay not negative, "
                              f"got {self.lr}, {self.weight_decay}")
        if self.version != VERSION:
            raise ConfigError(f"this is a version-{self.version} VIMA config; this robokit reads version "
                              f"{VERSION} only: retrain with robokit train --policy vima")
        self.obs_grid = tuple(int(v) for v in self.obs_grid)  # type: ignore[assignment]
        self.stem_channels = tuple(int(v) for v in self.stem_channels)
        self.vocabulary = [str(w) for w in self.vocabulary]
        for name, value, allowed in (("tokenizer", self.tokenizer, TOKENIZERS), ("stem", self.stem, STEMS),
                                     ("action_head", self.action_head, ACTION_HEADS),
                                     ("unknown_words", self.unknown_words, UNKNOWN_WORDS)):
            if value not in allowed:
                raise ConfigError(f"VIMA {name} must be one of {', '.join(allowed)}, got {value!r}")
        if not self.stem_channels or min(self.stem_channels) <= 0:
            raise ConfigError(f"stem_channels must be positive channel counts, got {self.stem_channels}")
        if self.pointer_weight < 0:
            raise ConfigError(f"pointer_weight must be >= 0, got {self.pointer_weight}")
        for name in ("offset_weight", "bin_sigma", "expectation_weight", "regression_weight"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        self.bins_xyz = tuple(int(v) for v in self.bins_xyz)  # type: ignore[assignment]
        self.workspace_low = tuple(float(v) for v in self.workspace_low)  # type: ignore[assignment]
        self.workspace_high = tuple(float(v) for v in self.workspace_high)  # type: ignore[assignment]
        self.reference_q = [float(v) for v in self.reference_q]
        if self.action_space not in ACTION_SPACES:
            raise ConfigError(f"action_space must be one of {', '.join(ACTION_SPACES)}, got '{self.action_space}'")
        if self.decode not in DECODE_MODES:
            raise ConfigError(f"decode must be one of {', '.join(DECODE_MODES)}, got '{self.decode}'")
        if self.decode == "regression" and not self.regression_weight > 0:
            raise ConfigError("decode='regression' reads the continuous head: give regression_weight > 0")
        if self.action_space == "cartesian" and self.action_dim != 8:
            raise ConfigError(f"action_space='cartesian' needs Franka actions (7 joints + gripper, "
                              f"action_dim 8), got action_dim {self.action_dim}; use action_space='joint'")
        if self.use_ee and self.state_dim < 7:
            raise ConfigError(f"use_ee needs the 7 joints first in qpos (state_dim >= 7), got {self.state_dim}")
        for name in ("n_head", "xattn_n_heads"):
            if self.n_embd % int(getattr(self, name)):
                raise ConfigError(f"n_embd {self.n_embd} must be divisible by {name} {getattr(self, name)}")
        for name in ("n_layer", "history_len", "text_max_length", "obj_crop", "obj_patch", "xattn_ff_expanding",
                     "max_words", "task_dim"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_objects < 0 or self.prompt_layers < 0 or self.keypoints < 0:
            raise ConfigError("max_objects, prompt_layers and keypoints must not be negative")
        if self.obj_crop % self.obj_patch:
            raise ConfigError(f"obj_crop {self.obj_crop} must be a multiple of obj_patch {self.obj_patch}")
        if len(self.obs_grid) != 2 or min(self.obs_grid) <= 0:
            raise ConfigError(f"obs_grid must be two positive ints, got {self.obs_grid}")
        if len(self.reference_q) != 7:
            raise ConfigError("reference_q must hold 7 joint angles")
        if not self.camera_names:
            raise ConfigError("the VIMA-style policy needs at least one camera")

    @classmethod
    def options_for_tasks(cls, values: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
        """The word tokenizer's vocabulary: the words of the training instructions (unless given)."""
        if values.get("tokenizer", "word") == "word" and not values.get("vocabulary"):
            return {**values, "vocabulary": build_vocabulary(tasks)}
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VIMAConfig:
        """As :meth:`PolicyConfig.from_dict`; a saved first-version config (no ``version``) is refused."""
        if "version" not in values and _V1_FIELDS <= set(values):
            raise ConfigError(
                "this is a first-version VIMA checkpoint (its config has no 'version'): it predates the "
                f"word tokenizer, the GroupNorm stem and the offset head of version {VERSION}, and its "
                "weights do not fit this model; retrain it with robokit train --policy vima (add --set "
                "tokenizer=char --set stem=thin --set action_head=bins for the first version's setup)")
        return cast(VIMAConfig, super().from_dict(values))

    def data_needs(self) -> DataNeeds:
        """The history steps before t, the instruction, and object boxes when it has object slots."""
        return DataNeeds(camera_names=tuple(self.camera_names), history=self.history_len - 1,
                         object_boxes=self.max_objects > 0, instruction=True, task_object=self.object_pointer)
