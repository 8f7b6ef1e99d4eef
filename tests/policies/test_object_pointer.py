"""The object pointer: the dataset labels where the object each demonstration moves is (from the
recorded boxes, in the camera that stays still), and ACT learns to point at it from the image and
the instruction alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robokit.episodes.writer import EpisodeWriter
from robokit.errors import ConfigError, DataError
from robokit.training.augment import ImageAugment
from robokit.training.dataset import EpisodeDataset
from robokit.training.episode_records import moved_object, read_episode_record

HW = (16, 20)


def _write(folder: Path, index: int, boxes: dict[str, dict[str, list]], task: str = "move the ball",
           length: int = 3) -> Path:
    """An episode whose frames are black with a white rectangle at each box of each camera
    (``boxes``: camera -> object -> one box per step)."""
    cams = list(boxes)
    writer = EpisodeWriter(folder, index, {c: (*HW, 3) for c in cams}, attrs={"fps": 10.0, "task": task, "sim": True},
                           box_objects={c: list(boxes[c]) for c in cams})
    for t in range(length):
        images = {}
        for cam in cams:
            image = np.zeros((*HW, 3), np.uint8)
            for series in boxes[cam].values():
                x0, y0, x1, y1 = series[t]
                image[y0:y1, x0:x1] = 255
            images[cam] = image
        q = np.full(8, 0.1 * t, np.float32)
        writer.append(q, q, q, images, t_robot=t / 10.0,
                      object_boxes={c: {n: s[t] for n, s in boxes[c].items()} for c in cams})
    return writer.save()


# The ball moves right in the fixed top camera; in the wrist camera (which moves) everything moves,
# the cube most of all.
BOXES = {
    "top": {"ball": [(2, 5, 4, 7), (6, 5, 8, 7), (10, 5, 12, 7)], "cube": [(14, 10, 17, 13)] * 3},
    "wrist": {"ball": [(2, 8, 5, 11), (3, 8, 6, 11), (4, 8, 7, 11)],
              "cube": [(1, 1, 4, 4), (8, 1, 11, 4), (15, 1, 18, 4)]},
}


def test_the_moved_object_is_found_in_the_camera_that_stays_still(tmp_path):
    path = _write(tmp_path, 0, BOXES)
    assert moved_object(read_episode_record(path), ["wrist", "top"]) == "ball"
    assert moved_object(read_episode_record(_write(tmp_path, 1, {"top": {}})), ["top"]) is None


def test_samples_carry_the_moved_objects_centre_in_every_camera(tmp_path):
    ds = EpisodeDataset([_write(tmp_path, 0, BOXES)], camera_names=["top", "wrist"], chunk_size=2, task_object=True)
    h, w = HW
    for t in range(3):
        sample = ds[t]
        x0, y0, x1, y1 = BOXES["top"]["ball"][t]
        np.testing.assert_allclose(sample["task_object_xy"][0].numpy(), [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h])
        x0, y0, x1, y1 = BOXES["wrist"]["ball"][t]
        np.testing.assert_allclose(sample["task_object_xy"][1].numpy(), [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h])
        assert sample["task_object_valid"].tolist() == [True, True]
    assert "task_object_xy" not in EpisodeDataset([ds.paths[0]], chunk_size=2)[0]  # only when asked for


def test_shift_augmentation_moves_the_pointer_target_with_the_image(tmp_path):
    ds = EpisodeDataset([_write(tmp_path, 0, {"top": BOXES["top"]})], chunk_size=2, task_object=True,
                        augment=ImageAugment(shift=3), seed=2)
    h, w = HW
    moved = 0
    for _ in range(12):
        sample = ds[1]
        ys, xs = np.nonzero(sample["images"][0, 0].numpy()[:, :11] > 127)  # the ball, left of the cube
        centre = [(xs.min() + xs.max() + 1) / 2 / w, (ys.min() + ys.max() + 1) / 2 / h]
        np.testing.assert_allclose(sample["task_object_xy"][0].numpy(), centre, atol=1e-6)
        moved += not np.allclose(centre, [7 / w, 6 / h])
    assert moved > 0


def test_episodes_without_boxes_are_refused_with_a_clear_message(tmp_path):
    with pytest.raises(DataError, match="object pointer off"):
        EpisodeDataset([_write(tmp_path, 0, {"top": {}})], chunk_size=2, task_object=True)


def test_the_pointer_needs_the_small_backbone(make_tiny_policy):
    with pytest.raises(ConfigError, match="small"):
        make_tiny_policy("act", backbone="resnet18", object_pointer=True)
    assert make_tiny_policy("act", object_pointer=True).config.data_needs().task_object


def _square_batch(n: int, rng: np.random.Generator, hw: tuple[int, int]) -> dict:
    """Images with a red and a green 4x4 square in two random cells of a grid of 4 px cells; the
    instruction names one of them and the pointer's target is its centre."""
    h, w = hw
    rows, cols = (h - 4) // 4, w // 4
    images = np.zeros((n, 1, 3, h, w), np.uint8)
    xy = np.zeros((n, 1, 2), np.float32)
    tasks = []
    for i in range(n):
        places = rng.choice(rows * cols, size=2, replace=False)
        named = int(rng.integers(2))
        for j, place in enumerate(places):
            y, x = 2 + 4 * (place // cols), 4 * (place % cols)
            images[i, 0, j, y:y + 4, x:x + 4] = 255  # square j in channel j: red, then green
            if j == named:
                xy[i, 0] = [(x + 2) / w, (y + 2) / h]
        tasks.append(f"put the {('red', 'green')[named]} cube on the plate")
    return {"images": torch.from_numpy(images), "qpos": torch.zeros(n, 8), "action": torch.zeros(n, 10, 8),
            "is_pad": torch.zeros(n, 10, dtype=torch.bool), "task": tasks,
            "task_object_xy": torch.from_numpy(xy), "task_object_valid": torch.ones(n, 1, dtype=torch.bool)}


@pytest.mark.parametrize("name, hw", [("act", (24, 32)), ("grp", (32, 32))])
def test_the_policy_learns_to_point_at_the_object_the_instruction_names(make_tiny_policy, fit_batch, name, hw):
    rng = np.random.default_rng(0)
    policy = make_tiny_policy(name, object_pointer=True, pointer_stage=1, image_shape=(*hw, 3), chunk_size=10,
                              vocabulary=["cube", "green", "on", "plate", "put", "red", "the"])
    policy.set_norm_stats({"qpos_mean": np.zeros(8), "qpos_std": np.ones(8), "qpos_min": -np.ones(8),
                           "qpos_max": np.ones(8), "action_mean": np.zeros(8), "action_std": np.ones(8),
                           "action_min": -np.ones(8), "action_max": np.ones(8)})
    batch = _square_batch(24, rng, hw)
    start = float(policy.compute_loss(batch)["pointer_l1"].detach())
    losses = fit_batch(policy, batch, steps=80, lr=3e-3)
    assert float(losses["pointer_l1"].detach()) < start / 3
    # Same image, the other colour word: it points at the other square.
    hits = 0
    for i in range(12):
        image = batch["images"][i, 0].permute(1, 2, 0).numpy()
        squares = {colour: np.argwhere(image[:, :, c] > 127).mean(axis=0)[::-1] + 0.5
                   for c, colour in enumerate(("red", "green"))}
        for colour, other in (("red", "green"), ("green", "red")):
            chunk, extras = policy.predict_chunk({"images": {"top": image}, "qpos": np.zeros(8, np.float32),
                                                  "task": f"put the {colour} cube on the plate"})
            point = extras["pointer"][0] * [hw[1], hw[0]]
            hits += np.linalg.norm(point - squares[colour]) < np.linalg.norm(point - squares[other])
    assert hits >= 20  # of 24
    assert extras["pointer"].shape == (1, 2) and chunk.shape == (10, 8)
