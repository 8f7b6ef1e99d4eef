"""Record -> dataset -> deploy agree on time: a perfect policy built from the training samples succeeds.

A scripted episode is recorded with the recording session, read back through :class:`EpisodeDataset`,
and a policy that answers each observation with the dataset sample of the matching step (its action
chunk, the done probability the ACT done head is trained on for chunk step 1) is run through
``evaluate_in_sim`` on the recorded seed. If any stage were off by a step (the action stored
against the wrong observation, the chunk's row 0 applied at another step, frames rendered at
another point of the step cycle, chunks blended at wrong offsets, the done flag shifted) the
replayed trajectory would leave the recorded one: every observation the loop sends must equal the
sample's ``qpos`` and images bit for bit, and the episode must end on the done signal right after
the expert's last action, with the task solved.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim
from robokit.training.dataset import EpisodeDataset

FPS = 15.0
SIZE = (24, 32)
CAMERAS = ("top", "wrist")
CHUNK = 8


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One scripted pick_place episode as the demo records it, and its dataset."""
    from robokit.hardware.sim import PandaSimEnv
    from robokit.record.session import RecordConfig, RecordingSession
    from robokit.record.teleop import Scripted

    out = tmp_path_factory.mktemp("aligned")
    config = RecordConfig(out=out, fps=FPS, episodes=1)
    with PandaSimEnv(task="pick_place", seed=3, image_size=SIZE, camera_names=CAMERAS, control_hz=FPS) as env:
        session = RecordingSession(env.robot, env.cameras, Scripted(env), config, sim_env=env)
        session.prepare()
        (path,) = session.run()
        seed = int(env.seed)
    ds = EpisodeDataset([path], camera_names=list(CAMERAS), chunk_size=CHUNK, cache_bytes=0)
    return SimpleNamespace(path=path, seed=seed, dataset=ds, end_frames=config.end_frames)


class DatasetOracle:
    """Answers the observation of step t with training sample t (padded rows hold the last action).

    Past the recording's end (chunk mode queries there once the last chunk has run out) it holds the
    last action and says done, as the training samples do past the end.
    """

    name = "dataset-oracle"

    def __init__(self, ds: EpisodeDataset) -> None:
        self.ds = ds
        self.qpos = ds.records[0].qpos
        self.config = SimpleNamespace(camera_names=list(CAMERAS), image_shape=(*SIZE, 3), state_dim=8,
                                      action_dim=8, chunk_size=CHUNK, fps=FPS)
        self.steps: list[int] = []

    def reset(self) -> None:
        self.steps = []

    def predict_chunk(self, obs):
        after = self.steps[-1] if self.steps else 0
        same = np.flatnonzero((self.qpos == obs["qpos"]).all(axis=1))
        later = same[same >= after]
        if later.size == 0 and after + CHUNK >= len(self.qpos):
            self.steps.append(len(self.qpos))
            return np.tile(self.ds.records[0].action[-1], (CHUNK, 1)), {"done": 1.0}
        if later.size == 0:
            raise AssertionError(f"the observation after step {after} matches no recorded qpos: the rollout "
                                 "left the recorded trajectory")
        t = int(later[0])
        self.steps.append(t)
        sample = self.ds[t]
        for k, cam in enumerate(CAMERAS):
            seen = obs["images"][cam]
            trained = sample["images"][k].permute(1, 2, 0).numpy()
            if not np.array_equal(seen, trained):
                raise AssertionError(f"step {t}: camera {cam} shows another frame than the training sample")
        chunk = sample["action"].numpy().copy()
        real = ~sample["is_pad"].numpy()
        chunk[~real] = chunk[real][-1]
        return chunk, {"done": float(sample["done"][1])}


@pytest.mark.parametrize("mode", ["ensemble", "chunk", "async"])
def test_training_samples_replayed_through_the_deploy_loop_solve_the_task(recorded, mode):
    oracle = DatasetOracle(recorded.dataset)
    # The success check would end the episode early; here it must end on the done signal.
    results = evaluate_in_sim(oracle, EvalConfig(episodes=1, seed_start=recorded.seed, mode=mode, success_hold_s=1e6))
    outcome = results.outcomes[0]
    expert_steps = len(recorded.dataset) - recorded.end_frames  # actions the expert issued
    assert outcome.success, outcome
    assert outcome.reason == "done", outcome
    if mode == "ensemble":  # queried at every step: stops right after the expert's last action
        assert outcome.steps == expert_steps
        assert oracle.steps == list(range(expert_steps))
    else:  # done is seen at the next query (chunk) or when the reply lands (async)
        assert expert_steps <= outcome.steps <= expert_steps + CHUNK
    assert oracle.steps[0] == 0 and len(oracle.steps) > 1
