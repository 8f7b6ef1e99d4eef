"""Training-time image augmentation (random shift as in DrQ, colour jitter) on uint8 images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robokit.errors import ConfigError


@dataclass
class ImageAugment:
    """Optional training-time image augmentation, applied per camera on uint8 images.

    ``shift``: random translation by up to ``shift`` pixels (pad by edge replication, then a random
    crop back to the original size, as in DrQ). ``brightness`` / ``contrast`` / ``saturation``:
    colour jitter factors drawn uniformly from ``[1 - x, 1 + x]``. All zero (the default) = off.
    """

    shift: int = 0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    def __post_init__(self) -> None:
        if self.shift < 0:
            raise ConfigError(f"augmentation shift must be >= 0 pixels, got {self.shift}")
        for name in ("brightness", "contrast", "saturation"):
            value = float(getattr(self, name))
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"augmentation {name} must be in [0, 1), got {value}")

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.brightness or self.contrast or self.saturation)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one uint8 (3, H, W) image; returns a new uint8 (3, H, W) array."""
        return self.apply_with_shift(image, rng)[0]

    def apply_with_shift(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
        """:meth:`apply`, also returning the (x, y) pixels the content moved by (for object boxes)."""
        out = image
        moved = (0, 0)
        if self.shift:
            s = self.shift
            padded = np.pad(image, ((0, 0), (s, s), (s, s)), mode="edge")
            dy, dx = rng.integers(0, 2 * s + 1, size=2)
            out = padded[:, dy:dy + image.shape[1], dx:dx + image.shape[2]]
            moved = (s - int(dx), s - int(dy))
        if self.brightness or self.contrast or self.saturation:
            x = out.astype(np.float32)
            if self.brightness:
                x *= rng.uniform(1 - self.brightness, 1 + self.brightness)
            if self.contrast:
                mean = x.mean()
                x = (x - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
            if self.saturation:
                grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
                x = (x - grey) * rng.uniform(1 - self.saturation, 1 + self.saturation) + grey
            out = np.clip(x, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out), moved
