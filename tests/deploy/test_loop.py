"""ControlLoop in the MuJoCo simulation: safety clamps, watchdog, done signal, keys, modes."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from robokit.commands.deploy_cmd import LivePanel
from robokit.deploy.client import PolicyClient
from robokit.deploy.loop import ControlLoop, LoopConfig, StopReason, WatchdogConfig
from robokit.deploy.runner import LocalRunner, RemoteRunner
from robokit.deploy.safety import SafetyFilter, SafetyLimits
from robokit.errors import ConfigError, ServerUnavailable
from robokit.hardware.base import PANDA_DQ_MAX, PANDA_Q_MAX, PANDA_Q_MIN, PANDA_READY_POSE

FPS = 30.0
GOAL = PANDA_READY_POSE + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.3, 0.2])


class GoToPolicy:
    """Every chunk says: go to ``target`` (7 joints) with ``gripper``; optional done / delay / NaN."""

    name = "goto"

    def __init__(self, target=GOAL, gripper=0.5, chunk=8, delay_s=0.0, done=None):
        self.config = SimpleNamespace(camera_names=["top"], image_shape=(16, 20, 3), state_dim=8,
                                      action_dim=8, chunk_size=chunk, fps=FPS)
        self.target = np.asarray(target, float)
        self.gripper = gripper
        self.delay_s = delay_s
        self.done = done
        self.calls = 0

    def predict_chunk(self, obs):
        assert obs["images"]["top"].shape == (16, 20, 3)
        self.calls += 1
        time.sleep(self.delay_s)
        row = np.concatenate([self.target, [self.gripper]]).astype(np.float32)
        extras = {} if self.done is None else {"done": self.done(self.calls)}
        return np.tile(row, (self.config.chunk_size, 1)), extras

    def reset(self):
        pass


@pytest.fixture
def env():
    from robokit.hardware.sim import PandaSimEnv

    sim = PandaSimEnv(task="pick_place", seed=3, image_size=(24, 32), camera_names=("top",), control_hz=FPS)
    yield sim
    sim.close()


def make_loop(env, runner, **cfg):
    cfg.setdefault("realtime", False)
    return ControlLoop(env.robot, env.cameras, runner, LoopConfig(fps=FPS, **cfg), step_fn=env.step)


def test_safety_filter_clamps_limits_velocity_and_gripper():
    limits = SafetyLimits(PANDA_Q_MIN, PANDA_Q_MAX, PANDA_DQ_MAX)
    safety = SafetyFilter(limits, dt=0.1)
    safety.reset(PANDA_READY_POSE)
    far = np.concatenate([PANDA_Q_MAX + 1.0, [1.7]])
    cmd = safety.apply(far)
    np.testing.assert_allclose(cmd[:7] - PANDA_READY_POSE,
                               np.clip(PANDA_Q_MAX - PANDA_READY_POSE, -PANDA_DQ_MAX * 0.1, PANDA_DQ_MAX * 0.1))
    assert cmd[7] == 1.0
    for _ in range(100):
        cmd = safety.apply(far)
    np.testing.assert_allclose(cmd[:7], PANDA_Q_MAX)  # reaches the limit, never beyond it
    assert safety.apply(np.full(8, np.nan)) is None
    counts = safety.counts
    assert counts.position >= 100 and counts.velocity >= 1 and counts.gripper >= 100 and counts.rejected == 1


def test_loop_reaches_the_policy_target_within_velocity_limits(env):
    records = []
    with make_loop(env, LocalRunner(GoToPolicy()), max_steps=60) as loop:
        result = loop.run_episode(on_step=records.append)
    assert result.reason == StopReason.MAX_STEPS and result.steps == 60
    commands = np.stack([r.command for r in records])
    steps = np.abs(np.diff(np.vstack([PANDA_READY_POSE, commands[:, :7]]), axis=0))
    assert np.all(steps <= PANDA_DQ_MAX / FPS + 1e-9)
    assert np.max(steps[0] - PANDA_DQ_MAX / FPS) > -1e-9  # the first steps were rate-limited
    np.testing.assert_allclose(env.robot.read().qpos, GOAL, atol=0.05)
    assert all(r.fresh for r in records)


def test_targets_outside_the_joint_limits_are_clamped(env):
    beyond = PANDA_Q_MAX + 0.5
    records = []
    with make_loop(env, LocalRunner(GoToPolicy(target=beyond, gripper=3.0)), max_steps=5) as loop:
        loop.run_episode(on_step=records.append)
        assert loop.safety.counts.position == 5 and loop.safety.counts.gripper == 5
    for r in records:
        assert np.all(r.command[:7] <= PANDA_Q_MAX) and r.command[7] == 1.0


def test_done_signal_ends_the_episode(env):
    policy = GoToPolicy(done=lambda calls: 1.0 if calls >= 4 else 0.0)
    with make_loop(env, LocalRunner(policy), max_steps=100) as loop:
        result = loop.run_episode()
    assert result.reason == StopReason.DONE and result.steps == 4  # the 4th chunk (step 3) said done


def test_non_finite_actions_make_the_arm_hold_and_then_stop(env):
    policy = GoToPolicy(target=np.full(7, np.nan))
    with make_loop(env, LocalRunner(policy), max_steps=100) as loop:
        result = loop.run_episode()
    assert result.reason == StopReason.WATCHDOG and "non-finite" in result.message
    assert result.steps == pytest.approx(0.5 * FPS, abs=1)  # 0.5 s of simulated time
    np.testing.assert_allclose(env.robot.read().qpos, PANDA_READY_POSE, atol=0.01)


class ScriptedKeys:
    def __init__(self, script):
        self.script = dict(script)  # step -> keys
        self.step = 0

    def poll(self):
        keys = self.script.get(self.step, [])
        self.step += 1
        return keys


def test_keys_pause_resume_and_quit(env):
    keys = ScriptedKeys({3: ["space"], 12: [" "], 20: ["q"]})
    records = []
    loop = ControlLoop(env.robot, env.cameras, LocalRunner(GoToPolicy()), LoopConfig(fps=FPS, realtime=False),
                       step_fn=env.step, keys=keys)
    with loop:
        result = loop.run_episode(on_step=records.append)
    assert result.reason == StopReason.QUIT and result.steps == 20
    paused = [r for r in records if 3 <= r.step < 12]
    assert paused and not any(r.fresh for r in paused)
    # While paused the arm holds where it is: after the first paused tick the commands stand still.
    moves = np.abs(np.diff(np.stack([r.command[:7] for r in paused]), axis=0))
    assert np.max(moves[1:]) < 1e-3
    assert all(r.fresh for r in records if 12 <= r.step < 20)


@pytest.mark.parametrize("mode", ["chunk", "async"])
def test_chunk_and_async_modes_drive_the_arm(env, mode):
    policy = GoToPolicy(delay_s=0.005)
    with make_loop(env, LocalRunner(policy), mode=mode, max_steps=60) as loop:
        result = loop.run_episode()
    assert result.reason == StopReason.MAX_STEPS
    np.testing.assert_allclose(env.robot.read().qpos, GOAL, atol=0.05)
    if mode == "chunk":
        assert policy.calls == 60 // 8 + 1  # one query per chunk of 8 (the last covers the end)
    else:
        assert policy.calls > 60 // 8


class RampPolicy(GoToPolicy):
    """Row i of every chunk moves joint 1 to ``start + 0.01 i`` (the row it came from is readable)."""

    def predict_chunk(self, obs):
        chunk, extras = super().predict_chunk(obs)
        chunk[:, :7] = PANDA_READY_POSE
        chunk[:, 0] += 0.01 * np.arange(self.config.chunk_size)
        return chunk, extras


@pytest.mark.parametrize("delay_steps", [0, 3])
def test_an_action_delay_skips_the_rows_already_in_the_past(env, delay_steps):
    records = []
    policy = RampPolicy()
    with make_loop(env, LocalRunner(policy), mode="chunk", max_steps=12,
                   action_delay_s=delay_steps / FPS) as loop:
        loop.run_episode(on_step=records.append)
    rows = [round((r.command[0] - PANDA_READY_POSE[0]) / 0.01) for r in records]
    # Each chunk starts at row d and is used up d steps earlier, so a query comes every 8 - d steps.
    per_chunk = list(range(delay_steps, 8))
    assert rows == (per_chunk * 3)[:12]
    assert policy.calls == -(-12 // len(per_chunk))


def test_an_action_delay_as_long_as_the_chunk_is_refused(env):
    with pytest.raises(ConfigError, match="whole chunk"):
        make_loop(env, LocalRunner(GoToPolicy(chunk=8)), action_delay_s=8 / FPS)


class OverlapPolicy(GoToPolicy):
    """Records whether two inferences, or an inference and a reset, ever ran at the same time."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.lock = threading.Lock()
        self.running = 0
        self.overlaps = 0

    def predict_chunk(self, obs):
        with self.lock:
            self.running += 1
            self.overlaps += self.running > 1
        try:
            return super().predict_chunk(obs)
        finally:
            with self.lock:
                self.running -= 1

    def reset(self):
        with self.lock:
            self.overlaps += self.running > 0  # a stateful policy would lose or mix its history


