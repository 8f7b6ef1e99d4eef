"""What a deployed policy is given: the same observation in this process and through a server, and the
goal image from the camera the policy was trained on, whichever way it runs."""

import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from robokit.deploy import protocol as P
from robokit.deploy.client import PolicyClient
from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim, expert_goal_image
from robokit.deploy.observation import Observation
from robokit.deploy.runner import LocalRunner, RemoteRunner
from robokit.deploy.server import PolicyServer
from robokit.errors import ServerUnavailable
from robokit.hardware.base import PANDA_READY_POSE
from robokit.hardware.sim import PandaSimEnv, list_tasks
from robokit.policies.base import DataNeeds
from robokit.policies.goal.grp import GRPConfig, GRPPolicy
from robokit.policies.nn.task_conditioning import build_vocabulary

CAMS = ["top", "wrist"]
SHAPE = (32, 48, 3)


class RecordingGRP(GRPPolicy):
    """A tiny GRP that keeps every observation it is given."""

    def __init__(self, config: GRPConfig) -> None:
        super().__init__(config)
        self.seen: list[dict] = []

    def predict_chunk(self, obs):
        self.seen.append(obs)
        return super().predict_chunk(obs)


def tiny_grp(goal_camera: str) -> RecordingGRP:
    torch.manual_seed(0)
    config = GRPConfig(camera_names=list(CAMS), image_shape=SHAPE, n_embd=32, n_head=2, n_blocks=2, task_dim=16,
                       chunk_size=4, dropout=0.0, goal_camera=goal_camera,
                       vocabulary=build_vocabulary(list_tasks("multi")))
    return RecordingGRP(config).eval()


@pytest.mark.parametrize("where", ["local", "server"])
def test_goal_images_come_from_the_camera_the_policy_was_trained_on(where):
    policy = tiny_grp(goal_camera="wrist")
    config = EvalConfig(episodes=1, seed_start=7, task_set="multi", goal="image", max_steps=2, mode="chunk",
                        done_threshold=2.0, timeout_s=30.0)
    if where == "local":
        evaluate_in_sim(policy, config)
    else:
        with PolicyServer(policy, bind="tcp://127.0.0.1:0", warmup=False) as server:
            server.start()
            evaluate_in_sim(None, replace(config, server=server.address))
    goals = [obs["goal_image"] for obs in policy.seen]
    assert goals and all(obs.get("task") is None for obs in policy.seen)
    with PandaSimEnv(task="multi", seed=7, image_size=SHAPE[:2], camera_names=tuple(CAMS),
                     control_hz=policy.config.fps) as env:
        task = list_tasks("multi")[0]
        wrist = expert_goal_image(env, 7, task, "wrist")
        top = expert_goal_image(env, 7, task, "top")
    assert not np.array_equal(wrist, top)
    for goal in goals:
        np.testing.assert_array_equal(goal, wrist)


def test_hello_announces_what_the_policy_reads():
    policy = tiny_grp(goal_camera="wrist")
    with PolicyServer(policy, bind="tcp://127.0.0.1:0", warmup=False) as server:
        server.start()
        with PolicyClient(server.address, timeout_s=10.0) as client:
            info = client.hello()
            raw = client.request("hello", {"protocol": P.PROTOCOL_VERSION}).header["policy"]
    assert raw["needs"] == policy.config.data_needs().to_dict()
    assert info.goal_camera == "wrist" and info.instruction is True and info.objects is False
    assert info.history == policy.config.data_needs().history


def test_a_hello_without_needs_means_no_goal_camera_and_no_objects():
    legacy = {"type": "act", "camera_names": CAMS, "image_shape": list(SHAPE), "state_dim": 8, "action_dim": 8,
              "chunk_size": 4, "fps": 30.0}
    info = P.PolicyInfo.from_header(legacy)
    assert info.goal_camera is None and info.objects is False and info.history == 0 and not info.instruction


@pytest.mark.parametrize("needs, words", [
    ({"goal_camera": "side"}, "goal camera 'side'"),
    ({"history": -1}, "history"),
    ("all of them", "'needs' must be a map"),
])
def test_a_malformed_needs_map_is_a_protocol_error(needs, words):
    header = {"type": "act", "camera_names": CAMS, "image_shape": list(SHAPE), "state_dim": 8, "action_dim": 8,
              "chunk_size": 4, "fps": 30.0, "needs": needs}
    with pytest.raises(P.ProtocolError) as err:
        P.PolicyInfo.from_header(header)
    assert err.value.code == P.BAD_MESSAGE and words in str(err.value)


