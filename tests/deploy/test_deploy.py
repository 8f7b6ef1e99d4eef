"""`robokit deploy --sim` end to end, evaluate_in_sim's bookkeeping, and the expert through the loop."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim
from robokit.deploy.loop import ControlLoop, LoopConfig, StopReason
from robokit.deploy.runner import LocalRunner
from robokit.deploy.server import PolicyServer
from robokit.episodes.reader import open_episode
from robokit.hardware.base import PANDA_READY_POSE
from robokit.hardware.workspace import SIM_TABLE


class StillPolicy:
    """Holds the ready pose and remembers what each observation carried."""

    name = "still"

    def __init__(self, cameras=("top",), task_set_fps=30.0):
        self.config = SimpleNamespace(camera_names=list(cameras), image_shape=(24, 32, 3), state_dim=8,
                                      action_dim=8, chunk_size=6, fps=task_set_fps)
        self.seen = []
        self.resets = 0

    def predict_chunk(self, obs):
        self.seen.append({"task": obs.get("task"), "goal": None if obs.get("goal_image") is None
                          else obs["goal_image"].shape, "cams": sorted(obs["images"])})
        row = np.concatenate([PANDA_READY_POSE, [0.0]]).astype(np.float32)
        return np.tile(row, (6, 1)), {}

    def reset(self):
        self.resets += 1


@pytest.fixture(scope="module")
def tiny_checkpoint(make_tiny_checkpoint):
    return make_tiny_checkpoint("act", {"fps": 30.0}, fps=30.0)


def test_deploy_sim_command_end_to_end(tiny_checkpoint, tmp_path, capsys):
    from robokit.cli import main

    main(["deploy", "--sim", str(tiny_checkpoint), "--episodes", "2", "--max-steps", "12", "--mode", "chunk",
          "--device", "cpu", "--json", str(tmp_path / "r.json"), "--record", str(tmp_path / "rollouts"),
          "--video", str(tmp_path / "videos")])
    out = capsys.readouterr().out
    assert "overall" in out and "0/2" in out
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["episodes"] == 2 and results["settings"]["seed_start"] == 1000
    assert [o["seed"] for o in results["outcomes"]] == [1000, 1001]
    assert all(o["reason"] == "max_steps" and o["steps"] == 12 for o in results["outcomes"])
    from robokit.episodes.reader import list_episodes, open_episode

    files = list_episodes(tmp_path / "rollouts")
    assert len(files) == 2
    with open_episode(files[0]) as ep:
        assert ep.length == 12 and ep.action_dim == 8 and ep.camera_names == ["top"]
        assert ep.success is False and ep.task == results["outcomes"][0]["task"]
        assert np.all(np.isfinite(ep.action()))
    assert len(list((tmp_path / "videos").glob("*_fail.mp4"))) == 2


@pytest.mark.parametrize("args, message", [
    ([], "--server"),  # no policy at all
    (["CKPT", "--episodes", "0"], "--episodes must be positive"),
    (["CKPT", "--fps", "0"], "--fps must be positive"),
    (["CKPT", "--max-steps", "0"], "--max-steps must be positive"),
    (["CKPT", "--seeds", "1003,x"], "--seeds takes whole numbers"),
    (["CKPT", "--seeds", ","], "--seeds is empty"),
    (["CKPT", "--seeds", "1003,1017", "--episodes", "3"], "--seeds lists 2 scenes"),
])
def test_bad_deploy_arguments_are_one_line_user_errors(tiny_checkpoint, capsys, args, message):
    from robokit.cli import main

    argv = ["deploy", "--sim", *(str(tiny_checkpoint) if a == "CKPT" else a for a in args)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_checkpoint_of_one_task_set_is_refused_on_another(make_tiny_checkpoint, capsys):
    # Trained on pick_place: on the multi scene every episode would fail, and the run used to say 0%
    # and exit 0. Now it is one clear line naming the task set it was trained on.
    ckpt = make_tiny_checkpoint("act", {"fps": 30.0, "tasks": ["put the red cube in the green zone"]}, fps=30.0)
    with pytest.raises(SystemExit) as exit_info:
        from robokit.cli import main

        main(["deploy", "--sim", str(ckpt), "--task-set", "multi", "--episodes", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--task-set pick_place" in err and len(err.strip().splitlines()) == 1, err


def test_the_server_announces_the_tasks_its_checkpoint_was_trained_on(make_tiny_checkpoint):
    from robokit.deploy.client import PolicyClient

    ckpt = make_tiny_checkpoint("act", {"fps": 30.0, "tasks": ["put the red cube in the green zone"]}, fps=30.0)
    with PolicyServer.from_checkpoint(ckpt, device="cpu", bind="tcp://127.0.0.1:0", warmup=False) as server:
        server.start()
        with PolicyClient(server.address, timeout_s=10.0) as client:
            assert client.hello().tasks == ("put the red cube in the green zone",)


def test_task_set_check_runs_what_matches_and_warns_on_the_rest(caplog):
    from robokit.deploy.evaluate import check_task_set
    from robokit.deploy.protocol import PolicyInfo
    from robokit.hardware.sim import list_tasks

    def info(*tasks):
        return PolicyInfo(type="t", camera_names=("top",), image_shape=(24, 32, 3), state_dim=8, action_dim=8,
                          chunk_size=4, fps=30.0, tasks=tasks)

    check_task_set(info(), "multi")  # unknown training tasks: run as asked
    check_task_set(info(*list_tasks("multi")), "multi")
    assert not caplog.records
    check_task_set(info(list_tasks("multi")[0]), "multi")  # one of six: a warning, not an error
    check_task_set(info("put the cube in the bowl"), "pick_place")  # real-robot data: a warning
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]


def test_multi_task_set_reports_every_instruction_with_text_goals():
    from robokit.hardware.sim import list_tasks

    tasks = list_tasks("multi")
    policy = StillPolicy()
    results = evaluate_in_sim(policy, EvalConfig(episodes=len(tasks), seed_start=2000, task_set="multi", max_steps=3))
    table = results.per_task()
    assert len(table) == len(tasks) and all(n == 1 for _, n in table.values())
    assert results.success_rate == 0.0
    sent = {s["task"] for s in policy.seen}
    assert sent == set(table) and all(s["goal"] is None for s in policy.seen)


def test_deploy_sim_runs_the_scenes_listed_with_seeds(tiny_checkpoint, tmp_path, capsys):
    from robokit.cli import main

    main(["deploy", "--sim", str(tiny_checkpoint), "--seeds", "1017,1003", "--max-steps", "3", "--mode", "chunk",
          "--device", "cpu", "--json", str(tmp_path / "r.json")])
    assert "seeds 1017, 1003" in capsys.readouterr().out
    results = json.loads((tmp_path / "r.json").read_text())
    assert [o["seed"] for o in results["outcomes"]] == [1017, 1003] and results["episodes"] == 2


def test_listed_seeds_are_the_scenes_evaluated_in_their_order(tmp_path):
    config = EvalConfig(episodes=50, seeds=(7003, 7001), max_steps=2, record_dir=tmp_path)
    assert config.episodes == 2
    results = evaluate_in_sim(StillPolicy(), config)
    assert [o.seed for o in results.outcomes] == [7003, 7001]
    assert results.settings["seeds"] == [7003, 7001]
    from robokit.episodes.reader import list_episodes

    files = list_episodes(tmp_path)
    assert len(files) == 2
    with open_episode(files[0]) as ep:
        assert int(ep.attrs["seed"]) == 7003


def test_goal_images_replace_the_instruction_and_come_from_the_expert_on_the_same_seed():
    policy = StillPolicy()
    results = evaluate_in_sim(policy, EvalConfig(episodes=1, seed_start=2000, task_set="multi", goal="image",
                                                  max_steps=3))
    assert results.episodes == 1
    assert all(s["task"] is None and s["goal"] == (24, 32, 3) for s in policy.seen)


def test_remote_policy_over_the_protocol(tmp_path):
    policy = StillPolicy(cameras=("top", "wrist"))
    with PolicyServer(policy, "tcp://127.0.0.1:0").start() as srv:
        results = evaluate_in_sim(None, EvalConfig(episodes=2, seed_start=1000, server=srv.address, max_steps=4,
                                                   mode="chunk"))
    assert results.episodes == 2 and results.policy["type"] == "still"
    assert policy.resets >= 2  # the server's policy is reset per episode
    assert all(s["cams"] == ["top", "wrist"] and s["task"] for s in policy.seen[1:])


class DivePolicy(StillPolicy):
    """Every chunk says: put the hand 5 cm under the table top and 7 cm past the box's +y side."""

    name = "dive"
    TARGET = np.array([1.045, 1.087, 0.015, -1.373, -0.02, 2.461, 1.853])  # ik([0.35, 0.62, -0.05])

    def predict_chunk(self, obs):
        return np.tile(np.r_[self.TARGET, 1.0].astype(np.float32), (6, 1)), {}