def test_a_query_left_running_at_the_end_of_an_episode_never_overlaps_the_next(env):
    policy = OverlapPolicy(delay_s=0.05)
    with make_loop(env, LocalRunner(policy), mode="async", max_steps=3) as loop:
        for _ in range(3):  # each episode ends with a background query still running
            assert loop.run_episode().reason == StopReason.MAX_STEPS
    assert policy.calls > 3 and policy.overlaps == 0


def test_realtime_async_loop_runs_at_the_wall_clock(env):
    with make_loop(env, LocalRunner(GoToPolicy(delay_s=0.05)), mode="async", realtime=True, max_steps=15) as loop:
        t0 = time.perf_counter()
        result = loop.run_episode()
        elapsed = time.perf_counter() - t0
    assert result.reason == StopReason.MAX_STEPS and result.steps == 15
    assert elapsed >= 14 / FPS  # paced, not as fast as possible
    assert len(loop.jitter_ms()) == 15


SERVER_SCRIPT = textwrap.dedent("""
    import sys, time
    from types import SimpleNamespace
    import numpy as np
    from robokit.deploy.server import PolicyServer

    class Hold:
        name = "hold"
        config = SimpleNamespace(camera_names=["top"], image_shape=(16, 20, 3), state_dim=8, action_dim=8,
                                 chunk_size=8, fps=30.0)
        def predict_chunk(self, obs):
            return np.tile(np.concatenate([obs["qpos"][:7] + 0.01, [0.0]]), (8, 1)).astype(np.float32), {}
        def reset(self):
            pass

    server = PolicyServer(Hold(), "tcp://127.0.0.1:0")
    print(server.address, flush=True)
    server.serve_forever()
""")


