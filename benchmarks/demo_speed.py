"""The demo's training time: where a training step goes, and what makes the run shorter.

``make demo`` trains the demo's CPU-sized ACT (``robokit.commands.demo.DemoConfig``). This measures,
in one process and on the same batches of a recorded demo dataset:

1. the profile of one training step of the baseline: data (sampling + collate), the image
   backbone forward, the rest of the forward (CVAE encoder, transformer, heads, losses), the
   backward of the transformer side and of the backbone (split where the gradient reaches the
   backbone's output), and the optimizer step;
2. per-step candidates against the baseline step, alternating baseline / candidate step by step
   so that a machine shared with other jobs slows both alike: channels-last convolutions, one
   thread instead of two, torch's for-loop AdamW (the trainer's is fused), a bf16 autocast forward,
   and (``--compile``) ``torch.compile`` with its compile time;
3. the baseline configuration (the small backbone, 2500 steps: what the demo trained before) against the current one:
   their steps/s side by side (min / median, ratio) and the training time each implies.

Each figure is a ratio of two measurements taken side by side; absolute times depend on the machine
and on what else runs on it (the load average is printed and saved with them).

    .venv/bin/python benchmarks/demo_speed.py --data /tmp/demo_prof     # a recorded demo dataset
    .venv/bin/python benchmarks/demo_speed.py                           # records 50 demos first (~1-2 min)

Writes benchmarks/results/demo_speed.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

# Before torch loads OpenMP: the demo's module picks the OpenMP wait policy for the machine's load.
# isort: off
import robokit.commands.demo.run  # noqa: F401
# isort: on

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from robokit.commands.demo.config import DemoConfig
from robokit.policies.act.model import ACTConfig, ACTPolicy
from robokit.training.batches import LossModule, TrainBatches
from robokit.training.dataset import EpisodeDataset, build_datasets
from robokit.training.episode_records import collate_samples

RESULTS = Path(__file__).resolve().parent / "results"
# What the demo trained before: the small backbone, 2500 steps, no object pointer. The baseline of
# every ratio here.
BASELINE = replace(DemoConfig(), steps=2500, lr=3e-4,
                   policy_config={**DemoConfig().policy_config, "backbone": "small", "lr_backbone": 3e-4,
                                  "object_pointer": False})
CANDIDATES = ("channels_last", "1 thread", "for-loop AdamW", "bf16 autocast")


@dataclass
class Setup:
    """One way of running the training step."""

    name: str
    policy: ACTPolicy
    model: nn.Module  # what the trainer calls: the policy's loss (possibly compiled)
    optimizer: torch.optim.Optimizer
    threads: int
    autocast: torch.dtype | None = None  # a reduced-precision forward (CPU autocast), or fp32

    def step(self, batch: dict[str, Any]) -> None:
        torch.set_num_threads(self.threads)
        with torch.autocast("cpu", dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            loss = self.model(batch)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def make_setup(name: str, cfg: DemoConfig, ds: EpisodeDataset, stats: dict[str, Any], threads: int) -> Setup:
    """The demo's policy and AdamW as the trainer builds them, changed as ``name`` says."""
    torch.manual_seed(cfg.seed)
    h, w, _ = ds.image_shape
    policy_cfg = cast(ACTConfig, ACTConfig.from_dict({**cfg.policy_config, "camera_names": list(cfg.cameras),
                                      "image_shape": (h, w, 3), "state_dim": ds.state_dim,
                                      "action_dim": ds.action_dim, "chunk_size": cfg.chunk_size,
                                      "fps": cfg.fps, "lr": cfg.lr}))
    policy = ACTPolicy(policy_cfg)
    policy.set_norm_stats(stats)
    policy.train()
    model: nn.Module = LossModule(policy)
    if name == "channels_last":
        backbone = policy.model.backbone
        backbone.to(memory_format=torch.channels_last)
        forward = backbone.forward
        backbone.forward = (  # type: ignore[method-assign]
            lambda x, *a, **k: forward(x.contiguous(memory_format=torch.channels_last), *a, **k))
    # The trainer's fused kernel, or (as a candidate) torch's for-loop AdamW it replaced.
    fused = name != "for-loop AdamW"
    optimizer = torch.optim.AdamW(policy.optimizer_param_groups(cfg.lr, 1e-4), lr=cfg.lr, weight_decay=1e-4,
                                  fused=fused)
    if name == "torch.compile":
        model = torch.compile(model)  # type: ignore[assignment]
    return Setup(name, policy, model, optimizer, 1 if name == "1 thread" else threads,
                 torch.bfloat16 if name == "bf16 autocast" else None)


