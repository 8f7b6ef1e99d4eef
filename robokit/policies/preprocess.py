"""Turning one observation dict (base.py's format) into model tensors, with clear errors.

Importing this module does not import torch, so the policy server and the control loop share
:func:`resize_image` with the policies without loading torch for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from robokit.errors import UserError

if TYPE_CHECKING:
    import torch

    from robokit.policies.base import PolicyConfig


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image with area interpolation (the least aliasing
    when shrinking) if needed."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    import cv2

    # OpenCV refuses views with negative strides (e.g. a BGR->RGB flip): hand it a contiguous copy
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)


def check_image(name: str, image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"image '{name}' must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    return image


def stack_camera_images(obs: dict[str, Any], config: PolicyConfig) -> np.ndarray:
    """uint8 (K, 3, H, W) in ``config.camera_names`` order, resized to ``config.image_shape``."""
    images = obs.get("images")
    if not isinstance(images, dict):
        raise UserError("observation has no 'images' dict")
    missing = [c for c in config.camera_names if c not in images]
    if missing:
        raise UserError(f"observation lacks camera(s) {', '.join(missing)}; the policy needs "
                        f"{', '.join(config.camera_names)}")
    h, w, _ = config.image_shape
    out = np.empty((len(config.camera_names), 3, h, w), dtype=np.uint8)
    for k, cam in enumerate(config.camera_names):
        out[k] = resize_image(check_image(cam, images[cam]), h, w).transpose(2, 0, 1)
    return out


def check_qpos(obs: dict[str, Any], config: PolicyConfig) -> np.ndarray:
    """float32 (state_dim,) from ``obs["qpos"]``; wrong shape or non-finite values raise UserError."""
    if "qpos" not in obs:
        raise UserError("observation has no 'qpos'")
    qpos = np.asarray(obs["qpos"], dtype=np.float32).reshape(-1)
    if qpos.shape != (config.state_dim,):
        raise UserError(f"observation qpos has {qpos.shape[0]} values, the policy expects {config.state_dim}")
    if not np.all(np.isfinite(qpos)):
        raise UserError("observation qpos contains NaN or infinite values")
    return qpos


def observation_to_tensors(obs: dict[str, Any], config: PolicyConfig, device: torch.device,
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (1, K, 3, H, W), qpos float32 (1, S)) on ``device``, batch of one.

    Images stay uint8 until they are on the device: a quarter of the bytes to copy.
    """
    import torch

    images = torch.from_numpy(stack_camera_images(obs, config)).unsqueeze(0).to(device, non_blocking=True)
    qpos = torch.from_numpy(check_qpos(obs, config)).unsqueeze(0).to(device)
    return images, qpos
