"""`robokit view` (episodes and rollouts into rerun) and `robokit devices --snapshot`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from robokit.cli import app
from robokit.deploy.loop_results import StepRecord
from robokit.deploy.recording import RolloutRecorder
from robokit.hardware.base import Frame, RobotState

pytest.importorskip("rerun")


def rrd_summary(path: Path) -> dict[str, tuple[int, set[str]]]:
    """Entity -> (rows, timelines) of the time-indexed data of a .rrd file, read with rerun's own reader."""
    from rerun.chunk import RrdReader

    found: dict[str, tuple[int, set[str]]] = {}
    for line in RrdReader(path).store().summary().splitlines():
        parts = line.split()
        if "static=True" in line:
            continue
        rows, timelines = found.get(parts[0], (0, set()))
        listed = line.split("timelines=[", 1)[1].split("]", 1)[0]
        found[parts[0]] = (rows + int(parts[1].split("=")[1]),
                           timelines | {t.strip(" '") for t in listed.split(",") if t.strip()})
    return found


def make_rollout(folder: Path, steps: int = 10) -> Path:
    """A deploy rollout with predicted chunks, interventions and the policy's actions."""
    recorder = RolloutRecorder(folder, {"top": (24, 32, 3)}, 10.0, "sim", True, chunk_shape=(4, 8), takeover=True,
                               action_dim=8)
    recorder.start("pick the cube")
    for t in range(steps):
        state = RobotState(t=t * 0.1, qpos=np.full(7, 0.01 * t), qvel=np.zeros(7), gripper=0.0)
        frame = Frame(image=np.full((24, 32, 3), 10 * t, np.uint8), t_capture=t * 0.1, t_receive=t * 0.1, index=t)
        chunks = [(t, np.full((4, 8), float(t), np.float32))] if t % 3 == 0 else []
        recorder(StepRecord(t, state, {"top": frame}, np.zeros(8, np.float32), True, chunks,
                            intervention=t >= 5, policy_action=np.ones(8, np.float32)))
    return Path(recorder.finish(True, {}))


def test_view_saves_a_rollout_with_its_chunks_and_interventions(tmp_path: Path):
    episode = make_rollout(tmp_path / "rollouts")
    out = tmp_path / "rollout.rrd"
    result = CliRunner().invoke(app, ["view", str(episode), "--save", str(out)])
    assert result.exit_code == 0, result.output
    assert "predicted_chunks" in result.output and "intervention" in result.output
    found = rrd_summary(out)
    assert found["/cameras/top"][0] == 10 and found["/robot/qpos"][0] == 10 and found["/robot/action"][0] == 10
    assert found["/policy/predicted_chunk"][0] == 4  # steps 0, 3, 6, 9 queried the policy
    assert found["/policy/intervention"][0] == 10 and found["/policy/action"][0] == 10
    assert {"step", "time"} <= found["/robot/qpos"][1] and {"step", "time"} <= found["/cameras/top"][1]


def test_view_saves_one_rrd_per_episode_of_a_folder(tmp_path: Path, episode_files):
    for index in range(2):
        episode_files.v1(tmp_path / "data", index, length=6, cams={"top": (16, 20), "wrist": (16, 20)})
    result = CliRunner().invoke(app, ["view", str(tmp_path / "data"), "--save", str(tmp_path / "rrd")])
    assert result.exit_code == 0, result.output
    for index in range(2):
        found = rrd_summary(tmp_path / "rrd" / f"episode_{index}.rrd")
        assert found["/cameras/wrist"][0] == 6 and found["/episode/done"][0] == 6
        assert "/policy/predicted_chunk" not in found  # a recording, not a rollout


@pytest.mark.parametrize("args, message", [
    (["--save", "a.rrd", "--web"], "one of --save, --web and --connect"),
    (["--connect", "host:notaport"], "HOST[:PORT]"),
])
def test_view_bad_options_are_one_clear_error(tmp_path: Path, episode_files, args, message):
    episode = episode_files.v1(tmp_path, 0, length=3)
    result = CliRunner().invoke(app, ["view", str(episode), *args])
    assert result.exit_code != 0 and message in str(result.exception)


def test_view_of_a_missing_folder_names_it(tmp_path: Path):
    result = CliRunner().invoke(app, ["view", str(tmp_path / "nope"), "--save", str(tmp_path / "x.rrd")])
    assert result.exit_code != 0 and "nope" in str(result.exception)


@pytest.mark.parametrize("sim", [False, True])
def test_devices_snapshot_writes_pngs_and_a_contact_sheet(tmp_path: Path, sim: bool):
    args = ["devices", "--snapshot", str(tmp_path / "snap"), "--camera", "test=synthetic", "--height", "120",
            "--width", "160"]
    if sim:
        args += ["--sim", "--camera", "top=sim:top"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    names = ["test", "top"] if sim else ["test"]
    for name in names:
        image = cv2.imread(str(tmp_path / "snap" / f"{name}.png"))
        assert image is not None and image.shape == (120, 160, 3)
    sheet = cv2.imread(str(tmp_path / "snap" / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[1] > 160 * len(names) * 0.9  # the tiles side by side
    assert "contact sheet" in result.output and "160x120" in result.output


def test_devices_snapshot_with_only_the_simulator(tmp_path: Path):
    result = CliRunner().invoke(app, ["devices", "--sim", "--snapshot", str(tmp_path), "--height", "60",
                                      "--width", "80"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.glob("*.png")} == {"top.png", "wrist.png", "contact_sheet.png"}
