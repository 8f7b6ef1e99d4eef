"""Instance masks of real recordings, labelled on some frames, as PNG files beside the episodes.

Layout, inside the dataset folder::

    data/real/
        episode_0.hdf5 ...
        masks/
            instances.json                 # [{"name": "link0", "kind": "robot"}, ...]: id = position + 1
            episode_0/top/000012.png       # step 12 of episode_0's camera "top"
            episode_0/top/000040.png
            episode_3/wrist/000005.png

Each PNG is single-channel 8-bit at the camera's image size; a pixel holds the instance id
(0 background; ``instances.json`` lists the rest with kinds robot, gripper, object or target; 255
is "not labelled"). The file name is the step number (leading zeros optional). A label tool that
writes index PNGs (CVAT's, LabelMe's converters) fits this directly.

:func:`labelled_masks` lists what a folder holds; :func:`read_mask_png` reads one file and checks it
against its frame; :func:`folder_instances` reads the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from robokit.episodes.masks import Instance, decode_instances
from robokit.errors import DataError

__all__ = ["MASK_DIR", "LabelledMask", "check_mask_pngs", "folder_instances", "labelled_masks", "read_mask_png",
           "write_instances"]

MASK_DIR = "masks"
INSTANCES_FILE = "instances.json"


@dataclass(frozen=True)
class LabelledMask:
    """One PNG mask: the episode file it belongs to, its camera and step."""

    episode: Path
    camera: str
    step: int
    path: Path


def folder_instances(folder: str | Path) -> list[Instance] | None:
    """The id table of a dataset folder's PNG masks (None when the folder has no ``masks/``)."""
    root = Path(folder) / MASK_DIR
    if not root.is_dir():
        return None
    table = root / INSTANCES_FILE
    if not table.is_file():
        raise DataError(f"{root} holds masks but no {INSTANCES_FILE} (the id -> name table: "
                        '[{"name": ..., "kind": "robot|gripper|object|target"}, ...])')
    return decode_instances(table.read_text(), str(table))


def labelled_masks(folder: str | Path) -> list[LabelledMask]:
    """Every PNG mask of a dataset folder, in episode, camera, step order; a file whose name or
    place does not fit the layout is an error naming it."""
    folder = Path(folder)
    root = folder / MASK_DIR
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*.png")):
        parts = path.relative_to(root).parts
        if len(parts) != 3 or not parts[2][:-4].isdigit():
            raise DataError(f"{path}: a mask PNG must be masks/episode_<N>/<camera>/<step>.png")
        episode = folder / f"{parts[0]}.hdf5"
        if not episode.is_file():
            raise DataError(f"{path}: there is no episode {episode.name} in {folder} for this mask")
        found.append(LabelledMask(episode, parts[1], int(parts[2][:-4]), path))
    return sorted(found, key=lambda m: (m.episode.name, m.camera, m.step))


def read_mask_png(mask: LabelledMask, image_shape: tuple[int, ...], steps: int, instances: int) -> np.ndarray:
    """The uint8 (H, W) ids of ``mask``, checked against its episode: the camera's frame size,
    the episode's length and the table's ``instances``; DataError naming the file otherwise."""
    if not 0 <= mask.step < steps:
        raise DataError(f"{mask.path}: step {mask.step} is past the end of {mask.episode.name} ({steps} steps)")
    ids = cv2.imread(str(mask.path), cv2.IMREAD_UNCHANGED)
    if ids is None:
        raise DataError(f"{mask.path}: not a readable PNG")
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise DataError(f"{mask.path}: a mask must be a single-channel 8-bit PNG of instance ids, got "
                        f"{ids.dtype} of shape {ids.shape}")
    h, w = image_shape[:2]
    if ids.shape != (h, w):
        raise DataError(f"{mask.path}: the mask is {ids.shape[1]}x{ids.shape[0]} but camera '{mask.camera}' of "
                        f"{mask.episode.name} records {w}x{h} frames")
    unknown = np.setdiff1d(np.unique(ids), np.arange(instances + 1))
    unknown = unknown[unknown != 255]
    if unknown.size:
        raise DataError(f"{mask.path}: ids {unknown.tolist()} are not in {INSTANCES_FILE} ({instances} instances)")
    return ids


def write_instances(folder: str | Path, instances: list[tuple[str, str]]) -> Path:
    """Write a folder's ``masks/instances.json`` (for tools that export labels)."""
    root = Path(folder) / MASK_DIR
    root.mkdir(parents=True, exist_ok=True)
    path = root / INSTANCES_FILE
    path.write_text(json.dumps([{"name": n, "kind": k} for n, k in instances], indent=1) + "\n")
    return path


def check_mask_pngs(folder: str | Path) -> tuple[str | None, list[str]]:
    """A line about a folder's PNG masks (None when it has none) and the problems of each file."""
    from robokit.episodes.reader import open_episode

    try:
        instances = folder_instances(folder)
        masks = labelled_masks(folder)
    except DataError as exc:
        return f"PNG masks under {Path(folder) / MASK_DIR}: unusable", [str(exc)]
    if instances is None:
        return None, []
    problems = []
    for episode in sorted({m.episode for m in masks}):
        try:
            with open_episode(episode) as ep:
                for mask in (m for m in masks if m.episode == episode):
                    if mask.camera not in ep.camera_names:
                        problems.append(f"{mask.path}: {episode.name} has no camera '{mask.camera}' "
                                        f"(cameras: {', '.join(ep.camera_names)})")
                        continue
                    try:
                        read_mask_png(mask, ep.image_shape(mask.camera), ep.length, len(instances))
                    except DataError as exc:
                        problems.append(str(exc))
        except DataError as exc:
            problems.append(str(exc))
    line = (f"PNG masks: {len(masks)} frame(s) of {len({m.episode for m in masks})} episode(s), "
            f"{len(instances)} instances in {MASK_DIR}/{INSTANCES_FILE}")
    return line, problems
