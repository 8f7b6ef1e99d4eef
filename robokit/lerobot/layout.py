"""The LeRobotDataset v3.0 layout: paths, feature names, version checks and the feature mapping.

A v3 dataset folder::

    meta/info.json                                   codebase_version "v3.0", fps, features, templates
    meta/stats.json                                  per-feature min/max/mean/std/count/quantiles
    meta/tasks.parquet                               task strings (pandas index "task") -> task_index
    meta/episodes/chunk-000/file-000.parquet         one row per episode: length, tasks, where its rows
                                                     and video frames are, per-episode stats
    data/chunk-000/file-000.parquet                  one row per frame, several episodes per file
    videos/observation.images.<cam>/chunk-000/file-000.mp4   several episodes per file, back to back

How robokit's episode fields map onto LeRobot's feature names (the first four are what LeRobot's
policies read; the rest keep a round trip lossless):

====================================  ==================================  =========================
robokit (HDF5)                        LeRobot feature                      dtype, shape
====================================  ==================================  =========================
/observations/qpos                    observation.state                   float32 (S,)
/action                               action                              float32 (A,)
/observations/images/<cam>            observation.images.<cam>            video (H, W, 3)
step t / fps                          timestamp                           float32 (1,)
/observations/qvel                    observation.velocity                float32 (S,)
/done                                 next.done                           bool (1,)
/timestamps/robot, /timestamps/<cam>  robokit.timestamps.robot / .<cam>   float64 (1,)
====================================  ==================================  =========================

LeRobot finds a video frame at ``from_timestamp + timestamp`` and expects ``timestamp`` to be
``frame_index / fps``; robokit's own clock readings (monotonic, with real-world jitter) therefore
travel in their own columns instead of replacing it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from robokit.errors import DataError, UserError

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
#: LeRobot's defaults: at most this many files per chunk folder, files of about these sizes.
CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200

STATE = "observation.state"
ACTION = "action"
VELOCITY = "observation.velocity"
IMAGE_PREFIX = "observation.images."
TIMESTAMP = "timestamp"
FRAME_INDEX = "frame_index"
EPISODE_INDEX = "episode_index"
INDEX = "index"
TASK_INDEX = "task_index"
DONE = "next.done"
ROBOKIT_TIMESTAMP_PREFIX = "robokit.timestamps."
#: Columns of the episodes table that carry robokit's per-episode attributes and source file.
ROBOKIT_ATTRS_COLUMN = "robokit/attrs"
ROBOKIT_SOURCE_COLUMN = "robokit/source_file"
#: Episode attributes that describe the HDF5 file's own structure (its cameras, compression, extra
#: datasets, masks): the episode writer sets them for the file it writes, so they are not carried.
STRUCTURAL_ATTRS = frozenset({"format", "version", "camera_names", "compress", "image_compression", "num_steps",
                              "duration_s", "extra_step_datasets", "mask_instances", "action_space",
                              "created", "robokit_version"})

#: LeRobot's index features, in its order, always present.
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    TIMESTAMP: {"dtype": "float32", "shape": [1], "names": None},
    FRAME_INDEX: {"dtype": "int64", "shape": [1], "names": None},
    EPISODE_INDEX: {"dtype": "int64", "shape": [1], "names": None},
    INDEX: {"dtype": "int64", "shape": [1], "names": None},
    TASK_INDEX: {"dtype": "int64", "shape": [1], "names": None},
}

#: Names of a Franka's state and action vectors (7 joints + the gripper) in LeRobot's ``names``.
FRANKA_NAMES = [f"joint_{i}.pos" for i in range(1, 8)] + ["gripper.pos"]

_EXTRA_HINT = "pip install 'robokit[lerobot]'"


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden sibling of ``out`` to write a dataset into: renamed to ``out`` (absent or empty) when the
    block ends, removed when it fails, so a half-written dataset never sits under the name asked for."""
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # the callers refuse a non-empty one before they start
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def require(module: str) -> ModuleType:
    """Import ``module`` (``pyarrow``, ``pyarrow.parquet``, ``av``), or raise a UserError naming the
    extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        package = "PyAV" if top == "av" else top
        raise UserError(f"LeRobot datasets need {package}, which is not installed: {_EXTRA_HINT}") from None


def vector_names(dim: int) -> list[str]:
    """LeRobot ``names`` of a state or action vector of ``dim`` values."""
    return list(FRANKA_NAMES) if dim == len(FRANKA_NAMES) else [f"dim_{i}" for i in range(dim)]


def video_key(cam: str) -> str:
    """The LeRobot feature name of robokit camera ``cam``."""
    return IMAGE_PREFIX + cam


def chunk_file(file_number: int, chunks_size: int = CHUNKS_SIZE) -> dict[str, int]:
    """``{"chunk_index", "file_index"}`` of the ``file_number``-th file of a kind (0, 1, 2, ...)."""
    return {"chunk_index": file_number // chunks_size, "file_index": file_number % chunks_size}


def is_lerobot_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like a LeRobot dataset folder (any version): it has ``meta/info.json``,
    or the ``meta/`` and ``data/`` folders every LeRobot version writes."""
    path = Path(path)
    return path.is_dir() and ((path / INFO_PATH).is_file() or ((path / "meta").is_dir() and (path / "data").is_dir()))


