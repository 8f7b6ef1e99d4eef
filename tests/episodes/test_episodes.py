"""Episode files: the streaming writer, the reader of every layout, validation and crash recovery.

The foreign files are built with h5py the way their projects write them (ACT's record_sim_episodes.py,
ALOHA's compressed record_episodes.py, the original Franka recorder's live_record.py), at a small
image size.
Other test modules import the ``write_*`` builders from here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from robokit.episodes import format as fmt
from robokit.episodes.files import LowDiskSpace, next_episode_index
from robokit.episodes.reader import list_episodes, open_episode
from robokit.episodes.recovery import recover_partial_episodes
from robokit.episodes.writer import EmptyEpisode, EpisodeWriter
from robokit.errors import DataError, UserError

H, W = 48, 64
ATTRS = {"task": "put the cube in the bowl", "fps": 30, "robot": "sim", "sim": True, "source": "test"}


def pattern(t: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth RGB frame that changes with t (JPEG keeps it close to the original)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 4 + t) % 256, (yy * 5) % 256, np.full_like(xx, (40 * t) % 256)],
                    axis=-1).astype(np.uint8)


def write_v1(folder: Path, index: int = 0, steps: int = 20, compress: str = "none",
             cams: tuple[str, ...] = ("top", "wrist"), end_frames: int = 3, **kwargs) -> Path:
    w = EpisodeWriter(folder, index, {c: (H, W, 3) for c in cams}, attrs=ATTRS, compress=compress,
                      **kwargs)
    for t in range(steps):
        w.append(np.arange(8) + t, np.full(8, 0.5), np.arange(8) + t + 1,
                 {c: pattern(t + k) for k, c in enumerate(cams)},
                 t_robot=100.0 + t / 30, t_images={c: 100.0 + t / 30 - 0.005 for c in cams},
                 done=t >= steps - end_frames)
    return w.save(success=True, goal_images={cams[0]: pattern(steps - 1)})


def write_act_sim(path: Path, steps: int = 12, cams: tuple[str, ...] = ("top",)) -> None:
    """As ACT's record_sim_episodes.py: 14-dof, shape-only datasets (float32), attrs sim only."""
    with h5py.File(path, "w", rdcc_nbytes=1024**2 * 2) as root:
        root.attrs["sim"] = True
        obs = root.create_group("observations")
        image = obs.create_group("images")
        for cam in cams:
            image.create_dataset(cam, (steps, H, W, 3), dtype="uint8", chunks=(1, H, W, 3))
        obs.create_dataset("qpos", (steps, 14), dtype="f4")
        obs.create_dataset("qvel", (steps, 14), dtype="f4")
        root.create_dataset("action", (steps, 14), dtype="f4")
        root["/observations/qpos"][...] = np.tile(np.arange(steps)[:, None], (1, 14)) * 0.1
        root["/observations/qvel"][...] = 0.0
        root["/action"][...] = np.tile(np.arange(steps)[:, None], (1, 14)) * 0.1 + 0.05
        for cam in cams:
            root[f"/observations/images/{cam}"][...] = np.stack([pattern(t) for t in range(steps)])


def write_act_real(path: Path, steps: int = 10) -> None:
    """An ACT/ALOHA real-robot file: float64 datasets written from lists, with effort."""
    with h5py.File(path, "w") as root:
        root.attrs["sim"] = False
        obs = root.create_group("observations")
        obs.create_group("images").create_dataset(
            "cam_high", data=np.stack([pattern(t) for t in range(steps)]), chunks=(1, H, W, 3))
        obs.create_dataset("qpos", data=np.random.default_rng(0).normal(size=(steps, 14)))
        obs.create_dataset("qvel", data=np.zeros((steps, 14)))
        obs.create_dataset("effort", data=np.zeros((steps, 14)))
        root.create_dataset("action", data=np.random.default_rng(1).normal(size=(steps, 14)))


