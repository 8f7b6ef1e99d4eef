"""Measured delays: the arm's response to a step, the policy round trip, the saved report, and
`robokit devices --latency` / `robokit deploy --latency` on the simulation."""

import json

import numpy as np
import pytest

from robokit.deploy.latency import (
    CameraDelay,
    LatencyReport,
    MotionDelay,
    PolicyDelay,
    load_latency,
    measure_motion_delay,
    measure_policy_delay,
)
from robokit.deploy.runner import LocalRunner
from robokit.errors import UserError
from tests.deploy.test_loop import GoToPolicy


@pytest.fixture
def env():
    from robokit.hardware.sim import PandaSimEnv

    sim = PandaSimEnv(task="pick_place", seed=1, image_size=(24, 32), camera_names=("top",), control_hz=100.0)
    sim.reset(seed=1)
    yield sim
    sim.close()


def test_the_sim_arm_responds_to_a_step_after_a_few_ticks_and_ends_where_it_began(env):
    start = env.robot.read().qpos
    delay = measure_motion_delay(env.robot, env.step, trials=4)
    assert 10.0 <= delay.first_motion_ms <= delay.response_ms <= 500.0  # at least one 10 ms tick
    np.testing.assert_allclose(env.robot.read().qpos, start, atol=0.01)  # four steps, two each way


def test_an_arm_that_does_not_follow_is_a_hardware_fault_naming_the_joint(env, monkeypatch):
    from robokit.errors import HardwareFault

    monkeypatch.setattr(env.robot, "command", lambda q, g: None)  # as in guiding mode: targets ignored
    with pytest.raises(HardwareFault, match="joint 7 did not follow"):
        measure_motion_delay(env.robot, env.step, timeout_s=0.5)


def test_policy_delay_times_every_query():
    policy = GoToPolicy(delay_s=0.01)
    delay = measure_policy_delay(LocalRunner(policy), queries=5, warmup=1)
    assert delay.queries == 5 and policy.calls == 6
    assert 10.0 <= delay.model_median_ms <= delay.rtt_median_ms <= delay.rtt_p95_ms


def test_a_report_round_trips_and_its_delay_is_the_slowest_camera_plus_the_arm(tmp_path):
    report = LatencyReport(cameras={"top": CameraDelay(30.0, 40.0, 10), "wrist": CameraDelay(50.0, 60.0, 10)},
                           policy=PolicyDelay(20.0, 25.0, 15.0, 20), robot=MotionDelay(10.0, 40.0, 4, 6, 0.05),
                           setup={"robot": "franka"})
    assert report.action_delay_s == pytest.approx(0.090)
    again = load_latency(report.save(tmp_path / "rig" / "latency.json"))
    assert again == report


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": 99}), json.dumps({"format": 1, "robot": 3})])
def test_a_file_that_is_not_a_latency_report_is_named(tmp_path, content):
    path = tmp_path / "latency.json"
    path.write_text(content)
    with pytest.raises(UserError, match="latency.json is not a latency file"):
        load_latency(path)
    with pytest.raises(UserError, match="devices --latency"):
        load_latency(tmp_path / "missing.json")


def test_devices_latency_in_sim_prints_and_saves_the_three_delays(make_tiny_checkpoint, tmp_path, capsys):
    from robokit.cli import main

    checkpoint = make_tiny_checkpoint("act", {"fps": 30.0}, fps=30.0)
    saved = tmp_path / "latency.json"
    main(["devices", "--latency", "--sim", "--checkpoint", str(checkpoint), "--device", "cpu", "--queries", "3",
          "--save", str(saved)])
    out = capsys.readouterr().out
    for row in ("camera top", "infer round trip", "command to 50 %"):
        assert row in out
    report = load_latency(saved)
    assert report.policy is not None and report.robot is not None and set(report.cameras) == {"top", "wrist"}
    assert report.action_delay_s == pytest.approx(report.robot.response_ms / 1000.0)  # sim frames are not late

    main(["deploy", "--sim", str(checkpoint), "--episodes", "1", "--max-steps", "6", "--device", "cpu",
          "--latency", str(saved), "--json", str(tmp_path / "r.json")])
    assert f"from {saved}" in capsys.readouterr().out
    settings = json.loads((tmp_path / "r.json").read_text())["settings"]
    assert settings["action_delay_s"] == pytest.approx(report.action_delay_s)


def test_a_latency_file_of_another_robot_is_used_with_a_warning(make_tiny_checkpoint, tmp_path, capsys):
    from robokit.cli import main

    checkpoint = make_tiny_checkpoint("act", {"fps": 30.0}, fps=30.0)
    franka = LatencyReport(robot=MotionDelay(100.0, 200.0, 4, 6, 0.05), setup={"robot": "franka", "dynamics": 0.1})
    main(["deploy", "--sim", str(checkpoint), "--episodes", "1", "--max-steps", "4", "--device", "cpu",
          "--latency", str(franka.save(tmp_path / "franka.json"))])
    out = " ".join(capsys.readouterr().out.split())
    assert "action delay 200 ms" in out and "was measured on franka, not on this robot" in out
