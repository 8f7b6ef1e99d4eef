"""The trainer: ACT overfits two episodes, resume continues exactly, Ctrl-C saves, bad runs refused."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from robokit.errors import CheckpointError, ConfigError, DataError
from robokit.policies.checkpoint import load_checkpoint
from robokit.training.dataset import EpisodeDataset
from robokit.training.trainer import TrainOptions, TrainProgress, train

# A tiny ACT: small backbone, one layer each, so a step takes milliseconds on a CPU.
TINY_ACT = {"backbone": "small", "hidden_dim": 32, "nheads": 2, "dim_feedforward": 64, "enc_layers": 1,
            "dec_layers": 1, "vae_enc_layers": 1, "latent_dim": 8, "dropout": 0.0}
TINY_GRP = {"n_embd": 32, "n_head": 2, "n_blocks": 1, "task_dim": 16}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, episode_files) -> Path:
    folder = tmp_path_factory.mktemp("train") / "data"
    for i in range(3):
        episode_files.v1(folder, i, length=16 + 2 * i, cams={"top": (32, 32)}, task="pick the cube")
    return folder


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_act_overfits_two_short_episodes(tmp_path: Path, episode_files):
    folder = tmp_path / "two"
    for i in range(2):
        episode_files.v1(folder, i, length=20, cams={"top": (32, 32)})
    seen: list[TrainProgress] = []
    result = train(TrainOptions(data=folder, out=tmp_path / "run", policy="act", steps=200, batch_size=8,
                                chunk_size=5, lr=1e-3, val_fraction=0.0, log_every=10,
                                policy_config=TINY_ACT, seed=0), progress=seen.append)
    first = next(r for r in records(tmp_path / "run") if r["split"] == "train")["l1"]  # steps 1-10
    policy, _ = load_checkpoint(tmp_path / "run" / "last.pt")
    everything = EpisodeDataset(sorted(folder.glob("*.hdf5")), chunk_size=5)
    torch.manual_seed(0)
    with torch.no_grad():
        last = policy.compute_loss(next(iter(DataLoader(everything, batch_size=len(everything)))))["l1"]
    # It overfits: the L1 on its own training data ends far below where training started (a 10x
    # drop on one CPU, 7x on another; 4x leaves room for any floating-point path).
    assert last * 4 <= first, f"L1 went from {first:.4f} to {last:.4f}"
    assert result.step == 200 and not result.interrupted
    assert seen[-1].phase == "done" and seen[-1].step == 200 and seen[-1].loss is not None
    assert any(p.steps_per_s for p in seen) and any(p.eta_s is not None for p in seen)
    # Checkpoints are plain tensors and containers: torch.load(weights_only=True) reads them.
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ckpt["policy_type"] == "act" and ckpt["config"]["hidden_dim"] == 32
    meta = ckpt["train_meta"]
    assert meta["step"] <= 200 and meta["fps"] == 30.0 and meta["camera_names"] == ["top"]
    assert meta["num_episodes"] == 2 and meta["dataset"] == str(folder.resolve())
    for term in ("loss", "l1", "kl"):
        assert (tmp_path / "run" / f"train_val_{term}.png").stat().st_size > 1000


def _opts(data: Path, out: Path, steps: int, **kw) -> TrainOptions:
    base = {"policy": "act", "batch_size": 4, "chunk_size": 4, "lr": 1e-3, "val_every": 3,
            "log_every": 1, "policy_config": {**TINY_ACT, "dropout": 0.1}, "num_workers": 0, "seed": 5}
    base.update(kw)
    return TrainOptions(data=data, out=out, steps=steps, **base)


def test_resume_continues_exactly_where_the_run_stopped(data: Path, tmp_path: Path):
    straight = train(_opts(data, tmp_path / "straight", 6))
    train(_opts(data, tmp_path / "split", 3))
    # The optimizer state travels in train_state.pt, readable with weights_only=True.
    state = torch.load(tmp_path / "split" / "train_state.pt", weights_only=True)
    assert state["step"] == 3 and state["optimizer"]["state"]
    resumed = train(_opts(data, tmp_path / "split", 6, resume=True))
    assert resumed.step == straight.step == 6
    a, _ = load_checkpoint(tmp_path / "straight" / "last.pt")
    b, meta = load_checkpoint(tmp_path / "split" / "last.pt")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert meta["step"] == 6 and meta["tasks"] == ["pick the cube"]  # what deploy --sim checks the task set by
    steps = [r["step"] for r in records(tmp_path / "split") if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # the log carries on, without duplicates
    with pytest.raises(ConfigError, match="already trained 6 steps"):
        train(_opts(data, tmp_path / "split", 6, resume=True))


def test_an_existing_run_is_not_overwritten_and_resume_needs_one(data: Path, tmp_path: Path):
    train(_opts(data, tmp_path / "run", 1))
    with pytest.raises(ConfigError, match="--resume"):
        train(_opts(data, tmp_path / "run", 2))
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(_opts(data, tmp_path / "fresh", 2, resume=True))
    (tmp_path / "run" / "train_state.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="train_state.pt"):
        train(_opts(data, tmp_path / "run", 2, resume=True))


def test_init_from_starts_at_the_checkpoints_weights_with_this_runs_statistics(data: Path, tmp_path: Path,
                                                                              episode_files):
    train(_opts(data, tmp_path / "first", 6))
    first, _ = load_checkpoint(tmp_path / "first" / "last.pt")
    # Other data (its own statistics), the same model: one step at a learning rate of ~0 leaves the
    # weights where they started, so the copy itself is what is checked.
    other = tmp_path / "other"
    for i in range(2):
        episode_files.v1(other, i, length=18, cams={"top": (32, 32)}, task="pick the cube")
    train(_opts(other, tmp_path / "tuned", 1, lr=1e-12, init_from=str(tmp_path / "first" / "last.pt"),
                policy_config={**TINY_ACT, "dropout": 0.1, "lr_backbone": 1e-12}))
    tuned, meta = load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert meta["init_from"] == str(tmp_path / "first" / "last.pt")  # the checkpoint says where it began
    stats = set(first.norm_stats())
    weights = [k for k in first.state_dict() if k not in stats]
    moved = [k for k in weights if not torch.allclose(first.state_dict()[k].float(), tuned.state_dict()[k].float(),
                                                      atol=1e-6)]
    assert weights and not moved, moved
    assert not all(torch.equal(torch.as_tensor(first.norm_stats()[k]), torch.as_tensor(tuned.norm_stats()[k]))
                   for k in stats), "the run's own data sets the statistics"
    # A checkpoint of another shape, or a missing one: one clear error naming the file.
    train(_opts(data, tmp_path / "wide", 1, policy_config={**TINY_ACT, "hidden_dim": 48}))
    with pytest.raises(CheckpointError, match=r"wide/last.pt does not fit.*other shape"):
        train(_opts(data, tmp_path / "bad", 1, init_from=str(tmp_path / "wide" / "last.pt")))
    with pytest.raises(ConfigError, match="no such checkpoint"):
        _opts(data, tmp_path / "bad", 1, init_from=str(tmp_path / "nope.pt"))


def test_bad_options_and_data_are_clear_errors(data: Path, tmp_path: Path):
    with pytest.raises(DataError, match="no episode"):
        train(_opts(tmp_path, tmp_path / "run", 1))
    with pytest.raises(ConfigError, match="unknown ACTConfig option"):
        train(_opts(data, tmp_path / "run", 1, policy_config={"no_such_option": 1}))
    with pytest.raises(ConfigError, match="not both"):
        _opts(data, tmp_path / "run", 1, epochs=2)
    with pytest.raises(ConfigError, match="unknown policy"):
        train(_opts(data, tmp_path / "run", 1, policy="nope"))
    with pytest.raises(ConfigError, match="camera"):
        _opts(data, tmp_path / "run", 1, policy_config={"camera_names": ["top"]})
    with pytest.raises(DataError, match="has no camera 'side'"):
        train(_opts(data, tmp_path / "run", 1, camera_names=["side"]))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            train(_opts(data, tmp_path / "run", 1, device="cuda"))
    with pytest.raises(ConfigError, match="unknown device"):
        train(_opts(data, tmp_path / "run", 1, device="tpu"))


@pytest.mark.parametrize(("policy", "chunk", "overrides"), [
    ("grp", 4, TINY_GRP),  # the vocabulary comes from the episodes' instructions
    ("grp", 4, {**TINY_GRP, "tokenizer": "char", "loss": "mse"}),  # the seed's character tokens and MSE
    ("cnnmlp", None, {"backbone": "small", "mlp_hidden_dim": 32, "mlp_depth": 1}),  # its default chunk: 1
])
def test_epochs_and_other_policies_through_the_same_trainer(data: Path, tmp_path: Path, policy: str,
                                                            chunk: int | None, overrides: dict):
    # The trainer only calls the Policy API: GRP (goal-conditioned) and CNN-MLP train the same way.
    # --amp is bf16 autocast on CUDA only: elsewhere it is ignored with a warning, not an error.
    result = train(TrainOptions(data=data, out=tmp_path / policy, policy=policy, epochs=1, batch_size=8,
                                chunk_size=chunk, policy_config=overrides, val_every=100, amp=True))
    # 3 episodes (16, 18, 20 steps): 2 for training, 1 for validation; one epoch = n_train // 8 batches.
    ckpt, meta = load_checkpoint(tmp_path / policy / "best.pt", expected_type=policy)
    n_train = sum(16 + 2 * int(name[8]) for name in meta["train_episodes"])
    assert result.step == n_train // 8 and result.best_val_loss is not None
    assert ckpt.config.image_shape == (32, 32, 3) and ckpt.config.chunk_size == (chunk or 1)


def test_cosine_schedule_decays_the_rate_and_resume_follows_the_curve(data: Path, tmp_path: Path):
    # lr_backbone differs from lr: each param group keeps its ratio while the schedule scales both.
    cfg = {**TINY_ACT, "lr_backbone": 1e-4}
    straight = _opts(data, tmp_path / "straight", 8, lr_schedule="cosine", policy_config=cfg)
    train(straight)
    lrs = [r["lr"] for r in records(tmp_path / "straight") if r["split"] == "train"]
    assert lrs[0] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(0)))  # logged for step 1 = rate of step 0
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert lrs[-1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    groups = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=True)["optimizer"]["param_groups"]
    assert sorted(g["lr"] for g in groups) == pytest.approx([1e-4 * lrs[-1] / 1e-3, lrs[-1]])  # backbone keeps 1/10
    # The curve is a function of the step and the run's total: a 4-step run extended to 8 by
    # --resume follows the 8-step curve from step 5 on.
    train(_opts(data, tmp_path / "split", 4, lr_schedule="cosine", policy_config=cfg))
    train(_opts(data, tmp_path / "split", 8, lr_schedule="cosine", policy_config=cfg, resume=True))
    resumed = [r["lr"] for r in records(tmp_path / "split") if r["split"] == "train"]
    assert resumed[4:] == pytest.approx(lrs[4:])
    with pytest.raises(ConfigError, match="unknown lr schedule"):
        _opts(data, tmp_path / "x", 1, lr_schedule="step")


def test_validation_costs_a_bounded_share_of_training(tmp_path: Path, episode_files):
    # Many validation samples, a tiny batch and validation at every step: each evaluation looks at
    # no more samples than half the training samples drawn since the last one (one batch at least).
    folder = tmp_path / "many"
    for i in range(6):
        episode_files.v1(folder, i, length=40, cams={"top": (32, 32)})
    train(TrainOptions(data=folder, out=tmp_path / "run", policy="act", steps=10, batch_size=2, chunk_size=4,
                       val_fraction=0.5, val_every=1, log_every=1, policy_config=TINY_ACT, num_workers=0))
    val = [r for r in records(tmp_path / "run") if r["split"] == "val"]
    assert [r["step"] for r in val] == list(range(1, 11))
    assert all(r["samples"] == 2 for r in val)
    # With validation every 4 steps at batch 2 the share allows 4 samples; --val-samples caps it lower.
    train(TrainOptions(data=folder, out=tmp_path / "run2", policy="act", steps=8, batch_size=2, chunk_size=4,
                       val_fraction=0.5, val_every=4, val_samples=3, policy_config=TINY_ACT, num_workers=0))
    assert [r["samples"] for r in records(tmp_path / "run2") if r["split"] == "val"] == [3, 3]


def test_resuming_keeps_the_fused_optimizer_and_the_saved_moments():
    """A state saved by the for-loop AdamW (runs from before the fused kernel) resumes into the fused
    one with its moments, instead of switching the run back to the for-loop kernel."""
    from robokit.training.optimizer import adamw, load_optimizer_state

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    old = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    model(torch.randn(8, 4)).square().mean().backward()
    old.step()
    saved = old.state_dict()

    resumed = adamw(model.parameters(), 1e-2, 1e-4, torch.device("cpu"))
    load_optimizer_state(resumed, saved)
    assert resumed.param_groups[0]["fused"] is True
    weight = model.weight
    torch.testing.assert_close(resumed.state[weight]["exp_avg"], old.state[weight]["exp_avg"])
    model.zero_grad()
    model(torch.randn(8, 4)).square().mean().backward()
    resumed.step()  # the fused kernel runs on the loaded state
    assert float(resumed.state[weight]["step"]) == 2.0
