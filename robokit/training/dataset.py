"""Episode datasets for training policies.

A dataset is built from a folder of episode files in any layout that :mod:`robokit.episodes.reader`
reads (robokit v1, ACT/ALOHA raw or JPEG-compressed, the original Franka recorder's ``live-record`` layout).

Sample semantics follow the original ACT loader (``tonyzhaozh/act``, ``utils.EpisodicDataset``):
for a start step ``t`` of an episode of length ``T`` a sample holds the images and ``qpos`` at ``t``
and the action chunk ``action[t : t + H]``, zero-padded to ``H`` steps, with ``is_pad[i] = True``
where ``t + i >= T``. For ACT/ALOHA files recorded on a real robot (``sim`` attribute false) the
chunk starts one step earlier (``max(0, t - 1)``), as ACT's loader does to align its real-robot
action timestamps (``act_real_shift``). Robokit and live-record files are never shifted: their
``/action[t]`` is the command issued after observing step ``t``.

Where ACT draws one random ``t`` per episode per index, a dataset here has one index per step of
every episode (``len(ds) == total steps``): a shuffled pass visits every start step exactly once,
so epochs and validation are well defined, and the per-index contents are exactly ACT's.

Each sample also carries ``done`` (the episode's ``/done`` for the chunk's steps; 1 past the end),
and, for goal-conditioned datasets, ``task`` (instruction text) and ``goal_image``. Asked for
(``object_boxes``), samples of simulated recordings carry the objects' boxes at step ``t`` from
``/objects/<name>/box_<cam>`` (see :class:`EpisodeDataset`); batch them with
:func:`~robokit.training.episode_records.collate_samples`.

Speed: the low-dimensional arrays (qpos, action, done) of every episode are read once into RAM;
per sample only the image rows at ``t`` are read, through file handles that each DataLoader worker
opens lazily (they are never pickled); images stay uint8 until the model. When the decoded images
fit under ``cache_bytes`` they are decoded once into one contiguous uint8 array per camera and
samples are slices of it (DataLoader workers share it copy-on-write after fork).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from robokit.episodes.reader import Episode, list_episodes, open_episode
from robokit.errors import ConfigError, DataError
from robokit.lerobot.layout import refuse_lerobot_folder
from robokit.policies.preprocess import resize_image
from robokit.training.augment import ImageAugment
from robokit.training.episode_records import (
    EpisodeRecord,
    check_consistent,
    close_episode,
    common_fps,
    compute_norm_stats,
    dataset_object_names,
    episode_object_arrays,
    read_episode_record,
    task_object_tracks,
)

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 4 * 1024**3


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------
def _resize(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    return image if size is None else resize_image(image, *size)


def _to_chw(image_hwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image_hwc.transpose(2, 0, 1))


class EpisodeDataset(Dataset):
    """One sample per (episode, start step); samples are dicts in the batch format of base.py.

    ``episodes``: episode paths or :class:`EpisodeRecord` s (from :func:`read_episode_record`).
    ``camera_names``: cameras, in the order the model sees them (default: the first episode's).
    ``chunk_size``: H, the action-chunk length. ``image_size``: (H, W) to resize images to at
    load time (default: native size). ``augment``: :class:`ImageAugment` (off by default).
    ``cache_bytes``: decode every image into RAM once when they fit under this many bytes
    (0 disables). ``goal_images``: include ``goal_image`` (``/goal_images/<goal_camera>``, or the
    episode's last frame of that camera when the file has none); None = only when every episode
    has one. ``act_real_shift``: ACT's one-step action shift for real-robot ACT/ALOHA files.
    ``history``: also return the ``history`` steps before t (oldest first) for policies that look
    back (VIMA's ``history_len - 1``, GRP's ``obs_stacking - 1``): ``history_images`` uint8
    (n, K, 3, H, W) (also under GRP's name ``image_history``), ``history_qpos`` (n, S),
    ``history_action`` (n, A) (the action taken at each of those steps) and ``history_valid`` bool
    (n,): False before the episode's start, where frames and qpos repeat step 0 and actions are 0.
    ``object_boxes``: add the objects' boxes at step t from the episodes' ``/objects/<name>/box_<cam>``
    (False, the default: no; None: when some episode has them; True: required, DataError if none
    has): ``object_boxes`` float32 (N, 4) normalised [x0, y0, x1, y1], ``object_camera`` int64 (N,)
    (index into ``camera_names``), ``object_valid`` bool (N,), ``object_names`` list (N) of str.
    N is the same for every sample: ``object_names`` (default :func:`dataset_object_names` of these
    episodes; give the whole dataset's so train and validation splits agree). Batch such samples
    with :func:`~robokit.training.episode_records.collate_samples`. Boxes are in RAM with the other low-dimensional arrays.
    ``task_object``: add where the episode's moved object (the one its instruction names) is at
    step t in each camera, from the same boxes: ``task_object_xy`` float32 (K, 2) box centres as
    (x, y) fractions of the image and ``task_object_valid`` bool (K,) (a training target; see
    :func:`~robokit.training.episode_records.task_object_tracks`).
    """

    def __init__(
        self,
        episodes: Sequence[str | Path | EpisodeRecord],
        camera_names: Sequence[str] | None = None,
        chunk_size: int = 100,
        image_size: tuple[int, int] | None = None,
        augment: ImageAugment | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        goal_images: bool | None = None,
        goal_camera: str | None = None,
        act_real_shift: bool = True,
        seed: int = 0,
        history: int = 0,
        object_boxes: bool | None = False,
        object_names: Sequence[str] | None = None,
        task_object: bool = False,
    ) -> None:
        if len(episodes) == 0:
            raise DataError("the dataset has no episodes")
        if int(chunk_size) <= 0:
            raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
        self.records = [e if isinstance(e, EpisodeRecord) else read_episode_record(e) for e in episodes]
        first = self.records[0]
        self.camera_names = list(camera_names) if camera_names else list(first.camera_names)
        if not self.camera_names:
            raise DataError(f"{first.path}: the episode has no cameras")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        check_consistent(self.records, self.camera_names, self.image_size)
        self.chunk_size = int(chunk_size)
        self.augment = augment if augment is not None and augment.enabled else None
        self.act_real_shift = act_real_shift
        self.seed = int(seed)
        self.history = int(history)
        if self.history < 0:
            raise ConfigError(f"history must be >= 0 steps, got {history}")
        if self.history and self.augment is not None:
            raise ConfigError("image augmentation with observation history is not supported; "
                              "switch augmentation off or use a policy without history")
        self.state_dim, self.action_dim = first.state_dim, first.action_dim
        h, w = self.image_size or first.image_shapes[self.camera_names[0]][:2]
        self.image_shape = (int(h), int(w), 3)

        lengths = [r.length for r in self.records]
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._start_list = self._starts.tolist()
        self._shift = [self._action_shift(r) for r in self.records]
        self.tasks = [r.task for r in self.records]
        self.has_task = all(t for t in self.tasks)

        self.goal_camera = goal_camera or self.camera_names[0]
        has_goal = all(self.goal_camera in r.goal_cameras for r in self.records)
        self.has_goal = has_goal if goal_images is None else bool(goal_images)
        self._goals: list[np.ndarray] | None = self._read_goals() if self.has_goal else None

        self.object_names: list[str] = []
        self._objects: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        if object_boxes is not False:
            names = (list(object_names) if object_names is not None
                     else dataset_object_names(self.records, self.camera_names))
            if object_boxes and not names:
                raise DataError(f"{first.path.parent}: no episode has object boxes (/objects/<name>/box_<cam>) "
                                f"for camera(s) {', '.join(self.camera_names)}; record them in the simulation "
                                "or train without object boxes")
            if names:
                self.object_names = names
                self._objects = [episode_object_arrays(r, self.camera_names, names) for r in self.records]
        self._task_objects: list[tuple[np.ndarray, np.ndarray]] | None = None
        if task_object:
            self._task_objects = [task_object_tracks(r, self.camera_names) for r in self.records]
            if not any(valid.any() for _, valid in self._task_objects):
                raise DataError(f"{first.path.parent}: no episode has object boxes (/objects/<name>/box_<cam>) "
                                f"for camera(s) {', '.join(self.camera_names)}, so the object each episode "
                                "moves cannot be located; record them in the simulation or switch the "
                                "object pointer off")

        # Per-process state: never pickled into DataLoader workers (see __getstate__).
        self._handles: dict[int, Episode] = {}
        self._pid = os.getpid()
        self._rng: np.random.Generator | None = None

        self._cache: dict[str, np.ndarray] | None = None
        if 0 < self.decoded_bytes <= cache_bytes:
            self._cache = self._build_cache()
            self.close()

    # -- sizes ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_episodes(self) -> int:
        return len(self.records)

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self.records]

    @property
    def decoded_bytes(self) -> int:
        """RAM the decoded uint8 images of the chosen cameras take."""
        h, w, c = self.image_shape
        return len(self) * len(self.camera_names) * h * w * c

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def _action_shift(self, rec: EpisodeRecord) -> int:
        real_act = rec.layout in ("act", "aloha-jpeg") and rec.sim is False
        return 1 if (self.act_real_shift and real_act) else 0

    # -- file handles --------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        state["_rng"] = None
        return state

    def _episode(self, e: int) -> Episode:
        if self._pid != os.getpid():
            # Forked into a worker: handles inherited from the parent are not ours to use.
            self._handles = {}
            self._pid = os.getpid()
            self._rng = None
        ep = self._handles.get(e)
        if ep is None:
            ep = open_episode(self.records[e].path)
            self._handles[e] = ep
        return ep

    def close(self) -> None:
        """Close the file handles this process opened."""
        if self._pid == os.getpid():
            for ep in self._handles.values():
                close_episode(ep)
        self._handles = {}

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown h5py may already be gone
            self.close()

    # -- reading -------------------------------------------------------------------------------
    def _frames(self, e: int, t: int) -> np.ndarray:
        """uint8 (K, H, W, 3) frames of the chosen cameras at step t (from RAM or the file)."""
        if self._cache is not None:
            row = self._start_list[e] + t
            return np.stack([self._cache[cam][row] for cam in self.camera_names])
        ep = self._episode(e)
        return np.stack([_resize(ep.image(cam, t), self.image_size) for cam in self.camera_names])

    def _read_goals(self) -> list[np.ndarray]:
        goals = []
        for rec in self.records:
            with open_episode(rec.path) as ep:
                goal = ep.goal_image(self.goal_camera) if self.goal_camera in rec.goal_cameras else None
                if goal is None:
                    if self.goal_camera not in rec.camera_names:
                        raise DataError(f"{rec.path}: no camera '{self.goal_camera}' for goal images")
                    goal = ep.image(self.goal_camera, rec.length - 1)
                goals.append(_to_chw(_resize(np.asarray(goal, dtype=np.uint8), self.image_size)))
        return goals

    def _build_cache(self) -> dict[str, np.ndarray]:
        h, w, _ = self.image_shape
        cache = {cam: np.empty((len(self), h, w, 3), dtype=np.uint8) for cam in self.camera_names}
        for e, rec in enumerate(self.records):
            ep = self._episode(e)
            lo = self._start_list[e]
            for cam in self.camera_names:
                dst = cache[cam][lo:lo + rec.length]
                for t0 in range(0, rec.length, 64):  # a slab of frames per read
                    frames = ep.images(cam, t0, min(rec.length, t0 + 64))
                    if self.image_size is not None and frames.shape[1:3] != self.image_size:
                        frames = np.stack([_resize(f, self.image_size) for f in frames])
                    dst[t0:t0 + len(frames)] = frames
        log.info("decoded %d images (%.1f MB) into RAM", len(self) * len(self.camera_names),
                 self.decoded_bytes / 1e6)
        return cache

    def locate(self, index: int) -> tuple[int, int]:
        """(episode number, step) of a dataset index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        e = bisect.bisect_right(self._start_list, index) - 1
        return e, index - self._start_list[e]

    def _history(self, e: int, t: int) -> dict[str, torch.Tensor]:
        rec = self.records[e]
        steps = np.arange(t - self.history, t)
        valid = steps >= 0
        rows = np.maximum(steps, 0)
        frames = np.stack([self._frames(e, int(s)) for s in rows])  # (n, K, H, W, 3)
        images = torch.from_numpy(frames).permute(0, 1, 4, 2, 3)
        action = rec.action[rows] * valid[:, None]
        return {"history_images": images, "image_history": images,
                "history_qpos": torch.from_numpy(rec.qpos[rows]),
                "history_action": torch.from_numpy(action.astype(np.float32)),
                "history_valid": torch.from_numpy(valid)}

    def _augment_rng(self) -> np.random.Generator:
        if self._rng is None or self._pid != os.getpid():
            info = torch.utils.data.get_worker_info()
            # In a worker torch seeds each worker differently (base seed + id); derive from it.
            seed = info.seed if info is not None else self.seed
            self._rng = np.random.default_rng(seed % 2**63)
            self._pid = os.getpid()
        return self._rng

    def __getitem__(self, index: int) -> dict[str, Any]:
        e, t = self.locate(int(index))
        rec = self.records[e]
        # (K, H, W, 3) as stored, seen as (K, 3, H, W) without a copy: the one transposing copy
        # happens when the DataLoader collates the batch.
        images = torch.from_numpy(self._frames(e, t)).permute(0, 3, 1, 2)
        moved: list[tuple[int, int]] = []
        if self.augment is not None:
            rng = self._augment_rng()
            augmented = [self.augment.apply_with_shift(img, rng) for img in images.numpy()]
            images = torch.from_numpy(np.stack([img for img, _ in augmented]))
            moved = [shift for _, shift in augmented]

        h = self.chunk_size
        start = max(0, t - self._shift[e])
        stop = min(rec.length, start + h)
        n = stop - start
        action = np.zeros((h, self.action_dim), dtype=np.float32)
        action[:n] = rec.action[start:stop]
        is_pad = np.ones(h, dtype=bool)
        is_pad[:n] = False if rec.trainable is None else ~rec.trainable[start:stop]  # left-out steps: padding
        done = np.ones(h, dtype=np.float32)  # past the end of the episode the task is finished
        done[:n] = rec.done[start:stop]

        sample: dict[str, Any] = {
            "images": images,
            "qpos": torch.from_numpy(rec.qpos[t].copy()),
            "action": torch.from_numpy(action),
            "is_pad": torch.from_numpy(is_pad),
            "done": torch.from_numpy(done),
        }
        if self.history:
            sample.update(self._history(e, t))
        if self.has_task:
            sample["task"] = self.tasks[e]
        if self._goals is not None:
            sample["goal_image"] = torch.from_numpy(self._goals[e])
        if self._objects is not None:
            sample.update(self._object_sample(e, t, moved))
        if self._task_objects is not None:
            xy, valid = (a[t] for a in self._task_objects[e])
            if any(moved):  # the image content moved: so did the object in it
                h, w = self.image_shape[:2]
                xy = np.clip(xy + np.array([(dx / w, dy / h) for dx, dy in moved], np.float32), 0.0, 1.0)
            sample["task_object_xy"] = torch.from_numpy(np.array(xy, np.float32))
            sample["task_object_valid"] = torch.from_numpy(valid.copy())
        return sample

    def _object_sample(self, e: int, t: int, moved: Sequence[tuple[int, int]]) -> dict[str, Any]:
        boxes, cams, valid = (a[t] for a in self._objects[e])  # type: ignore[index]
        if any(moved):  # shift augmentation moved the image content: move the boxes with it
            h, w = self.image_shape[:2]
            offset = np.array([(dx / w, dy / h, dx / w, dy / h) for dx, dy in moved], np.float32)[cams]
            boxes = np.where(valid[:, None], np.clip(boxes + offset, 0.0, 1.0), boxes)
        return {"object_boxes": torch.from_numpy(np.array(boxes, np.float32)),
                "object_camera": torch.from_numpy(cams.copy()), "object_valid": torch.from_numpy(valid.copy()),
                "object_names": list(self.object_names)}


# ---------------------------------------------------------------------------------------------
# Building train/val datasets
# ---------------------------------------------------------------------------------------------
@dataclass
class DatasetInfo:
    """What the trainer and the policy config need to know about a dataset."""

    folder: str
    camera_names: list[str]
    state_dim: int
    action_dim: int
    image_shape: tuple[int, int, int]
    fps: float | None
    episodes: list[str]
    train_episodes: list[str]
    val_episodes: list[str]
    val_is_train: bool
    layouts: list[str]
    num_steps: int
    tasks: list[str]
    cached: bool
    object_names: list[str] = field(default_factory=list)  # object slots of the samples (none: no boxes)

    def __getitem__(self, key: str) -> Any:  # info["camera_names"] reads like a dict
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split by episode (as ACT: a permutation, the first ``(1 - val_fraction)·n`` train).

    With ``val_fraction > 0`` at least one episode is held out when there are two or more.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n).tolist()
    if val_fraction == 0.0 or n < 2:
        return sorted(order), []
    n_train = min(n - 1, max(1, int((1.0 - val_fraction) * n + 1e-9)))
    return sorted(order[:n_train]), sorted(order[n_train:])


def scan_episodes(folder: str | Path) -> list[EpisodeRecord]:
    """Every episode of a dataset folder, read and checked (:func:`read_episode_record`), in order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such dataset folder")
    refuse_lerobot_folder(folder)  # a LeRobot export: say how to import it rather than "no episodes"
    paths = list_episodes(folder)
    if not paths:
        raise DataError(f"{folder}: no episode_<N>.hdf5 files; record some with `robokit record`")
    return [read_episode_record(p) for p in paths]


def build_datasets(
    folder: str | Path,
    camera_names: Sequence[str] | None = None,
    chunk_size: int = 100,
    val_fraction: float = 0.2,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    augment: ImageAugment | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    goal_images: bool | None = None,
    goal_camera: str | None = None,
    act_real_shift: bool = True,
    history: int = 0,
    object_boxes: bool | None = False,
    records: Sequence[EpisodeRecord] | None = None,
    task_object: bool = False,
) -> tuple[EpisodeDataset, EpisodeDataset | None, dict[str, np.ndarray], DatasetInfo]:
    """Train/val datasets of a folder of episodes, normalisation statistics, and dataset info.

    Episodes are split (seeded) into train and validation; statistics are over every step of every
    episode (as ACT). With one episode it is used for both (``info.val_is_train``); with
    ``val_fraction == 0`` there is no validation set (``val_ds`` is None). Augmentation applies to
    the training set only. The RAM cache is used when train and val together fit ``cache_bytes``.
    ``object_boxes`` and ``task_object`` as :class:`EpisodeDataset`'s, with the object slots of the whole folder, so
    train and validation samples have the same N (``info.object_names``). ``records``: the
    folder's episodes as :func:`scan_episodes` returned them, to save reading them twice.
    """
    folder = Path(folder)
    if records is None:
        records = scan_episodes(folder)
    paths = [r.path for r in records]
    cams = list(camera_names) if camera_names else list(records[0].camera_names)
    check_consistent(records, cams, image_size)
    fps = common_fps(records)
    stats = compute_norm_stats([r.qpos for r in records], [r.action for r in records])

    train_idx, val_idx = split_episodes(len(records), val_fraction, seed)
    val_is_train = val_fraction > 0 and not val_idx
    if val_is_train:
        log.warning("%s has one episode: validation uses the training episode", folder)
        val_idx = list(train_idx)

    common: dict[str, Any] = {"camera_names": cams, "chunk_size": chunk_size, "image_size": image_size,
                              "goal_images": goal_images, "goal_camera": goal_camera,
                              "act_real_shift": act_real_shift, "seed": seed, "history": history,
                              "object_boxes": object_boxes, "object_names": dataset_object_names(records, cams),
                              "task_object": task_object}
    h, w = image_size or records[0].image_shapes[cams[0]][:2]
    total_bytes = int(h) * int(w) * 3 * len(cams) * sum(r.length for r in records)
    use_cache = total_bytes <= cache_bytes
    cache_cap = cache_bytes if use_cache else 0
    train_ds = EpisodeDataset([records[i] for i in train_idx], augment=augment,
                              cache_bytes=cache_cap, **common)
    val_ds = (EpisodeDataset([records[i] for i in val_idx], cache_bytes=cache_cap, **common)
              if val_idx else None)
    if not use_cache:
        log.info("images (%.1f GB decoded) exceed the %.1f GB cache cap: reading from disk per sample",
                 total_bytes / 1e9, cache_bytes / 1e9)

    info = DatasetInfo(
        folder=str(folder.resolve()), camera_names=cams, state_dim=records[0].state_dim,
        action_dim=records[0].action_dim, image_shape=train_ds.image_shape, fps=fps,
        episodes=[p.name for p in paths], train_episodes=[paths[i].name for i in train_idx],
        val_episodes=[paths[i].name for i in val_idx], val_is_train=val_is_train,
        layouts=sorted({r.layout for r in records}), num_steps=sum(r.length for r in records),
        tasks=sorted({r.task for r in records if r.task}), cached=use_cache,
        object_names=list(train_ds.object_names))
    return train_ds, val_ds, stats, info
