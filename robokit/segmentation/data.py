"""Labelled frames for a segmentation model: every frame with a mask in a dataset folder.

Masks come from the episode files (``robokit record --sim --segmentation``) and from PNG files
beside them (real data, :mod:`robokit.episodes.mask_files`). Frames and masks are resized to the
model's image size (area interpolation for images, nearest for ids) and held in memory as uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from robokit.episodes.mask_files import folder_instances, labelled_masks, read_mask_png
from robokit.episodes.reader import list_episodes, open_episode
from robokit.errors import DataError

__all__ = ["LabelledFrames", "load_labelled_frames"]


@dataclass
class LabelledFrames:
    """Frames (N, H, W, 3) uint8 RGB with their masks (N, H, W) uint8 ids and the ids' table."""

    images: np.ndarray
    masks: np.ndarray
    instances: list[tuple[str, str]]
    episodes: int
    cameras: list[str]  # the cameras the frames come from

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_labelled_frames(folder: str | Path, image_size: tuple[int, int], cameras: Sequence[str] | None = None,
                         stride: int = 1, max_frames: int = 50_000) -> LabelledFrames:
    """Every ``stride``-th masked frame of ``cameras`` (default: every camera with masks) in ``folder``,
    plus its PNG masks; a DataError when there are none or the episodes' id tables differ."""
    folder = Path(folder)
    table: list[tuple[str, str]] | None = None
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    episodes = 0
    used: dict[str, None] = {}  # cameras in order of appearance

    def adopt(found: list[tuple[str, str]], where: str) -> None:
        nonlocal table
        if table is None:
            table = found
        elif found != table:
            raise DataError(f"{where} has another mask id table than the rest of {folder} "
                            f"({len(found)} instances vs {len(table)}); one segmenter needs one table")

    for path in list_episodes(folder):
        with open_episode(path) as ep:
            cams = [c for c in ep.mask_cameras if cameras is None or c in cameras]
            if not cams:
                continue
            adopt([(i.name, i.kind) for i in ep.mask_instances], str(path))
            episodes += 1
            steps = range(0, ep.length, max(1, stride))
            for cam in cams:
                used[cam] = None
                frames, ids = ep.images(cam), ep.masks(cam)
                for t in steps:
                    images.append(_resize(frames[t], image_size, cv2.INTER_AREA))
                    masks.append(_resize(ids[t], image_size, cv2.INTER_NEAREST))
    png_table = folder_instances(folder)
    if png_table is not None:
        adopt([(i.name, i.kind) for i in png_table], str(folder / "masks"))
        shapes: dict[Path, tuple[int, dict[str, tuple[int, int, int]]]] = {}
        for mask in labelled_masks(folder):
            if cameras is not None and mask.camera not in cameras:
                continue
            if mask.episode not in shapes:
                with open_episode(mask.episode) as ep:
                    shapes[mask.episode] = (ep.length, {c: ep.image_shape(c) for c in ep.camera_names})
            length, cams_shape = shapes[mask.episode]
            if mask.camera not in cams_shape:
                raise DataError(f"{mask.path}: {mask.episode.name} has no camera '{mask.camera}'")
            ids = read_mask_png(mask, cams_shape[mask.camera], length, len(png_table))
            used[mask.camera] = None
            with open_episode(mask.episode) as ep:
                frame = ep.image(mask.camera, mask.step)
            images.append(_resize(frame, image_size, cv2.INTER_AREA))
            masks.append(_resize(ids, image_size, cv2.INTER_NEAREST))
        episodes += len(shapes)
    if not images or table is None:
        raise DataError(f"no frame under {folder} has a mask: record with `robokit record --sim --segmentation`, "
                        "or put PNG masks in its masks/ folder (docs/record.md)")
    if len(images) > max_frames:  # evenly thinned: memory stays bounded on a large dataset
        keep = np.linspace(0, len(images) - 1, max_frames).astype(int)
        images, masks = [images[i] for i in keep], [masks[i] for i in keep]
    return LabelledFrames(np.stack(images), np.stack(masks), table, episodes, list(used))


def _resize(array: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    h, w = size
    if array.shape[:2] == (h, w):
        return np.ascontiguousarray(array)
    return cv2.resize(array, (w, h), interpolation=interpolation)