class BoxPolicy:
    """A policy without torch that reads object boxes and keeps what it is given."""

    name = "boxes"

    def __init__(self):
        needs = DataNeeds(camera_names=tuple(CAMS), object_boxes=True, goal_camera="top", instruction=True)
        self.config = SimpleNamespace(camera_names=list(CAMS), image_shape=SHAPE, state_dim=8, action_dim=8,
                                      chunk_size=3, fps=30.0, data_needs=lambda: needs)
        self.seen: list[dict] = []

    def predict_chunk(self, obs):
        self.seen.append(obs)
        return np.tile(np.r_[PANDA_READY_POSE, 0.0].astype(np.float32), (3, 1)), {}

    def reset(self):
        pass


def test_the_policy_sees_the_same_observation_in_process_and_through_a_server():
    rng = np.random.default_rng(0)
    obs = Observation(qpos=np.r_[PANDA_READY_POSE, 0.02].astype(np.float32),
                      images={"top": rng.integers(0, 255, (48, 64, 3), np.uint8),
                              "wrist": rng.integers(0, 255, (30, 40, 3), np.uint8)},
                      task="put the red cube on the plate", goal_image=rng.integers(0, 255, (32, 48, 3), np.uint8),
                      objects=[{"name": "cube", "box": [8.0, 4.0, 24.0, 20.0], "camera": "top"},
                               {"name": "plate", "box": [0.0, 10.0, 20.0, 30.0], "camera": "wrist"}])
    local, remote = BoxPolicy(), BoxPolicy()
    LocalRunner(local).infer(obs)
    with PolicyServer(remote, bind="tcp://127.0.0.1:0", warmup=False) as server:
        server.start()
        runner = RemoteRunner(PolicyClient(server.address, timeout_s=10.0))
        try:
            assert runner.info.objects is True and runner.info.goal_camera == "top"
            runner.infer(obs)
        finally:
            runner.close()
    (a,), (b,) = local.seen, remote.seen
    assert set(a) == set(b) == {"qpos", "images", "task", "goal_image", "objects"}
    np.testing.assert_array_equal(a["qpos"], b["qpos"])
    for cam in CAMS:
        assert a["images"][cam].shape == SHAPE
        np.testing.assert_array_equal(a["images"][cam], b["images"][cam])
    assert a["goal_image"].shape == SHAPE
    np.testing.assert_array_equal(a["goal_image"], b["goal_image"])
    assert a["task"] == b["task"] == obs.task
    assert a["objects"] == b["objects"]
    # boxes follow their camera's image to the policy's size: top 64x48 -> 48x32, wrist 40x30 -> 48x32
    np.testing.assert_allclose(a["objects"][0]["box"], [6.0, 8.0 / 3, 18.0, 40.0 / 3])
    np.testing.assert_allclose(a["objects"][1]["box"], [0.0, 32.0 / 3, 24.0, 32.0])


def test_runners_declare_how_long_a_query_may_take():
    assert LocalRunner(BoxPolicy()).timeout_s == float("inf")
    with PolicyServer(BoxPolicy(), bind="tcp://127.0.0.1:0", warmup=False) as server:
        server.start()
        runner = RemoteRunner(PolicyClient(server.address, timeout_s=0.75))
        try:
            assert runner.timeout_s == 0.75
        finally:
            runner.close()


class SlowFirstAnswer(BoxPolicy):
    """Answers its first query after ``first_s`` (lazy start-up work) and every other one at once,
    unless told to be slow again."""

    def __init__(self, first_s: float):
        super().__init__()
        self.delays = [first_s]

    def predict_chunk(self, obs):
        if self.delays:
            time.sleep(self.delays.pop(0))
        return super().predict_chunk(obs)


def test_a_servers_slow_first_answer_is_waited_for_and_later_ones_are_not():
    obs = Observation(qpos=np.r_[PANDA_READY_POSE, 0.0].astype(np.float32),
                      images={cam: np.zeros(SHAPE, np.uint8) for cam in CAMS}, task="pick", goal_image=None)
    policy = SlowFirstAnswer(first_s=1.0)
    with PolicyServer(policy, bind="tcp://127.0.0.1:0", warmup=False) as server:
        server.start()
        runner = RemoteRunner(PolicyClient(server.address, timeout_s=0.3), first_timeout_s=20.0)
        try:
            assert runner.infer(obs).actions.shape == (3, 8)  # 1 s: past the query timeout, still answered
            runner.infer(obs)
            policy.delays.append(1.0)
            with pytest.raises(ServerUnavailable, match="within 0.3 s"):
                runner.infer(obs)
        finally:
            runner.close()
