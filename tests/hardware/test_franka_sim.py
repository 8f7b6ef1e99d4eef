"""The Franka backend driven for real through franky against franky-sim.

franky-sim is a MuJoCo server speaking the libfranka protocol on loopback; franky connects to it as
to a robot. One server runs for the whole module; each test connects its own FrankaRobot.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import subprocess
import sys
import time
import weakref

import numpy as np
import pytest

from robokit.errors import ConfigError, DeviceNotFound, HardwareFault, UserError
from robokit.hardware.base import PANDA_READY_POSE
from robokit.hardware.franka import FCI_COMMAND_PORT, FrankaRobot, has_realtime_kernel, translate_error

pytestmark = pytest.mark.franka

JOINT_ATOL = 0.03  # rad; franky-sim's position tracking settles well within this


@pytest.fixture(scope="module")
def franky_sim_server():
    """Start franky-sim once; yield its robot server (what a libfranka client connects to)."""
    pytest.importorskip("franky", reason="franky (PyPI franky-control) is not installed")
    pytest.importorskip("franky_sim", reason="franky-sim is not installed (pip install 'robokit[dev]')")
    from franky_sim import SimulationServer
    from franky_sim.mujoco_simulator import MujocoSimulator

    with MujocoSimulator() as sim:
        sim.add_robot()
        with SimulationServer(sim) as server:
            server.run_async()
            yield server.robot_servers[0]


@pytest.fixture(scope="module")
def sim_host(franky_sim_server):
    """The loopback address franky-sim listens on."""
    return franky_sim_server.hostname


@pytest.fixture
def robot(sim_host):
    with FrankaRobot(sim_host, realtime="ignore", relative_dynamics_factor=0.5) as arm:
        yield arm


def drive_to(arm: FrankaRobot, goal: np.ndarray, gripper: float = 0.0, deadline_s: float = 15.0) -> np.ndarray:
    """Stream `goal` at 50 Hz until the arm has settled near it (or the deadline passes); return qpos."""
    end = time.monotonic() + deadline_s
    reachable = np.clip(goal, *arm.joint_limits)
    still = 0
    previous = arm.read().qpos
    while time.monotonic() < end:
        arm.command(goal, gripper)
        time.sleep(0.02)
        q = arm.read().qpos
        settled = np.max(np.abs(q - previous)) < 1e-3 and np.max(np.abs(q - reachable)) < JOINT_ATOL
        still = still + 1 if settled else 0
        previous = q
        if still >= 5:
            break
    return previous


def test_connect_and_read_state(robot):
    first = robot.read()
    second = robot.read()
    assert robot.kind == "franka" and robot.connected
    assert first.qpos.shape == (7,) and first.qvel.shape == (7,)
    assert np.all(np.isfinite(first.qpos)) and np.all(np.isfinite(first.qvel))
    assert second.t >= first.t and abs(second.t - time.monotonic()) < 5.0  # monotonic clock
    assert 0.0 <= first.gripper <= 1.0
    q_min, q_max = robot.joint_limits
    assert np.all(q_min < first.qpos) and np.all(first.qpos < q_max)
    assert first.as_vector().shape == (8,)


def test_streamed_targets_replace_each_other_and_reach_goal(robot):
    start = robot.read().qpos
    goal = start + np.array([0.25, -0.15, 0.2, 0.15, -0.2, 0.15, 0.3])
    # A ramp of 40 targets, each replacing the previous one before it is reached...
    for alpha in np.linspace(0.0, 1.0, 40):
        robot.command(start + alpha * (goal - start), 0.0)
        time.sleep(0.02)
    # ...then the final target held until the arm settles.
    final = drive_to(robot, goal)
    np.testing.assert_allclose(final, goal, atol=JOINT_ATOL)


def test_gripper_close_and_open_without_resending(robot):
    q = robot.read().qpos
    for _ in range(10):  # the same target every tick: one command to the hand
        robot.command(q, 1.0)
    robot.wait_gripper(10.0)
    sent_for_close = robot.gripper_commands
    assert robot.read().gripper > 0.9
    for _ in range(10):
        robot.command(q, 0.0)
    robot.wait_gripper(10.0)
    assert robot.read().gripper < 0.1
    assert robot.gripper_commands - sent_for_close == 1


def test_home_moves_to_ready_pose_and_opens_gripper(robot):
    away = PANDA_READY_POSE + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.3, 0.2])
    drive_to(robot, away, gripper=1.0)
    robot.wait_gripper(10.0)
    robot.home()
    state = robot.read()
    np.testing.assert_allclose(state.qpos, PANDA_READY_POSE, atol=JOINT_ATOL)
    assert state.gripper < 0.1


def test_stop_halts_motion_and_streaming_resumes(robot):
    start = robot.read().qpos
    far = start + np.array([0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    robot.command(far, 0.0)
    time.sleep(0.3)
    robot.stop()
    time.sleep(0.8)
    halted = robot.read().qpos
    time.sleep(0.3)
    np.testing.assert_allclose(robot.read().qpos, halted, atol=0.01)  # standing (holding where it stopped)
    assert abs(halted[0] - far[0]) > 0.1  # it did not finish the motion
    np.testing.assert_allclose(drive_to(robot, start), start, atol=JOINT_ATOL)


def test_out_of_limit_target_is_clamped_and_reported(robot, caplog):
    q = robot.read().qpos
    _, q_max = robot.joint_limits
    bad = q.copy()
    bad[3] = 1.0  # joint 4 must stay below about -0.07 rad on a Panda/FR3
    with caplog.at_level(logging.WARNING, logger="robokit.hardware.franka"):
        robot.command(bad, 0.0)
    assert robot.clamps.count == 1
    assert robot.clamps.joints == (3,)
    assert robot.clamps.sent[3] == pytest.approx(q_max[3])
    assert any("clamped" in record.getMessage() and "joint4" in record.getMessage() for record in caplog.records)
    highest, sent = -np.inf, 0
    # Keep streaming it for a second (longer on a loaded machine, where the simulated controller runs
    # behind wall time, until the joint has moved): clamped every time, never sent as is.
    while sent < 50 or (highest < q[3] + 0.1 and sent < 500):
        robot.command(bad, 0.0)
        sent += 1
        highest = max(highest, robot.read().qpos[3])
        time.sleep(0.02)
    assert robot.clamps.count == 1 + sent
    assert q[3] + 0.1 < highest <= q_max[3] + 0.01  # moving towards the limit, not past it
    drive_to(robot, q)


def test_non_finite_target_is_refused(robot):
    q = robot.read().qpos
    with pytest.raises(UserError, match="non-finite"):
        robot.command(np.full(7, np.nan), 0.0)
    with pytest.raises(UserError, match="7 values"):
        robot.command(q[:6], 0.0)


def test_kinesthetic_mode_ignores_targets_until_switched_off(robot):
    start = robot.read().qpos
    goal = start + np.array([0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    robot.set_kinesthetic(True)
    assert robot.kinesthetic
    for _ in range(25):
        robot.command(goal, 0.0)
        time.sleep(0.02)
    assert abs(robot.read().qpos[0] - goal[0]) > 0.2  # the arm is the person's, not the policy's
    robot.set_kinesthetic(False)
    assert not robot.kinesthetic
    np.testing.assert_allclose(drive_to(robot, goal), goal, atol=JOINT_ATOL)


def test_realtime_enforce_on_a_non_rt_machine_names_the_ignore_flag(sim_host):
    if has_realtime_kernel():
        pytest.skip("this machine has a real-time kernel, so enforce connects")
    with pytest.raises(ConfigError, match="--realtime ignore"):
        FrankaRobot(sim_host, realtime="enforce").open()


def test_devices_command_checks_the_robot(sim_host):
    out = subprocess.run(
        [sys.executable, "-m", "robokit.cli", "devices", "--robot", "franka", "--host", sim_host,
         "--realtime", "ignore"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "robot connection OK" in out.stdout
    assert "joint positions" in out.stdout


def test_devices_latency_measures_camera_policy_and_arm_against_franky_sim(sim_host, make_tiny_checkpoint,
                                                                          tmp_path):
    from robokit.deploy.latency import load_latency

    checkpoint = make_tiny_checkpoint("act", {"fps": 30.0}, fps=30.0)
    saved = tmp_path / "latency.json"
    out = subprocess.run(
        [sys.executable, "-m", "robokit.cli", "devices", "--latency", "--robot", "franka", "--host", sim_host,
         "--realtime", "ignore", "--dynamics", "0.5", "--camera", "top=synthetic", "--checkpoint", str(checkpoint),
         "--device", "cpu", "--queries", "3", "--save", str(saved)],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    for row in ("camera top", "infer round trip", "command to 50 %"):
        assert row in out.stdout
    report = load_latency(saved)
    assert report.setup["host"] == sim_host and report.setup["dynamics"] == 0.5
    assert 0.0 <= report.cameras["top"].median_ms < 100.0
    assert report.policy is not None and report.policy.queries == 3
    # franky-sim plans each target with its motion generator: the arm follows within a second.
    assert report.robot is not None and 0.0 < report.robot.first_motion_ms <= report.robot.response_ms < 1000.0
    assert report.action_delay_s > 0


# --------------------------------------------------------------------------- a session that fails half-way
def track_opened(monkeypatch, franky, *names: str) -> list:
    """Wrap ``franky.<name>`` for each name so every object they create is recorded (weakly)."""
    opened: list = []

    def tracking(real):
        def make(*args, **kwargs):
            obj = real(*args, **kwargs)
            opened.append(weakref.ref(obj))
            return obj

        return make

    for name in names:
        monkeypatch.setattr(franky, name, tracking(getattr(franky, name)))
    return opened


def assert_released_and_reconnectable(opened: list, sim_host: str) -> None:
    # Released when open() raised, not whenever the garbage collector runs: the caller still holds
    # the exception (and its traceback) here.
    assert opened and all(ref() is None for ref in opened)
    # franky-sim serves one session at a time: a leaked one would make this connect time out.
    with FrankaRobot(sim_host, realtime="ignore", session_timeout_s=10.0) as again:
        assert again.read().qpos.shape == (again.num_joints,)


def test_session_whose_gripper_fails_to_connect_is_closed(sim_host, monkeypatch):
    franky = pytest.importorskip("franky")
    opened = track_opened(monkeypatch, franky, "Robot")

    def no_hand(host):
        raise franky.NetworkException("the hand did not answer")

    monkeypatch.setattr(franky, "Gripper", no_hand)
    arm = FrankaRobot(sim_host, realtime="ignore")
    gc.disable()  # so that only open() itself can have released the session
    try:
        with pytest.raises(HardwareFault, match="the hand did not answer") as failure:
            arm.open()
        assert not arm.connected
        monkeypatch.undo()
        assert_released_and_reconnectable(opened, sim_host)
    finally:
        gc.enable()
    assert failure.value is not None  # the exception and its traceback were alive during the checks


def test_session_whose_configuration_fails_is_closed(sim_host, monkeypatch):
    franky = pytest.importorskip("franky")
    import robokit.hardware.franka.robot as franka_robot

    opened = track_opened(monkeypatch, franky, "Robot", "Gripper")

    def broken_urdf(urdf, num_joints):
        raise ValueError("malformed joint limits")

    monkeypatch.setattr(franka_robot, "limits_from_urdf", broken_urdf)
    arm = FrankaRobot(sim_host, realtime="ignore")
    gc.disable()
    try:
        with pytest.raises(HardwareFault, match="malformed joint limits"):
            arm.open()
        assert not arm.connected
        monkeypatch.undo()
        assert len(opened) == 2
        assert_released_and_reconnectable(opened, sim_host)
    finally:
        gc.enable()


# --------------------------------------------------------------------------- without a server
def test_closed_port_is_device_not_found_naming_the_host():
    # the message starts from the address given: a wrong --host is the likeliest cause
    with pytest.raises(DeviceNotFound, match="127.250.250.250 refused .* check that --host 127.250.250.250 is"):
        FrankaRobot("127.250.250.250", realtime="ignore", connect_timeout_s=1.0).open()


@pytest.fixture
def silent_host():
    """A loopback address whose port 1337 accepts TCP and never answers (a wrong IP, a proxy)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.251.251.251", FCI_COMMAND_PORT))
    server.listen(4)
    yield "127.251.251.251"
    server.close()


