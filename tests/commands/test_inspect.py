"""`robokit inspect`: the episode table, validation messages, plots and videos."""

from __future__ import annotations

import cv2
import h5py

from tests.episodes.test_episodes import write_act_sim, write_live_record, write_v1
from tests.record.test_record import cli


def run(capsys, *args) -> tuple[int, str, str]:
    return cli(capsys, "inspect", *args)


def test_folder_table_lists_every_episode(tmp_path, capsys):
    write_v1(tmp_path, index=0, steps=12)
    write_v1(tmp_path, index=1, steps=15, compress="jpeg")
    write_act_sim(tmp_path / "episode_2.hdf5", steps=7)
    write_live_record(tmp_path / "episode_3.hdf5", steps=6, extra=5)
    code, out, err = run(capsys, tmp_path)
    for name, steps in (("episode_0.hdf5", "12"), ("episode_1.hdf5", "15"), ("episode_2.hdf5", "7"),
                        ("episode_3.hdf5", "11")):
        line = next(line for line in out.splitlines() if name in line)
        assert f" {steps} " in line and "ok" in line
    assert "4 episode(s), 45 steps" in out
    assert "success 2/2" in out
    assert "put the cube in the bowl" in out
    # every file reads, but four robots' layouts in one folder cannot be trained on together
    text = " ".join(out.split())
    assert code == 2 and "cannot be trained on together" in err
    assert "episode_2.hdf5 has cameras top but episode_0.hdf5 has top, wrist: train with --camera top" in text
    assert "episode_2.hdf5 has state (qpos) dimension 14 but episode_0.hdf5 has 8" in text


def test_a_consistent_folder_is_ok(tmp_path, capsys):
    for index in range(3):
        write_v1(tmp_path, index=index, steps=4)
    code, out, err = run(capsys, tmp_path)
    assert code == 0, err
    assert "problem" not in out
    assert all("ok" in line for line in out.splitlines() if "episode_" in line and ".hdf5" in line)


def test_rollouts_show_how_often_they_needed_the_safety_filter(tmp_path, capsys):
    for index in range(3):
        write_v1(tmp_path, index=index, steps=4)
    records = {1: {"joint_clamps": 2, "velocity_clamps": 5, "workspace_projected": 1, "watchdog_holds": 3,
                   "reflex_stops": 1, "max_command_gap_rad": 0.0423},
               2: {"joint_clamps": 0, "velocity_clamps": 0, "watchdog_holds": 0, "reflex_stops": 0,
                   "max_command_gap_rad": 0.0}}
    for index, record in records.items():
        with h5py.File(tmp_path / f"episode_{index}.hdf5", "a") as f:
            f.attrs.update({f"safety_{key}": value for key, value in record.items()})
    code, out, err = run(capsys, tmp_path)
    assert code == 0, err
    lines = {name: next(line for line in out.splitlines() if name in line)
             for name in ("episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5")}
    assert "safety" in out.splitlines()[2]  # the header has the column
    assert "8 clamps, 3 holds, 1 reflex, gap 0.042" in lines["episode_1.hdf5"]
    assert "0 clamps" in lines["episode_2.hdf5"] and "hold" not in lines["episode_2.hdf5"]
    assert " - " in lines["episode_0.hdf5"]  # a recording has no safety record


def test_a_folder_of_recordings_has_no_safety_column(tmp_path, capsys):
    write_v1(tmp_path, index=0, steps=4)
    assert "safety" not in run(capsys, tmp_path)[1]


def test_episodes_with_other_cameras_are_a_problem(tmp_path, capsys):
    write_v1(tmp_path, index=0, steps=4, cams=("top", "wrist"))
    write_v1(tmp_path, index=1, steps=4, cams=("top",))
    code, out, err = run(capsys, tmp_path)
    assert code == 2 and "cannot be trained on together" in err
    assert "episode_1.hdf5 has cameras top but episode_0.hdf5 has top, wrist: train with --camera top" in \
        " ".join(out.split())


