"""Options of the VLA policy (:mod:`robokit.policies.goal.vla`) and how its segmenter is found."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robokit.errors import ConfigError
from robokit.policies.base import DataNeeds, PolicyConfig, RunSetup
from robokit.policies.nn.task_conditioning import UNKNOWN_WORDS, build_vocabulary

NO_SEGMENTER = (
    "the VLA policy reads a segmentation model's instances: pass --set segmenter=seg.pt, trained with "
    "`robokit seg train DATA --out seg.pt` on episodes recorded with `robokit record --sim --segmentation` "
    "(or with PNG masks, docs/record.md); `robokit train` trains one itself when its data has masks"
)


@dataclass
class VLAConfig(PolicyConfig):
    """VLA options. Defaults fit a CPU-trainable model on the 64x80 multi-task scene."""

    image_shape: tuple[int, int, int] = (64, 80, 3)
    chunk_size: int = 20
    d_model: int = 128
    n_head: int = 4
    enc_layers: int = 3
    dec_layers: int = 2
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    tokenizer: str = "word"  # word | a LOCAL pretrained text-encoder directory
    vocabulary: list[str] = field(default_factory=list)  # words of the training instructions ("word")
    max_words: int = 16
    unknown_words: str = "error"
    text_max_length: int = 48  # encoder tokens of a local text encoder
    #: The segmentation model file (`robokit seg train`); its config is copied into
    #: ``segmenter_config`` and its weights into the policy, so a checkpoint never needs the file.
    segmenter: str | None = None
    segmenter_config: dict[str, Any] = field(default_factory=dict)
    #: Without ``segmenter``, ``robokit train`` first trains one on the data's masks, this long and
    #: this wide (``robokit seg train --steps --width``), into ``<out>/segmenter.pt``.
    segmenter_steps: int = 500
    segmenter_width: int = 24
    done_weight: float = 1.0  # weight of the END token's loss
    #: Training: std of the noise on the previous actions the decoder is given (normalised units)
    #: and the chance that one is hidden behind a MASK token.
    previous_noise: float = 0.1
    previous_dropout: float = 0.5
    #: Weight of the grounding loss: the OBJECT and TARGET queries must point at the instances the
    #: instruction names (labels from the instruction's words and the instance names).
    grounding_weight: float = 1.0
    lr: float = 3e-4
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        self.vocabulary = [str(w) for w in self.vocabulary]
        if self.d_model % self.n_head:
            raise ConfigError(f"d_model {self.d_model} must be divisible by n_head {self.n_head}")
        for name in ("enc_layers", "dec_layers", "max_words", "text_max_length", "segmenter_steps",
                     "segmenter_width"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.unknown_words not in UNKNOWN_WORDS:
            raise ConfigError(f"unknown_words must be one of {', '.join(UNKNOWN_WORDS)}, got {self.unknown_words!r}")
        if not 0.0 <= self.previous_dropout <= 1.0 or self.previous_noise < 0:
            raise ConfigError(f"previous_dropout must be in [0, 1] and previous_noise >= 0, got "
                              f"{self.previous_dropout}, {self.previous_noise}")
        if self.lr <= 0 or self.weight_decay < 0 or self.done_weight < 0:
            raise ConfigError("lr must be positive, weight_decay and done_weight not negative")
        if not self.segmenter_config:
            if self.segmenter is None:
                raise ConfigError(NO_SEGMENTER)
            self.segmenter_config = segmenter_config_of(self.segmenter)
        check_segmenter_fits(self.segmenter_config, self.camera_names, self.image_hw, self.segmenter)

    @property
    def instances(self) -> list[list[str]]:
        """``[name, kind]`` per instance id from 1, as the segmenter labels them."""
        return [list(i) for i in self.segmenter_config["instances"]]

    def data_needs(self) -> DataNeeds:
        return DataNeeds(camera_names=tuple(self.camera_names), instruction=True)

    @classmethod
    def options_for_tasks(cls, values: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
        """The word tokenizer's vocabulary comes from the training instructions."""
        if values.get("tokenizer", "word") == "word" and not values.get("vocabulary") and tasks:
            return {**values, "vocabulary": build_vocabulary(tasks)}
        return values

    @classmethod
    def options_for_run(cls, values: dict[str, Any], run: RunSetup) -> dict[str, Any]:
        """Without a segmenter, the run trains one on its data's masks first (then frozen)."""
        if values.get("segmenter") or values.get("segmenter_config"):
            return values
        from robokit.segmentation.stage import segmenter_for_run

        defaults = cls.__dataclass_fields__
        steps = int(values.get("segmenter_steps", defaults["segmenter_steps"].default))
        width = int(values.get("segmenter_width", defaults["segmenter_width"].default))
        if steps <= 0 or width <= 0:
            raise ConfigError(f"segmenter_steps and segmenter_width must be positive, got {steps}, {width}")
        hint = NO_SEGMENTER.split(";")[0]
        return {**values, "segmenter": segmenter_for_run(run, steps, width, hint)}


def segmenter_config_of(path: str | Path) -> dict[str, Any]:
    """The config stored in a segmenter checkpoint; ConfigError naming the file when it is not one."""
    from robokit.errors import CheckpointError
    from robokit.policies.checkpoint import read_payload

    if not Path(path).is_file():
        raise ConfigError(f"segmenter {path} not found; {NO_SEGMENTER}")
    try:
        payload = read_payload(path)
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    if payload["policy_type"] != "segmenter":
        raise ConfigError(f"segmenter={path} holds a '{payload['policy_type']}' policy, not a segmentation model; "
                          "train one with `robokit seg train`")
    return dict(payload["config"])


def check_segmenter_fits(seg: dict[str, Any], cameras: list[str], image_hw: tuple[int, int],
                         path: str | None) -> None:
    """The segmenter must see the policy's image size and have been trained on its cameras."""
    name = f"segmenter {path}" if path else "the segmenter"
    size = tuple(int(v) for v in seg.get("image_size", ()))
    if size != tuple(image_hw):
        raise ConfigError(f"{name} was trained on {size[0]}x{size[1]} images but the policy sees "
                          f"{image_hw[0]}x{image_hw[1]}: train it with --image-size {image_hw[0]}x{image_hw[1]} "
                          f"or give the policy --image-size {size[0]}x{size[1]}")
    missing = [c for c in cameras if c not in seg.get("cameras", [])]
    if missing:
        raise ConfigError(f"{name} was trained on cameras {', '.join(seg.get('cameras', [])) or 'none'}, not on "
                          f"{', '.join(missing)}: train it on the policy's cameras (--camera) or drop them")
    if seg.get("arch") != "small":
        raise ConfigError(f"{name} is a '{seg.get('arch')}' model; the VLA pools the small model's features "
                          "(robokit seg train --arch small)")