def test_host_that_does_not_speak_fci_fails_fast_naming_it(silent_host):
    pytest.importorskip("franky")
    with pytest.raises(DeviceNotFound, match="127.251.251.251.*did not answer as a Franka"):
        FrankaRobot(silent_host, realtime="ignore", connect_timeout_s=0.5, session_timeout_s=1.0).open()


def test_unknown_host_name_is_device_not_found():
    with pytest.raises(DeviceNotFound, match="no-such-robot.invalid"):
        FrankaRobot("no-such-robot.invalid", realtime="ignore", connect_timeout_s=0.5).open()


def test_franky_errors_become_robokit_errors_with_a_recovery_step():
    franky = pytest.importorskip("franky")
    reflex = translate_error(franky.ControlException("cartesian_reflex"), "10.0.0.2", "streaming")
    assert isinstance(reflex, HardwareFault) and "recover" in str(reflex) and "10.0.0.2" in str(reflex)
    network = translate_error(franky.NetworkException("timeout"), "10.0.0.2", "reading")
    assert isinstance(network, HardwareFault) and "cable" in str(network)
    realtime = translate_error(franky.RealtimeException("no rt"), "10.0.0.2", "connecting")
    assert isinstance(realtime, ConfigError) and "--realtime ignore" in str(realtime)


