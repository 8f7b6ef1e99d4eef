"""Training, evaluating, saving and loading a segmentation model.

A segmenter is saved in the project's single-file checkpoint format (weights-only torch zip,
written atomically) with ``policy_type = "segmenter"``; :func:`load_segmenter` reads it back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robokit.errors import CheckpointError
from robokit.policies.checkpoint import FORMAT, VERSION, atomic_torch_save, plain, read_payload
from robokit.segmentation.data import LabelledFrames
from robokit.segmentation.models import IGNORE, SegmenterConfig, build_segmenter

__all__ = ["SEGMENTER_TYPE", "MaskIoU", "evaluate_segmenter", "load_segmenter", "save_segmenter",
           "train_segmenter"]

SEGMENTER_TYPE = "segmenter"


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def train_segmenter(data: LabelledFrames, config: SegmenterConfig, steps: int = 1500, batch_size: int = 16,
                    lr: float = 2e-3, device: str | torch.device = "cpu", seed: int = 0,
                    weights: str | Path | None = None,
                    on_step: Callable[[int, dict[str, float]], None] | None = None) -> tuple[Any, list[dict]]:
    """Train a new ``config.arch`` model on ``data`` for ``steps`` AdamW steps (cosine learning rate).

    Each batch draws random frames; their brightness and contrast are jittered by up to 15 % so that
    the model does not learn one lighting. Returns the model (eval mode) and the logged losses.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model: Any = build_segmenter(config, weights).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history: list[dict] = []
    masks_all = torch.from_numpy(data.masks)
    model.train()
    for step in range(steps):
        pick = rng.integers(0, len(data), batch_size)
        images = to_tensor(data.images[pick], device)
        gain = torch.from_numpy(rng.uniform(0.85, 1.15, (batch_size, 1, 1, 1))).float().to(device)
        bias = torch.from_numpy(rng.uniform(-0.06, 0.06, (batch_size, 1, 1, 1))).float().to(device)
        images = (images * gain + bias).clamp_(0.0, 1.0)
        terms = model.loss(images, masks_all[pick].long().to(device))
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        schedule.step()
        record = {k: float(v.detach()) for k, v in terms.items()}
        if step % 25 == 0 or step == steps - 1:
            history.append({"step": step, **record})
        if on_step is not None:
            on_step(step, record)
    model.eval()
    return model, history


@dataclass
class MaskIoU:
    """Mask IoU over a set of frames: per instance, and per kind.

    ``robot`` is the IoU of the whole arm (its links and the gripper's parts as one mask);
    ``object`` and ``target`` are the mean IoU of the instances of that kind that appear.
    """

    instances: dict[str, float] = field(default_factory=dict)
    kinds: dict[str, float] = field(default_factory=dict)
    frames: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "kinds": self.kinds, "instances": self.instances}


@torch.no_grad()
def evaluate_segmenter(model: Any, data: LabelledFrames, batch_size: int = 32,
                       device: str | torch.device = "cpu") -> MaskIoU:
    """IoU of ``model``'s masks against ``data``'s (unlabelled pixels left out)."""
    table = data.instances
    n = len(table) + 1
    inter, union = np.zeros(n), np.zeros(n)
    robot_ids = np.array([i + 1 for i, (_, kind) in enumerate(table) if kind in ("robot", "gripper")])
    robot_inter = robot_union = 0
    for start in range(0, len(data), batch_size):
        truth = data.masks[start:start + batch_size]
        pred = model.predict(to_tensor(data.images[start:start + batch_size], device)).cpu().numpy()
        valid = truth != IGNORE
        for i in range(1, n):
            t, p = (truth == i) & valid, (pred == i) & valid
            inter[i] += np.count_nonzero(t & p)
            union[i] += np.count_nonzero(t | p)
        t_robot, p_robot = np.isin(truth, robot_ids) & valid, np.isin(pred, robot_ids) & valid
        robot_inter += int(np.count_nonzero(t_robot & p_robot))
        robot_union += int(np.count_nonzero(t_robot | p_robot))
    result = MaskIoU(frames=len(data))
    for i, (name, _) in enumerate(table, start=1):
        if union[i] > 0:
            result.instances[name] = float(inter[i] / union[i])
    if robot_union:
        result.kinds["robot"] = float(robot_inter / robot_union)
    for kind in ("gripper", "object", "target"):
        values = [result.instances[name] for name, k in table if k == kind and name in result.instances]
        if values:
            result.kinds[kind] = float(np.mean(values))
    return result


def save_segmenter(path: str | Path, model: Any, train_meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` in the single-file checkpoint format (``policy_type`` "segmenter")."""
    atomic_torch_save({
        "format": FORMAT, "version": VERSION, "policy_type": SEGMENTER_TYPE,
        "config": plain(model.config.to_dict(), "config"), "norm_stats": {},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "train_meta": plain(dict(train_meta or {})),
    }, path)


def load_segmenter(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """The segmenter saved in ``path`` (eval mode) and its train_meta; CheckpointError naming the file
    when it is not one."""
    payload = read_payload(path)
    if payload["policy_type"] != SEGMENTER_TYPE:
        raise CheckpointError(f"{path} holds a '{payload['policy_type']}' policy, not a segmentation model "
                              "(train one with `robokit seg train`)")
    try:
        model = build_segmenter(SegmenterConfig.from_dict(dict(payload["config"])))
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} does not match the segmenter its config describes: "
                              f"{str(exc).splitlines()[0]}") from exc
    model.to(map_location)
    model.eval()
    return model, payload["train_meta"]


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall time in seconds."""
    start = time.perf_counter()
    return fn(), time.perf_counter() - start