def test_a_recovered_episode_is_marked(tmp_path, capsys):
    write_v1(tmp_path, index=0, steps=4)
    with h5py.File(write_v1(tmp_path, index=1, steps=4), "a") as f:
        f.attrs["recovered"] = True
    code, out, err = run(capsys, tmp_path)
    assert code == 0, err
    line = next(line for line in out.splitlines() if "episode_1.hdf5" in line)
    assert "recovered" in line and "ok" not in line
    assert "1 recovered episode(s) (episode_1.hdf5): cut short by a crash" in " ".join(out.split())
    code, out, _ = run(capsys, tmp_path / "episode_1.hdf5")
    assert "recovered (cut short)" in out


def test_corrupt_and_unfinished_files_are_named(tmp_path, capsys):
    write_v1(tmp_path, index=0, steps=5)
    (tmp_path / "episode_1.hdf5").write_bytes(b"not an hdf5 file")
    (tmp_path / "episode_2.hdf5.partial").write_bytes(b"")
    code, out, err = run(capsys, tmp_path)
    assert code == 2
    assert "episode_1.hdf5: not a readable HDF5 file" in " ".join(out.split())
    assert "unfinished" in out and "robokit record --out" in out
    assert "1 file(s)" in err

    code, out, err = run(capsys, tmp_path / "episode_1.hdf5")
    assert code == 2 and "not a readable HDF5 file" in err


def test_single_episode_with_plot_and_video(tmp_path, capsys):
    path = write_v1(tmp_path / "data", steps=9, cams=("top", "wrist"))
    code, out, err = run(capsys, path, "--plot", "--video", "-o", tmp_path / "out")
    assert code == 0, err
    assert "robokit-v1" in out and "fps (achieved)" in out and "camera wrist" in out
    png = tmp_path / "out" / "episode_0_joints.png"
    assert png.stat().st_size > 1000 and cv2.imread(str(png)) is not None
    video = cv2.VideoCapture(str(tmp_path / "out" / "episode_0.mp4"))
    frames = 0
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames += 1
        assert frame.shape[1] >= 2 * 64  # both cameras side by side
    assert frames == 9


def test_an_empty_episode_is_reported_not_plotted(tmp_path, capsys):
    write_v1(tmp_path, index=0, steps=3)
    with h5py.File(tmp_path / "episode_1.hdf5", "w") as f:  # an ACT-layout file with no steps
        f.create_dataset("action", shape=(0, 14), maxshape=(None, 14), dtype="f4")
        f.create_dataset("observations/qpos", shape=(0, 14), maxshape=(None, 14), dtype="f4")
        f.create_dataset("observations/images/top", shape=(0, 8, 8, 3), maxshape=(None, 8, 8, 3), dtype="u1")
    code, out, err = run(capsys, tmp_path, "--plot")
    assert code == 2 and "1 file(s)" in err
    text = " ".join(out.split())
    assert "episode_1.hdf5: the episode has no steps" in text and "episode_1.hdf5: no steps, nothing to plot" in text
    assert (tmp_path / "episode_0_joints.png").exists()


def test_missing_path_is_a_user_error(tmp_path, capsys):
    code, _, err = run(capsys, tmp_path / "nope")
    assert code == 2 and "no such file or folder" in err


def test_unusable_output_folder_is_a_user_error(tmp_path, capsys):
    path = write_v1(tmp_path, steps=3)
    code, _, err = run(capsys, path, "--plot", "-o", path / "plots")  # under a file
    assert code == 2 and "cannot create the output folder" in err and "--output" in err


def test_checkpoint_summary(capsys, make_tiny_checkpoint):
    path = make_tiny_checkpoint("act", {"dataset": "data/pick", "step": 120, "val_loss": 0.25})
    code, out, err = run(capsys, path)
    assert code == 0, err
    assert "act" in out and "data/pick" in out and "120" in out and "0.25" in out
    assert "config hidden_dim" in out
