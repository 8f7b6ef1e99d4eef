"""`robokit deploy --record` stores the predicted chunks of each step; `robokit viz rollout` draws them."""

from types import SimpleNamespace

import numpy as np
import pytest

from robokit.cli import main
from robokit.deploy.loop import ControlLoop, LoopConfig
from robokit.deploy.recording import RolloutRecorder
from robokit.deploy.runner import LocalRunner
from robokit.episodes.reader import list_episodes, open_episode
from tests.deploy import test_deploy

tiny_checkpoint = test_deploy.tiny_checkpoint  # fixture: a tiny untrained ACT checkpoint (chunk 10, camera "top")

CHUNK = 6


class DriftPolicy:
    """Each chunk is a function of the observation it was asked for: joint 1 creeps on from the measured
    position, so the arm moves and every step's observation (and chunk) is different."""

    name = "drift"

    def __init__(self):
        self.config = SimpleNamespace(camera_names=["top"], image_shape=(24, 32, 3), state_dim=8, action_dim=8,
                                      chunk_size=CHUNK, fps=30.0)
        self.calls = 0

    @staticmethod
    def chunk_for(qpos):
        chunk = np.zeros((CHUNK, 8), np.float32)
        chunk[:, :7] = np.asarray(qpos, np.float32)[:7]
        chunk[:, 0] += np.float32(0.002) * np.arange(1, CHUNK + 1, dtype=np.float32)
        return chunk

    def predict_chunk(self, obs):
        self.calls += 1
        return self.chunk_for(obs["qpos"]), {}

    def reset(self):
        pass


@pytest.mark.parametrize("mode, query_every", [("ensemble", None), ("chunk", 4), ("async", None)])
def test_each_chunk_is_stored_at_the_step_of_its_observation(tmp_path, mode, query_every):
    from robokit.hardware.sim import PandaSimEnv

    policy = DriftPolicy()
    records = []
    with PandaSimEnv(task="pick_place", seed=1000, image_size=(24, 32), camera_names=("top",)) as env:
        env.reset(seed=1000)
        config = LoopConfig(fps=30.0, mode=mode, query_every=query_every, realtime=False, max_steps=12)
        recorder = RolloutRecorder(tmp_path, {"top": (24, 32, 3)}, 30.0, "sim", True, chunk_shape=(CHUNK, 8))
        recorder.start("drift")

        def on_step(record):
            records.append(record)
            recorder(record)

        with ControlLoop(env.robot, env.cameras, LocalRunner(policy), config, step_fn=env.step) as loop:
            loop.run_episode(on_step=on_step)
        path = recorder.finish(None, {})
    with open_episode(path) as ep:
        chunks, qpos = ep.predicted_chunks(), ep.qpos()
        assert ep.check() == [] and chunks.shape == (12, CHUNK, 8)
    queried = [t for t in range(12) if np.isfinite(chunks[t]).all()]
    assert all(np.isnan(chunks[t]).all() for t in set(range(12)) - set(queried))
    # row t holds the chunk predicted from step t's observation, whenever it arrived
    for t in queried:
        np.testing.assert_allclose(chunks[t], DriftPolicy.chunk_for(qpos[t]), atol=1e-6)
    arrived = [(r.step, start) for r in records for start, _ in r.chunks]
    assert sorted(start for _, start in arrived) == queried
    if mode == "ensemble":
        assert queried == list(range(12))
    elif mode == "chunk":
        assert queried == [0, 4, 8]
    else:  # async: replies come after their observation step and still land on its row
        assert any(step > start for step, start in arrived) and len(queried) >= 3
        assert policy.calls - len(queried) <= 1  # at most the query still running at the end is lost


def test_deploy_record_then_viz_rollout_draws_the_predicted_chunks(tiny_checkpoint, tmp_path, capsys):
    rollouts = tmp_path / "rollouts"
    main(["deploy", "--sim", str(tiny_checkpoint), "--episodes", "1", "--max-steps", "10", "--mode", "chunk",
          "--query-every", "4", "--device", "cpu", "--record", str(rollouts)])
    [path] = list_episodes(rollouts)
    with open_episode(path) as ep:
        chunks = ep.predicted_chunks()
        assert chunks.shape == (10, 10, 8)  # (steps, the checkpoint's chunk size, actions)
        queried = [t for t in range(10) if np.isfinite(chunks[t]).all()]
        assert queried == [0, 4, 8] and np.isnan(np.delete(chunks, queried, axis=0)).all()
    capsys.readouterr()
    main(["viz", "rollout", str(rollouts)])
    out = rollouts / "viz" / path.stem
    assert (out / "joints.png").stat().st_size > 0 and (out / "cameras.mp4").stat().st_size > 0
    assert "10 steps, 3 predicted chunks drawn" in capsys.readouterr().err


def test_video_recorder_writes_every_camera_side_by_side(tmp_path, read_video):
    from robokit.deploy.recording import VideoRecorder
    from robokit.hardware.sim import PandaSimEnv

    video = VideoRecorder(tmp_path / "videos", fps=30.0)
    with PandaSimEnv(task="pick_place", seed=1000, image_size=(24, 32), camera_names=("top", "wrist")) as env:
        env.reset(seed=1000)
        config = LoopConfig(fps=30.0, mode="chunk", query_every=4, realtime=False, max_steps=9)
        policy = DriftPolicy()
        policy.config.camera_names = ["top", "wrist"]
        video.start("episode_0")
        with ControlLoop(env.robot, env.cameras, LocalRunner(policy), config, step_fn=env.step) as loop:
            loop.run_episode(on_step=video)
        path = video.finish("fail")
    assert path is not None and path.endswith("episode_0_fail.mp4")
    frames = read_video(path)
    assert len(frames) == 9 and frames[0].shape[:2] == (24, 64)  # both cameras, one step per frame
    video.start("episode_1")  # an episode without frames leaves no file
    assert video.finish("fail") is None and sorted(p.name for p in (tmp_path / "videos").iterdir()) == [
        "episode_0_fail.mp4"]