def write_aloha_jpeg(path: Path, steps: int = 10, cams: tuple[str, ...] = ("cam_high", "cam_left_wrist")) -> None:
    """As ALOHA's record_episodes.py with COMPRESS: JPEG (quality 50) rows padded to the longest."""
    encoded = {c: [cv2.imencode(".jpg", pattern(t + k), [int(cv2.IMWRITE_JPEG_QUALITY), 50])[1]
                   for t in range(steps)] for k, c in enumerate(cams)}
    compressed_len = np.array([[len(e) for e in encoded[c]] for c in cams])
    padded_size = compressed_len.max()
    with h5py.File(path, "w", rdcc_nbytes=1024**2 * 2) as root:
        root.attrs["sim"] = False
        root.attrs["compress"] = True
        obs = root.create_group("observations")
        image = obs.create_group("images")
        for c in cams:
            image.create_dataset(c, (steps, padded_size), dtype="uint8", chunks=(1, padded_size))
        obs.create_dataset("qpos", (steps, 14), dtype="f4")
        obs.create_dataset("qvel", (steps, 14), dtype="f4")
        obs.create_dataset("effort", (steps, 14), dtype="f4")
        root.create_dataset("action", (steps, 14), dtype="f4")
        root.create_dataset("base_action", (steps, 2), dtype="f4")
        for c in cams:
            rows = np.zeros((steps, padded_size), dtype=np.uint8)
            for t, e in enumerate(encoded[c]):
                rows[t, : len(e)] = e.reshape(-1)
            root[f"/observations/images/{c}"][...] = rows
        root["/observations/qpos"][...] = 1.0
        root.create_dataset("compress_len", (len(cams), steps), dtype="f4")
        root["/compress_len"][...] = compressed_len


def write_live_record(path: Path, steps: int = 10, extra: int = 5) -> None:
    """As the Franka recorder live_record.py: BGR frames, qpos = action = 7 joints + end marker, float64."""
    frames = [cv2.cvtColor(pattern(t), cv2.COLOR_RGB2BGR) for t in range(steps)]
    states = [np.concatenate([np.full(7, 0.01 * t), [0]]) for t in range(steps)]
    frames += [frames[-1]] * extra
    states += [np.concatenate([states[-1][:7], [1]])] * extra
    with h5py.File(path, "w") as root:
        root.attrs["sim"] = True
        obs = root.create_group("observations")
        images = obs.create_group("images")
        images.create_dataset("top", data=np.array(frames, dtype="uint8"), dtype="uint8", chunks=(1, H, W, 3))
        robot_data = np.array(states, dtype="float64")
        obs.create_dataset("qpos", data=robot_data)
        root.create_dataset("action", data=robot_data)


# -- writer / reader round trip ---------------------------------------------------------------------
@pytest.mark.parametrize("compress", ["none", "lzf", "jpeg"])
def test_round_trip_for_each_compression(tmp_path, compress):
    path = write_v1(tmp_path, compress=compress)
    assert path == tmp_path / "episode_0.hdf5"
    assert not list(tmp_path.glob("*.partial"))
    with open_episode(path) as ep:
        assert ep.layout == "robokit-v1"
        assert ep.image_compression == compress
        assert (ep.length, ep.state_dim, ep.action_dim) == (20, 8, 8)
        assert ep.camera_names == ["top", "wrist"]
        assert ep.fps == 30.0 and ep.task == ATTRS["task"] and ep.success is True
        assert ep.qpos().dtype == np.float32
        np.testing.assert_array_equal(ep.qpos()[5], np.arange(8) + 5)
        np.testing.assert_array_equal(ep.action()[5], np.arange(8) + 6)
        np.testing.assert_array_equal(ep.qvel(), np.full((20, 8), 0.5, np.float32))
        assert ep.done().tolist() == [False] * 17 + [True] * 3
        np.testing.assert_allclose(ep.timestamps("robot")[[0, -1]], [100.0, 100.0 + 19 / 30])
        np.testing.assert_allclose(ep.timestamps("wrist")[0], 99.995)
        assert ep.image_shape("top") == (H, W, 3)
        frames = ep.images("wrist", 3, 6)
        assert frames.shape == (3, H, W, 3) and frames.dtype == np.uint8
        tolerance = 8 if compress == "jpeg" else 0
        assert np.abs(ep.image("top", 7).astype(int) - pattern(7)).mean() <= tolerance
        assert np.abs(frames[0].astype(int) - pattern(4)).mean() <= tolerance
        np.testing.assert_array_equal(ep.goal_image("top"), pattern(19))
        assert ep.goal_image("wrist") is None
        assert ep.attrs["num_steps"] == 20 and ep.attrs["camera_names"] == ["top", "wrist"]
        assert ep.check() == []
    assert fmt.validate(path) == []


