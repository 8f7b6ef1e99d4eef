"""The pure parts of benchmarks/goal_sim_success.py: recording seeds kept off the held-out seeds,
the per-instruction table, unknown words for paraphrases."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from torch import nn

from robokit.deploy.evaluate import EpisodeOutcome, EvalResults
from robokit.hardware.sim import PandaSimEnv
from robokit.policies.nn.task_conditioning import TaskEncoder
from tests.benchmark_scripts import benchmark_script

RED_BOWL = "put the red cube in the blue bowl"
GREEN_PLATE = "put the green cube on the yellow plate"


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("goal_sim_success") as module:
        yield module


def test_predicted_scene_seeds_are_the_ones_the_simulator_draws(bench):
    with PandaSimEnv(task="multi", seed=123, camera_names=(), image_size=(16, 16)) as env:
        drawn = []
        for _ in range(4):
            env.reset(seed=None)  # what the recorder does before each scripted episode
            drawn.append(env.seed)
    assert bench.scene_seeds(123, 4) == drawn


def test_a_recording_seed_whose_scenes_hit_the_held_out_seeds_is_skipped(bench):
    first = bench.scene_seeds(100, 1)[0]
    held_out = range(first, first + 1)
    seed = bench.recording_seed(0, 1, held_out)
    assert seed != 100
    assert bench.overlap(bench.scene_seeds(seed, 50), held_out) == []
    assert bench.recording_seed(0, 1, range(2000, 2120)) == 100
    # a top-up draws from another stream than the first recording
    assert bench.recording_seed(20, 10, range(2000, 2120)) != 100


def test_eval_seeds_parse_as_a_half_open_range(bench):
    assert bench.parse_seeds("2000:2120") == range(2000, 2120)
    for bad in ("2000", "5:5", "a:b", "9:3"):
        with pytest.raises(SystemExit):
            bench.parse_seeds(bad)


def _outcome(i, task, success, failure=None, first=None):
    return EpisodeOutcome(index=i, seed=2000 + i, task=task, success=success, steps=10, reason="x",
                          message="", wall_s=0.0, failure=failure, first_object=first)


def test_table_counts_successes_failures_and_grounding_per_instruction(bench):
    results = EvalResults(outcomes=[
        _outcome(0, RED_BOWL, True, first="red_cube"),
        _outcome(1, GREEN_PLATE, False, "wrong_object", "red_cube"),
        _outcome(2, RED_BOWL, False, "grasp_missed", "red_cube"),
        _outcome(3, GREEN_PLATE, False, "time_out", None),
    ])
    rows = bench.table_rows(results, baseline=[True, True, False, True])
    by_name = {r["instruction"]: r for r in rows}
    assert list(by_name) == [RED_BOWL, GREEN_PLATE, "overall"]
    red, green, overall = by_name[RED_BOWL], by_name[GREEN_PLATE], by_name["overall"]
    assert (red["successes"], red["episodes"], red["failures"]["grasp_missed"]) == (1, 2, 1)
    assert red["grounding_accuracy"] == 1.0
    assert green["failures"]["wrong_object"] == 1 and green["failures"]["time_out"] == 1
    assert green["grounding"] == {"correct": 0, "counted": 1, "without": 1}
    assert (overall["successes"], overall["episodes"], overall["success_rate"]) == (1, 4, 0.25)
    assert (red["baseline_successes"], red["baseline_episodes"]) == (1, 2)
    assert (overall["baseline_successes"], overall["baseline_episodes"]) == (3, 4)

    lines = bench.format_table(rows)
    assert lines[0].startswith("| instruction | success | wrong object lifted | grasp missed | wrong target |")
    assert len(lines) == 2 + 3
    assert "| put the red cube in the blue bowl | 1/2 (50%) | 0 | 1 | 0 | 0 | 0 | 2/2 (100%) | 1/2 (50%) | 1.00 |" \
        in lines
    assert lines[-2] == ("| put the green cube on the yellow plate | 0/2 (0%) | 1 | 0 | 0 | 0 | 1 | 0/1 (0%); 1 to no cube "
                         "| 2/2 (100%) | 0.00 |")
    assert lines[-1] == "| **overall** | 1/4 (25%) | 1 | 1 | 0 | 0 | 1 | 2/3 (67%); 1 to no cube | 3/4 (75%) | 0.33 |"


def test_grasp_offsets_are_summarised_by_outcome(bench):
    from robokit.deploy.rollout_review import GraspAttempt

    def closed(i, success, failure, across, height):
        o = _outcome(i, RED_BOWL, success, failure)
        return EpisodeOutcome(**{**o.__dict__, "grasp": GraspAttempt(across, 0.0, height, -5.0, 0.0, 0.0, height)})

    results = EvalResults(outcomes=[closed(0, True, None, 0.002, 0.01), closed(1, True, None, -0.004, 0.01),
                                    closed(2, False, "grasp_missed", -0.03, 0.02), _outcome(3, RED_BOWL, False, "time_out")])
    summary = bench.grasp_summary(results)
    assert set(summary) == {"success", "grasp_missed"}  # the episode that never closed is not in it
    assert summary["success"]["closed"] == 2
    assert summary["success"]["across"]["median"] == pytest.approx(0.003)  # of the magnitudes
    assert summary["grasp_missed"]["height"]["median"] == pytest.approx(0.02)
    assert summary["grasp_missed"]["yaw_error"]["median"] == pytest.approx(5.0)
    lines = bench.format_grasps(summary)
    assert lines[0].startswith("| outcome | closed | across |") and len(lines) == 4
    assert lines[3].startswith("| grasp missed | 1 | 3.0 (3.0) cm |")


def test_paraphrase_rows_show_the_paraphrase_and_keep_the_task(bench):
    results = EvalResults(outcomes=[_outcome(0, RED_BOWL, True, first="red_cube")])
    rows = bench.table_rows(results, names=bench.PARAPHRASES)
    assert rows[0]["instruction"] == bench.PARAPHRASES[RED_BOWL] and rows[0]["task"] == RED_BOWL
    assert "baseline_episodes" not in rows[0]
    assert bench.format_table(rows, "paraphrase")[0].startswith("| paraphrase |")


def test_every_paraphrase_has_a_word_no_instruction_has(bench):
    from robokit.hardware.sim import list_tasks
    from robokit.policies.nn.task_conditioning import build_vocabulary, instruction_words

    instructions = list_tasks("multi")
    assert sorted(bench.PARAPHRASES) == sorted(instructions)
    known = set(build_vocabulary(instructions))
    for text in bench.PARAPHRASES.values():
        assert set(instruction_words(text)) - known


@dataclass
class _Config:
    unknown_words: str = "error"


class _WordPolicy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = _Config()
        self.task = TaskEncoder(["blue", "bowl", "cube", "in", "put", "red", "the"], dim=8, heads=2)


def test_a_loaded_word_policy_reads_unknown_words_as_the_unknown_token(bench):
    policy = _WordPolicy()
    with pytest.raises(Exception, match="never saw"):
        policy.task.tokenizer.ids("place the red block on the dish")
    message = bench.read_unknown_words_as_unk(policy)
    assert "unknown token" in message and policy.config.unknown_words == "unk"
    assert policy.task.tokenizer.ids("place the red block on the dish")[2] == policy.task.tokenizer.ids("red")[0]
    assert "no word vocabulary" in bench.read_unknown_words_as_unk(nn.Linear(2, 2))
