"""Episode and rollout viz: joint plots (with predicted chunks) and the camera mosaic video."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest

from robokit.cli import main
from robokit.episodes.reader import open_episode
from robokit.errors import DataError
from robokit.viz.episode import plot_episode, render_episode, write_episode_video

T, H, W = 24, 48, 64  # the record_episode fixture's steps and frame size


def test_episode_plot_and_video(tmp_path, record_episode, read_video):
    ep = record_episode(tmp_path / "data")
    r = render_episode(ep, tmp_path / "viz")
    assert r.steps == T and r.predicted_chunks == 0
    plot = cv2.imread(str(r.plot))
    assert plot is not None and plot.shape[0] > 300 and plot.shape[1] > 600
    frames = read_video(r.video)
    assert len(frames) == T
    assert frames[0].shape[:2] == (H, 2 * W)  # the two cameras side by side
    # the cameras hold only black and red pixels: white ones are the overlay text, top left
    white = np.all(frames[5] > 150, axis=-1)
    assert white[:20].any() and not white[42:].any()  # two lines: step/time, task


def test_rollout_with_predicted_chunks_via_cli(tmp_path, capsys, record_episode):
    folder = tmp_path / "rollouts"
    chunks = np.full((T, 10, 8), np.nan, np.float32)
    chunks[::5] = 0.5  # queried every 5 steps (chunked execution)
    record_episode(folder, chunks=chunks)
    main(["viz", "rollout", str(folder), "--no-video"])
    out = folder / "viz" / "episode_0"
    assert (out / "joints.png").exists() and not (out / "cameras.mp4").exists()
    assert "5 predicted chunks drawn" in capsys.readouterr().err


def test_rollout_chunks_of_wrong_length_or_width_are_refused(tmp_path, record_episode):
    ep = record_episode(tmp_path / "data")
    with h5py.File(ep, "a") as f:  # hand-edited files: the writer cannot produce these
        f.create_dataset("predicted_chunks", data=np.zeros((T - 1, 10, 8), np.float32))
    with pytest.raises(DataError, match=r"predicted_chunks has shape \(23, 10, 8\).*24 steps"):
        render_episode(ep, tmp_path / "viz")
    ep = record_episode(tmp_path / "data", index=1, chunks=np.zeros((T, 10, 7), np.float32))
    with pytest.raises(DataError, match=r"predicted_chunks must be \(24, H, 8\)"):
        render_episode(ep, tmp_path / "viz")


def test_episode_cli_default_output_and_unknown_camera(tmp_path, capsys, record_episode):
    ep = record_episode(tmp_path / "data")
    main(["viz", "episode", str(ep), "--no-video"])
    assert (ep.with_name("episode_0_viz") / "joints.png").exists()
    with pytest.raises(SystemExit) as info:
        main(["viz", "episode", str(tmp_path / "data" / "episode_9.hdf5")])
    assert info.value.code == 2 and "episode_9.hdf5" in capsys.readouterr().err


def test_rendering_leaves_the_matplotlib_backend_alone(tmp_path, record_episode):
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("pdf")  # a user's choice, not Agg: rendering must not switch it
    try:
        ep = record_episode(tmp_path / "data")
        render_episode(ep, tmp_path / "viz", video=False)
        with open_episode(ep) as opened:  # the plot `robokit inspect --plot` writes
            plot_episode(opened, tmp_path / "inspect.png")
        assert matplotlib.get_backend() == "pdf"
        assert cv2.imread(str(tmp_path / "inspect.png")) is not None
    finally:
        matplotlib.use(before)


def test_inspect_and_viz_draw_the_same_video(tmp_path, record_episode):
    ep = record_episode(tmp_path / "data")
    viz = render_episode(ep, tmp_path / "viz", video_height=H // 2)
    with open_episode(ep) as opened:
        path = write_episode_video(opened, tmp_path / "inspect.mp4", height=H // 2)
    shapes = []
    for video in (viz.video, path):
        cap = cv2.VideoCapture(str(video))
        ok, frame = cap.read()
        cap.release()
        assert ok
        shapes.append(frame.shape)
    assert shapes[0] == shapes[1] == (H // 2, W, 3)  # two cameras at half height, side by side