def test_jpeg_files_follow_aloha_names(tmp_path):
    """An ALOHA loader decodes our JPEG rows: compress attr, padded rows, /compress_len."""
    path = write_v1(tmp_path, compress="jpeg")
    with h5py.File(path, "r") as root:
        assert bool(root.attrs["compress"]) is True
        rows = root["/observations/images/top"][()]
        assert rows.ndim == 2 and rows.shape[1] == int(root["/compress_len"][()].max())
        decoded = cv2.imdecode(rows[7], 1)  # what ACT++/ALOHA's loader does
    assert np.abs(decoded.astype(int) - pattern(7)).mean() < 8


def test_memory_does_not_hold_the_episode(tmp_path):
    """The queue is bounded: append blocks rather than buffering the whole episode."""
    w = EpisodeWriter(tmp_path, 0, {"top": (H, W, 3)}, attrs=ATTRS)
    assert w._queue.maxsize <= 16  # 0.5 s at 30 fps
    w.discard()
    assert not list(tmp_path.iterdir())


def test_save_without_steps_is_refused_and_leaves_nothing(tmp_path):
    w = EpisodeWriter(tmp_path, 0, {"top": (H, W, 3)}, attrs=ATTRS)
    with pytest.raises(EmptyEpisode):
        w.save()
    assert not list(tmp_path.iterdir())


def test_wrong_frame_shape_names_the_camera(tmp_path):
    w = EpisodeWriter(tmp_path, 0, {"top": (H, W, 3)}, attrs=ATTRS)
    with pytest.raises(DataError, match="camera 'top'"):
        w.append(np.zeros(8), np.zeros(8), np.zeros(8), {"top": np.zeros((10, 10, 3), np.uint8)}, 0.0)
    w.discard()


def test_never_overwrites_and_numbers_continue(tmp_path):
    write_v1(tmp_path, index=3, steps=2)
    (tmp_path / "episode_5.hdf5.partial").write_bytes(b"")
    assert next_episode_index(tmp_path) == 6
    assert next_episode_index(tmp_path / "missing") == 0
    with pytest.raises(DataError, match="already exists"):
        EpisodeWriter(tmp_path, 3, {"top": (H, W, 3)}, attrs=ATTRS)


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="output folder"):
        EpisodeWriter(blocker / "sub", 0, {"top": (H, W, 3)}, attrs=ATTRS)
    if os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(UserError, match="not writable"):
            EpisodeWriter(ro, 0, {"top": (H, W, 3)}, attrs=ATTRS)


def test_low_disk_space_is_refused_before_recording(tmp_path):
    with pytest.raises(LowDiskSpace, match="MB free"):
        EpisodeWriter(tmp_path, 0, {"top": (H, W, 3)}, attrs=ATTRS, min_free_bytes=2**62)
    assert not list(tmp_path.iterdir())


# -- foreign layouts ----------------------------------------------------------------------------------
def test_reads_act_sim_files(tmp_path):
    path = tmp_path / "episode_0.hdf5"
    write_act_sim(path)
    with open_episode(path) as ep:
        assert ep.layout == "act"
        assert (ep.length, ep.state_dim, ep.action_dim) == (12, 14, 14)
        assert ep.camera_names == ["top"] and ep.fps is None and ep.task is None
        assert ep.timestamps("robot") is None and not ep.done().any()
        np.testing.assert_allclose(ep.action()[3], np.full(14, 0.35), rtol=1e-6)
        np.testing.assert_array_equal(ep.image("top", 4), pattern(4))
        assert ep.check() == []


def test_reads_act_real_float64_files(tmp_path):
    path = tmp_path / "episode_0.hdf5"
    write_act_real(path)
    with open_episode(path) as ep:
        assert ep.layout == "act" and ep.camera_names == ["cam_high"]
        assert ep.qpos().dtype == np.float32 and ep.qpos().shape == (10, 14)
        assert ep.attrs["sim"] is False


