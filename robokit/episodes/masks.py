"""Per-step instance masks in episode files: ``/observations/masks/<cam>`` and their id -> name table.

A mask is uint8 (H, W) per step and camera, at the camera's image size: every pixel holds the id of
the instance it shows, 0 for the background. The file attribute ``mask_instances`` (JSON) lists the
instances, id = position + 1::

    [{"name": "link0", "kind": "robot"}, ..., {"name": "red_cube", "kind": "object"}, ...]

with kinds ``robot`` (the arm's links), ``gripper`` (hand and fingers), ``object`` and ``target``.
Simulated recordings get them from the renderer (``robokit record --sim --segmentation``). Steps
without a mask (real data labelled on some frames only) are all 255, :data:`UNLABELLED`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from robokit.errors import DataError

if TYPE_CHECKING:
    from robokit.episodes.reader import Episode

__all__ = ["KINDS", "MASKS", "MASK_INSTANCES", "UNLABELLED", "Instance", "check_masks", "decode_instances",
           "encode_instances", "mask_colors", "overlay_mask"]

MASKS = "observations/masks"
MASK_INSTANCES = "mask_instances"
KINDS = ("robot", "gripper", "object", "target")
#: The value of every pixel of a step that has no mask.
UNLABELLED = 255


@dataclass(frozen=True)
class Instance:
    """One entry of a mask's id table."""

    id: int
    name: str
    kind: str


def encode_instances(instances: Sequence[tuple[str, str]]) -> str:
    """The ``mask_instances`` attribute for ``(name, kind)`` pairs (id = position + 1)."""
    if len(instances) >= UNLABELLED:
        raise DataError(f"a mask holds at most {UNLABELLED - 1} instances, got {len(instances)}")
    for name, kind in instances:
        if kind not in KINDS:
            raise DataError(f"mask instance {name!r} has kind {kind!r}; kinds are {', '.join(KINDS)}")
    return json.dumps([{"name": name, "kind": kind} for name, kind in instances])


def decode_instances(text: Any, where: str = "the file") -> list[Instance]:
    """The table of a ``mask_instances`` attribute; DataError naming ``where`` if it is not one."""
    try:
        items = json.loads(text)
        instances = [Instance(i + 1, str(item["name"]), str(item["kind"])) for i, item in enumerate(items)]
    except (TypeError, ValueError, KeyError) as exc:
        raise DataError(f"{where}: attribute '{MASK_INSTANCES}' is not a JSON list of {{name, kind}} "
                        f"({exc})") from None
    bad = [i.kind for i in instances if i.kind not in KINDS]
    if bad:
        raise DataError(f"{where}: mask instance kind {bad[0]!r} is not one of {', '.join(KINDS)}")
    return instances


def check_masks(ep: Episode) -> list[str]:
    """Problems of an episode's masks: a camera's masks of the wrong shape or type, ids the table
    does not list, a table without masks or masks without a table."""
    if not ep.mask_cameras:
        return [f"{ep.path}: attribute '{MASK_INSTANCES}' but no masks"] if MASK_INSTANCES in ep.attrs else []
    if MASK_INSTANCES not in ep.attrs:
        return [f"{ep.path}: /{MASKS} has no id table (attribute '{MASK_INSTANCES}')"]
    problems = []
    try:
        count = len(ep.mask_instances)
        for cam in ep.mask_cameras:
            for t in sorted({0, ep.length - 1}) if ep.length else []:
                ids = np.unique(ep.masks(cam, t, t + 1))
                unknown = ids[(ids > count) & (ids != UNLABELLED)]
                if unknown.size:
                    problems.append(f"{ep.path}: /{MASKS}/{cam} step {t} has ids {unknown.tolist()} that "
                                    f"'{MASK_INSTANCES}' does not list ({count} instances)")
    except DataError as exc:
        problems.append(str(exc))
    return problems


def mask_colors(count: int) -> np.ndarray:
    """uint8 (count + 1, 3) RGB colour per id: black for the background, distinct hues after."""
    hues = (np.arange(count) * 0.618034) % 1.0  # golden-ratio steps: neighbours differ
    colors = np.zeros((count + 1, 3), dtype=np.uint8)
    for i, hue in enumerate(hues, start=1):
        colors[i] = _hsv_to_rgb(hue, 0.75, 1.0)
    return colors


def overlay_mask(image: np.ndarray, mask: np.ndarray, count: int, alpha: float = 0.5) -> np.ndarray:
    """``image`` (H, W, 3) with each instance of ``mask`` tinted in its colour (background and
    unlabelled pixels untouched)."""
    colors = mask_colors(max(count, int(mask[mask != UNLABELLED].max(initial=0))))
    out = image.astype(np.float32)
    shown = (mask > 0) & (mask != UNLABELLED)
    out[shown] = (1 - alpha) * out[shown] + alpha * colors[mask[shown]]
    return out.astype(np.uint8)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (np.array(rgb) * 255).astype(np.uint8)
