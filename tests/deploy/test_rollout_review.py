"""Evaluation episodes explain their failures: the scripted expert, replayed through the deploy loop
with one thing changed (another cube, another target, no release, a drop, no motion at all), is
classified as the matching failure, and the object it went to first is the one it grasped."""

from types import SimpleNamespace

import numpy as np
import pytest

from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim
from robokit.deploy.rollout_review import FAILURES
from robokit.hardware.base import PANDA_READY_POSE
from robokit.hardware.sim import PandaSimEnv, list_tasks

FPS = 15.0
CHUNK = 10
SEED_START = 3000


def _other(names, name):
    return next(n for n in names if n != name)


class ScriptedVariants:
    """A policy whose chunks replay, per episode, a variant of the scripted expert on the same scene.

    Episodes come in :func:`evaluate_in_sim`'s order (seed ``SEED_START + i``, the multi instructions
    in turn); the plan is computed open loop in a scene of its own, which the lock-step simulation
    reproduces exactly. Variants: ``expert``, ``other_cube`` (the expert of another cube, to the named
    target), ``other_target``, ``no_release`` (stops before opening the hand), ``drop`` (opens the
    hand after the lift), ``still`` (holds the ready pose).
    """

    name = "scripted-variants"

    def __init__(self, variants):
        self.config = SimpleNamespace(camera_names=["top"], image_shape=(24, 32, 3), state_dim=8, action_dim=8,
                                      chunk_size=CHUNK, fps=FPS)
        self.variants = list(variants)
        self.chosen = []  # (instruction's cube, cube the variant goes for) per episode
        self._tasks = list_tasks("multi")
        self._env = PandaSimEnv(task="multi", seed=SEED_START, image_size=(24, 32), camera_names=(),
                                control_hz=FPS)
        self._episode = -1
        self._plan = np.zeros((1, 8), np.float32)
        self._calls = 0

    def reset(self):
        self._episode += 1
        env = self._env
        env.reset(seed=SEED_START + self._episode, task=self._tasks[self._episode % len(self._tasks)])
        variant = self.variants[self._episode]
        obj, target = env.task.object_name, env.task.target_name
        if variant == "other_cube":
            obj = _other(env.task.object_names, obj)
        elif variant == "other_target":
            target = _other(env.task.target_names, target)
        self.chosen.append((env.task.object_name, obj))
        ready = np.concatenate([PANDA_READY_POSE, [0.0]]).astype(np.float32)
        actions = [ready]
        if variant != "still":
            from robokit.hardware.sim.expert import ScriptedExpert

            expert = ScriptedExpert(env, obj, target)
            while (action := expert.next_action(env.robot.read())) is not None:
                if (variant == "no_release" and expert.phase == "release") or (
                        variant == "drop" and expert.phase == "carry"):
                    break
                actions.append(action)
                env.robot.send_action(action)
                env.step()
            if variant == "drop":
                actions.append(np.concatenate([actions[-1][:7], [0.0]]).astype(np.float32))
        self._plan = np.asarray(actions[1:] if len(actions) > 1 else actions, np.float32)
        self._calls = 0

    def predict_chunk(self, obs):
        rows = np.arange(self._calls * CHUNK, (self._calls + 1) * CHUNK).clip(max=len(self._plan) - 1)
        self._calls += 1
        return self._plan[rows], {}

    def close(self):
        self._env.close()


VARIANTS = ("expert", "other_cube", "still", "other_target", "no_release", "drop")


@pytest.fixture(scope="module")
def reviewed():
    policy = ScriptedVariants(VARIANTS)
    try:
        results = evaluate_in_sim(policy, EvalConfig(episodes=len(VARIANTS), seed_start=SEED_START,
                                                     task_set="multi", mode="chunk", query_every=CHUNK,
                                                     done_threshold=2.0, max_seconds=5.5))
    finally:
        policy.close()
    return results, dict(zip(VARIANTS, zip(results.outcomes, policy.chosen)))


def test_the_scripted_expert_succeeds_and_goes_to_the_named_cube_first(reviewed):
    _, episodes = reviewed
    outcome, (named, _) = episodes["expert"]
    assert outcome.success, outcome
    assert outcome.failure is None and outcome.first_object == named


def test_the_expert_of_another_cube_lifts_the_wrong_object(reviewed):
    _, episodes = reviewed
    outcome, (named, other) = episodes["other_cube"]
    assert other != named
    assert not outcome.success and outcome.failure == "wrong_object"
    assert outcome.first_object == other