def test_reads_aloha_jpeg_files(tmp_path):
    path = tmp_path / "episode_0.hdf5"
    write_aloha_jpeg(path)
    with open_episode(path) as ep:
        assert ep.layout == "aloha-jpeg" and ep.image_compression == "jpeg"
        assert ep.camera_names == ["cam_high", "cam_left_wrist"]
        assert ep.image_shape("cam_high") == (H, W, 3)
        frames = ep.images("cam_left_wrist")
        assert frames.shape == (10, H, W, 3)
        assert np.abs(frames[2].astype(int) - pattern(3)).mean() < 12
        assert ep.check() == []


def test_reads_live_record_files(tmp_path):
    path = tmp_path / "episode_0.hdf5"
    write_live_record(path, steps=10, extra=5)
    with open_episode(path) as ep:
        assert ep.layout == "live-record"
        assert ep.state_dim == 7 and ep.action_dim == 7
        assert ep.done().tolist() == [False] * 10 + [True] * 5
        np.testing.assert_allclose(ep.qpos()[4], np.full(7, 0.04), rtol=1e-6)
        np.testing.assert_array_equal(ep.image("top", 2), pattern(2))  # BGR on disk, RGB out
        assert ep.images("top").shape == (15, H, W, 3)


def test_list_episodes_sorts_by_number(tmp_path):
    for n in (10, 2, 1):
        write_act_sim(tmp_path / f"episode_{n}.hdf5", steps=2)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_episodes(tmp_path)] == ["episode_1.hdf5", "episode_2.hdf5",
                                                        "episode_10.hdf5"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "episode_0.hdf5.partial").write_bytes(b"")
    with pytest.raises(DataError, match="unfinished"):
        list_episodes(empty)
    with pytest.raises(DataError, match="no such dataset folder"):
        list_episodes(tmp_path / "nope")


# -- validation of bad files --------------------------------------------------------------------------
def test_not_hdf5_names_the_file(tmp_path):
    path = tmp_path / "episode_0.hdf5"
    path.write_text("this is not HDF5")
    with pytest.raises(DataError, match=r"episode_0\.hdf5: not a readable HDF5 file"):
        open_episode(path)
    assert "not a readable HDF5 file" in fmt.validate(path)[0]


def test_truncated_file_is_reported(tmp_path):
    path = write_v1(tmp_path, steps=30)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    problems = fmt.validate(path)
    assert problems and "episode_0.hdf5" in problems[0]


def test_foreign_hdf5_names_the_missing_field(tmp_path):
    path = tmp_path / "x.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.zeros(3))
    with pytest.raises(DataError, match=r"no /action"):
        open_episode(path)


def test_inconsistent_lengths_name_the_field(tmp_path):
    path = write_v1(tmp_path)
    with h5py.File(path, "r+") as f:
        f["action"].resize(15, axis=0)
    with pytest.raises(DataError, match=r"/action has shape \(15, 8\).*20 steps"):
        open_episode(path)


def test_newer_version_and_bad_values_are_named(tmp_path):
    path = write_v1(tmp_path)
    with h5py.File(path, "r+") as f:
        f["observations/qpos"][3, 2] = np.nan
        del f["timestamps/wrist"]
    problems = fmt.validate(path)
    assert any("/observations/qpos contains NaN" in p for p in problems)
    assert any("/timestamps/wrist is missing" in p for p in problems)
    with h5py.File(path, "r+") as f:
        f.attrs["version"] = 7
    with pytest.raises(DataError, match="version 7 is newer"):
        open_episode(path)


def test_partial_file_given_to_reader_points_to_recovery(tmp_path):
    w = EpisodeWriter(tmp_path, 0, {"top": (H, W, 3)}, attrs=ATTRS)
    w.append(np.zeros(8), np.zeros(8), np.zeros(8), {"top": pattern(0)}, 1.0)
    w.close()
    with pytest.raises(DataError, match="unfinished recording.*robokit record"):
        open_episode(tmp_path / "episode_0.hdf5.partial")


