"""LeRobotDataset v3.0 export and import: the layout LeRobot reads, a lossless round trip of everything
but the images, images within the video codec's loss, and one clear line for each bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
av = pytest.importorskip("av")

from robokit.cli import main
from robokit.episodes.reader import list_episodes, open_episode
from robokit.errors import DataError, UserError
from robokit.lerobot.export import export_lerobot
from robokit.lerobot.importer import import_lerobot
from robokit.training.dataset import scan_episodes
from tests.record.test_record import cli


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def yuv420_bound(frames: np.ndarray) -> float:
    """PSNR of the frames through yuv420p alone, without a codec: what the pixel format LeRobot
    uses costs at this size (chroma at half resolution), the ceiling for any encoder."""
    back = np.stack([av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                     .reformat(format="yuv420p").to_ndarray(format="rgb24") for f in frames])
    return psnr(frames, back)


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory) -> Path:
    """Two scripted sim episodes at 32x40, recorded by `robokit record` (cameras top and wrist)."""
    out = tmp_path_factory.mktemp("sim") / "data"
    main(["record", "--sim", "--teleop", "scripted", "--episodes", "2", "--image-size", "32x40",
          "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def exported(sim_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "pick"
    report = export_lerobot(sim_data, out, repo_id="lab/pick")
    assert report.episodes == 2 and report.cameras == ["top", "wrist"] and report.frames > 0
    return out


def test_export_writes_the_v3_layout(exported, sim_data):
    info = json.loads((exported / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (1000, 100, 200)
    feats = info["features"]
    for name in ("observation.state", "action", "observation.images.top", "observation.images.wrist",
                 "timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert name in feats, name
    assert feats["observation.state"] == {"dtype": "float32", "shape": [8], "names": feats["observation.state"]["names"]}
    top = feats["observation.images.top"]
    assert top["dtype"] == "video" and top["shape"] == [32, 40, 3]
    assert top["info"]["video.pix_fmt"] == "yuv420p" and top["info"]["video.codec"] in ("av1", "h264")
    with open_episode(list_episodes(sim_data)[0]) as ep:
        assert info["fps"] == round(ep.fps)
        first_len = ep.length
    for rel in ("meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-000.parquet", "videos/observation.images.top/chunk-000/file-000.mp4",
                "videos/observation.images.wrist/chunk-000/file-000.mp4"):
        assert (exported / rel).is_file(), rel
    assert not list(exported.parent.glob(".*partial*"))  # written aside, renamed into place

    # tasks: pandas' layout, the strings as the index LeRobot looks them up by
    tasks = pq.read_table(exported / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert tasks.column("task_index").to_pylist() == [0]

    # episodes back to back in one data file and one video per camera
    eps = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in eps] == [0, 1]
    assert eps[0]["dataset_from_index"] == 0 and eps[1]["dataset_from_index"] == eps[0]["dataset_to_index"]
    key = "videos/observation.images.top"
    assert eps[0][f"{key}/from_timestamp"] == 0.0
    assert eps[1][f"{key}/from_timestamp"] == pytest.approx(first_len / info["fps"])
    data = pq.read_table(exported / "data/chunk-000/file-000.parquet")
    assert data.num_rows == info["total_frames"]
    assert pa.types.is_fixed_size_list(data.schema.field("observation.state").type)
    frame_index = np.asarray(data.column("frame_index"))
    np.testing.assert_allclose(np.asarray(data.column("timestamp")), frame_index / info["fps"], rtol=1e-6)
    stats = json.loads((exported / "meta/stats.json").read_text())
    assert np.array(stats["observation.images.top"]["mean"]).shape == (3, 1, 1)
    assert set(stats["action"]) >= {"min", "max", "mean", "std", "count", "q01", "q99"}
    assert "lab/pick" in (exported / "README.md").read_text()


def test_round_trip_keeps_everything_but_image_noise(exported, sim_data, tmp_path):
    back = tmp_path / "back"
    report = import_lerobot(exported, back)
    assert report.episodes == 2
    originals, imported = list_episodes(sim_data), list_episodes(back)
    assert [p.name for p in originals] == [p.name for p in imported]
    for a_path, b_path in zip(originals, imported, strict=True):
        with open_episode(a_path) as a, open_episode(b_path) as b:
            assert b.check() == []
            np.testing.assert_array_equal(a.qpos(), b.qpos())
            np.testing.assert_array_equal(a.action(), b.action())
            np.testing.assert_array_equal(a.qvel(), b.qvel())
            np.testing.assert_array_equal(a.done(), b.done())
            for clock in ("robot", "top", "wrist"):
                np.testing.assert_array_equal(a.timestamps(clock), b.timestamps(clock))
            assert (b.task, b.fps, b.success, b.camera_names) == (a.task, a.fps, a.success, a.camera_names)
            for key in ("robot", "sim", "source", "seed"):
                assert b.attrs.get(key) == a.attrs.get(key), key
            for cam in a.camera_names:
                original, decoded = a.images(cam), b.images(cam)
                assert decoded.shape == original.shape
                # At 32x40 yuv420p alone costs ~30 dB; the codec must add little to that.
                quality, ceiling = psnr(original, decoded), yuv420_bound(original)
                assert quality > 25.0 and quality > ceiling - 2.0, (cam, quality, ceiling)


def test_tasks_of_several_episodes_and_the_cli(record_episode, tmp_path, capsys):
    data = tmp_path / "data"
    for index, task in enumerate(["pick the cube", "push the cube", "pick the cube"]):
        record_episode(data, index, cams=("top",), steps=6, hw=(16, 24), task=task)
    out = tmp_path / "lr"
    code, stdout, err = cli(capsys, "export", data, "--format", "lerobot", "--out", out, "--repo-id", "lab/x",
                            "--codec", "h264")
    assert code == 0, err
    assert "3 episode(s)" in stdout and "LeRobotDataset('lab/x'" in stdout
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == ["pick the cube", "push the cube"]
    data_table = pq.read_table(out / "data/chunk-000/file-000.parquet")
    by_episode = dict(zip(data_table.column("episode_index").to_pylist(), data_table.column("task_index").to_pylist(),
                          strict=False))
    assert by_episode == {0: 0, 1: 1, 2: 0}
    assert json.loads((out / "meta/info.json").read_text())["features"]["observation.images.top"]["info"][
        "video.codec"] == "h264"

    code, stdout, _ = cli(capsys, "inspect", out)  # a LeRobot folder: its metadata, and how to import it
    assert code == 0 and "LeRobot v3.0" in stdout and "push the cube" in stdout and "robokit import" in stdout
    with pytest.raises(DataError, match="robokit import"):  # what `robokit train` says
        scan_episodes(out)

    back = tmp_path / "back"
    code, stdout, err = cli(capsys, "import", out, "--format", "lerobot", "--out", back, "--compress", "lzf")
    assert code == 0, err
    assert [open_episode(p).task for p in list_episodes(back)] == ["pick the cube", "push the cube", "pick the cube"]
    code, _, err = cli(capsys, "export", data, "--format", "lerobot", "--out", out)  # never over a dataset
    assert code == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "export", data, "--format", "rlds", "--out", tmp_path / "y")
    assert code == 2 and "unknown --format 'rlds'" in err


def _copy_with_info(exported: Path, dest: Path, change) -> Path:
    shutil.copytree(exported, dest)
    info = json.loads((dest / "meta/info.json").read_text())
    change(info)
    (dest / "meta/info.json").write_text(json.dumps(info))
    return dest


def test_unsupported_versions_and_layouts_are_one_clear_line(exported, tmp_path, capsys):
    old = _copy_with_info(exported, tmp_path / "v21", lambda i: i.update(codebase_version="v2.1"))
    with pytest.raises(DataError, match=r"LeRobot v2\.1 dataset; robokit reads v3\.0: convert it"):
        import_lerobot(old, tmp_path / "o1")
    code, _, err = cli(capsys, "import", old, "--format", "lerobot", "--out", tmp_path / "o1")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "convert_dataset_v21_to_v30" in err

    no_info = tmp_path / "no_info"
    shutil.copytree(exported, no_info)
    (no_info / "meta/info.json").unlink()
    with pytest.raises(DataError, match="no meta/info.json"):
        import_lerobot(no_info, tmp_path / "o2")

    def drop(name):
        return lambda info: info["features"].pop(name)

    no_state = _copy_with_info(exported, tmp_path / "no_state", drop("observation.state"))
    with pytest.raises(DataError, match="no 'observation.state' feature"):
        import_lerobot(no_state, tmp_path / "o3")
    no_action = _copy_with_info(exported, tmp_path / "no_action", drop("action"))
    with pytest.raises(DataError, match="no 'action' feature"):
        import_lerobot(no_action, tmp_path / "o4")

    def no_cameras(info):
        for cam in ("top", "wrist"):
            info["features"].pop(f"observation.images.{cam}")

    blind = _copy_with_info(exported, tmp_path / "blind", no_cameras)
    with pytest.raises(DataError, match="no image or video feature"):
        import_lerobot(blind, tmp_path / "o5")
    code, _, err = cli(capsys, "inspect", blind)
    assert code == 2 and "no image or video feature" in err
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir() if p.is_dir())  # nothing half-written


def test_a_missing_extra_names_it(exported, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    with pytest.raises(UserError, match=r"pip install 'robokit\[lerobot\]'"):
        import_lerobot(exported, tmp_path / "o")


def test_a_dataset_without_robokit_columns_imports_with_defaults(exported, sim_data, tmp_path):
    """As a LeRobot dataset recorded elsewhere: no velocities, done flags or robokit clocks."""
    def foreign(info):
        for name in [n for n in info["features"] if n.startswith("robokit.") or n in ("observation.velocity",
                                                                                         "next.done")]:
            info["features"].pop(name)

    plain = _copy_with_info(exported, tmp_path / "plain", foreign)
    import_lerobot(plain, tmp_path / "back")
    with open_episode(list_episodes(sim_data)[1]) as a, open_episode(tmp_path / "back/episode_1.hdf5") as b:
        assert b.check() == []
        np.testing.assert_array_equal(a.qpos(), b.qpos())
        np.testing.assert_array_equal(b.done(), np.arange(b.length) == b.length - 1)
        np.testing.assert_array_equal(b.qvel(), np.zeros_like(a.qvel()))
        np.testing.assert_array_equal(b.timestamps("robot"), np.arange(b.length) / a.fps)
        assert b.task == a.task
