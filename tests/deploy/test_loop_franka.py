"""The deploy loop on the Franka backend, driven through franky against franky-sim.

The policy server runs in its own process and is killed mid-episode: the watchdog must make the arm
hold and then stop it, on the same code path as on the real robot.
"""

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from robokit.deploy.client import PolicyClient
from robokit.deploy.loop import ControlLoop, LoopConfig, StopReason, WatchdogConfig
from robokit.deploy.runner import RemoteRunner
from tests.hardware import test_franka_sim

pytestmark = pytest.mark.franka

# fixtures: franky-sim on loopback, started once for this module, and its address
franky_sim_server = test_franka_sim.franky_sim_server
sim_host = test_franka_sim.sim_host

SERVER_SCRIPT = """
from types import SimpleNamespace
import numpy as np
from robokit.deploy.server import PolicyServer

class Nudge:
    name = "nudge"
    config = SimpleNamespace(camera_names=["top"], image_shape=(24, 32, 3), state_dim=8, action_dim=8,
                             chunk_size=10, fps=30.0)
    def predict_chunk(self, obs):
        target = np.concatenate([obs["qpos"][:7] + np.array([0.02, 0, 0, 0, 0, 0, 0]), [0.0]])
        return np.tile(target, (10, 1)).astype(np.float32), {}
    def reset(self):
        pass

server = PolicyServer(Nudge(), "tcp://127.0.0.1:0")
print(server.address, flush=True)
server.serve_forever()
"""


def test_watchdog_stops_the_franka_when_the_server_is_killed(sim_host, tmp_path):
    from robokit.hardware.franka import FrankaRobot
    from robokit.hardware.synthetic import SyntheticCamera

    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    records = []
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://"), address

        def on_step(record):
            records.append(record)
            if record.step == 15:
                proc.send_signal(signal.SIGKILL)

        with FrankaRobot(sim_host, realtime="ignore", relative_dynamics_factor=0.5) as arm, \
                SyntheticCamera("top", size=(24, 32), fps=30.0) as cam, \
                PolicyClient(address, timeout_s=0.3) as client:
            config = LoopConfig(fps=30.0, mode="async", realtime=True, max_steps=300,
                                watchdog=WatchdogConfig(hold_after_ticks=2, stop_after_s=0.5))
            with ControlLoop(arm, {"top": cam}, RemoteRunner(client), config) as loop:
                result = loop.run_episode(on_step=on_step)
            stopped_at = arm.read().qpos
            still = arm.read().qvel
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert result.reason == StopReason.WATCHDOG, result.message
    assert "stopped" in result.message
    assert 15 < result.steps < 15 + 60  # a few ticks of old plan + hold, then stop: well before the limit
    assert any(not r.fresh for r in records[15:])  # it held before stopping
    assert records[14].command[0] - records[0].state.qpos[0] > 0.01  # the policy was driving joint 1
    assert records[15].state.qpos[0] > records[0].state.qpos[0]  # and the arm followed
    assert np.all(np.isfinite(stopped_at)) and np.max(np.abs(still)) < 0.5