@pytest.mark.parametrize("box", [SIM_TABLE, None], ids=["workspace", "joint-limits-only"])
def test_a_policy_that_dives_under_the_table_never_takes_the_hand_out_of_the_box(tmp_path, box):
    assert SIM_TABLE.shift(DivePolicy.TARGET)[1] < -0.05 and SIM_TABLE.shift(DivePolicy.TARGET)[2] > 0.04
    results = evaluate_in_sim(DivePolicy(), EvalConfig(episodes=1, seed_start=1000, max_steps=150, mode="chunk",
                                                       record_dir=tmp_path, workspace=box))
    with open_episode(results.outcomes[0].episode_file) as ep:
        qpos, attrs = ep.qpos(), dict(ep.attrs)
    # where the hand went, from the recorded joints: the most any checked point was outside the box
    outside = max(float(np.abs(SIM_TABLE.shift(q)).max()) for q in qpos)
    if box is None:  # the test policy does take the hand out when nothing stops it
        assert outside > 0.03 and attrs["safety_workspace_projected"] == 0
    else:
        assert outside < 0.01, outside  # within the physics' tracking error of the box
        assert attrs["safety_workspace_projected"] + attrs["safety_workspace_held"] > 50
        assert results.safety_totals()["workspace_projected"] == attrs["safety_workspace_projected"]
    assert {"safety_velocity_clamps", "safety_watchdog_holds", "safety_max_command_gap_rad"} <= set(attrs)


