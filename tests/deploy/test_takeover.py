"""Taking over from the policy during deploy: the scripted expert or a person with keys commands the
arm, the rollout records who did and what the policy would have done, the handback does not jump, and
training learns from the corrections."""

from __future__ import annotations

import numpy as np
import pytest

from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim
from robokit.deploy.loop import ControlLoop, LoopConfig
from robokit.deploy.runner import LocalRunner
from robokit.deploy.safety import SafetyLimits
from robokit.deploy.takeover import TeleopTakeover
from robokit.episodes.format import INTERVENTION, POLICY_ACTION
from robokit.episodes.reader import open_episode
from robokit.hardware.kinematics import fk
from robokit.record.teleop import KeyboardJog


@pytest.fixture(scope="module")
def scripted_rollout(tmp_path_factory, make_tiny_checkpoint):
    """One sim rollout of an untrained policy with the scripted expert taking over."""
    out = tmp_path_factory.mktemp("takeover") / "rollouts"
    results = evaluate_in_sim(str(make_tiny_checkpoint("act")), EvalConfig(
        episodes=1, seed_start=1000, takeover="scripted", record_dir=out, max_seconds=9.0))
    return results, out


def test_the_scripted_expert_takes_over_a_stray_policy_and_the_rollout_records_it(scripted_rollout):
    results, out = scripted_rollout
    outcome = results.outcomes[0]
    assert outcome.intervention_steps > 10
    with open_episode(outcome.episode_file) as ep:
        flags = ep.step_extra(INTERVENTION)
        planned = ep.step_extra(POLICY_ACTION)
        action, qpos = ep.action(), ep.qpos()
        assert int(ep.attrs["intervention_steps"]) == outcome.intervention_steps
        assert ep.attrs["takeover"] == "scripted"
    assert flags.shape == (ep.length,) and set(np.unique(flags)) <= {0.0, 1.0}
    assert int(flags.sum()) == outcome.intervention_steps
    assert np.isfinite(planned).all()  # the policy kept planning while the expert commanded
    human = flags > 0.5
    # where the expert commanded, what was sent is not what the policy planned
    assert np.abs(action[human, :7] - planned[human, :7]).max() > 0.01


def test_handing_back_moves_no_joint_more_than_one_clamp_step(scripted_rollout):
    from robokit.hardware.sim import PandaSimEnv

    results, _ = scripted_rollout
    with open_episode(results.outcomes[0].episode_file) as ep:
        flags, action, qpos, fps = ep.step_extra(INTERVENTION) > 0.5, ep.action(), ep.qpos(), ep.fps
    handbacks = np.flatnonzero(flags[:-1] & ~flags[1:]) + 1
    assert len(handbacks) >= 1
    env = PandaSimEnv(task="pick_place", seed=0, image_size=(32, 40))
    try:
        step = SafetyLimits.from_robot(env.robot).dq_max / fps
    finally:
        env.close()
    for t in handbacks:
        assert np.all(np.abs(action[t, :7] - qpos[t, :7]) <= step + 1e-6), t


class _Keys:
    """Keys pressed at given loop steps (a terminal stands in for the person)."""

    def __init__(self, loop_steps: dict[int, list[str]]) -> None:
        self.at, self.step = loop_steps, 0

    def poll(self) -> list[str]:
        keys = self.at.get(self.step, [])
        self.step += 1
        return keys


def test_a_person_takes_over_with_keys_jogs_and_hands_back(make_tiny_policy):
    from robokit.hardware.sim import PandaSimEnv

    policy = make_tiny_policy("act")
    env = PandaSimEnv(task="pick_place", seed=3, image_size=(48, 64), control_hz=15.0)
    records = []
    keys = _Keys({5: ["t"], **{s: ["u"] for s in range(6, 14)}, 30: ["t"]})
    try:
        env.reset(seed=3)
        takeover = TeleopTakeover(KeyboardJog(fps=15.0))
        with ControlLoop(env.robot, env.cameras, LocalRunner(policy), LoopConfig(fps=15.0, realtime=False,
                                                                                    max_steps=40),
                         step_fn=env.step, keys=keys, takeover=takeover) as loop:
            loop.run_episode(on_step=records.append)
    finally:
        env.close()
    flags = [r.intervention for r in records]
    assert not any(flags[:5]) and all(flags[5:30]) and not any(flags[30:])
    assert all(r.policy_action is not None for r in records)
    z = [fk(r.state.qpos)[0][2] for r in records]
    assert z[29] - z[5] > 0.04  # eight presses of "u": 8 cm up, followed at the jog's speed