def paired(setups: list[Setup], batches: Callable[[], dict[str, Any]], steps: int,
           ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Step times of every setup on the same batches, in alternating order; and each one's first step."""
    times: dict[str, list[float]] = {s.name: [] for s in setups}
    first: dict[str, float] = {}
    for i in range(steps + 1):
        batch = batches()
        for s in (setups if i % 2 == 0 else setups[::-1]):
            start = time.perf_counter()
            s.step(batch)
            elapsed = time.perf_counter() - start
            if i == 0:
                first[s.name] = elapsed  # warm-up (and, compiled, the compile time): not a step time
            else:
                times[s.name].append(elapsed)
    return times, first


def summary(times: list[float], base: list[float]) -> dict[str, float]:
    return {"min_s": min(times), "median_s": statistics.median(times),
            "steps_per_s_median": 1.0 / statistics.median(times),
            "ratio_median_paired": statistics.median(t / b for t, b in zip(times, base, strict=True)),
            "ratio_min": min(times) / min(base)}


def profile_shares(setup: Setup, batches: Callable[[], dict[str, Any]], steps: int) -> dict[str, float]:
    """Share of a training step's wall time per phase (median over ``steps`` steps)."""
    policy = setup.policy
    marks: dict[str, float] = {}

    def on_backbone_output(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        marks["backbone_forward_end"] = time.perf_counter()
        if output.requires_grad:
            output.register_hook(lambda grad: marks.__setitem__("backbone_grad", time.perf_counter()))

    def on_backbone_input(_module: nn.Module, _inputs: Any) -> None:
        marks["backbone_forward_start"] = time.perf_counter()

    # On the small backbone's first and last layers: a policy with an object pointer runs the
    # backbone stage by stage (to read an inner stage), never through its forward.
    body = cast(nn.Sequential, policy.model.backbone.body)
    hooks = [body[0].register_forward_pre_hook(on_backbone_input),
             body[-1].register_forward_hook(on_backbone_output)]
    rows: list[dict[str, float]] = []
    try:
        for _ in range(steps):
            torch.set_num_threads(setup.threads)
            t0 = time.perf_counter()
            batch = batches()
            t1 = time.perf_counter()
            loss = setup.model(batch)["loss"]
            t2 = time.perf_counter()
            setup.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
            setup.optimizer.step()
            t4 = time.perf_counter()
            backbone_fwd = marks["backbone_forward_end"] - marks["backbone_forward_start"]
            rows.append({"data (sampling, collate)": t1 - t0, "backbone forward": backbone_fwd,
                         "rest of forward (CVAE encoder, transformer, heads, loss)": t2 - t1 - backbone_fwd,
                         "backward to the backbone's output (transformer side)": marks["backbone_grad"] - t2,
                         "backward through the backbone": t3 - marks["backbone_grad"],
                         "optimizer (AdamW)": t4 - t3, "total": t4 - t0})
    finally:
        for hook in hooks:
            hook.remove()
    total = statistics.median(r["total"] for r in rows)
    return {k: statistics.median(r[k] for r in rows) / total for k in rows[0] if k != "total"} | {
        "step_median_s": total}


def record_data(root: Path) -> Path:
    """50 scripted demonstrations at the demo's sizes, as the demo records them."""
    from rich.console import Console

    from robokit.commands.demo.stages import record_demonstrations

    cfg = replace(DemoConfig(), out=root)
    data, _ = record_demonstrations(cfg, Console())
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a recorded demo dataset (default: record one)")
    parser.add_argument("--steps", type=int, default=30, help="measured steps per setup")
    parser.add_argument("--threads", type=int, default=2, help="threads of the baseline (one per core)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compiling)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    print(f"load average before: {load_before:.2f} (ratios hold under load; absolute times do not)")
    with tempfile.TemporaryDirectory(prefix="demo_speed_") as tmp:
        data = args.data or record_data(Path(tmp))
        new = DemoConfig()
        train_ds, _, stats, _ = build_datasets(data, camera_names=list(new.cameras), chunk_size=new.chunk_size,
                                               val_fraction=0.0, seed=new.seed,
                                               task_object=bool(new.policy_config.get("object_pointer")))
        sampler = iter(DataLoader(train_ds, num_workers=0, collate_fn=collate_samples,
                                  batch_sampler=TrainBatches(len(train_ds), new.batch_size, new.seed, 0, 1, 0)))

        def batches() -> dict[str, Any]:
            return next(sampler)

        base = make_setup("baseline", BASELINE, train_ds, stats, args.threads)
        shares_before = profile_shares(base, batches, max(10, args.steps // 2))
        names = [*CANDIDATES, *(["torch.compile"] if args.compile else [])]
        setups = [base, make_setup("current demo config", new, train_ds, stats, args.threads),
                  *(make_setup(n, BASELINE, train_ds, stats, args.threads) for n in names)]
        times, first = paired(setups, batches, args.steps)
        shares_after = profile_shares(setups[1], batches, max(10, args.steps // 2))
    rows = {name: {**summary(t, times["baseline"]), "first_step_s": first[name]} for name, t in times.items()}
    base_run = BASELINE.steps * rows["baseline"]["median_s"]
    new_run = new.steps * rows["current demo config"]["median_s"]
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "load_before": load_before, "load_after": os.getloadavg()[0]},
        "threads": args.threads, "steps_measured": args.steps,
        "profile_baseline": shares_before, "profile_current": shares_after, "per_step": rows,
        "training_run": {"baseline_steps": BASELINE.steps, "current_steps": new.steps,
                         "baseline_s_at_median": base_run, "current_s_at_median": new_run,
                         "ratio": new_run / base_run},
    }
    print("\nprofile of a baseline training step (median shares):")
    for k, v in shares_before.items():
        print(f"  {k:58s} {v:6.1%}" if k != "step_median_s" else f"  {'median step':58s} {v:.3f} s")
    print("\n| setup | min step | median step | steps/s (median) | paired ratio vs baseline | first step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['min_s']:.3f} s | {r['median_s']:.3f} s | {r['steps_per_s_median']:.2f} | "
              f"{r['ratio_median_paired']:.3f} (min {r['ratio_min']:.3f}) | {r['first_step_s']:.1f} s |")
    print(f"\ntraining run: baseline {BASELINE.steps} steps ~{base_run:.0f} s, current {new.steps} steps "
          f"~{new_run:.0f} s at these speeds: ratio {new_run / base_run:.2f}")
    print(f"load average after: {result['machine']['load_after']:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "demo_speed.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {RESULTS / 'demo_speed.json'}")


if __name__ == "__main__":
    main()