class ExpertPolicy:
    """The sim's scripted expert behind the policy interface: one-step chunks from privileged state."""

    name = "expert"

    def __init__(self, env):
        self.env = env
        self.config = SimpleNamespace(camera_names=["top"], image_shape=(24, 32, 3), state_dim=8, action_dim=8,
                                      chunk_size=1, fps=env.control_hz)
        self.expert = None
        self.last = None

    def predict_chunk(self, obs):
        if self.expert is None:
            self.expert = self.env.task.expert()
        action = self.expert.next_action(self.env.robot.read())
        done = action is None
        self.last = action if action is not None else self.last
        return self.last[None, :].astype(np.float32), {"done": 1.0 if done else 0.0}

    def reset(self):
        self.expert = None


def test_the_scripted_expert_succeeds_through_the_deploy_loop():
    """The loop's safety filter and timing must not spoil a good policy."""
    from robokit.hardware.sim import PandaSimEnv

    with PandaSimEnv(task="pick_place", seed=1000, image_size=(24, 32), camera_names=("top",)) as env:
        env.reset(seed=1000)
        config = LoopConfig(fps=env.control_hz, mode="ensemble", realtime=False, max_steps=400)
        with ControlLoop(env.robot, env.cameras, LocalRunner(ExpertPolicy(env)), config, step_fn=env.step) as loop:
            result = loop.run_episode(goal_reached=env.task.success)
        assert result.reason in (StopReason.SUCCESS, StopReason.DONE), result.message
        for _ in range(10):
            env.step()
        assert env.task.success()
        assert loop.stats().starved_ticks == 0
