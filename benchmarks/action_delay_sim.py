"""Async deploy with the measured action delay against the constant one (0: row 0 = the observation's tick).

Both settings run a trained pick-and-place ACT checkpoint in `robokit deploy --sim --realtime`'s
configuration (wall-clock pacing, async inference in this process) on the same held-out seeds:

* **constant** (the baseline): each chunk is aligned at the tick its observation was taken, so
  only the ticks the query took are skipped;
* **measured**: the delay `robokit devices --latency --sim` measures (camera age + the arm's
  response to a command) is skipped as well.

    .venv/bin/python benchmarks/action_delay_sim.py                       # demo_out/run/last.pt, 30 seeds
    .venv/bin/python benchmarks/action_delay_sim.py --checkpoint runs/act/last.pt --episodes 50

Prints success and the median steps to success per setting, and the ratios measured / constant. Writes benchmarks/results/action_delay_sim.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def measured_delay_s(checkpoint: Path) -> dict:
    """What `robokit devices --latency --sim` measures, for the checkpoint's cameras."""
    from robokit.commands.devices_latency import measure_latency
    from robokit.commands.hardware_options import HardwareOptions
    from robokit.policies.checkpoint import load_checkpoint

    policy, _ = load_checkpoint(checkpoint, map_location="cpu")
    cams = [f"{c}=sim" for c in policy.config.camera_names]
    hw = HardwareOptions.from_cli(sim=True, camera=cams)
    report = measure_latency(hw, server=None, checkpoint=None, device="cpu", size=(64, 80), fps=30.0, seconds=0.1,
                             queries=1)
    return report.to_dict()


def evaluate(checkpoint: Path, delay_s: float, episodes: int, seed_start: int) -> dict:
    from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim

    config = EvalConfig(episodes=episodes, seed_start=seed_start, realtime=True, device="cpu",
                        action_delay_s=delay_s)
    t0 = time.perf_counter()
    results = evaluate_in_sim(str(checkpoint), config)
    wall = time.perf_counter() - t0
    outcomes = results.outcomes
    won = [o.steps for o in outcomes if o.success]
    return {"delay_s": delay_s, "episodes": len(outcomes), "successes": len(won),
            "success_rate": len(won) / len(outcomes), "steps_to_success_median": float(np.median(won)) if won else None,
            "failures": {o.failure: sum(p.failure == o.failure for p in outcomes) for o in outcomes if not o.success},
            "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "demo_out" / "run" / "last.pt")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--seed-start", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "action_delay_sim.json")
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        raise SystemExit(f"no checkpoint at {args.checkpoint}: run `make demo` first, or pass --checkpoint")
    os.environ.setdefault("MUJOCO_GL", "egl")
    latency = measured_delay_s(args.checkpoint)
    delay = float(latency["action_delay_s"])
    print(f"measured action delay: {delay * 1000:.1f} ms (robot response {latency['robot']['response_ms']:.1f} ms, "
          "sim cameras 0 ms)", flush=True)
    results = {}
    for name, value in (("constant", 0.0), ("measured", delay)):
        results[name] = evaluate(args.checkpoint, value, args.episodes, args.seed_start)
        r = results[name]
        print(f"{name:9s} delay {value * 1000:5.1f} ms: success {r['successes']}/{r['episodes']} "
              f"({100 * r['success_rate']:.0f}%), median steps to success {r['steps_to_success_median']}, "
              f"failures {r['failures']}, {r['wall_s']:.0f} s", flush=True)
    c, m = results["constant"], results["measured"]
    ratio = m["success_rate"] / c["success_rate"] if c["success_rate"] else float("nan")
    print(f"success measured / constant: {ratio:.2f}")
    if c["steps_to_success_median"] and m["steps_to_success_median"]:
        print(f"median steps to success measured / constant: "
              f"{m['steps_to_success_median'] / c['steps_to_success_median']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "latency": latency, "results": results,
                                    "ratio_success": ratio}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