# -- object boxes (sim recordings) --------------------------------------------------------------------
def test_object_boxes_round_trip_and_survive_recovery(tmp_path):
    cams = {"top": (H, W, 3), "wrist": (H, W, 3)}
    with pytest.raises(UserError, match="camera 'side'"):
        EpisodeWriter(tmp_path, 0, cams, attrs=ATTRS, box_objects={"side": ["cube"]})
    w = EpisodeWriter(tmp_path, 0, cams, attrs=ATTRS, compress="lzf",
                      box_objects={"top": ["cube", "bowl"], "wrist": ["cube"]})
    frames = {c: pattern(0) for c in cams}
    for t in range(6):
        boxes = {"top": {"cube": (t, 2, t + 5, 9), "bowl": None}, "wrist": {"cube": None}}
        w.append(np.zeros(8), np.zeros(8), np.zeros(8), frames, float(t), {c: float(t) for c in cams},
                 object_boxes={} if t == 2 else boxes)  # a box not given is stored as not visible
    with pytest.raises(DataError, match="'plate'.*not declared"):
        w.append(np.zeros(8), np.zeros(8), np.zeros(8), frames, 9.0, object_boxes={"top": {"plate": (0, 0, 1, 1)}})
    with pytest.raises(DataError, match="4 pixel numbers"):
        w.append(np.zeros(8), np.zeros(8), np.zeros(8), frames, 9.0, object_boxes={"top": {"cube": (1, 2)}})
    w.close()  # left as after a crash: recovery must keep the boxes
    assert recover_partial_episodes(tmp_path)[0].startswith("recovered episode_0.hdf5")
    path = tmp_path / "episode_0.hdf5"
    with open_episode(path) as ep:
        top = ep.object_boxes("top")
        assert sorted(top) == ["bowl", "cube"] and top["cube"].dtype == np.int32 and top["cube"].shape == (6, 4)
        np.testing.assert_array_equal(top["cube"][[0, 1, 3, 5]], [[0, 2, 5, 9], [1, 2, 6, 9], [3, 2, 8, 9],
                                                                  [5, 2, 10, 9]])
        assert (top["cube"][2] == -1).all() and (top["bowl"] == -1).all()
        assert list(ep.object_boxes("wrist")) == ["cube"] and (ep.object_boxes("wrist")["cube"] == -1).all()
        assert ep.check() == []
    with open_episode(write_v1(tmp_path / "plain")) as ep:
        assert ep.object_boxes("top") == {}
    with h5py.File(path, "r+") as f:  # a hand-edited file whose boxes do not match the steps
        f[fmt.object_box_key("cube", "top")].resize(4, axis=0)
    with pytest.raises(DataError, match="objects/cube/box_top"):
        open_episode(path)


