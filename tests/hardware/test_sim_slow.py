"""Long sweeps of the scripted experts (``make test-slow``): the figures the docs quote."""

import pytest

from robokit.hardware.sim import PandaSimEnv, list_tasks, run_expert_episode


@pytest.mark.slow
def test_pick_place_expert_succeeds_on_95_percent_of_50_seeds():
    with PandaSimEnv(task="pick_place", camera_names=()) as env:
        ok = sum(run_expert_episode(env, seed=s).success for s in range(50))
    assert ok >= 48


@pytest.mark.slow
def test_multi_expert_succeeds_on_95_percent_of_each_instruction():
    tasks = list_tasks("multi")
    with PandaSimEnv(task="multi", camera_names=()) as env:
        for task in tasks:
            ok = sum(run_expert_episode(env, seed=s, task=task).success for s in range(20))
            assert ok >= 19, task
