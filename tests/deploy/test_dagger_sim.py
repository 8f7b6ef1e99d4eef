"""The pure parts of benchmarks/dagger_sim.py: the rollouts' scenes, spread over the workspace or where the policy failed."""

from __future__ import annotations

import numpy as np
import pytest

from robokit.hardware.sim import PandaSimEnv
from tests.benchmark_scripts import benchmark_script


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("dagger_sim") as module:
        yield module


def cube_places(seeds):
    with PandaSimEnv(task="pick_place", seed=0, image_size=(16, 16), camera_names=()) as env:
        places = []
        for seed in seeds:
            env.reset(seed=seed)
            places.append(env.object_pose(env.task.object_name)[0][:2])
    return np.array(places)


def test_halton_coordinates_fill_the_unit_interval_evenly(bench):
    assert [bench.halton(i, 2) for i in range(1, 5)] == [0.5, 0.25, 0.75, 0.125]
    assert bench.halton(1, 3) == pytest.approx(1 / 3) and bench.halton(4, 3) == pytest.approx(4 / 9)


def test_spread_rollout_scenes_cover_every_quarter_of_the_cubes_range(bench):
    rounds = [bench.spread_rollout_seeds(k, 10) for k in (1, 2)]
    seeds = rounds[0] + rounds[1]
    assert len(set(seeds)) == 20  # no scene twice, in a round or across rounds
    assert not set(seeds) & set(range(1000, 1150))  # never a held-out or tuning seed
    assert rounds[0] == bench.spread_rollout_seeds(1, 10)  # the same scenes every run

    places = cube_places(seeds)
    low, high = places.min(axis=0), places.max(axis=0)
    thirds = np.minimum((3 * (places - low) / (high - low)).astype(int), 2)
    for axis in (0, 1):  # x (away from the robot) and y
        counts = np.bincount(thirds[:, axis], minlength=3)
        # 6-7 each when even; consecutive seeds 5100-5109 + 5200-5209 put 6, 3 and 11 along x
        assert counts.min() >= 5, (axis, counts)


def test_options_default_to_fine_tuning_and_quick_runs_keep_a_given_json_path(bench, tmp_path):
    args = bench.parse_args([])
    assert args.finetune and args.mode == "chunk" and args.rollout_scenes == "random"
    assert args.json.name == "dagger_sim.json"
    assert not bench.parse_args(["--no-finetune"]).finetune
    quick = bench.parse_args(["--quick", "--json", str(tmp_path / "q.json")])
    assert quick.json == tmp_path / "q.json" and quick.steps == 30
    assert bench.parse_args(["--quick"]).json.name == "dagger_sim_quick.json"


def test_failed_scenes_come_first_then_the_rest_in_pool_order(bench):
    assert bench.failed_first([7, 8, 9, 10], failed=[9, 7], count=3) == [7, 9, 8]
    assert bench.failed_first([7, 8, 9], failed=[], count=2) == [7, 8]


def test_failed_rollout_scenes_are_the_tried_policys_failures_on_seeds_of_the_rounds_own(bench, make_tiny_checkpoint):
    from robokit.commands.demo.config import DemoConfig

    untrained = make_tiny_checkpoint("act")  # fails every scene
    seeds, tried = bench.failed_rollout_seeds(untrained, DemoConfig(), round_k=2, count=2, tries=3)
    assert tried["tries"] == 3 and tried["tries_failed"] == 3
    assert seeds == [bench.ROLLOUT_SEEDS + 2000, bench.ROLLOUT_SEEDS + 2001]
    assert bench.parse_args(["--rollout-scenes", "failed"]).tries == 30


def test_fewer_tries_than_rollouts_is_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--rollout-scenes", "failed", "--tries", "5"])
    assert "--tries (5) must be at least --rollouts (10)" in capsys.readouterr().err


def test_reusing_a_work_folder_starts_its_rounds_afresh(bench, tmp_path):
    """An earlier run's rollouts would be added to (and its retrained policies refused): they go, the
    demonstrations and the first policy stay."""
    for name in ("demos", "run0", "run1", "run2", "rollouts1", "rollouts2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "episode_0.hdf5").write_bytes(b"x")
    (tmp_path / "first.json").write_text("{}")
    bench.clear_rounds(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos", "first.json", "run0"]
    assert (tmp_path / "run0" / "episode_0.hdf5").exists()


def test_the_reference_counts_as_many_demonstrations_as_rollouts_unless_told(bench):
    assert bench.parse_args([]).reference == 0  # off
    assert bench.parse_args(["--reference"]).reference == 20  # 2 rounds x 10 rollouts
    assert bench.parse_args(["--reference", "--rounds", "3", "--rollouts", "5"]).reference == 15
    assert bench.parse_args(["--rounds", "0", "--reference", "7"]).reference == 7


def test_more_scripted_demonstrations_begin_with_the_same_scenes(bench, tmp_path):
    """The reference's first demonstrations are the first policy's: the recorder draws the same scenes."""
    from robokit.commands.demo.config import DemoConfig

    cfg = DemoConfig()
    bench.record_demos(tmp_path / "few", cfg, 2)
    bench.record_demos(tmp_path / "more", cfg, 3)
    few, more = bench.scene_seeds(tmp_path / "few"), bench.scene_seeds(tmp_path / "more")
    assert len(few) == 2 and len(more) == 3 and len(set(more)) == 3
    assert more[:2] == few