# -- extra per-step datasets (deploy rollouts' predicted chunks) --------------------------------------
def test_extra_step_datasets_round_trip_late_rows_and_survive_recovery(tmp_path):
    cams = {"top": (H, W, 3)}
    for bad, message in (({"action": (3,)}, "already uses"), ({"a/b": (3,)}, "plain dataset name"),
                         ({"chunks": (0, 8)}, "positive sizes")):
        with pytest.raises(UserError, match=message):
            EpisodeWriter(tmp_path, 0, cams, attrs=ATTRS, extra_step_datasets=bad)
    w = EpisodeWriter(tmp_path, 0, cams, attrs=ATTRS, compress="jpeg",
                      extra_step_datasets={"predicted_chunks": (5, 8), "score": ()})
    buffer = np.zeros((5, 8), np.float32)
    for t in range(7):
        buffer[:] = t  # one buffer reused by the caller: the writer must have copied each row
        w.append(np.zeros(8), np.zeros(8), np.zeros(8), {"top": pattern(t)}, float(t), {"top": float(t)},
                 extras={"predicted_chunks": buffer if t % 3 == 0 else None, "score": t / 10})
    w.set_extra(4, "predicted_chunks", np.full((5, 8), 40.0))  # a row filled in after its step
    with pytest.raises(DataError, match="'plate'.*not declared"):
        w.append(np.zeros(8), np.zeros(8), np.zeros(8), {"top": pattern(0)}, 9.0, extras={"plate": 1.0})
    with pytest.raises(DataError, match=r"rows are \(5, 8\), got \(4, 8\)"):
        w.set_extra(1, "predicted_chunks", np.zeros((4, 8)))
    with pytest.raises(DataError, match="row 7 .* not a step"):
        w.set_extra(7, "predicted_chunks", buffer)
    w.close()  # left as after a crash: recovery must keep the extras and their late rows
    assert recover_partial_episodes(tmp_path)[0].startswith("recovered episode_0.hdf5")
    path = tmp_path / "episode_0.hdf5"
    with open_episode(path) as ep:
        assert ep.step_extra_names == ["predicted_chunks", "score"] and ep.check() == []
        chunks = ep.predicted_chunks()
        assert chunks.dtype == np.float32 and chunks.shape == (7, 5, 8)
        queried = [t for t in range(7) if not np.isnan(chunks[t]).any()]
        assert queried == [0, 3, 4, 6] and np.isnan(chunks[[1, 2, 5]]).all()
        assert [chunks[t, 0, 0] for t in queried] == [0, 3, 40, 6]
        np.testing.assert_allclose(ep.step_extra("score"), np.arange(7) / 10)
        assert ep.step_extra("nothing") is None
    with open_episode(write_v1(tmp_path / "plain")) as ep:
        assert ep.predicted_chunks() is None and ep.step_extra_names == []
    with h5py.File(path, "r+") as f:  # hand-edited: a listed dataset gone, chunks of another width
        del f["score"]
        del f["predicted_chunks"]
        f.create_dataset("predicted_chunks", data=np.zeros((7, 5, 3), np.float32))
    with open_episode(path) as ep:
        problems = ep.check()
        assert any("/score is listed" in p for p in problems)
        assert any("predicted_chunks must be (7, H, 8)" in p for p in problems)
        with pytest.raises(DataError, match="predicted_chunks must be"):
            ep.predicted_chunks()


# -- crash recovery -----------------------------------------------------------------------------------
def test_recover_a_closed_partial_file(tmp_path):
    w = EpisodeWriter(tmp_path, 4, {"top": (H, W, 3)}, attrs=ATTRS, compress="jpeg")
    for t in range(9):
        w.append(np.full(8, t), np.zeros(8), np.full(8, t), {"top": pattern(t)}, 1.0 + t / 30,
                 {"top": 1.0 + t / 30})
    w.close()
    messages = recover_partial_episodes(tmp_path)
    assert messages == ["recovered episode_4.hdf5 from an interrupted recording (9 steps, 0.3 s)"]
    with open_episode(tmp_path / "episode_4.hdf5") as ep:
        assert ep.length == 9 and ep.attrs["recovered"] is True and ep.check() == []
        assert np.abs(ep.image("top", 8).astype(int) - pattern(8)).mean() < 8


def test_unreadable_partial_is_moved_aside_and_saved_episodes_untouched(tmp_path):
    saved = write_v1(tmp_path, index=0, steps=5)
    before = saved.read_bytes()
    (tmp_path / "episode_1.hdf5.partial").write_bytes(b"\x89HDF garbage" * 100)
    w = EpisodeWriter(tmp_path, 2, {"top": (H, W, 3)}, attrs=ATTRS, compress="jpeg")  # no step written
    w.close()
    messages = recover_partial_episodes(tmp_path)
    assert messages[0].startswith("moved episode_1.hdf5.partial to broken/: it cannot be recovered")
    assert messages[1] == "removed episode_2.hdf5.partial: the interrupted recording held no complete step"
    assert (tmp_path / "broken" / "episode_1.hdf5.partial").exists()
    assert saved.read_bytes() == before
    assert next_episode_index(tmp_path) == 2


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from robokit.episodes.writer import EpisodeWriter
    folder, compress = sys.argv[1], sys.argv[2]
    w = EpisodeWriter(folder, 0, {"top": (48, 64, 3)}, attrs={"fps": 30}, compress=compress)
    t = 0
    while True:
        frame = np.full((48, 64, 3), t % 256, np.uint8)
        w.append(np.full(8, t), np.zeros(8), np.full(8, t), {"top": frame}, time.monotonic(),
                 {"top": time.monotonic()})
        t += 1
        print(t, flush=True)
        time.sleep(1 / 30)