def test_a_camera_unplugged_mid_episode_makes_the_arm_hold_then_stop(env):
    from robokit.hardware.synthetic import SyntheticCamera

    records = []
    config = LoopConfig(fps=FPS, mode="chunk", realtime=True, max_steps=300,
                        watchdog=WatchdogConfig(hold_after_ticks=2, stop_after_s=0.5))
    with SyntheticCamera("top", size=(16, 20), fps=FPS, fail_after=20) as cam, \
            ControlLoop(env.robot, {"top": cam}, LocalRunner(GoToPolicy()), config, step_fn=env.step) as loop:
        result = loop.run_episode(on_step=records.append)
    assert result.reason == StopReason.WATCHDOG, result.message
    assert "top" in result.message and "stopped" in result.message  # names the camera
    assert result.steps < 20 + 60  # held for half a second of ticks, then stopped
    assert result.safety["watchdog_holds"] >= 2


def test_the_disk_filling_up_during_a_recorded_rollout_stops_the_arm_and_keeps_the_steps(env, tmp_path):
    from robokit.deploy.recording import RolloutRecorder
    from robokit.episodes.files import LowDiskSpace
    from robokit.episodes.reader import open_episode

    recorder = RolloutRecorder(tmp_path, {"top": (24, 32, 3)}, FPS, "sim", sim=True)
    recorder.start("go to the goal")

    def on_step(record):
        recorder(record)
        if record.step == 10:
            recorder._writer.min_free_bytes = 2**62  # the disk "fills up": the writer's next check notices
        if record.step > 10:
            time.sleep(0.02)  # let the writer's once-a-second check come round

    with make_loop(env, LocalRunner(GoToPolicy(target=GOAL)), max_steps=400) as loop, \
            pytest.raises(LowDiskSpace, match="MB free"):
        loop.run_episode(on_step=on_step)
    path = recorder.finish(None, {"interrupted": "low disk space"})  # what the CLI does next
    with open_episode(path) as ep:
        assert ep.length >= 10 and ep.check() == [] and ep.attrs["interrupted"] == "low disk space"
    before = env.robot.read().qpos  # the loop stopped the arm on its way out
    for _ in range(10):
        env.step()
    np.testing.assert_allclose(env.robot.read().qpos, before, atol=1e-3)