def test_replay_warns_before_moving_when_the_recording_is_faster_than_the_arm(sim_host, tmp_path, capsys):
    from robokit.cli import main
    from robokit.episodes.writer import EpisodeWriter

    writer = EpisodeWriter(tmp_path, 0, {"top": (8, 8, 3)}, attrs={"fps": 30.0})
    for t in range(31):  # joint 1 at 1.2 rad/s
        q = np.r_[PANDA_READY_POSE + np.r_[1.2 * t / 30.0, np.zeros(6)], 0.0]
        writer.append(q, np.zeros(8), q, {"top": np.zeros((8, 8, 3), np.uint8)}, t_robot=t / 30.0)
    episode = writer.save()
    try:
        main(["replay", str(episode), "--robot", "franka", "--host", sim_host, "--realtime", "ignore",
              "--dynamics", "0.1", "--yes"])
    except SystemExit as exc:
        assert not exc.code
    text = " ".join(capsys.readouterr().out.split())
    assert "warning: episode_0.hdf5 moves joint 1 at up to 1.20 rad/s" in text
    assert "--dynamics 0.1 reaches" in text and "it will lag behind the recording" in text
    assert text.index("warning") < text.index("replayed 31 steps")


def test_collision_thresholds_are_set_on_connect(sim_host):
    with FrankaRobot(sim_host, realtime="ignore", collision_thresholds=(25.0, 30.0)) as arm:
        assert arm.connected and arm.read().qpos.shape == (7,)
    with pytest.raises(ConfigError, match="two positive numbers"):
        FrankaRobot(sim_host, collision_thresholds=(25.0, -1.0))


def test_collision_option_is_parsed_and_named_when_wrong():
    from robokit.commands.hardware_options import HardwareOptions

    hw = HardwareOptions.from_cli(robot="franka", host="10.0.0.2", collision="25, 30")
    assert hw.collision == (25.0, 30.0)
    assert hw.make_robot().collision_thresholds == (25.0, 30.0)  # not connected yet
    for bad in ("25", "a,b", "25,0"):
        with pytest.raises(UserError, match="--collision"):
            HardwareOptions.from_cli(robot="franka", host="10.0.0.2", collision=bad)
