"""Episode file format v1 and the foreign layouts robokit reads.

A robokit v1 episode is one HDF5 file ``episode_<N>.hdf5``::

    /action                      float32 (T, A)  commanded joint targets + gripper
    /observations/qpos           float32 (T, S)  measured joints + gripper
    /observations/qvel           float32 (T, S)
    /observations/images/<cam>   uint8 (T, H, W, 3) RGB, chunks (1, H, W, 3)     (compress none|lzf)
                                 uint8 (T, L) JPEG bytes padded with zeros        (compress jpeg)
    /compress_len                float32 (K, T)  JPEG byte count per camera (attrs camera_names order)
    /timestamps/robot            float64 (T,)    monotonic time of the robot reading
    /timestamps/<cam>            float64 (T,)    capture time of the frame used for step t
    /done                        bool (T,)       true on the final frames
    /goal_images/<cam>           uint8 (H, W, 3) optional: the goal (final) frame
    /objects/<name>/box_<cam>    int32 (T, 4)    optional (sim recordings): pixel box [x0, y0, x1, y1]
                                                 of object <name> in camera <cam>'s frame of step t
                                                 (x right, y down, inclusive, clipped to the image;
                                                 all -1 where it is outside the image; occlusion
                                                 by the arm is not considered)
    /predicted_chunks            float32 (T, H, A) optional (deploy rollouts): row t = the action chunk the
                                                 policy predicted from the observation of step t
                                                 (de-normalised; row 0 of the chunk is the action for
                                                 step t); all NaN where no query was made at step t
    /<name>                      float32 (T, ...) optional extra per-step arrays (the writer's
                                                 ``extra_step_datasets``, listed in the attribute
                                                 ``extra_step_datasets``); NaN rows where not given

    attrs: format="robokit.episode", version=1, sim, robot, fps, task, camera_names,
           action_space="joint_pos", source, compress (bool, ALOHA's flag), image_compression
           ("none"|"lzf"|"jpeg"), num_steps, success (only if known),
           extra_step_datasets (list of names, only when there are some)

The JPEG variant uses ALOHA's names (``compress`` attribute, padded rows, ``/compress_len``) so that
ALOHA/ACT++ loaders decode it too. Files being recorded are ``episode_<N>.hdf5.partial``.

Other layouts :mod:`robokit.episodes.reader` reads (no ``format`` attribute):

- ``act``: original ACT sim/real files: ``/action``, ``/observations/qpos`` (+ ``qvel``), images
  (T, H, W, 3), any float dtype, no timestamps, attrs ``sim`` only.
- ``aloha-jpeg``: ALOHA's compressed files: attr ``compress`` true, images (T, L) JPEG rows padded
  with zeros, ``/compress_len`` (K, T).
- ``live-record``: the original Franka recorder (``live_record.py``): qpos (T, 8) whose 8th column
  is an end marker (0/1), ``/action`` identical to qpos, one camera of BGR frames.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

FORMAT_NAME = "robokit.episode"
FORMAT_VERSION = 1

LAYOUT_V1 = "robokit-v1"
LAYOUT_ACT = "act"
LAYOUT_ALOHA_JPEG = "aloha-jpeg"
LAYOUT_LIVE_RECORD = "live-record"
LAYOUTS = (LAYOUT_V1, LAYOUT_ACT, LAYOUT_ALOHA_JPEG, LAYOUT_LIVE_RECORD)

COMPRESSIONS = ("none", "lzf", "jpeg")
ACTION_SPACE = "joint_pos"

ACTION = "action"
QPOS = "observations/qpos"
QVEL = "observations/qvel"
IMAGES = "observations/images"
TIMESTAMPS = "timestamps"
ROBOT_TIMESTAMPS = "timestamps/robot"
DONE = "done"
COMPRESS_LEN = "compress_len"
GOAL_IMAGES = "goal_images"
OBJECTS = "objects"
PREDICTED_CHUNKS = "predicted_chunks"
#: Deploy rollouts with takeover: 1.0 where a person commanded the step, 0.0 where the policy did,
#: and what the policy's plan held for each step (the commanded ``/action`` may be the person's).
INTERVENTION = "intervention"
POLICY_ACTION = "policy_action"

#: File attribute listing the extra per-step float32 datasets (``/<name>``, T rows) of a v1 file.
EXTRA_STEP_DATASETS = "extra_step_datasets"
#: Top-level names the format itself uses: never the name of an extra per-step dataset.
RESERVED_NAMES = frozenset({ACTION, "observations", TIMESTAMPS, DONE, COMPRESS_LEN, GOAL_IMAGES, OBJECTS})
_EXTRA_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Attributes every v1 file carries (``success`` only when known).
REQUIRED_ATTRS = ("format", "version", "sim", "robot", "fps", "task", "camera_names", "action_space",
                  "source", "compress", "image_compression")

PARTIAL_SUFFIX = ".partial"
_EPISODE_RE = re.compile(r"^episode_(\d+)\.hdf5$")
_PARTIAL_RE = re.compile(r"^episode_(\d+)\.hdf5\.partial$")


def episode_filename(index: int) -> str:
    """``episode_<index>.hdf5`` (the name ACT's loader expects)."""
    return f"episode_{int(index)}.hdf5"


def partial_filename(index: int) -> str:
    """Name of the file an episode is streamed into while it is recorded."""
    return episode_filename(index) + PARTIAL_SUFFIX


def object_box_key(name: str, camera: str) -> str:
    """Dataset of the per-step pixel boxes of object ``name`` in ``camera``: ``objects/<name>/box_<camera>``."""
    return f"{OBJECTS}/{name}/box_{camera}"


def check_extra_name(name: str) -> str | None:
    """Why ``name`` cannot be an extra per-step dataset (None if it can)."""
    if not isinstance(name, str) or not _EXTRA_NAME_RE.match(name):
        return f"{name!r} is not a plain dataset name (letters, digits, '_'; not starting with a digit)"
    if name in RESERVED_NAMES:
        return f"{name!r} is a name the episode format already uses"
    return None


def extra_step_names(f: Any) -> list[str]:
    """Names of the extra per-step datasets of an open v1 file (``h5py.File``): those the attribute
    :data:`EXTRA_STEP_DATASETS` lists that exist, plus ``predicted_chunks`` wherever it is present
    (files written before the attribute, or by hand)."""
    listed = f.attrs.get(EXTRA_STEP_DATASETS, [])
    if isinstance(listed, (str, bytes)):
        listed = [listed]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in listed]
    if PREDICTED_CHUNKS not in names:
        names.append(PREDICTED_CHUNKS)
    return [n for n in names if check_extra_name(n) is None and n in f]


def episode_index(path: str | Path) -> int | None:
    """N of ``episode_<N>.hdf5`` (None for any other name)."""
    match = _EPISODE_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def partial_index(path: str | Path) -> int | None:
    """N of ``episode_<N>.hdf5.partial`` (None for any other name)."""
    match = _PARTIAL_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def validate(path: str | Path) -> list[str]:
    """Check one episode file; return the problems found, each naming the file and the field.

    An empty list means the file can be used for training. Any layout the reader knows is accepted
    (foreign files are checked for internal consistency); v1 files are also checked for their
    attributes, dtypes, timestamps and done flags.
    """
    # Imported here: the reader imports this module for its constants.
    from robokit.episodes.reader import open_episode
    from robokit.errors import DataError

    try:
        with open_episode(path) as ep:
            return ep.check()
    except DataError as exc:
        return [str(exc)]