class HangingPolicy(GoToPolicy):
    """Answers ``answers`` queries, then hangs until ``release`` is set."""

    def __init__(self, answers: int) -> None:
        super().__init__()
        self.answers = answers
        self.release = threading.Event()

    def predict_chunk(self, obs):
        if self.calls >= self.answers:
            self.release.wait(60)
        return super().predict_chunk(obs)


@pytest.mark.parametrize("answers", [0, 1], ids=["first-query", "later-query"])
def test_an_in_process_policy_that_hangs_cannot_hold_the_loop(env, answers):
    policy = HangingPolicy(answers)
    runner = LocalRunner(policy, timeout_s=0.3, first_timeout_s=0.3)
    t0 = time.perf_counter()
    try:
        with make_loop(env, runner, mode="chunk", max_steps=200,
                       watchdog=WatchdogConfig(hold_after_ticks=2, stop_after_s=0.5)) as loop:
            if answers == 0:  # nothing moved yet: the episode cannot start, and says why
                with pytest.raises(ServerUnavailable, match="in-process policy did not answer within 0.3 s"):
                    loop.run_episode()
            else:  # the watchdog holds, then stops the arm
                result = loop.run_episode()
                assert result.reason == StopReason.WATCHDOG, result.message
                assert "in-process policy" in result.message
        assert time.perf_counter() - t0 < 20  # seconds, not the minute the policy would hang
    finally:
        policy.release.set()
        runner.close()


@pytest.mark.parametrize(("mode", "fault"), [("ensemble", "killed"), ("async", "killed"), ("async", "frozen")])
def test_watchdog_stops_the_robot_when_the_server_dies_or_freezes(env, tmp_path, mode, fault):
    """The server process dies (SIGKILL) or freezes (SIGSTOP: its socket stays open, nothing answers)."""
    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://"), address
        client = PolicyClient(address, timeout_s=0.3)
        records = []

        def on_step(record):
            records.append(record)
            if record.step == 10:
                proc.send_signal(signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
                if fault == "killed":
                    proc.wait()

        cfg = {"mode": mode, "max_steps": 300, "watchdog": WatchdogConfig(hold_after_ticks=2, stop_after_s=1.0)}
        console = Console(record=True, force_terminal=True, width=120)
        states = []

        def on_tick(loop):
            states.append(loop.stats().state)
            panel.on_tick(loop)

        with make_loop(env, RemoteRunner(client), **cfg) as loop, LivePanel(console, enabled=True) as panel:
            result = loop.run_episode(on_step=on_step, on_tick=on_tick)
        client.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
    assert result.reason == StopReason.WATCHDOG, result.message
    assert "watchdog" in result.message and "stopped" in result.message
    assert result.steps < 10 + 1.0 * FPS + 10  # well before the step limit
    held = [r for r in records if r.step > 10 and not r.fresh]
    assert len(held) >= 2  # it held position before stopping
    # the state says so: never "running" once the actions stopped coming, and the panel's last
    # drawing is the stop
    assert states[-1] == "holding" and {"waiting", "holding"} <= set(states)
    assert loop.stats().state == "watchdog"
    assert "watchdog" in console.export_text().split("state")[-1]
    # Stopped: the arm stays still from now on.
    before = env.robot.read().qpos
    for _ in range(10):
        env.step()
    np.testing.assert_allclose(env.robot.read().qpos, before, atol=1e-3)


def test_realtime_priority_is_restored_after_the_episode(env):
    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("no POSIX scheduling API here")
    before = os.sched_getscheduler(0)
    with make_loop(env, LocalRunner(GoToPolicy()), mode="async", realtime=True, max_steps=5, rt_priority=10) as loop:
        result = loop.run_episode()
    assert result.reason == StopReason.MAX_STEPS  # with or without the right to use SCHED_FIFO
    assert os.sched_getscheduler(0) == before