def lerobot_folder_hint(path: str | Path) -> str | None:
    """A one-line message for a command that reads robokit episodes and was given a LeRobot folder,
    or None when ``path`` is not one."""
    if not is_lerobot_folder(path):
        return None
    try:
        read_info(Path(path))
    except DataError as exc:  # another version: importing would not help, say what would
        return str(exc)
    return (f"{path} is a LeRobot dataset, not a folder of robokit episodes; convert it first with "
            f"`robokit import {path} --format lerobot --out DATA` and use DATA")


def refuse_lerobot_folder(path: str | Path) -> None:
    """Raise DataError with :func:`lerobot_folder_hint` when ``path`` is a LeRobot dataset: for the
    commands that read robokit episodes only."""
    hint = lerobot_folder_hint(path)
    if hint:
        raise DataError(hint)


def read_info(root: Path) -> dict[str, Any]:
    """``meta/info.json`` of a v3.0 dataset, checked: a missing file, another version or a malformed
    entry raises DataError with one line that says what to do."""
    path = root / INFO_PATH
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if not path.is_file():
        legacy = (root / "meta" / "info.json").exists() or (root / "meta" / "episodes.jsonl").exists()
        raise DataError(f"{root}: no {INFO_PATH}" + ("" if legacy else
                        "; not a LeRobot dataset (LeRobot v3 keeps its description in meta/info.json)"))
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object")
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        if version.startswith("v2"):
            raise DataError(
                f"{root} is a LeRobot {version} dataset; robokit reads v3.0: convert it with LeRobot's "
                f"`python -m lerobot.scripts.convert_dataset_v21_to_v30 --repo-id=NAME --root={root}` first")
        raise DataError(f"{path}: unsupported codebase_version {version or '(none)'!r}; robokit reads LeRobot v3.0")
    for key, kind in (("fps", (int, float)), ("features", dict)):
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            raise DataError(f"{path}: '{key}' is missing or malformed")
    if not info["fps"] > 0:
        raise DataError(f"{path}: fps must be positive, got {info['fps']!r}")
    return info


def feature_shape(name: str, feature: dict[str, Any]) -> tuple[int, ...]:
    """The ``shape`` of a feature as a tuple, or DataError naming the feature."""
    shape = feature.get("shape")
    if not isinstance(shape, list | tuple) or not all(isinstance(v, int) and v > 0 for v in shape):
        raise DataError(f"feature {name!r}: malformed shape {shape!r}")
    return tuple(int(v) for v in shape)


def image_hw(name: str, feature: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of an image or video feature, whichever axis order its ``names`` declare."""
    shape = feature_shape(name, feature)
    names = feature.get("names")
    if len(shape) != 3:
        raise DataError(f"feature {name!r}: an image needs a 3-D shape, got {list(shape)}")
    if isinstance(names, list) and names and names[0] in ("channels", "channel", "c"):
        channels, h, w = shape
    else:
        h, w, channels = shape
    if channels != 3:
        raise DataError(f"feature {name!r}: robokit stores RGB images (3 channels), got {channels}")
    return h, w


def map_features(root: Path, features: dict[str, Any]) -> dict[str, Any]:
    """Which features robokit reads: ``state``/``action`` names, ``cameras`` (robokit name -> feature
    name), ``velocity``/``done`` when present. Raises DataError naming a missing or unusable feature."""
    listed = ", ".join(features) or "none"
    for name in (STATE, ACTION):
        if name not in features:
            raise DataError(f"{root}: no {name!r} feature (it has {listed}); robokit needs "
                            f"{STATE!r}, {ACTION!r} and at least one camera feature")
        ft = features[name]
        if ft.get("dtype") not in ("float32", "float64") or len(feature_shape(name, ft)) != 1:
            raise DataError(f"{root}: feature {name!r} must be a float vector, got dtype "
                            f"{ft.get('dtype')!r} shape {ft.get('shape')!r}")
    cameras: dict[str, str] = {}
    for name, ft in features.items():
        if isinstance(ft, dict) and ft.get("dtype") in ("video", "image"):
            if (ft.get("info") or {}).get("is_depth_map"):
                continue  # robokit episodes hold RGB cameras only
            cam = name[len(IMAGE_PREFIX):] if name.startswith(IMAGE_PREFIX) else name.rsplit(".", 1)[-1]
            image_hw(name, ft)
            cameras[cam] = name
    if not cameras:
        raise DataError(f"{root}: no image or video feature such as 'observation.images.top' (it has {listed}); "
                        "robokit episodes need at least one camera")
    velocity = features.get(VELOCITY)
    state_dim = feature_shape(STATE, features[STATE])[0]
    return {
        "state": STATE, "action": ACTION, "cameras": cameras,
        "state_dim": state_dim, "action_dim": feature_shape(ACTION, features[ACTION])[0],
        "velocity": VELOCITY if velocity and feature_shape(VELOCITY, velocity) == (state_dim,) else None,
        "done": DONE if DONE in features else None,
    }
