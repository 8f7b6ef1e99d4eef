"""Training logs and evaluation during training: TensorBoard and wandb next to metrics.jsonl, the
simulated success rate every K steps with its curve and best checkpoint, and the errors a user sees
for data that is not simulated, a missing package or a wrong option."""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import pytest
import torch

from robokit.errors import ConfigError
from robokit.training.observers import Observers
from robokit.training.trainer import TrainOptions, train
from tests.record.test_record import cli
from tests.training.test_train import TINY_ACT


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two scripted pick-and-place episodes recorded in the simulation, 32x40, 10 Hz."""
    from robokit.cli import main

    out = tmp_path_factory.mktemp("logs") / "data"
    main(["record", "--sim", "--teleop", "scripted", "--episodes", "2", "--image-size", "32x40", "--fps", "10",
          "--out", str(out)])
    return out


@pytest.fixture
def short_episodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation episodes of 1 s instead of 10 s: an untrained policy never ends one early."""
    from robokit.deploy import evaluate

    monkeypatch.setattr(evaluate, "EvalConfig", functools.partial(evaluate.EvalConfig, max_seconds=1.0))


def _opts(data: Path, out: Path, steps: int = 6, **kw) -> TrainOptions:
    base = {"policy": "act", "batch_size": 4, "chunk_size": 4, "lr": 1e-3, "val_every": 3, "log_every": 1,
            "policy_config": TINY_ACT, "num_workers": 0, "seed": 3}
    base.update(kw)
    return TrainOptions(data=data, out=out, steps=steps, **base)


def _scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_sim_evaluation_logs_plots_and_keeps_the_best_by_success(sim_data, tmp_path, short_episodes):
    from robokit.deploy.train_eval import SimEvaluation
    from robokit.policies.checkpoint import load_checkpoint

    opts = _opts(sim_data, tmp_path / "run", log=["tensorboard"], eval_sim=2, eval_every=3)
    evaluation = SimEvaluation(opts)
    assert evaluation.data.task_set == "pick_place" and evaluation.data.tasks == ()
    result = train(opts, observers=[evaluation])
    out = result.out_dir

    sims = [json.loads(line) for line in (out / "sim_eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in sims] == [3, 6]
    assert all(r["episodes"] == 2 and r["seed_start"] == 1000 and 0 <= r["success_rate"] <= 1 for r in sims)
    assert (out / "train_success.png").stat().st_size > 1000
    _, meta = load_checkpoint(out / "best_success.pt")
    assert meta["step"] == evaluation.best_step and evaluation.best == max(r["success_rate"] for r in sims)
    if evaluation.best_step == 6:  # a tie goes to the later step: then the weights are last.pt's
        best, last = torch.load(out / "best_success.pt"), torch.load(result.last_path)
        assert all(torch.equal(best["state_dict"][k], v) for k, v in last["state_dict"].items())

    scalars = _scalars(out / "tensorboard")
    assert {"train/loss", "train/l1", "train/kl", "train/lr", "train/steps_per_s", "val/loss",
            "sim/success_rate"} <= set(scalars)
    assert sorted(scalars["train/loss"]) == [1, 2, 3, 4, 5, 6] and sorted(scalars["sim/success_rate"]) == [3, 6]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_loss = {r["step"]: r["loss"] for r in records if r["split"] == "train"}
    val_loss = {r["step"]: r["loss"] for r in records if r["split"] == "val"}
    assert all(scalars["train/loss"][s] == pytest.approx(v, rel=1e-5) for s, v in train_loss.items())
    assert all(scalars["val/loss"][s] == pytest.approx(v, rel=1e-5) for s, v in val_loss.items())

    # The evaluation leaves the training as it was: the same weights as a run without it.
    plain = train(_opts(sim_data, tmp_path / "plain"))
    with_eval, without = torch.load(result.last_path), torch.load(plain.last_path)
    assert all(torch.equal(with_eval["state_dict"][k], v) for k, v in without["state_dict"].items())


def test_wandb_logs_offline_into_the_run_folder(sim_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    # Pointed nowhere: an offline run must not need the network.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_SILENT", "true")
    t0 = time.perf_counter()
    try:
        import wandb  # noqa: F401
    except ImportError:
        pytest.skip("wandb is not installed (pip install 'robokit[logs]')")
    if time.perf_counter() - t0 > 20:
        pytest.skip("importing wandb took over 20 s on this machine")
    result = train(_opts(sim_data, tmp_path / "run", steps=1, log="wandb", val_every=1))
    runs = list((result.out_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    run_id = (result.out_dir / "wandb" / "run_id").read_text().strip()
    assert runs[0].name.endswith(run_id)


def test_eval_sim_refuses_data_not_recorded_in_the_simulation(episode_files, tmp_path, capsys):
    data = tmp_path / "real"
    for i in range(2):
        episode_files.v1(data, i, sim=False, task="put the red cube in the green zone")
    code, _, err = cli(capsys, "train", data, "--out", tmp_path / "run", "--eval-sim", "2", "--steps", "2")
    assert code == 2 and "--eval-sim needs data recorded in the simulation" in err
    assert "2 of 2 episodes" in err and not (tmp_path / "run").exists()


def test_eval_sim_picks_the_task_set_and_instructions_of_the_data(episode_files, tmp_path):
    from robokit.deploy.train_eval import sim_data
    from robokit.hardware.sim.tasks import TASK_SETS

    multi = TASK_SETS["multi"].instructions
    names = list(multi)[:2]
    for i, name in enumerate(names):
        episode_files.v1(tmp_path / "multi", i, task=multi[name])
    found = sim_data(tmp_path / "multi")
    assert found.task_set == "multi" and found.tasks == tuple(names)
    episode_files.v1(tmp_path / "other", 0, task="stack the towels")
    with pytest.raises(ConfigError, match="not those of a simulated task set"):
        sim_data(tmp_path / "other")


@pytest.mark.parametrize(("target", "modules"), [
    ("tensorboard", ("tensorboard", "torch.utils.tensorboard")),
    ("wandb", ("wandb",)),
])
def test_a_missing_logger_package_names_the_extra(target, modules, tmp_path, monkeypatch):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"--log .* pip install 'robokit\[logs\]'"):
        Observers(TrainOptions(data=tmp_path, out=tmp_path / "run", log=[target]))


def test_log_and_eval_options_are_checked(tmp_path):
    opts = TrainOptions(data=tmp_path, out=tmp_path, log=["tensorboard", "wandb,tensorboard"])
    assert opts.log == ["tensorboard", "wandb"]
    assert TrainOptions(data=tmp_path, out=tmp_path, log="wandb, tensorboard").log == ["wandb", "tensorboard"]
    with pytest.raises(ConfigError, match="unknown --log 'mlflow'"):
        TrainOptions(data=tmp_path, out=tmp_path, log=["mlflow"])
    with pytest.raises(ConfigError, match="--eval-every needs --eval-sim"):
        TrainOptions(data=tmp_path, out=tmp_path, eval_every=10)
    with pytest.raises(ConfigError, match="eval-sim and eval-seed must be >= 0"):
        TrainOptions(data=tmp_path, out=tmp_path, eval_sim=-1)
    # The library trainer has no simulation of its own: it says what to pass.
    with pytest.raises(ConfigError, match="SimEvaluation"):
        train(TrainOptions(data=tmp_path, out=tmp_path / "run", eval_sim=2))