""")


@pytest.mark.parametrize("compress", ["lzf", "jpeg"])
def test_sigkill_loses_at_most_one_second(tmp_path, compress):
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path), compress],
                            stdout=subprocess.PIPE, text=True)
    appended = 0
    for line in proc.stdout:
        appended = int(line)
        if appended >= 45:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    messages = recover_partial_episodes(tmp_path)
    assert len(messages) == 1 and messages[0].startswith("recovered episode_0.hdf5"), messages
    with open_episode(tmp_path / "episode_0.hdf5") as ep:
        assert appended - 30 <= ep.length <= appended + 1, (appended, ep.length)
        np.testing.assert_array_equal(ep.qpos()[:, 0], np.arange(ep.length))
        assert ep.check() == []


def test_an_episode_being_saved_is_never_taken_for_a_crashed_one(tmp_path, monkeypatch):
    """The writer's lock covers the file's whole life: also the moment between closing the HDF5
    file and renaming it to the episode, when neither HDF5 nor the stream holds it."""
    import robokit.episodes.writer as writer_module

    seen = []
    finalize = writer_module.finalize_episode

    def recovery_meanwhile(*args, **kwargs):
        seen.extend(recover_partial_episodes(tmp_path))  # a second recorder starting right now
        return finalize(*args, **kwargs)

    monkeypatch.setattr(writer_module, "finalize_episode", recovery_meanwhile)
    writer = EpisodeWriter(tmp_path, 0, {"top": (H, W, 3)}, attrs=ATTRS)
    for t in range(3):
        writer.append(np.zeros(8), np.zeros(8), np.zeros(8), {"top": pattern(t)}, float(t))
    assert writer.save() == tmp_path / "episode_0.hdf5"
    assert seen == ["left episode_0.hdf5.partial alone: another recorder is writing it"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_0.hdf5"]  # no lock file left


def test_a_second_writer_of_the_same_episode_is_refused(tmp_path):
    from robokit.episodes.files import hold_writer_lock, release_writer_lock

    partial = tmp_path / "episode_0.hdf5.partial"
    fd = hold_writer_lock(partial)  # another recorder that picked the same number a moment earlier
    with pytest.raises(DataError, match="another recorder is writing episode_0.hdf5.partial"):
        EpisodeWriter(tmp_path, 0, {"top": (H, W, 3)}, attrs=ATTRS)
    release_writer_lock(partial, fd)
    EpisodeWriter(tmp_path, 0, {"top": (H, W, 3)}, attrs=ATTRS).discard()
    assert not list(tmp_path.iterdir())


def test_recovery_leaves_an_episode_being_recorded_alone(tmp_path):
    """A second recorder starting in the same folder must not take over a live recording."""
    fresh = EpisodeWriter(tmp_path, 0, {"top": (H, W, 3)}, attrs=ATTRS)  # no step yet
    live = EpisodeWriter(tmp_path, 1, {"top": (H, W, 3)}, attrs=ATTRS, compress="jpeg")
    for t in range(5):
        live.append(np.zeros(8), np.zeros(8), np.zeros(8), {"top": pattern(t)}, float(t))
    live.close()  # a closed writer's file is fair game ...
    live = EpisodeWriter(tmp_path, 2, {"top": (H, W, 3)}, attrs=ATTRS)
    for t in range(5):
        live.append(np.zeros(8), np.zeros(8), np.zeros(8), {"top": pattern(t)}, float(t))
    while live.steps_written < 5:  # ... but one still streaming is not, once SWMR has started
        time.sleep(0.01)
    messages = recover_partial_episodes(tmp_path)
    assert "left episode_0.hdf5.partial alone: another recorder is writing it" in messages
    assert "left episode_2.hdf5.partial alone: another recorder is writing it" in messages
    assert any(m.startswith("recovered episode_1.hdf5") for m in messages)
    assert live.save() == tmp_path / "episode_2.hdf5"
    fresh.discard()
    with open_episode(tmp_path / "episode_2.hdf5") as ep:
        assert ep.length == 5
