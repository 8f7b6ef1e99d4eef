"""Shared test set-up: headless rendering, one torch thread per process, and shared fixtures.

The models in the tests are tiny: a second thread gains nothing, and on a busy 2-core machine two
spinning OpenMP threads per process make every step many times slower. Subprocesses (CLI tests,
torchrun) inherit OMP_NUM_THREADS.

Fixtures for several test modules:

* ``episode_files``: writers of episode files in every layout robokit reads, with known values in
  every field (see :class:`EpisodeFiles`);
* ``make_tiny_policy`` / ``make_tiny_checkpoint``: untrained ACT, CNN-MLP or GRP policies small
  enough for CPU tests, and checkpoint files of them.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["OMP_NUM_THREADS"] = "1"

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import cv2
import h5py
import numpy as np
import pytest
import torch

torch.set_num_threads(1)


class EpisodeFiles:
    """Episode files of every layout robokit reads, written with h5py as their recorders write them.

    Every field holds a known value: ``action[t, j] = t + j / 100``, ``qpos[t, j] = -(t + j / 100)``
    (:meth:`lowdim`), and each camera's frame at step t is a flat colour whose red channel is
    :meth:`pixel_value`, so a sample's contents can be checked exactly against the step it came from.
    Each writer returns the path of ``folder/episode_{index}.hdf5``.
    """

    CAM_OFFSET: ClassVar[dict[str, int]] = {"top": 0, "wrist": 100, "side": 50}

    @classmethod
    def pixel_value(cls, t: int, cam: str) -> int:
        return (3 * t + cls.CAM_OFFSET.get(cam, 0)) % 250

    @classmethod
    def frame(cls, t: int, cam: str, hw: tuple[int, int]) -> np.ndarray:
        """Flat RGB frame: R = pixel_value, G = R // 2, B = 255 - R."""
        v = cls.pixel_value(t, cam)
        img = np.empty((*hw, 3), dtype=np.uint8)
        img[..., 0], img[..., 1], img[..., 2] = v, v // 2, 255 - v
        return img

    @staticmethod
    def lowdim(length: int, dim: int, sign: float = 1.0) -> np.ndarray:
        t = np.arange(length, dtype=np.float64)[:, None]
        j = np.arange(dim, dtype=np.float64)[None, :]
        return sign * (t + j / 100.0)

    def frames(self, cam: str, hw: tuple[int, int], length: int) -> np.ndarray:
        return np.stack([self.frame(t, cam, hw) for t in range(length)])

    @staticmethod
    def _path(folder: Path, index: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"episode_{index}.hdf5"

    def v1(self, folder: Path, index: int, length: int = 12, cams: dict | None = None, state_dim: int = 8,
           action_dim: int = 8, task: str = "", fps: float = 30.0, done_tail: int = 3,
           goal: bool = False, nan_at: int | None = None, sim: bool = True) -> Path:
        """A robokit v1 episode; ``goal`` adds goal images, ``nan_at`` a NaN action at that step."""
        cams = cams or {"top": (16, 20)}
        path = self._path(folder, index)
        action = self.lowdim(length, action_dim).astype(np.float32)
        if nan_at is not None:
            action[nan_at, 1] = np.nan
        with h5py.File(path, "w") as f:
            f.attrs.update({"format": "robokit.episode", "version": 1, "sim": sim, "robot": "panda",
                            "fps": fps, "task": task, "camera_names": list(cams),
                            "action_space": "joint_pos", "source": "scripted", "compress": False,
                            "image_compression": "none", "num_steps": length})
            f["action"] = action
            f["observations/qpos"] = self.lowdim(length, state_dim, -1.0).astype(np.float32)
            f["observations/qvel"] = np.zeros((length, state_dim), np.float32)
            for cam, hw in cams.items():
                f.create_dataset(f"observations/images/{cam}", chunks=(1, *hw, 3),
                                 data=self.frames(cam, hw, length))
                f[f"timestamps/{cam}"] = np.arange(length) / fps
            f["timestamps/robot"] = np.arange(length) / fps
            done = np.zeros(length, bool)
            done[length - done_tail:] = True
            f["done"] = done
            if goal:
                for cam, hw in cams.items():
                    goal_img = self.frame(length - 1, cam, hw)
                    goal_img[..., 1] = 7  # distinguishable from every recorded frame
                    f[f"goal_images/{cam}"] = goal_img
        return path

    def act(self, folder: Path, index: int, length: int = 12, cams: dict | None = None, sim: bool = True,
            dim: int = 14) -> Path:
        """An original-ACT/ALOHA episode: float64, qvel, images (T, H, W, 3), only the ``sim`` attribute."""
        cams = cams or {"top": (16, 20)}
        path = self._path(folder, index)
        with h5py.File(path, "w") as f:
            self._act_fields(f, length, dim, sim)
            for cam, hw in cams.items():
                f.create_dataset(f"observations/images/{cam}", chunks=(1, *hw, 3),
                                 data=self.frames(cam, hw, length))
        return path

    def aloha_jpeg(self, folder: Path, index: int, length: int = 12, cams: dict | None = None,
                   dim: int = 14) -> Path:
        """ALOHA's compressed layout: ``compress`` attr, JPEG rows padded with zeros, ``/compress_len``."""
        cams = cams or {"top": (16, 20)}
        path = self._path(folder, index)
        with h5py.File(path, "w") as f:
            self._act_fields(f, length, dim, sim=False)
            f.attrs["compress"] = True
            lens = np.zeros((len(cams), length), np.float32)
            for k, (cam, hw) in enumerate(cams.items()):
                # ALOHA passes its RGB frames to cv2.imencode as they are; cv2.imdecode gives them back.
                rows = [cv2.imencode(".jpg", self.frame(t, cam, hw), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
                        for t in range(length)]
                padded = np.zeros((length, max(len(r) for r in rows)), np.uint8)
                for t, r in enumerate(rows):
                    padded[t, :len(r)] = r.ravel()
                    lens[k, t] = len(r)
                f[f"observations/images/{cam}"] = padded
            f["compress_len"] = lens
        return path

    def _act_fields(self, f: h5py.File, length: int, dim: int, sim: bool) -> None:
        f.attrs["sim"] = sim
        f["action"] = self.lowdim(length, dim)
        f["observations/qpos"] = self.lowdim(length, dim, -1.0)
        f["observations/qvel"] = np.zeros((length, dim))

    def live_record(self, folder: Path, index: int, length: int = 12, hw: tuple[int, int] = (16, 20)) -> Path:
        """The original Franka recorder's layout (its live_record.py): qpos == action (T, 8), the 8th
        column an end marker on the last 5 frames, one camera of BGR frames, attrs ``sim`` only."""
        path = self._path(folder, index)
        state = np.concatenate([self.lowdim(length, 7), np.zeros((length, 1))], axis=1)
        state[length - 5:, 7] = 1.0
        with h5py.File(path, "w") as f:
            f.attrs["sim"] = True
            f.create_dataset("observations/images/top", chunks=(1, *hw, 3),
                             data=np.ascontiguousarray(self.frames("top", hw, length)[..., ::-1]))
            f["observations/qpos"] = state
            f["action"] = state
        return path


@pytest.fixture(scope="session")
def episode_files() -> EpisodeFiles:
    """Writers of episode files in every layout, with known values (see :class:`EpisodeFiles`)."""
    return EpisodeFiles()


def _record_episode(folder: Path, index: int = 0, cams: tuple[str, ...] = ("top", "wrist"), steps: int = 24,
                    hw: tuple[int, int] = (48, 64), chunks: np.ndarray | None = None,
                    task: str = "pick the cube") -> Path:
    from robokit.episodes.writer import EpisodeWriter

    h, w = hw
    writer = EpisodeWriter(
        folder, index, camera_shapes={c: (h, w, 3) for c in cams},
        attrs={"fps": 10.0, "task": task, "robot": "sim", "sim": True, "source": "test"},
        extra_step_datasets=None if chunks is None else {"predicted_chunks": chunks.shape[1:]})
    for t in range(steps):
        q = np.full(8, np.sin(t / 5.0), np.float32)
        images = {}
        for k, c in enumerate(cams):
            image = np.zeros((h, w, 3), np.uint8)
            image[:, (2 * t + 10 * k) % w] = (255, 0, 0)
            images[c] = image
        writer.append(q, np.zeros(8, np.float32), q + 0.1, images, t_robot=100.0 + t / 10.0,
                      t_images={c: 100.0 + t / 10.0 for c in cams}, done=t >= steps - 3,
                      extras=None if chunks is None or np.isnan(chunks[t]).all()
                      else {"predicted_chunks": chunks[t]})
    return writer.save(success=True)


@pytest.fixture(scope="session")
def record_episode() -> Callable[..., Path]:
    """``record_episode(folder, index=0, cams=("top", "wrist"), steps=24, hw=(48, 64), chunks=None)``:
    the path of a robokit v1 episode written by robokit's own ``EpisodeWriter``.

    Task "pick the cube" at 10 fps, done on the last 3 steps; every joint at ``sin(t / 5)`` with the
    action 0.1 above it; each camera black with a red column moving 2 px a step (camera k 10 px
    further right). ``chunks`` (steps, H, A), NaN rows for steps without a query, makes it a rollout
    with ``predicted_chunks``.
    """
    return _record_episode


def _read_video(path: str | Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return frames
            frames.append(frame)
    finally:
        cap.release()


@pytest.fixture(scope="session")
def read_video() -> Callable[[str | Path], list[np.ndarray]]:
    """``read_video(path)``: every frame (BGR) of a video file; none if it cannot be read."""
    return _read_video


def _fit_batch(policy: Any, batch: dict[str, Any], steps: int, lr: float,
               param_groups: list[dict[str, Any]] | None = None) -> dict[str, torch.Tensor]:
    opt = torch.optim.AdamW(policy.parameters() if param_groups is None else param_groups, lr=lr)
    for _ in range(steps):
        losses = policy.compute_loss(batch)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    return losses


@pytest.fixture(scope="session")
def fit_batch() -> Callable[..., dict[str, torch.Tensor]]:
    """``fit_batch(policy, batch, steps, lr, param_groups=None)``: ``steps`` AdamW steps of ``policy``
    on the one ``batch`` (over ``param_groups`` if given, else all parameters); returns the loss
    terms of the last step."""
    return _fit_batch


# Untrained policies small enough to build, save and run in a fraction of a second on a CPU.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "act": {"camera_names": ["top"], "image_shape": (24, 32, 3), "chunk_size": 10, "backbone": "small",
            "hidden_dim": 32, "nheads": 2, "dim_feedforward": 64, "enc_layers": 1, "dec_layers": 1,
            "vae_enc_layers": 1, "latent_dim": 8},
    "cnnmlp": {"camera_names": ["top"], "image_shape": (24, 32, 3), "backbone": "small",
               "mlp_hidden_dim": 16},
    "grp": {"camera_names": ["top"], "image_shape": (32, 32, 3), "n_embd": 32, "n_head": 2, "task_dim": 16,
            "n_blocks": 2, "chunk_size": 5,
            "vocabulary": ["blue", "bowl", "cube", "green", "in", "on", "plate", "put", "red", "the", "yellow", "zone"]},
}


@pytest.fixture(scope="session")
def make_tiny_policy() -> Callable[..., Any]:
    """``make_tiny_policy(name="act", seed=0, **config)``: an untrained tiny policy built under
    ``seed`` from :data:`TINY_CONFIGS` with ``config`` overriding its fields."""
    from robokit.policies.registry import get_policy_class

    def make(name: str = "act", seed: int = 0, **config: Any) -> Any:
        cls = get_policy_class(name)
        torch.manual_seed(seed)
        return cls(cls.config_class(**{**TINY_CONFIGS[name], **config}))

    return make


@pytest.fixture(scope="session")
def make_tiny_checkpoint(make_tiny_policy, tmp_path_factory) -> Callable[..., Path]:
    """``make_tiny_checkpoint(name="act", train_meta=None, **config)``: the path of a new checkpoint
    file of ``make_tiny_policy(name, **config)``."""
    from robokit.policies.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("tiny_checkpoints")
    numbers = itertools.count()

    def make(name: str = "act", train_meta: dict | None = None, **config: Any) -> Path:
        path = folder / f"{name}_{next(numbers)}.pt"
        save_checkpoint(path, make_tiny_policy(name, **config), train_meta or {})
        return path

    return make
