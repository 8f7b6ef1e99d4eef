"""Episode datasets: ACT sample semantics, split by episode, statistics, cache, workers, bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from robokit.errors import DataError
from robokit.policies.base import NormStats
from robokit.training.augment import ImageAugment
from robokit.training.dataset import EpisodeDataset, build_datasets, split_episodes
from robokit.training.episode_records import compute_norm_stats

CAMS = {"top": (16, 20), "wrist": (16, 20)}


@pytest.fixture()
def folder(tmp_path: Path, episode_files) -> Path:
    for i, length in enumerate((9, 14, 11, 6, 12)):
        episode_files.v1(tmp_path / "data", i, length=length, cams=CAMS, task=f"task {i}")
    return tmp_path / "data"


def test_samples_are_act_chunks_with_padding(folder: Path, episode_files):
    ds = EpisodeDataset(sorted(folder.glob("*.hdf5")), chunk_size=5, cache_bytes=0)
    assert len(ds) == 9 + 14 + 11 + 6 + 12  # one sample per step of every episode
    for index in range(len(ds)):
        e, t = ds.locate(index)
        length = ds.records[e].length
        s = ds[index]
        # ACT: qpos at t, action[t : t + H] zero-padded, is_pad True past the episode end.
        np.testing.assert_allclose(s["qpos"].numpy(), episode_files.lowdim(length, 8, -1.0)[t], atol=1e-6)
        n = min(5, length - t)
        expected = np.zeros((5, 8), np.float32)
        expected[:n] = episode_files.lowdim(length, 8)[t:t + n]
        np.testing.assert_array_equal(s["action"].numpy(), expected)
        assert s["is_pad"].dtype == torch.bool and s["is_pad"].tolist() == [i >= n for i in range(5)]
        # done: the file's /done (last 3 steps) for the chunk's steps, 1 past the end.
        assert s["done"].tolist() == [1.0 if t + i >= length - 3 else 0.0 for i in range(5)]
        assert s["images"].dtype == torch.uint8 and s["images"].shape == (2, 3, 16, 20)
        assert int(s["images"][1, 0, 0, 0]) == episode_files.pixel_value(t, "wrist")
        assert s["task"] == f"task {ds.records[e].path.name[8]}"


def test_collated_batch_has_the_policy_batch_format(folder: Path):
    train, _, _, info = build_datasets(folder, camera_names=["wrist"], chunk_size=7, seed=1)
    batch = next(iter(DataLoader(train, batch_size=4, shuffle=True)))
    assert batch["images"].shape == (4, 1, 3, 16, 20) and batch["images"].dtype == torch.uint8
    assert batch["qpos"].shape == (4, 8) and batch["qpos"].dtype == torch.float32
    assert batch["action"].shape == (4, 7, 8) and batch["is_pad"].shape == (4, 7)
    assert batch["done"].dtype == torch.float32 and isinstance(batch["task"], list)
    assert info.camera_names == ["wrist"] and info["image_shape"] == (16, 20, 3)
    assert info.fps == 30.0 and info.state_dim == 8 and info.action_dim == 8


def test_split_is_by_episode_seeded_and_disjoint(folder: Path):
    train, val, _, info = build_datasets(folder, val_fraction=0.4, seed=3)
    assert len(info.train_episodes) == 3 and len(info.val_episodes) == 2
    assert not set(info.train_episodes) & set(info.val_episodes)
    assert sorted(info.train_episodes + info.val_episodes) == sorted(info.episodes)
    assert {p.name for p in train.paths} == set(info.train_episodes)
    assert len(train) + len(val) == 9 + 14 + 11 + 6 + 12
    again = build_datasets(folder, val_fraction=0.4, seed=3)[3]
    assert again.val_episodes == info.val_episodes
    splits = {tuple(split_episodes(10, 0.2, seed)[1]) for seed in range(6)}
    assert len(splits) > 1  # the seed matters
    assert split_episodes(10, 0.2, 0)[1] == split_episodes(10, 0.2, 0)[1]
    assert len(split_episodes(10, 0.2, 0)[1]) == 2


def test_single_episode_validates_on_itself_and_zero_fraction_has_no_val(tmp_path: Path, episode_files):
    episode_files.v1(tmp_path, 0, length=8)
    train, val, _, info = build_datasets(tmp_path)
    assert info.val_is_train and val is not None and len(val) == len(train) == 8
    assert build_datasets(tmp_path, val_fraction=0.0)[1] is None


def test_norm_stats_as_act_over_all_steps(folder: Path, episode_files):
    _, _, stats, _ = build_datasets(folder, val_fraction=0.4)
    assert set(stats) == set(NormStats.KEYS)
    assert all(v.dtype == np.float32 for v in stats.values())
    action = np.concatenate([episode_files.lowdim(n, 8) for n in (9, 14, 11, 6, 12)])
    ref = torch.from_numpy(action)
    np.testing.assert_allclose(stats["action_mean"], ref.mean(0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(stats["action_std"], ref.std(0).clip(min=1e-2).numpy(), rtol=1e-5)
    np.testing.assert_allclose(stats["action_min"], action.min(0), rtol=1e-6)
    qpos = np.concatenate([episode_files.lowdim(n, 8, -1.0) for n in (9, 14, 11, 6, 12)])
    np.testing.assert_allclose(stats["qpos_max"], qpos.max(0), rtol=1e-6)
    np.testing.assert_allclose(stats["qpos_std"], torch.from_numpy(qpos).std(0).numpy(), rtol=1e-5)
    constant = compute_norm_stats([np.ones((5, 2))], [np.zeros((5, 3))])
    assert np.all(constant["action_std"] == np.float32(1e-2))  # the floor ACT clips to


def test_cache_and_disk_give_identical_samples_and_workers_open_their_own_files(folder: Path):
    paths = sorted(folder.glob("*.hdf5"))
    disk = EpisodeDataset(paths, chunk_size=4, cache_bytes=0)
    ram = EpisodeDataset(paths, chunk_size=4)
    assert ram.cached and not disk.cached
    for index in (0, 10, len(disk) - 1):
        a, b = disk[index], ram[index]
        for key in ("images", "qpos", "action", "is_pad", "done"):
            assert torch.equal(a[key], b[key]), key
    # Open h5py handles are never pickled: a pickled dataset still reads in another process.
    pickle.loads(pickle.dumps(disk))
    loader = DataLoader(disk, batch_size=len(disk), num_workers=2, shuffle=False)
    batch = next(iter(loader))
    ref = torch.stack([disk[i]["images"] for i in range(len(disk))])
    assert torch.equal(batch["images"], ref)
    disk.close()


def test_resize_at_load_time_and_goal_images(tmp_path: Path, episode_files):
    episode_files.v1(tmp_path, 0, length=6, cams={"top": (16, 20)}, goal=True, task="stack")
    episode_files.v1(tmp_path, 1, length=7, cams={"top": (16, 20)}, goal=True, task="stack")
    train, _, _, info = build_datasets(tmp_path, image_size=(8, 10), val_fraction=0.5)
    s = train[0]
    assert s["images"].shape == (1, 3, 8, 10) and info.image_shape == (8, 10, 3)
    assert s["goal_image"].shape == (3, 8, 10) and int(s["goal_image"][1, 0, 0]) == 7
    # Without stored goal images, goal_images=True falls back to the episode's last frame.
    episode_files.v1(tmp_path / "nogoal", 0, length=6)
    ds = EpisodeDataset(sorted((tmp_path / "nogoal").glob("*.hdf5")), goal_images=True)
    assert int(ds[0]["goal_image"][0, 0, 0]) == episode_files.pixel_value(5, "top")
    assert "goal_image" not in EpisodeDataset(ds.paths)[0] and "task" not in ds[0]


def test_augmentation_is_off_by_default_and_keeps_uint8(folder: Path):
    paths = sorted(folder.glob("*.hdf5"))[:1]
    plain = EpisodeDataset(paths, chunk_size=2)
    assert torch.equal(plain[3]["images"], plain[3]["images"])
    aug = EpisodeDataset(paths, chunk_size=2, augment=ImageAugment(shift=2, brightness=0.5))
    outs = [aug[3]["images"] for _ in range(6)]
    assert all(o.dtype == torch.uint8 and o.shape == plain[3]["images"].shape for o in outs)
    assert any(not torch.equal(o, plain[3]["images"]) for o in outs)


def test_act_real_files_shift_actions_one_step_as_act(tmp_path: Path, episode_files):
    episode_files.act(tmp_path, 0, length=8, sim=False)
    shifted = EpisodeDataset([tmp_path / "episode_0.hdf5"], chunk_size=3)
    plain = EpisodeDataset([tmp_path / "episode_0.hdf5"], chunk_size=3, act_real_shift=False)
    np.testing.assert_allclose(shifted[4]["action"].numpy(), episode_files.lowdim(8, 14)[3:6], atol=1e-6)
    np.testing.assert_allclose(plain[4]["action"].numpy(), episode_files.lowdim(8, 14)[4:7], atol=1e-6)
    np.testing.assert_allclose(shifted[0]["action"].numpy(), episode_files.lowdim(8, 14)[0:3], atol=1e-6)


def test_history_steps_for_policies_that_look_back(tmp_path: Path, episode_files):
    episode_files.v1(tmp_path, 0, length=8, cams={"top": (16, 20)})
    ds = EpisodeDataset([tmp_path / "episode_0.hdf5"], chunk_size=3, history=2)
    s = ds[5]  # steps 3 and 4 before step 5, oldest first
    assert s["history_images"].shape == (2, 1, 3, 16, 20) and s["history_valid"].tolist() == [True, True]
    assert [int(s["history_images"][i, 0, 0, 0, 0]) for i in range(2)] == [
        episode_files.pixel_value(3, "top"), episode_files.pixel_value(4, "top")]
    np.testing.assert_allclose(s["history_qpos"].numpy(), episode_files.lowdim(8, 8, -1.0)[3:5], atol=1e-6)
    np.testing.assert_allclose(s["history_action"].numpy(), episode_files.lowdim(8, 8)[3:5], atol=1e-6)
    assert torch.equal(s["image_history"], s["history_images"])
    first = ds[1]  # one step before the start: invalid, repeats step 0, action 0
    assert first["history_valid"].tolist() == [False, True]
    assert int(first["history_images"][0, 0, 0, 0, 0]) == episode_files.pixel_value(0, "top")
    assert not first["history_action"][0].any() and first["history_action"][1].any()
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["history_images"].shape == (4, 2, 1, 3, 16, 20)


# -- bad input ---------------------------------------------------------------------------------
def test_empty_or_missing_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(DataError, match="episode"):
        build_datasets(tmp_path)
    with pytest.raises(DataError, match="nope"):
        build_datasets(tmp_path / "nope")


def test_mismatched_cameras_name_the_file(tmp_path: Path, episode_files):
    episode_files.v1(tmp_path, 0, cams={"top": (16, 20), "wrist": (16, 20)})
    bad = episode_files.v1(tmp_path, 1, cams={"top": (16, 20)})
    with pytest.raises(DataError, match=rf"{bad.name}.*wrist"):
        build_datasets(tmp_path)
    build_datasets(tmp_path, camera_names=["top"])  # a camera both have is fine


def test_mismatched_dims_name_the_file(tmp_path: Path, episode_files):
    episode_files.v1(tmp_path, 0)
    bad = episode_files.v1(tmp_path, 1, state_dim=7)
    with pytest.raises(DataError, match=rf"{bad.name}.*state_dim"):
        build_datasets(tmp_path)


def test_mismatched_image_sizes_need_a_resize(tmp_path: Path, episode_files):
    episode_files.v1(tmp_path, 0, cams={"top": (16, 20)})
    bad = episode_files.v1(tmp_path, 1, cams={"top": (12, 20)})
    with pytest.raises(DataError, match=rf"{bad.name}.*image-size"):
        build_datasets(tmp_path)
    assert build_datasets(tmp_path, image_size=(12, 20))[3].image_shape == (12, 20, 3)


def test_nan_in_actions_names_the_file_and_step(tmp_path: Path, episode_files):
    episode_files.v1(tmp_path, 0)
    bad = episode_files.v1(tmp_path, 1, nan_at=4)
    with pytest.raises(DataError, match=rf"{bad.name}.*action.*step 4"):
        build_datasets(tmp_path)
