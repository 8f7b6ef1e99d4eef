"""Training speed of the goal-conditioned configurations, and the wall time their full runs need.

For each policy (``act``, ``grp``, ``vima`` by default) this runs ``robokit train`` with the
benchmark's own configuration (``benchmarks/configs/goal_<policy>.toml``) for a short run on a
multi-task dataset, reads the trainer's measured steps/s of the steps after warm-up from
``metrics.jsonl`` (data loading and start-up excluded), and prints the projected wall time of the
configuration's full number of steps. The baseline is multi-task ACT in the same run; every row
prints its speed relative to it.

Run it on a quiet machine (nothing else running): the figure is the machine's, not the code's::

    MUJOCO_GL=egl .venv/bin/python benchmarks/goal_train_speed.py --data data/goal_multi [--steps 200]

``--threads`` sets ``OMP_NUM_THREADS`` of the trainings (default 2: one per core of a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

CONFIGS = Path(__file__).resolve().parent / "configs"
POLICIES = ("act", "grp", "vima")


def steps_per_second(metrics: Path, skip: int) -> float:
    """Mean of the trainer's steps/s over the logged intervals after the first ``skip`` steps."""
    rates = [r["steps_per_s"] for r in map(json.loads, metrics.read_text().splitlines())
             if r.get("split") == "train" and r.get("step", 0) > skip and "steps_per_s" in r]
    if not rates:
        raise SystemExit(f"{metrics} has no training speed after step {skip}; run more --steps")
    return sum(rates) / len(rates)


def measure(policy: str, data: Path, steps: int, threads: int, root: Path) -> float:
    """steps/s of ``policy``'s benchmark configuration over a ``steps``-step run."""
    out = root / policy
    cmd = [sys.executable, "-m", "robokit.cli", "train", str(data), "--config", str(CONFIGS / f"goal_{policy}.toml"),
           "--out", str(out), "--steps", str(steps), "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    log = root / f"{policy}.log"
    with log.open("w") as sink:
        done = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"training {policy} failed; see {log}:\n{log.read_text()[-2000:]}")
    return steps_per_second(out / "metrics.jsonl", skip=min(50, steps // 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/goal_multi"),
                        help="a multi-task dataset (64x80, top + wrist); goal_sim_success.py records one there")
    parser.add_argument("--policy", action="append", choices=POLICIES, default=None)
    parser.add_argument("--steps", type=int, default=200, help="steps of each measuring run")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"goal_train_speed: no dataset at {args.data}; record one first, e.g. "
              "`benchmarks/goal_sim_success.py --policy act` (it records data/goal_multi), then rerun")
        return
    policies = args.policy or list(POLICIES)
    if "act" not in policies:
        policies.insert(0, "act")  # the baseline
    print(f"load average before: {os.getloadavg()[0]:.2f} (quote figures only from a quiet machine)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="goal_train_speed_") as tmp:
        for policy in policies:
            rate = measure(policy, args.data, args.steps, args.threads, Path(tmp))
            full = tomllib.loads((CONFIGS / f"goal_{policy}.toml").read_text()).get("steps", 0)
            rows.append((policy, rate, full))
            print(f"  {policy}: {rate:.2f} steps/s", flush=True)
    base = rows[0][1]
    print("\n| policy | steps/s | vs multi-task ACT | config steps | projected training wall |")
    print("| --- | --- | --- | --- | --- |")
    for policy, rate, full in rows:
        print(f"| {policy} | {rate:.2f} | {rate / base:.2f}x | {full} | {full / rate / 60:.1f} min |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
