"""Episode files of every layout robokit reads, written in the test, read through the datasets.

The writers here (also used by the other data/train tests) put known values in every field:
``action[t, j] = t + j / 100``, ``qpos[t, j] = -(t + j / 100)``, and each camera's frame at step t
is a flat colour whose red channel is ``pixel_value(t, cam)``, so a sample's contents can be checked
exactly against the step it came from.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from robokit.training.dataset import EpisodeDataset, build_datasets

CAM_OFFSET = {"top": 0, "wrist": 100, "side": 50}


def pixel_value(t: int, cam: str) -> int:
    return (3 * t + CAM_OFFSET.get(cam, 0)) % 250


def frame(t: int, cam: str, hw: tuple[int, int]) -> np.ndarray:
    """Flat RGB frame: R = pixel_value, G = R // 2, B = 255 - R."""
    v = pixel_value(t, cam)
    img = np.empty((*hw, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = v, v // 2, 255 - v
    return img


def lowdim(length: int, dim: int, sign: float = 1.0) -> np.ndarray:
    t = np.arange(length, dtype=np.float64)[:, None]
    j = np.arange(dim, dtype=np.float64)[None, :]
    return sign * (t + j / 100.0)


def write_v1(folder: Path, index: int, length: int = 12, cams: dict | None = None, state_dim: int = 8,
             action_dim: int = 8, task: str = "", fps: float = 30.0, done_tail: int = 3,
             goal: bool = False, nan_at: int | None = None, sim: bool = True) -> Path:
    """A robokit v1 episode (DESIGN §4) written directly with h5py."""
    cams = cams or {"top": (16, 20)}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"episode_{index}.hdf5"
    action = lowdim(length, action_dim).astype(np.float32)
    if nan_at is not None:
        action[nan_at, 1] = np.nan
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "robokit.episode", "version": 1, "sim": sim, "robot": "panda",
                        "fps": fps, "task": task, "camera_names": list(cams),
                        "action_space": "joint_pos", "source": "scripted", "compress": False,
                        "image_compression": "none", "num_steps": length})
        f["action"] = action
        f["observations/qpos"] = lowdim(length, state_dim, -1.0).astype(np.float32)
        f["observations/qvel"] = np.zeros((length, state_dim), np.float32)
        for cam, hw in cams.items():
            f.create_dataset(f"observations/images/{cam}", chunks=(1, *hw, 3),
                             data=np.stack([frame(t, cam, hw) for t in range(length)]))
            f[f"timestamps/{cam}"] = np.arange(length) / fps
        f["timestamps/robot"] = np.arange(length) / fps
        done = np.zeros(length, bool)
        done[length - done_tail:] = True
        f["done"] = done
        if goal:
            for cam, hw in cams.items():
                goal_img = frame(length - 1, cam, hw)
                goal_img[..., 1] = 7  # distinguishable from every recorded frame
                f[f"goal_images/{cam}"] = goal_img
    return path


def write_act(folder: Path, index: int, length: int = 12, cams: dict | None = None, sim: bool = True,
              dim: int = 14) -> Path:
    """An original-ACT episode: float64, qvel, images (T, H, W, 3), only the ``sim`` attribute."""
    cams = cams or {"top": (16, 20)}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"episode_{index}.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = sim
        f["action"] = lowdim(length, dim)
        f["observations/qpos"] = lowdim(length, dim, -1.0)
        f["observations/qvel"] = np.zeros((length, dim))
        for cam, hw in cams.items():
            f.create_dataset(f"observations/images/{cam}", chunks=(1, *hw, 3),
                             data=np.stack([frame(t, cam, hw) for t in range(length)]))
    return path