def test_an_arm_that_never_moves_misses_the_grasp_and_goes_nowhere(reviewed):
    _, episodes = reviewed
    outcome, _ = episodes["still"]
    assert not outcome.success and outcome.failure == "grasp_missed"
    assert outcome.first_object is None


def test_the_grasp_is_measured_against_the_named_cube_when_the_hand_closes(reviewed):
    _, episodes = reviewed
    expert = episodes["expert"][0].grasp
    assert expert is not None  # the expert closes centred on its cube, at its height, square to it
    assert expert.horizontal < 0.01 and abs(expert.height) < 0.02 and abs(expert.yaw_error) < 10.0
    assert expert.across_after is not None and abs(expert.across_after) < 0.01
    other = episodes["other_cube"][0].grasp  # closed on another cube: far from the named one
    assert other is not None and other.horizontal > 0.06
    assert episodes["still"][0].grasp is None  # never closed


@pytest.mark.parametrize("variant, failure", [("other_target", "wrong_target"), ("no_release", "not_released"),
                                              ("drop", "time_out")])
def test_each_other_way_of_failing_gets_its_category(reviewed, variant, failure):
    _, episodes = reviewed
    outcome, (named, _) = episodes[variant]
    assert not outcome.success and outcome.failure == failure
    assert outcome.first_object == named


def test_the_results_count_failures_per_instruction_and_the_grounding(reviewed):
    results, _ = reviewed
    overall = results.failure_counts()
    assert list(overall) == list(FAILURES)
    assert overall == {"wrong_object": 1, "grasp_missed": 1, "wrong_target": 1, "not_released": 1, "time_out": 1}
    table = results.failures_per_task()
    assert list(table) == list(results.per_task())
    assert sum(sum(counts.values()) for counts in table.values()) == 5
    grounding = results.grounding()  # four went to the named cube first, one to another, one to none
    assert (grounding.correct, grounding.counted, grounding.without) == (4, 5, 1)
    assert grounding.accuracy == pytest.approx(0.8)
    summary = results.to_dict()
    assert summary["grounding_accuracy"] == pytest.approx(0.8)
    assert summary["failures"] == table
    assert summary["success_rate"] == pytest.approx(1 / 6) and "per_task" in summary


@pytest.mark.parametrize("task_set", ["pick_place", "multi"])
def test_deploy_sim_prints_the_failures_and_the_grounding(make_tiny_checkpoint, tmp_path, capsys, task_set):
    from robokit.cli import main
    from robokit.hardware.sim import list_tasks

    ckpt = make_tiny_checkpoint("act", {"fps": 30.0, "tasks": list_tasks(task_set) if task_set == "multi"
                                        else ["put the red cube in the green zone"]}, fps=30.0)
    episodes = 2 if task_set == "pick_place" else 6
    main(["deploy", "--sim", str(ckpt), "--task-set", task_set, "--episodes", str(episodes), "--max-steps", "4",
          "--mode", "chunk", "--device", "cpu", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    if task_set == "pick_place":  # one instruction: one line
        assert "failures: grasp missed 2; went to the named object first: - (2 went to no object)" in out
    else:  # a line per instruction, and one for all
        for task in list_tasks(task_set):
            assert any(line.strip().startswith(task) and "grounded  0/0" in line and line.endswith("grasp missed 1")
                       for line in out.splitlines()), out
        assert any(line.strip().startswith("overall") and "grasp missed 6" in line for line in out.splitlines())
    import json

    saved = json.loads((tmp_path / "r.json").read_text())
    assert sum(counts["grasp_missed"] for counts in saved["failures"].values()) == episodes
    assert "grounding_accuracy" in saved


def test_an_evaluation_can_be_restricted_to_some_instructions_of_a_task_set():
    from robokit.errors import UserError

    only = list_tasks("multi")[4]
    still = ScriptedVariants(["still"] * 2)
    config = EvalConfig(task_set="multi", tasks=(only,), episodes=2, seed_start=SEED_START, max_steps=2,
                        mode="chunk", done_threshold=2.0)
    results = evaluate_in_sim(still, config)
    assert [o.task for o in results.outcomes] == [only, only]
    with pytest.raises(UserError, match="'put the cube away' is not a task of the sim task set 'multi'"):
        evaluate_in_sim(still, EvalConfig(task_set="multi", tasks=("put the cube away",), episodes=1))
