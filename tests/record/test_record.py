"""`robokit record` / `robokit replay` and the recording session, on the MuJoCo simulation.

Interactive keyboard recording is driven through tmux in test_record_tmux.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from robokit.cli import main
from robokit.episodes.files import LowDiskSpace
from robokit.episodes.reader import list_episodes, open_episode
from robokit.errors import HardwareFault, UserError
from robokit.hardware.base import PANDA_READY_POSE, Robot
from robokit.hardware.kinematics import fk
from robokit.hardware.sim import PandaSimEnv, list_tasks
from robokit.hardware.synthetic import DRIVER_QUEUE_FRAMES, SyntheticCamera
from robokit.record.session import RecordConfig, RecordingSession
from robokit.record.teleop import KeyboardJog, Kinesthetic, Observation, Replay
from tests.episodes.test_episodes import write_act_sim, write_v1

SIZE = "48x64"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


# -- unattended (scripted) recording -----------------------------------------------------------------
def test_scripted_multi_task_records_instruction_and_goal_images(tmp_path, capsys):
    out = tmp_path / "multi"
    code, stdout, err = cli(capsys, "record", "--sim", "--task-set", "multi", "--teleop", "scripted",
                            "--episodes", "2", "--out", out, "--image-size", SIZE, "--compress", "jpeg",
                            "--seed", "3")
    assert code == 0, err
    assert "saved 2 episode(s)" in stdout
    paths = list_episodes(out)
    assert [p.name for p in paths] == ["episode_0.hdf5", "episode_1.hdf5"]
    instructions = list_tasks("multi")
    for path in paths:
        with open_episode(path) as ep:
            assert ep.check() == []
            assert ep.task in instructions or any(ep.task == t for t in instructions)
            assert ep.success is True and ep.attrs["source"] == "scripted" and ep.attrs["sim"] is True
            assert ep.done().tolist()[-6:] == [False] + [True] * 5
            for cam in ep.camera_names:  # the final frame, kept lossless (the stream is JPEG)
                goal = ep.goal_image(cam).astype(int)
                assert goal.shape == (48, 64, 3) and np.abs(goal - ep.image(cam, -1)).mean() < 8
            # Per-step object boxes: those of the recorded scene, and the carried cube's box moves.
            with PandaSimEnv(task=ep.attrs["sim_task"], seed=ep.attrs["sim_seed"], image_size=(48, 64)) as env:
                names = env.task.object_names
                for cam in ep.camera_names:
                    boxes = ep.object_boxes(cam)
                    assert sorted(boxes) == sorted(names)
                    for name in names:
                        assert boxes[name].dtype == np.int32 and boxes[name].shape == (ep.length, 4)
                        expected = env.object_box(cam, name)
                        assert tuple(boxes[name][0]) == (expected if expected is not None else (-1,) * 4)
                moved = ep.object_boxes("top")[env.task.object_name]
                assert np.abs(moved[-1] - moved[0]).max() > 3
    code, stdout, _ = cli(capsys, "inspect", out)
    assert code == 0 and "2 episode(s)" in stdout
    code, stdout, _ = cli(capsys, "inspect", paths[0])
    assert code == 0 and "object boxes: blue_cube, green_cube, red_cube" in " ".join(stdout.split())


def test_scripted_pick_place_numbers_continue_and_end_frames(tmp_path, capsys):
    out = tmp_path / "pick"
    out.mkdir()
    write_act_sim(out / "episode_4.hdf5", steps=3)  # someone else's file: never overwritten
    # --episodes counts the episodes the folder holds: one is there, one more makes two
    code, _, err = cli(capsys, "record", "--sim", "--teleop", "scripted", "--episodes", "2", "--out", out,
                       "--image-size", SIZE, "--end-frames", "2", "--compress", "lzf")
    assert code == 0, err
    with open_episode(out / "episode_5.hdf5") as ep:
        assert ep.image_compression == "lzf"
        assert int(ep.done().sum()) == 2 and ep.done()[-1]
        assert ep.goal_image("top") is None  # only the multi task set is goal-conditioned
        ts = ep.timestamps("robot")
        np.testing.assert_allclose(np.diff(ts), 1 / 30, rtol=1e-3)  # sim time, one control period
    with open_episode(out / "episode_4.hdf5") as ep:
        assert ep.layout == "act" and ep.length == 3


def test_replay_reproduces_a_scripted_episode_and_can_be_recorded(tmp_path, capsys):
    out = tmp_path / "src"
    assert cli(capsys, "record", "--sim", "--teleop", "scripted", "--episodes", "1", "--out", out,
               "--image-size", SIZE)[0] == 0
    source = out / "episode_0.hdf5"
    code, stdout, err = cli(capsys, "replay", source, "--sim")
    assert code == 0, err
    text = " ".join(stdout.split())
    assert "max 0.0000 rad" in text and "recorded scene: success" in text
    code, stdout, err = cli(capsys, "replay", source, "--sim", "--speed", "10")  # paced, 10x real time
    assert code == 0 and "recorded scene: success" in " ".join(stdout.split()), err
    code, _, err = cli(capsys, "replay", source, "--sim", "--speed", "-1")
    assert code == 2 and "replay speed" in err
    code, _, err = cli(capsys, "replay", source, "--host", "10.0.0.2", "--speed", "2")
    assert code == 2 and "--sim only" in err

    again = tmp_path / "again"
    code, _, err = cli(capsys, "record", "--sim", "--teleop", f"replay:{source}", "--out", again,
                       "--image-size", SIZE, "--end-frames", "0")
    assert code == 0, err
    with open_episode(source) as a, open_episode(again / "episode_0.hdf5") as b:
        assert b.attrs["source"] == "replay" and b.success is True
        np.testing.assert_array_equal(b.action()[: a.length], a.action())


# -- bad input ---------------------------------------------------------------------------------------
def test_replay_speed_check_follows_the_franka_dynamics_factor():
    from robokit.deploy.safety import SafetyLimits
    from robokit.hardware.franka import FrankaRobot
    from robokit.record.replay import check_replay_speed

    t = np.arange(31)[:, None] / 30.0
    actions = np.c_[PANDA_READY_POSE + t * np.r_[1.0, np.zeros(6)], np.zeros(31)]  # joint 1 at 1 rad/s
    slow = FrankaRobot("127.0.0.1", relative_dynamics_factor=0.1)  # never connected
    full = np.asarray(slow.velocity_limits, float)
    check = check_replay_speed(actions, 30.0, slow)
    assert not check.keeps_up and check.joint == 0
    assert check.needed == pytest.approx(1.0) and check.available == pytest.approx(0.1 * full[0])
    assert check.factor_needed == pytest.approx(1.0 / full[0])
    assert check_replay_speed(actions, 30.0, FrankaRobot("127.0.0.1", relative_dynamics_factor=0.6)).keeps_up
    # deploy's per-step bound follows the same speed
    np.testing.assert_allclose(SafetyLimits.from_robot(slow).dq_max, 0.1 * full)


def test_replay_goes_through_the_safety_filter_and_keeps_the_hand_in_the_box(tmp_path):
    from robokit.episodes.writer import EpisodeWriter
    from robokit.hardware.workspace import SIM_TABLE
    from robokit.record.replay import replay_episode

    dive = np.array([1.045, 1.087, 0.015, -1.373, -0.02, 2.461, 1.853])  # hand 5 cm under the table
    writer = EpisodeWriter(tmp_path, 0, {"top": (8, 8, 3)}, attrs={"fps": 30.0})
    for t in range(90):
        q = np.r_[PANDA_READY_POSE + (dive - PANDA_READY_POSE) * min(t / 60, 1.0), 0.0]
        writer.append(q, np.zeros(8), q, {"top": np.zeros((8, 8, 3), np.uint8)}, t_robot=t / 30)
    source = Replay(writer.save())
    seen = []
    with PandaSimEnv(task="pick_place", seed=1, image_size=(24, 32), camera_names=("top",)) as sim:
        original = sim.robot.send_action

        def watch(action):
            seen.append(sim.robot.read().qpos.copy())
            original(action)

        sim.robot.send_action = watch
        result = replay_episode(source, sim.robot, sim_env=sim, workspace=SIM_TABLE)
    assert result.safety["workspace_projected"] > 10
    assert max(float(np.abs(SIM_TABLE.shift(q)).max()) for q in seen) < 0.01


def test_teleop_commands_go_through_the_safety_filter(tmp_path):
    """A teleop source that drives the hand under the table: what is sent (and recorded) stays in
    the workspace box, and so does the arm."""
    from robokit.hardware.workspace import SIM_TABLE

    class Dive:
        name, autonomous, action_is_next_state, key_help = "dive", False, False, []
        target = np.r_[1.045, 1.087, 0.015, -1.373, -0.02, 2.461, 1.853, 0.0].astype(np.float32)

        def next_action(self, obs):
            return self.target

        def handle_key(self, key):
            return False

        def status(self):
            return ""

        def reset(self):
            pass

        def close(self):
            pass

    with PandaSimEnv(task="pick_place", seed=1, image_size=(24, 32), camera_names=("top",)) as sim:
        session = RecordingSession(sim.robot, sim.cameras, Dive(), RecordConfig(out=tmp_path, end_frames=0,
                                                                                 workspace=SIM_TABLE), sim_env=sim)
        session.prepare()
        session.start_episode()
        for _ in range(90):
            session.step()
        session.stop_episode()
    with open_episode(tmp_path / "episode_0.hdf5") as ep:
        actions, qpos = ep.action(), ep.qpos()
    assert all(SIM_TABLE.contains(a) for a in actions)
    assert max(float(np.abs(SIM_TABLE.shift(q)).max()) for q in qpos) < 0.01
    assert session.safety is not None and session.safety.counts.workspace > 10


def test_corrupt_or_foreign_files_given_to_replay(tmp_path, capsys):
    bad = tmp_path / "episode_0.hdf5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    code, _, err = cli(capsys, "replay", bad, "--sim")
    assert code == 2 and "episode_0.hdf5: not a readable HDF5 file" in " ".join(err.split())
    code, _, err = cli(capsys, "record", "--sim", "--teleop", f"replay:{bad}", "--out", tmp_path / "o")
    assert code == 2 and "not a readable HDF5 file" in err

    import h5py

    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=[1, 2, 3])
    code, _, err = cli(capsys, "replay", foreign, "--sim")
    assert code == 2 and "no /action" in err


def test_unwritable_or_full_output_folder(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = cli(capsys, "record", "--sim", "--teleop", "scripted", "--out", blocker / "data")
    assert code == 2 and "cannot create the output folder" in err
    code, _, err = cli(capsys, "record", "--sim", "--teleop", "scripted", "--out", tmp_path / "d",
                       "--min-free-mb", "1e12")
    assert code == 2 and "MB free" in err and "--out" in err


def test_option_mistakes_are_named(tmp_path, capsys):
    code, _, err = cli(capsys, "record", "--sim", "--teleop", "kinesthetic", "--out", tmp_path)
    assert code == 2 and "kinesthetic" in err and "--robot franka" in err
    code, _, err = cli(capsys, "record", "--sim", "--teleop", "scripted", "--task", "fly to the moon",
                       "--out", tmp_path)
    assert code == 2 and "unknown sim task" in err
    code, _, err = cli(capsys, "record", "--sim", "--teleop", "joystick", "--out", tmp_path)
    assert code == 2 and "unknown --teleop" in err
    code, _, err = cli(capsys, "record", "--sim", "--teleop", "scripted", "--jpeg-quality", "500", "--out", tmp_path)
    assert code == 2 and "--jpeg-quality must be 1..100" in err
    code, _, err = cli(capsys, "record", "--sim", "--teleop", "scripted", "--seed", "-1", "--out", tmp_path)
    assert code == 2 and "seed must be a whole number >= 0" in err


def recording_in_its_second_episode(command: list[str], out) -> subprocess.Popen:
    """``robokit COMMAND`` (a scripted recording into ``out``) in a process, once its second episode
    has been recording a moment."""
    proc = subprocess.Popen([sys.executable, "-m", "robokit.cli", *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "episode_1.hdf5.partial").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate())
        time.sleep(0.02)
    time.sleep(0.3)
    return proc


def test_sigterm_saves_the_episode_in_progress(tmp_path):
    out = tmp_path / "d"
    proc = recording_in_its_second_episode(["record", "--sim", "--teleop", "scripted", "--episodes", "50",
                                            "--out", str(out), "--image-size", "32x40"], out)
    try:
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert not list(out.glob("*.partial"))
    interrupted = []
    for path in list_episodes(out):
        with open_episode(path) as ep:
            assert ep.check() == [] and ep.length > 0
            if "interrupted" in ep.attrs:
                interrupted.append(path.name)
    assert len(interrupted) == 1 and interrupted[0] in stdout, stdout  # the summary names it


def test_a_killed_scripted_recording_run_again_completes_without_repeating_a_scene(tmp_path, capsys):
    out = tmp_path / "d"
    command = ["record", "--sim", "--teleop", "scripted", "--episodes", "3", "--out", str(out),
               "--image-size", "32x40"]
    proc = recording_in_its_second_episode(command, out)
    proc.kill()  # SIGKILL: nothing is saved on the way out
    proc.communicate(timeout=60)
    code, stdout, err = cli(capsys, *command)  # the same command again
    assert code == 0, err
    text = " ".join(stdout.split())
    assert "recovered episode_1.hdf5" in text and "holds 2 episodes: recording 1 more" in text
    seeds, recovered = [], []
    for path in list_episodes(out):
        with open_episode(path) as ep:
            seeds.append(int(ep.attrs["sim_seed"]))
            if ep.attrs.get("recovered"):
                recovered.append(path.name)
    assert len(seeds) == 3 and len(set(seeds)) == 3  # completed to 3, no scene twice
    assert recovered == ["episode_1.hdf5"]
    code, stdout, _ = cli(capsys, *command)  # and once more: nothing is missing
    assert code == 0 and "nothing to record" in stdout and len(list_episodes(out)) == 3


def test_a_wrong_camera_is_named_before_the_robot_is_contacted(tmp_path, capsys):
    source = write_v1(tmp_path / "src", steps=3, cams=("top",))
    code, _, err = cli(capsys, "record", "--robot", "franka", "--host", "127.250.250.250", "--camera", "top=97",
                       "--teleop", f"replay:{source}", "--out", tmp_path / "out", "--realtime", "ignore")
    assert code == 2 and "camera 'top' (index 97)" in err
    assert "127.250.250.250" not in err  # nothing was sent to a robot before the cameras were found


def test_interrupt_during_a_save_waits_for_the_file(env, tmp_path):
    session = RecordingSession(env.robot, env.cameras, KeyboardJog(), RecordConfig(out=tmp_path, end_frames=0),
                               sim_env=env)
    session.prepare()
    with pytest.raises(KeyboardInterrupt):  # between saves: at once
        session.interrupt()
    session.start_episode()
    for _ in range(5):
        session.step()
    check = env.task.success

    def ctrl_c_while_saving() -> bool:  # the task check runs in the middle of saving the episode
        session.interrupt()  # what the CLI's SIGINT/SIGTERM handler calls
        return check()

    env.task.success = ctrl_c_while_saving
    with pytest.raises(KeyboardInterrupt):
        session.stop_episode()
    assert session.saved == [tmp_path / "episode_0.hdf5"] and not list(tmp_path.glob("*.partial"))
    with open_episode(tmp_path / "episode_0.hdf5") as ep:
        assert ep.length == 5 and ep.check() == []


# -- faults during recording (library level) ---------------------------------------------------------
@pytest.fixture
def env():
    with PandaSimEnv(task="pick_place", seed=1, image_size=(48, 64), camera_names=("top",)) as e:
        yield e


def test_unplugged_camera_saves_the_episode_and_names_the_camera(env, tmp_path):
    wrist = SyntheticCamera("wrist", size=(48, 64), fps=30, fail_after=25)
    with wrist:
        cameras = {"top": env.cameras["top"], "wrist": wrist}
        session = RecordingSession(env.robot, cameras, KeyboardJog(), RecordConfig(out=tmp_path), sim_env=env)
        session.prepare()
        session.start_episode()
        with pytest.raises(HardwareFault) as info:
            session.run()
    message = str(info.value)
    assert "camera 'wrist'" in message and "episode_0.hdf5 was saved" in message
    with open_episode(tmp_path / "episode_0.hdf5") as ep:
        assert ep.length >= 10  # the sim loop outpaces the 30 fps camera: frames repeat
        assert "wrist" in ep.attrs["interrupted"] and ep.check() == []


def test_low_disk_space_while_recording_stops_cleanly(env, tmp_path):
    session = RecordingSession(env.robot, env.cameras, KeyboardJog(), RecordConfig(out=tmp_path), sim_env=env)
    session.prepare()
    session.start_episode()
    for _ in range(10):
        session.step()
    session._writer.min_free_bytes = 2**62  # the disk "fills up": the writer's next check notices
    with pytest.raises(LowDiskSpace) as info:
        session.run()
    assert "MB free" in str(info.value) and "episode_0.hdf5 was saved" in str(info.value)
    with open_episode(tmp_path / "episode_0.hdf5") as ep:
        assert ep.length >= 10 and ep.check() == []


# -- instruction per episode -------------------------------------------------------------------------
def test_real_robot_session_stores_the_task_set_between_episodes(env, tmp_path):
    # No sim_env: the session runs its own 30 Hz loop and stores any instruction as it is typed.
    session = RecordingSession(env.robot, env.cameras, KeyboardJog(),
                               RecordConfig(out=tmp_path, task="wipe the table", end_frames=0))
    session.prepare()
    assert session.task == "wipe the table"
    assert session.set_task("  stack   the cups ") == "stack the cups"
    session.start_episode()
    with pytest.raises(UserError, match="before changing the task"):
        session.set_task("something else")
    for _ in range(3):
        session.step()
    session.stop_episode()
    with pytest.raises(UserError, match="empty"):
        session.set_task("   ")
    with open_episode(tmp_path / "episode_0.hdf5") as ep:
        assert ep.task == "stack the cups"


def test_sim_session_task_must_be_one_of_the_scene_and_survives_new_scenes(tmp_path):
    tasks = list_tasks("multi")
    with PandaSimEnv(task="multi", seed=2, image_size=(32, 40), camera_names=("top",)) as env:
        session = RecordingSession(env.robot, env.cameras, KeyboardJog(), RecordConfig(out=tmp_path), sim_env=env)
        seed = env.seed
        session.set_task(tasks[3])
        assert env.task.name == tasks[3] and env.seed == seed  # same layout, new instruction
        session.set_task("2")  # a number picks from the list
        assert session.task == tasks[1]
        session.handle_key("h")  # a new scene keeps the chosen task
        assert env.seed != seed and env.task.name == tasks[1]
        with pytest.raises(UserError, match=f"not a task of the multi scene.*1: {tasks[0]}"):
            session.set_task("put the cube in the green zone")
        assert env.task.name == tasks[1]


def test_task_prompt_keeps_typed_keys_from_the_session(env, tmp_path):
    from robokit.commands.record_cmd import TaskPrompt

    session = RecordingSession(env.robot, env.cameras, KeyboardJog(), RecordConfig(out=tmp_path), sim_env=env)
    prompt = TaskPrompt(session)
    assert prompt.filter(["up", "t", "s", "q", "backspace", "x", "space", "esc", "g"]) == ["up", "g"]
    assert prompt.text is None and session.messages[-1] == "task unchanged"
    assert prompt.filter(["t", "9", "enter"]) == []
    assert "not a task of the pick_place scene" in session.messages[-1]
    assert prompt.filter(["t", *"put the RED cube in the green zone", "enter", "s"]) == ["s"]
    assert session.messages[-1] == "task of the next episode: put the red cube in the green zone"
    session.start_episode()
    prompt.filter(["t"])
    assert prompt.text is None and "before changing the task" in session.messages[-1]
    session.discard_episode()


def test_a_key_that_does_nothing_is_answered_with_the_keys_that_do(env, tmp_path):
    from robokit.commands.record_cmd import TaskPrompt, render_panel

    session = RecordingSession(env.robot, env.cameras, KeyboardJog(), RecordConfig(out=tmp_path), sim_env=env)
    TaskPrompt(session)
    session.handle_key("x")
    status = session.status()
    message = status.messages[-1]
    assert message.startswith("key 'x' does nothing; keys:")
    for key in ("s", "d", "r", "h", "q", "t", "space / g"):  # the session's, the prompt's, the jog keys
        assert f" {key} " in f" {message.split(': ', 1)[1].replace(' · ', ' ')} "
    assert ("t", "task of next episode") in status.key_help
    session.handle_key("x")  # held down: said once
    assert session.messages.count(message) == 1
    session.handle_key("up")  # a jog key is not unknown
    assert session.messages[-1] == message

    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render_panel(status))
    assert "key 'x' does nothing" in console.export_text()


# -- teleop sources ----------------------------------------------------------------------------------
def _obs(env: PandaSimEnv) -> Observation:
    return Observation(env.robot.read(), {})


def test_keyboard_jog_moves_the_tool_and_toggles_the_gripper(env):
    jog = KeyboardJog(fps=30)
    start = fk(env.robot.read().qpos)[0]
    env.robot.command(*_split(jog.next_action(_obs(env))))
    for key in ["o"] * 5 + ["up"] * 3 + ["space"]:
        assert jog.handle_key(key)
    for _ in range(45):
        env.robot.command(*_split(jog.next_action(_obs(env))))
        env.step()
    end = fk(env.robot.read().qpos)[0]
    np.testing.assert_allclose(end - start, [0.03, 0.0, -0.05], atol=0.006)
    assert env.robot.read().gripper > 0.5  # closed
    assert not jog.handle_key("x")


def test_keyboard_jog_refuses_unreachable_targets(env):
    jog = KeyboardJog(fps=30, workspace=((-5, 5), (-5, 5), (-5, 5)))
    jog.next_action(_obs(env))
    for _ in range(80):  # 80 cm further out: beyond the arm's reach
        jog.handle_key("up")
    for _ in range(200):
        action = jog.next_action(_obs(env))
        env.robot.command(*_split(action))
        env.step()
    assert "unreachable" in jog.status()
    assert np.all(np.isfinite(action))


class _HandGuidedSimArm(Robot):
    """The sim arm moved along a path by a "hand": joint commands are ignored, as the Franka does
    in kinesthetic mode, and the gripper follows its command."""

    kind = "franka"

    def __init__(self, env: PandaSimEnv) -> None:
        self.env, self.kinesthetic, self.k = env, False, 0

    def set_kinesthetic(self, enabled: bool) -> None:
        self.kinesthetic = enabled

    def read(self):
        return self.env.robot.read()

    def command(self, qpos_target, gripper):
        q = self.env.robot.read().qpos + np.array([0.004, -0.003, 0.0, 0.003, 0.0, 0.002, 0.0])
        self.env.robot.command(q, gripper)

    def home(self):
        self.kinesthetic = False  # as the Franka: homing is a stiff motion that ends guiding mode
        self.env.robot.home()

    def stop(self):
        self.env.robot.stop()


def test_kinesthetic_action_is_the_next_measured_position(env, tmp_path):
    arm = _HandGuidedSimArm(env)
    source = Kinesthetic(arm)
    session = RecordingSession(arm, env.cameras, source, RecordConfig(out=tmp_path, end_frames=2), sim_env=env)
    session.prepare()
    session.start_episode()
    for _ in range(20):
        session.step()
    source.handle_key("space")
    for _ in range(5):
        session.step()
    session.stop_episode()
    while session.state != "idle":
        session.step()
    session.teleop.close()
    assert arm.kinesthetic is False
    with open_episode(tmp_path / "episode_0.hdf5") as ep:
        qpos, action = ep.qpos(), ep.action()
        assert ep.attrs["source"] == "kinesthetic" and ep.length == 27
        np.testing.assert_allclose(action[:-1, :7], qpos[1:, :7], atol=1e-6)
        np.testing.assert_allclose(action[-1, :7], qpos[-1, :7], atol=1e-6)
        assert action[0, 7] == 0.0 and action[-1, 7] == 1.0
        assert ep.done().tolist()[-3:] == [False, True, True]


def test_kinesthetic_teaching_resumes_after_homing(env, tmp_path):
    arm = _HandGuidedSimArm(env)
    session = RecordingSession(arm, env.cameras, Kinesthetic(arm), RecordConfig(out=tmp_path))  # a real arm
    session.step()
    assert arm.kinesthetic
    session.handle_key("h")
    assert arm.kinesthetic and "at home" in session.messages[-1]
    session.teleop.close()
    assert not arm.kinesthetic


def test_replay_source_refuses_actions_it_cannot_send(tmp_path):
    path = tmp_path / "episode_0.hdf5"
    write_act_sim(path, steps=4)  # 14-dof bimanual actions
    with pytest.raises(UserError, match=r"replay on a 7-joint arm needs \(T, 8\)"):
        Replay(path)


def _split(action):
    return action[:7], float(action[7])


def test_terminal_key_parsing():
    from robokit.record.keyboard import parse_keys

    raw = "s\x1b[A\x1bOBk \x1b[5~\x1b[6~\x1b[1;5Cq\x03"
    assert parse_keys(raw) == ["s", "up", "down", "k", "space", "pageup", "pagedown", "q", "ctrl-c"]


# -- real cameras' timing ----------------------------------------------------------------------------
@pytest.mark.parametrize("step_hz", [30.0, 15.0])
def test_real_robot_session_follows_the_first_camera_and_its_counts_match_the_file(env, tmp_path, step_hz):
    # No sim_env: the session paces itself and phase-locks to the first camera; two free-running
    # 30 fps cameras. Whatever the machine's load does to the timing, the dropped/repeated counts
    # the panel shows must be exactly the holes and repeats in the stored frames' capture times
    # (at 15 Hz the frames no step needs are not holes).
    with SyntheticCamera("top", size=(24, 32), fps=30.0) as top, \
            SyntheticCamera("wrist", size=(24, 32), fps=30.0) as wrist:
        session = RecordingSession(env.robot, {"top": top, "wrist": wrist}, KeyboardJog(),
                                   RecordConfig(out=tmp_path, fps=step_hz, end_frames=0))
        session.prepare()
        for _ in range(15):  # idle steps: the tick grid locks on before the episode
            session.step()
        session.start_episode()
        for _ in range(45):
            session.step()
        status = session.status()
        session.stop_episode()
        assert session._rate.locked
    with open_episode(tmp_path / "episode_0.hdf5") as ep:
        assert ep.length == 45
        for cam in ("top", "wrist"):
            frame_numbers = np.rint(np.diff(ep.timestamps(cam)) * step_hz).astype(int)  # in steps
            assert np.all(frame_numbers >= 0)
            # The counts also include the first step's comparison with the last idle frame.
            dropped_in_file = int(np.sum(np.maximum(frame_numbers - 1, 0)))
            repeated_in_file = int(np.sum(frame_numbers == 0))
            assert 0 <= status.dropped[cam] - dropped_in_file <= DRIVER_QUEUE_FRAMES, frame_numbers
            assert 0 <= status.repeated[cam] - repeated_in_file <= 1, frame_numbers


def test_task_number_on_the_command_line_picks_that_sim_task(tmp_path, capsys):
    # As the `t` key in the session: a number picks from the scene's task list.
    out = tmp_path / "multi"
    code, _, err = cli(capsys, "record", "--sim", "--task-set", "multi", "--teleop", "scripted", "--task", "2",
                       "--episodes", "1", "--out", out, "--image-size", SIZE, "--seed", "3")
    assert code == 0, err
    with open_episode(out / "episode_0.hdf5") as ep:
        assert ep.task == list_tasks("multi")[1]
    code, _, err = cli(capsys, "record", "--sim", "--task-set", "multi", "--teleop", "scripted", "--task", "9",
                       "--out", out)
    assert code == 2 and "tasks 1 to 6" in err
