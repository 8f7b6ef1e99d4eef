"""OpenMP's wait policy and the demo's training step: spinning against sleeping threads, quiet and loaded.

Each setting runs in its own process (OpenMP reads it once, when torch loads): the demo's ACT
(``DemoConfig``), one synthetic batch of the demo's shapes, ``--steps`` timed training steps after
two warm-up ones, 2 threads. The settings: libgomp's default (threads spin a while before they
sleep), ``GOMP_SPINCOUNT=10000`` (a short spin) and ``OMP_WAIT_POLICY=PASSIVE`` (they sleep at
once). Measured first on the machine as it is, then again with ``--busy`` busy loops beside it
(another job on the cores). Prints min / median per setting and the ratio to PASSIVE.

    .venv/bin/python benchmarks/omp_wait.py

Writes benchmarks/results/omp_wait.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {"default (spin)": {}, "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
            "PASSIVE (sleep)": {"OMP_WAIT_POLICY": "PASSIVE"}}
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def step_times(steps: int, threads: int) -> list[float]:
    """In this process: ``steps`` training steps of the demo's ACT on one batch (seconds each), on the
    CPU with ``threads`` threads, as the demo's start-of-run estimate times them."""
    import torch

    from robokit.commands.demo.config import DemoConfig
    from robokit.commands.demo.estimate import training_step_times

    torch.set_num_threads(threads)
    return training_step_times(DemoConfig(device="cpu"), steps, warmup=2)


def measure(steps: int, threads: int, rounds: int) -> dict[str, dict[str, float]]:
    """Every setting in its own process, ``rounds`` times in alternating order."""
    samples: dict[str, list[float]] = {name: [] for name in SETTINGS}
    clean = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    for r in range(rounds):
        for name in (list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]):
            out = subprocess.run([sys.executable, __file__, "--child", str(steps), "--threads", str(threads)],
                                 env={**clean, **SETTINGS[name]}, capture_output=True, text=True, check=True)
            samples[name] += json.loads(out.stdout)
    passive = statistics.median(samples["PASSIVE (sleep)"])
    return {name: {"min_s": min(t), "median_s": statistics.median(t), "ratio_to_passive": statistics.median(t) / passive}
            for name, t in samples.items()}


def report(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}\n| setting | min step | median step | median / PASSIVE |\n| --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['min_s']:.3f} s | {r['median_s']:.3f} s | {r['ratio_to_passive']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--busy", type=int, default=2, help="busy loops for the loaded measurement (0: skip it)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(step_times(args.child, args.threads)))
        return
    result = {"load_before": os.getloadavg()[0], "threads": args.threads, "steps": args.steps}
    result["as_is"] = measure(args.steps, args.threads, args.rounds)
    report(f"machine as it is (load {result['load_before']:.2f} before)", result["as_is"])
    if args.busy:
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        try:
            result["busy"] = measure(args.steps, args.threads, args.rounds)
        finally:
            for hog in hogs:
                hog.kill()
        report(f"with {args.busy} busy loops beside it", result["busy"])
    result["load_after"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "omp_wait.json").write_text(json.dumps(result, indent=1))
    print(f"\nwrote {RESULTS / 'omp_wait.json'}")


if __name__ == "__main__":
    main()