def write_aloha_jpeg(folder: Path, index: int, length: int = 12, cams: dict | None = None,
                     dim: int = 14) -> Path:
    """ALOHA's compressed layout: ``compress`` attr, JPEG rows padded with zeros, ``/compress_len``."""
    cams = cams or {"top": (16, 20)}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"episode_{index}.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = False
        f.attrs["compress"] = True
        f["action"] = lowdim(length, dim)
        f["observations/qpos"] = lowdim(length, dim, -1.0)
        f["observations/qvel"] = np.zeros((length, dim))
        lens = np.zeros((len(cams), length), np.float32)
        for k, (cam, hw) in enumerate(cams.items()):
            # ALOHA passes its RGB frames to cv2.imencode as they are; cv2.imdecode gives them back.
            rows = [cv2.imencode(".jpg", frame(t, cam, hw), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
                    for t in range(length)]
            width = max(len(r) for r in rows)
            padded = np.zeros((length, width), np.uint8)
            for t, r in enumerate(rows):
                padded[t, :len(r)] = r.ravel()
                lens[k, t] = len(r)
            f[f"observations/images/{cam}"] = padded
        f["compress_len"] = lens
    return path


def write_live_record(folder: Path, index: int, length: int = 12, hw: tuple[int, int] = (16, 20)) -> Path:
    """The original Franka recorder's layout (live_record.py): qpos == action (T, 8), 8th column = end marker on the last 5
    frames, one camera of BGR frames, attrs ``sim`` only."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"episode_{index}.hdf5"
    state = np.concatenate([lowdim(length, 7), np.zeros((length, 1))], axis=1)
    state[length - 5:, 7] = 1.0
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = True
        f.create_dataset("observations/images/top", chunks=(1, *hw, 3),
                         data=np.stack([frame(t, "top", hw)[..., ::-1] for t in range(length)]))
        f["observations/qpos"] = state
        f["action"] = state
    return path


def check_sample_matches(ds: EpisodeDataset, index: int, action_full: np.ndarray, t: int, shift: int = 0,
                         tol: int = 0) -> None:
    sample = ds[index]
    chunk = ds.chunk_size
    start = max(0, t - shift)
    expected = np.zeros((chunk, action_full.shape[1]), np.float32)
    n = min(chunk, len(action_full) - start)
    expected[:n] = action_full[start:start + n]
    np.testing.assert_allclose(sample["action"].numpy(), expected, atol=1e-6)
    assert sample["is_pad"].tolist() == [i >= n for i in range(chunk)]
    for k, cam in enumerate(ds.camera_names):
        red = sample["images"][k, 0].numpy().astype(int)
        assert np.abs(red - pixel_value(t, cam)).max() <= tol, (cam, t)


@pytest.mark.parametrize("layout", ["v1", "act", "act-real", "aloha-jpeg", "live-record"])
def test_every_layout_reads_into_samples(tmp_path: Path, layout: str):
    folder = tmp_path / layout
    for i in range(2):
        if layout == "v1":
            write_v1(folder, i, length=10 + i, cams={"top": (16, 20), "wrist": (16, 20)})
        elif layout == "act":
            write_act(folder, i, length=10 + i, cams={"top": (16, 20), "wrist": (16, 20)})
        elif layout == "act-real":
            write_act(folder, i, length=10 + i, sim=False)
        elif layout == "aloha-jpeg":
            write_aloha_jpeg(folder, i, length=10 + i, cams={"top": (16, 24), "wrist": (16, 24)})
        else:
            write_live_record(folder, i, length=10 + i)
    train, val, stats, info = build_datasets(folder, chunk_size=4, val_fraction=0.5, seed=0)
    expected_layout = {"v1": "robokit-v1", "act-real": "act"}.get(layout, layout)
    assert info.layouts == [expected_layout]
    assert len(train) + len(val) == 21
    dim = 8 if layout == "v1" else 7 if layout == "live-record" else 14
    assert info.action_dim == dim and stats["action_mean"].shape == (dim,)
    tol = 3 if layout == "aloha-jpeg" else 0
    shift = 1 if layout in ("act-real", "aloha-jpeg") else 0  # ACT's real-robot alignment
    for ds in (train, val):
        for index in (0, 3, len(ds) - 1):
            e, t = ds.locate(index)
            length = ds.records[e].length
            check_sample_matches(ds, index, lowdim(length, dim), t, shift=shift, tol=tol)
    if layout == "live-record":
        # The 8th state column is its end marker: it becomes `done`, not state.
        sample = train[len(train) - 1]
        assert sample["done"][0] == 1.0 and sample["qpos"].shape == (7,)
