"""Instance masks: rendered by the simulator, recorded per step, read back, checked, shown; PNG masks
of real recordings beside the episodes."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest

from robokit.episodes.mask_files import check_mask_pngs, labelled_masks, read_mask_png, write_instances
from robokit.episodes.masks import UNLABELLED, overlay_mask
from robokit.episodes.reader import open_episode
from robokit.episodes.recovery import recover_partial_episodes
from robokit.episodes.writer import EpisodeWriter
from robokit.errors import DataError, UserError
from tests.record.test_record import cli

ATTRS = {"fps": 10.0, "task": "t", "robot": "sim", "sim": True, "source": "test"}
TABLE = [("link0", "robot"), ("hand", "gripper"), ("cube", "object"), ("zone", "target")]


@pytest.fixture(scope="module")
def env():
    from robokit.hardware.sim import PandaSimEnv

    sim = PandaSimEnv(task="pick_place", seed=4, image_size=(96, 128))
    sim.reset(seed=4)
    yield sim
    sim.close()


def test_the_sim_mask_shows_the_robot_the_gripper_the_cube_and_the_target_where_they_are(env):
    table = env.instance_table()
    ids = {name: i + 1 for i, (name, _) in enumerate(table)}
    kinds = {kind for _, kind in table}
    assert kinds == {"robot", "gripper", "object", "target"} and table[0] == ("link0", "robot")
    top = env.camera_mask("top")
    assert top.shape == (96, 128) and top.dtype == np.uint8
    seen = set(np.unique(top).tolist())
    assert {ids["cube"], ids["target"], ids["hand"]} <= seen and seen & {ids[f"link{i}"] for i in range(8)}
    ys, xs = np.nonzero(top == ids["cube"])
    x0, y0, x1, y1 = env.object_box("top", "cube")
    assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1  # inside its box
    wrist = env.camera_mask("wrist")
    assert {ids["finger_left"], ids["finger_right"]} <= set(np.unique(wrist).tolist())
    assert env.camera_mask("top") is top  # rendered once per step


def test_masks_round_trip_through_the_recorder_and_are_shown(tmp_path, capsys):
    out = tmp_path / "seg"
    code, _, err = cli(capsys, "record", "--sim", "--teleop", "scripted", "--episodes", "1", "--segmentation",
                       "--image-size", "48x64", "--fps", "10", "--out", out)
    assert code == 0, err
    with open_episode(out / "episode_0.hdf5") as ep:
        assert ep.mask_cameras == ["top", "wrist"] and ep.check() == []
        assert [(i.name, i.kind) for i in ep.mask_instances][-2:] == [("cube", "object"), ("target", "target")]
        top = ep.masks("top")
        assert top.shape == (ep.length, 48, 64) and top.dtype == np.uint8
        cube = next(i.id for i in ep.mask_instances if i.name == "cube")
        boxes = ep.object_boxes("top")["cube"]
        visible = [t for t in range(ep.length) if (top[t] == cube).any()]
        assert len(visible) > ep.length // 2
        for t in visible[::10]:  # the cube's pixels lie in the box recorded at the same step
            xs = np.nonzero(top[t] == cube)[1]
            assert boxes[t, 0] - 1 <= xs.min() and xs.max() <= boxes[t, 2] + 1
    code, text, _ = cli(capsys, "inspect", out / "episode_0.hdf5")
    assert code == 0 and "top, wrist: 13 instances (robot 8, gripper 3, object 1, target 1)" in " ".join(text.split())
    code, text, _ = cli(capsys, "viz", "episode", out / "episode_0.hdf5", "--out", tmp_path / "viz")
    assert code == 0 and (tmp_path / "viz" / "mask_legend.png").is_file()


def test_segmentation_needs_the_simulator(capsys, tmp_path):
    code, _, err = cli(capsys, "record", "--robot", "franka", "--host", "127.0.0.1", "--segmentation",
                       "--out", tmp_path)
    assert code == 2 and "--segmentation renders masks in the simulator: add --sim" in err


def test_the_writer_refuses_missing_or_wrong_masks_and_recovery_keeps_them(tmp_path):
    cams = {"top": (8, 10, 3)}
    w = EpisodeWriter(tmp_path, 0, cams, attrs=ATTRS, mask_instances=TABLE)
    frame = np.zeros((8, 10, 3), np.uint8)
    for t in range(4):
        w.append(np.zeros(8), np.zeros(8), np.zeros(8), {"top": frame}, float(t), {"top": float(t)},
                 masks={"top": np.full((8, 10), t, np.uint8)})
    with pytest.raises(DataError, match="no mask from camera 'top'"):
        w.append(np.zeros(8), np.zeros(8), np.zeros(8), {"top": frame}, 9.0)
    with pytest.raises(DataError, match="uint8 \\(8, 10\\) instance ids"):
        w.append(np.zeros(8), np.zeros(8), np.zeros(8), {"top": frame}, 9.0, masks={"top": np.zeros((8, 9), np.uint8)})
    w.close()  # as a crash leaves it
    assert recover_partial_episodes(tmp_path)[0].startswith("recovered episode_0.hdf5")
    with open_episode(tmp_path / "episode_0.hdf5") as ep:
        assert [m[0, 0] for m in ep.masks("top")] == [0, 1, 2, 3] and ep.check() == []
    with pytest.raises(UserError, match="kind 'arm'"):
        EpisodeWriter(tmp_path, 1, cams, attrs=ATTRS, mask_instances=[("link0", "arm")])


def test_check_names_mask_ids_the_table_does_not_list(tmp_path):
    w = EpisodeWriter(tmp_path, 0, {"top": (8, 10, 3)}, attrs=ATTRS, mask_instances=TABLE)
    w.append(np.zeros(8), np.zeros(8), np.zeros(8), {"top": np.zeros((8, 10, 3), np.uint8)}, 0.0, {"top": 0.0},
             masks={"top": np.full((8, 10), 7, np.uint8)})
    path = w.save()
    with open_episode(path) as ep:
        assert any("ids [7]" in p and "4 instances" in p for p in ep.check())
    with h5py.File(path, "r+") as f:
        del f.attrs["mask_instances"]
    with open_episode(path) as ep:
        assert any("has no id table" in p for p in ep.check())


def test_overlay_tints_instances_and_leaves_background_and_unlabelled_pixels(tmp_path):
    image = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[0, 1, 2], [UNLABELLED, 1, 0]], np.uint8)
    out = overlay_mask(image, mask, 2)
    assert (out[0, 0] == 100).all() and (out[1, 0] == 100).all() and (out[1, 2] == 100).all()
    assert not (out[0, 1] == 100).all() and (out[0, 1] == out[1, 1]).all() and not (out[0, 1] == out[0, 2]).all()


# -- PNG masks of real recordings ------------------------------------------------------------------------
def test_png_masks_beside_the_episodes_are_listed_checked_and_read(tmp_path, capsys, record_episode):
    record_episode(tmp_path, 0, cams=("top",), steps=10, hw=(48, 64))
    write_instances(tmp_path, TABLE)
    folder = tmp_path / "masks" / "episode_0" / "top"
    folder.mkdir(parents=True)
    ids = np.zeros((48, 64), np.uint8)
    ids[10:20, 5:15] = 3
    cv2.imwrite(str(folder / "000004.png"), ids)
    cv2.imwrite(str(folder / "7.png"), np.full((48, 64), UNLABELLED, np.uint8))
    masks = labelled_masks(tmp_path)
    assert [(m.camera, m.step) for m in masks] == [("top", 4), ("top", 7)]
    np.testing.assert_array_equal(read_mask_png(masks[0], (48, 64, 3), 10, len(TABLE)), ids)
    line = "PNG masks: 2 frame(s) of 1 episode(s), 4 instances in masks/instances.json"
    assert check_mask_pngs(tmp_path) == (line, [])

    cv2.imwrite(str(folder / "000008.png"), np.zeros((24, 32), np.uint8))  # another camera size
    cv2.imwrite(str(folder / "000012.png"), ids)  # past the episode's end
    code, out, err = cli(capsys, "inspect", tmp_path)
    text = " ".join(out.split())
    assert code == 2, err
    assert "000008.png: the mask is 32x24 but camera 'top' of episode_0.hdf5 records 64x48 frames" in text
    assert "000012.png: step 12 is past the end of episode_0.hdf5 (10 steps)" in text


def test_png_masks_without_a_table_or_out_of_layout_are_named(tmp_path, record_episode):
    record_episode(tmp_path, 0, cams=("top",), steps=4, hw=(48, 64))
    stray = tmp_path / "masks" / "episode_0" / "frame.png"
    stray.parent.mkdir(parents=True)
    cv2.imwrite(str(stray), np.zeros((48, 64), np.uint8))
    line, problems = check_mask_pngs(tmp_path)
    assert "unusable" in line and "no instances.json" in problems[0]
    write_instances(tmp_path, TABLE)
    with pytest.raises(DataError, match="frame.png: a mask PNG must be masks/episode_<N>/<camera>/<step>.png"):
        labelled_masks(tmp_path)