def test_deploy_command_drives_the_franka_through_a_policy_server(sim_host, tmp_path):
    """`robokit deploy --robot franka` runs the same loop: home, then policy steps, recorded as an episode."""
    from types import SimpleNamespace

    from robokit.deploy.server import PolicyServer
    from robokit.hardware.base import PANDA_READY_POSE

    class Ready:
        name = "ready"
        config = SimpleNamespace(camera_names=["top"], image_shape=(24, 32, 3), state_dim=8, action_dim=8,
                                 chunk_size=10, fps=30.0)

        def predict_chunk(self, obs):
            return np.tile(np.concatenate([PANDA_READY_POSE, [0.0]]), (10, 1)).astype(np.float32), {}

        def reset(self):
            pass

    with PolicyServer(Ready(), "tcp://127.0.0.1:0").start() as server:
        out = subprocess.run(
            [sys.executable, "-m", "robokit.cli", "deploy", "--robot", "franka", "--host", sim_host,
             "--realtime-kernel", "ignore", "--camera", "top=synthetic", "--server", server.address,
             "--episodes", "1", "--max-steps", "20", "--yes", "--record", str(tmp_path / "rollouts")],
            capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "step limit" in out.stdout
    from robokit.episodes.reader import list_episodes, open_episode

    with open_episode(list_episodes(tmp_path / "rollouts")[0]) as ep:
        assert ep.length == 20 and ep.attrs.get("robot") == "franka"
        np.testing.assert_allclose(ep.action()[:, :7], np.tile(PANDA_READY_POSE, (20, 1)), atol=0.05)
        chunks = ep.predicted_chunks()  # async on hardware: each reply stored at its observation's step
        queried = np.isfinite(chunks).all(axis=(1, 2))
        assert chunks.shape == (20, 10, 8) and queried[0] and queried.sum() >= 2
        ready = np.broadcast_to(PANDA_READY_POSE, (int(queried.sum()), 10, 7))
        np.testing.assert_allclose(chunks[queried][:, :, :7], ready, atol=1e-6)


class FarTarget:
    """A policy whose every target is one radian away on joint 1: far faster than a slow arm moves."""

    name = "far"

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.config = SimpleNamespace(camera_names=["top"], image_shape=(24, 32, 3), state_dim=8, action_dim=8,
                                      chunk_size=10, fps=30.0)

    def predict_chunk(self, obs):
        target = np.concatenate([obs["qpos"][:7] + np.array([1.0, 0, 0, 0, 0, 0, 0]), [0.0]])
        return np.tile(target, (10, 1)).astype(np.float32), {}

    def reset(self):
        pass


def test_commands_follow_the_speed_a_slow_franka_is_driven_at(sim_host):
    """At a relative dynamics factor of 0.1 franky moves the arm at a tenth of its top speed; the
    safety filter's per-step bound follows it, so the commanded targets never run ahead at full speed."""
    from robokit.deploy.runner import LocalRunner
    from robokit.hardware.franka import FrankaRobot
    from robokit.hardware.synthetic import SyntheticCamera

    records = []
    with FrankaRobot(sim_host, realtime="ignore", relative_dynamics_factor=0.1) as arm, \
            SyntheticCamera("top", size=(24, 32), fps=30.0) as cam:
        config = LoopConfig(fps=30.0, mode="chunk", query_every=10, realtime=True, max_steps=45)
        with ControlLoop(arm, {"top": cam}, LocalRunner(FarTarget()), config) as loop:
            loop.run_episode(on_step=records.append)
            clamped = loop.stats().safety.velocity
        full_speed = np.asarray(arm.velocity_limits, float)
    commands = np.array([r.command[:7] for r in records])
    per_tick = np.abs(np.diff(commands, axis=0)).max(axis=0)
    bound = 0.1 * full_speed / 30.0  # a tenth of full speed, per tick
    assert np.all(per_tick <= bound + 1e-9)
    # and never more than a few ticks ahead of the arm (at full speed: a radian after a second)
    ahead = np.array([np.abs(r.command[:7] - r.state.qpos[:7]) for r in records])
    assert np.all(ahead <= 4 * bound + 1e-9)
    assert clamped >= 40  # every step of the policy was shortened, and counted
    assert records[-1].state.qpos[0] - records[0].state.qpos[0] > 0.02  # and the arm followed


class DiveTarget(FarTarget):
    """Every target puts the hand 5 cm under the table top and 7 cm past the workspace box's side."""

    name = "dive"
    TARGET = np.array([1.045, 1.087, 0.015, -1.373, -0.02, 2.461, 1.853, 1.0])  # ik([0.35, 0.62, -0.05])

    def predict_chunk(self, obs):
        return np.tile(self.TARGET, (10, 1)).astype(np.float32), {}


def test_the_hand_stays_in_the_workspace_box_on_a_franka(sim_host):
    from robokit.deploy.runner import LocalRunner
    from robokit.hardware.franka import FrankaRobot
    from robokit.hardware.synthetic import SyntheticCamera
    from robokit.hardware.workspace import SIM_TABLE

    records = []
    with FrankaRobot(sim_host, realtime="ignore", relative_dynamics_factor=0.5) as arm, \
            SyntheticCamera("top", size=(24, 32), fps=30.0) as cam:
        arm.home()
        # at half the speed bound, so that the arm's tracking lag (franky-sim shares this process's
        # CPU) stays small next to the box
        config = LoopConfig(fps=30.0, mode="chunk", query_every=10, realtime=True, max_steps=150,
                            workspace=SIM_TABLE, velocity_scale=0.5)
        with ControlLoop(arm, {"top": cam}, LocalRunner(DiveTarget()), config) as loop:
            result = loop.run_episode(on_step=records.append)
    # every command kept the hand inside; the measured joints trail the commands (franky-sim shares
    # this process's CPU, so how far varies), and stay within a few centimetres of the box
    assert all(SIM_TABLE.contains(r.command) for r in records)
    outside = max(float(np.abs(SIM_TABLE.shift(r.state.qpos)).max()) for r in records)
    assert outside < 0.03, outside  # without the box the hand goes 15 cm out and 5 cm under the floor
    assert result.safety["workspace_projected"] + result.safety["workspace_held"] > 0
    moved = max(float(np.abs(r.state.qpos[:7] - records[0].state.qpos[:7]).max()) for r in records)
    assert moved > 0.3  # it did go toward the target, as far as the box let it


# -- a collision reflex ---------------------------------------------------------------------------------
CARTESIAN_REFLEX = 7  # libfranka's index of the cartesian_reflex flag among the robot's 41 errors


def inject_reflex_when(server, monkeypatch, condition) -> threading.Event:
    """Make franky-sim abort the running motion with a Cartesian reflex once ``condition(q)`` holds.

    A real arm does this when it touches something harder than its collision thresholds: it stops,
    answers the running Move command with "aborted by reflex" and reports the reflex in its state.
    The check runs in franky-sim's own thread, between two control cycles.
    """
    from franky_sim.franka_robot_protocol import MoveStatus, RobotCommand
    from franky_sim.franka_server import BaseCommand

    fired = threading.Event()
    process, state_bytes = server._pre_process_commands, server._get_state_bytes
    errors = tuple(i == CARTESIAN_REFLEX for i in range(41))

    def process_then_collide():
        process()
        motion = server.current_motion_id
        if not fired.is_set() and motion and condition(np.asarray(server.robot_state.q)):
            server.stop_motion(send_preemption_signal=False)  # hold where it is
            server.reset_current_motion_id()
            BaseCommand.send_response(server._tcp_socket, RobotCommand.kMove, motion, MoveStatus.kReflexAborted)
            fired.set()

    def state_with_reflex():
        if not fired.is_set():
            return state_bytes()
        return server.robot_state.replace(errors=errors, current_errors=errors, last_motion_errors=errors,
                                          reflex_reason=errors).pack_state()

    monkeypatch.setattr(server, "_pre_process_commands", process_then_collide)
    monkeypatch.setattr(server, "_get_state_bytes", state_with_reflex)
    return fired


def test_a_collision_reflex_mid_deploy_stops_cleanly_keeps_the_rollout_and_says_how_to_recover(
        franky_sim_server, sim_host, tmp_path, monkeypatch):
    from robokit.episodes.reader import list_episodes, open_episode
    from robokit.hardware.base import PANDA_READY_POSE
    from robokit.hardware.franka import FrankaRobot

    with FrankaRobot(sim_host, realtime="ignore", relative_dynamics_factor=0.5) as arm:
        arm.home()  # so that the deploy's own homing does not move joint 1 and the reflex comes mid-episode
    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)  # a policy that keeps turning joint 1
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        address = proc.stdout.readline().strip()
        fired = inject_reflex_when(franky_sim_server, monkeypatch, lambda q: q[0] > PANDA_READY_POSE[0] + 0.06)
        out = subprocess.run(
            [sys.executable, "-m", "robokit.cli", "deploy", "--robot", "franka", "--host", sim_host,
             "--realtime-kernel", "ignore", "--dynamics", "0.5", "--camera", "top=synthetic", "--server", address,
             "--episodes", "1", "--max-steps", "600", "--yes", "--record", str(tmp_path / "rollouts")],
            capture_output=True, text=True, timeout=240, check=False, env={**os.environ, "COLUMNS": "200"})
    finally:
        proc.kill()
        proc.wait()
    assert fired.is_set()
    assert out.returncode == 3, out.stdout[-2000:] + out.stderr[-3000:]
    error_lines = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1 and "Traceback" not in out.stderr, out.stderr  # one line
    assert "cartesian_reflex" in error_lines[0] and "recovery" in error_lines[0] and sim_host in error_lines[0]
    assert "saved the steps recorded so far" in out.stdout
    with open_episode(list_episodes(tmp_path / "rollouts")[0]) as ep:
        assert "interrupted" in ep.attrs and "reflex" in str(ep.attrs["interrupted"])
        assert ep.attrs["safety_reflex_stops"] == 1 and "safety_velocity_clamps" in ep.attrs
        assert 5 < ep.length < 600  # the steps up to the collision, not a full episode
        assert ep.qpos()[-1, 0] > PANDA_READY_POSE[0] + 0.03  # the policy was turning joint 1 when it hit
