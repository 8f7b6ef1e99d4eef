"""ACT trained on the demo's 100 scripted pick_place demonstrations, evaluated on 50 held-out seeds.

The whole loop of ``make demo`` (robokit.commands.demo.run_demo: record with the scripted expert -> train
ACT -> deploy in the MuJoCo simulation through the control loop) at one of these sizes:

* ``demo`` (default): exactly what ``make demo`` trains, evaluated on 50 held-out seeds instead
  of 20 (about 6 minutes on the 2-core CPU machine);
* ``full``: full-size ACT as in the original paper (ResNet-18, hidden 512, 4+7 layers, chunk 100,
  batch 8, lr 1e-5, 240x320 images at 30 Hz): the reference, for a GPU
  (``--config full --device cuda``).

The baseline, measured in the same run, is the scripted expert on the same held-out seeds; the
ratio policy / expert is printed with the success rate, the configuration and the training time.

    .venv/bin/python benchmarks/act_sim_success.py               # demo config, 50 seeds
    .venv/bin/python benchmarks/act_sim_success.py --config full --device cuda
    .venv/bin/python benchmarks/act_sim_success.py --quick       # smoke run, a minute

Writes benchmarks/results/act_sim_success.json (``--quick``: act_sim_success_quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from rich.console import Console

from robokit.commands.demo import DemoConfig, run_demo

RESULTS = Path(__file__).resolve().parent / "results"

_DEMO = DemoConfig()
CONFIGS: dict[str, DemoConfig] = {
    # What `make demo` trains (its CPU-sized ACT, 2500 steps, cosine learning rate), evaluated on 50
    # held-out seeds instead of 20: the largest configuration measured on the 2-core CPU machine.
    "demo": replace(_DEMO, eval_episodes=50),
    # Full-size ACT as in the original paper: the reference, for a GPU (not run on the CPU machine).
    "full": replace(_DEMO, image_size=(240, 320), fps=30.0, chunk_size=100, batch_size=8, lr=1e-5,
                    lr_schedule="constant", steps=20000, eval_episodes=50, val_samples=512,
                    policy_config={"backbone": "resnet18", "hidden_dim": 512, "nheads": 8,
                                   "dim_feedforward": 3200, "enc_layers": 4, "dec_layers": 7,
                                   "vae_enc_layers": 4, "latent_dim": 32, "dropout": 0.1,
                                   "kl_weight": 10.0, "lr_backbone": 1e-5}),
}
QUICK = replace(_DEMO, episodes=2, image_size=(32, 40), steps=10, batch_size=8, eval_episodes=2,
                expert_seeds=1, videos=0)


def expert_on_seeds(seed_start: int, n: int, fps: float) -> tuple[int, int]:
    """The baseline: the scripted expert's (successes, episodes) on the evaluation seeds."""
    from robokit.hardware.sim import PandaSimEnv, run_expert_episode

    with PandaSimEnv(task="pick_place", seed=seed_start, camera_names=(), control_hz=fps) as env:
        ok = sum(run_expert_episode(env, seed=seed_start + i).success for i in range(n))
    return ok, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="demo")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (not a figure)")
    parser.add_argument("--steps", type=int, default=None, help="override the training steps")
    parser.add_argument("--eval-episodes", type=int, default=None, help="override the 50 held-out seeds")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep data, checkpoint and rollouts here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else CONFIGS[args.config]
    cfg = replace(cfg, device=args.device)
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    if args.eval_episodes:
        cfg = replace(cfg, eval_episodes=args.eval_episodes)
    console = Console()

    with tempfile.TemporaryDirectory(prefix="act_sim_success_") as tmp:
        cfg = replace(cfg, out=args.work or Path(tmp) / "run")
        result = run_demo(cfg, console)
        t0 = time.perf_counter()
        expert_ok, expert_n = expert_on_seeds(cfg.eval_seed_start, cfg.eval_episodes, cfg.fps)
        expert_s = time.perf_counter() - t0

    rate = result.success_rate or 0.0
    expert_rate = expert_ok / expert_n
    stages = {s.name: {"wall_s": round(s.wall_s, 1), "cpu_s": round(s.cpu_s, 1)} for s in result.stages}
    report = {
        "benchmark": "act_sim_success",
        "config_name": "quick" if args.quick else args.config,
        "quick": args.quick,
        "task": "pick_place",
        "success_rate": rate,
        "successes": result.successes,
        "eval_episodes": result.eval_episodes,
        "eval_seeds": [cfg.eval_seed_start, cfg.eval_seed_start + cfg.eval_episodes - 1],
        "failed_seeds": result.failed_seeds,
        "baseline": "scripted expert on the same held-out seeds",
        "expert_success_rate": expert_rate,
        "ratio_policy_to_expert": rate / expert_rate if expert_rate else None,
        "expert_seconds": round(expert_s, 1),
        "train_steps": result.train_steps,
        "train_seconds": round(result.train_seconds, 1),
        "train_cpu_seconds": stages.get("train", {}).get("cpu_s"),
        "final_train_loss": result.final_train_loss,
        "best_val_loss": result.best_val_loss,
        "stages": stages,
        "total_wall_s": round(result.total_wall_s, 1),
        "total_cpu_s": round(result.total_cpu_s, 1),
        "config": cfg.to_dict(),
        "device": result.train_device,
        "torch_threads": torch.get_num_threads(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_1m": round(os.getloadavg()[0], 1)},
    }
    out = args.out or RESULTS / ("act_sim_success_quick.json" if args.quick else "act_sim_success.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"ACT ({report['config_name']}): success {result.successes}/{result.eval_episodes} = "
                  f"{100 * rate:.0f}% on held-out seeds; scripted expert {expert_ok}/{expert_n} = "
                  f"{100 * expert_rate:.0f}%; ratio {report['ratio_policy_to_expert']:.2f}", highlight=False)
    console.print(f"trained {result.train_steps} steps in {result.train_seconds:.0f} s "
                  f"({report['train_cpu_seconds']} s CPU) on {result.train_device}; results in {out}", highlight=False)


if __name__ == "__main__":
    main()
