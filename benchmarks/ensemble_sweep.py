"""Chunk mode against temporal ensembling, for one checkpoint on the same held-out seeds.

Each configuration is one :func:`robokit.deploy.evaluate.evaluate_in_sim` run (lock-step
simulation, the policy in this process) on the same seeds, so the scenes are identical and only the
way chunks are requested and blended differs. A configuration is ``MODE:QUERY_EVERY[:K]``:

* ``chunk:10`` — a new chunk every 10 steps, blended with the previous one over the overlap;
* ``chunk:20`` — whole chunks, no blending (for a 20-step chunk);
* ``ensemble:1:0.01`` — a query every step, every chunk covering the step votes with weight
  ``exp(-k i)``, i = 0 the oldest vote (ACT's ``temporal_agg``, k = 0.01); ``k < 0`` favours the
  newest predictions, ``k = 0`` is the plain mean;
* ``ensemble:2:0.01`` — the same with a query every 2 steps.

Baseline, same run: the best chunk-mode configuration; every row prints its ratio to it. Besides
the success count the table says how the episodes ended (the policy's done head, the step limit)
and their mean length, because a blending rule that lags shows up as longer episodes first.

With ``--drift`` the every-step ensemble configurations also measure how stale predictions are:
for each step t, the mean absolute difference between the action for t predicted d steps earlier
(row d of the chunk from step t - d) and the newest prediction for t (row 0 of the chunk from t),
for the arm joints (radians) and the gripper. A policy whose plan for a step changes as it gets
closer to it is what makes averaging old votes hurt.

    MUJOCO_GL=egl OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/ensemble_sweep.py \\
        demo_out/run/last.pt --episodes 50 --configs chunk:10,chunk:20,ensemble:1:0.01,ensemble:1:-0.1

Writes benchmarks/results/ensemble_sweep.json (``--json PATH`` to change), after every
configuration, so an interrupted sweep keeps what it measured.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from robokit.deploy.ensemble import ActionQueue
from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CONFIGS = ("chunk:10,ensemble:1:0.01,ensemble:1:-0.3,ensemble:1:-1,ensemble:1:-0.1,chunk:20,"
                   "ensemble:2:-0.3")


@dataclass(frozen=True)
class Setting:
    """One way to request and blend chunks."""

    mode: str
    query_every: int
    k: float

    @classmethod
    def parse(cls, text: str) -> Setting:
        parts = text.strip().split(":")
        if len(parts) not in (2, 3) or parts[0] not in ("chunk", "ensemble"):
            raise SystemExit(f"bad configuration {text!r}: use MODE:QUERY_EVERY[:K], MODE chunk or ensemble")
        return cls(parts[0], int(parts[1]), float(parts[2]) if len(parts) == 3 else 0.01)

    @property
    def label(self) -> str:
        return f"{self.mode}:{self.query_every}:{self.k:g}"


class DriftProbe:
    """The policy, keeping every chunk of the episode (every-step queries: call i is step i)."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy
        self.episodes: list[list[np.ndarray]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    def reset(self) -> None:
        self._policy.reset()
        self.episodes.append([])

    def predict_chunk(self, obs: dict[str, Any], **kw: Any) -> Any:
        chunk, extras = self._policy.predict_chunk(obs, **kw)
        self.episodes[-1].append(np.asarray(chunk, dtype=np.float64).reshape(-1, np.shape(chunk)[-1]))
        return chunk, extras

    def drift(self, lags: tuple[int, ...] = (1, 5, 10, 19), arm_dims: int = 7) -> dict[str, dict[str, float]]:
        """Per lag d: mean |prediction for t made at t - d  -  prediction for t made at t| (arm, gripper)."""
        out = {}
        for d in lags:
            arm, grip = [], []
            for chunks in self.episodes:
                for t in range(d, len(chunks)):
                    if d < len(chunks[t - d]):
                        diff = np.abs(chunks[t - d][d] - chunks[t][0])
                        arm.append(diff[:arm_dims].mean())
                        grip.append(diff[arm_dims:].mean())
            if arm:
                out[str(d)] = {"arm_rad": float(np.mean(arm)), "gripper": float(np.mean(grip))}
        return out


def vote_weights(setting: Setting, chunk_size: int, steps: int = 4) -> tuple[float, float, float]:
    """Steady state of ``setting``'s blending, from the real :class:`ActionQueue`: the mean age (steps
    since its observation) of the votes an action is made of, the effective number of votes
    (1 / sum of squared weights) and the weight of the newest vote, averaged over ``steps`` periods."""
    horizon = 4 * chunk_size + steps * setting.query_every
    queue = ActionQueue(setting.mode, chunk_size, horizon, k=setting.k, query_every=setting.query_every)
    ages, n_eff, newest = [], [], []
    for t in range(horizon):
        start = None
        if queue.query_due():
            start = queue.on_query()
            onehot = np.zeros((chunk_size, horizon))
            onehot[:, start] = 1.0  # column s: the weight of the chunk predicted at step s
            queue.add(onehot, start)
        w = queue.pop()
        if t >= 3 * chunk_size and w is not None:
            voters = np.flatnonzero(w > 0)
            ages.append(float(((t - np.arange(horizon)) * w).sum()))
            n_eff.append(float(1.0 / (w ** 2).sum()))
            newest.append(float(w[voters[-1]]))
    return float(np.mean(ages)), float(np.mean(n_eff)), float(np.mean(newest))


def run_setting(checkpoint: str, setting: Setting, args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate ``checkpoint`` with ``setting`` on the sweep's seeds."""
    t0 = time.perf_counter()
    probe = None
    source: Any = checkpoint
    if args.drift and setting.mode == "ensemble" and setting.query_every == 1:
        from robokit.policies.checkpoint import load_checkpoint

        probe = DriftProbe(load_checkpoint(checkpoint, map_location=args.device)[0])
        source = probe
    out = evaluate_in_sim(source, EvalConfig(
        episodes=args.episodes, seed_start=args.seed_start, task_set=args.task_set, mode=setting.mode,
        k=setting.k, query_every=setting.query_every, done_threshold=args.done_threshold,
        max_seconds=args.max_seconds, device=args.device))
    reasons = collections.Counter(o.reason for o in out.outcomes)
    age, n_eff, newest = vote_weights(setting, int(out.policy.get("chunk_size", 20)))
    return {"mode": setting.mode, "query_every": setting.query_every, "k": setting.k,
            "successes": out.successes, "episodes": out.episodes, "success_rate": out.success_rate,
            "stop_reasons": dict(reasons),
            "mean_steps": sum(o.steps for o in out.outcomes) / out.episodes,
            "mean_steps_success": (sum(o.steps for o in out.outcomes if o.success) / out.successes
                                   if out.successes else None),
            "vote_mean_age_steps": age, "vote_effective_count": n_eff, "newest_vote_weight": newest,
            "failed_seeds": [o.seed for o in out.outcomes if not o.success],
            "seconds": round(time.perf_counter() - t0, 1),
            **({"drift": probe.drift()} if probe is not None else {})}


def print_table(rows: list[dict[str, Any]]) -> None:
    chunk_rates = [r["success_rate"] for r in rows if r["mode"] == "chunk"]
    best_chunk = max(chunk_rates) if chunk_rates else None
    print(f"\n{'mode':9} {'k':>6} {'query_every':>11} {'success':>9} {'ratio':>6} {'age':>5} {'votes':>5} "
          f"{'done':>5} {'max':>4} {'steps':>6} {'steps ok':>8} {'time':>6}")
    for r in rows:
        ratio = f"{r['success_rate'] / best_chunk:.2f}" if best_chunk else "-"
        ok = f"{r['mean_steps_success']:.1f}" if r["mean_steps_success"] is not None else "-"
        k = f"{r['k']:g}" if r["mode"] == "ensemble" or r["query_every"] < 20 else "-"
        print(f"{r['mode']:9} {k:>6} {r['query_every']:>11} {r['successes']:>4}/{r['episodes']:<4} {ratio:>6} "
              f"{r['vote_mean_age_steps']:>5.1f} {r['vote_effective_count']:>5.1f} "
              f"{r['stop_reasons'].get('done', 0):>5} {r['stop_reasons'].get('max_steps', 0):>4} "
              f"{r['mean_steps']:>6.1f} {ok:>8} {r['seconds']:>5.0f}s")
    if best_chunk is not None:
        print(f"ratio: success rate / the best chunk mode's ({best_chunk:.0%}); age: mean age in steps of the "
              "predictions an action averages; votes: their effective number (1 / sum of squared weights); "
              "done / max: episodes ended by the done head / the step limit; steps ok: mean length of the "
              "successful episodes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", default=str(RESULTS.parents[1] / "demo_out" / "run" / "last.pt"),
                        help="a pick_place checkpoint (default: the one `make demo` trains)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated MODE:QUERY_EVERY[:K]")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed-start", type=int, default=1000)
    parser.add_argument("--task-set", default="pick_place")
    parser.add_argument("--done-threshold", type=float, default=0.9, help="above 1: the done head never stops")
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--drift", action="store_true", help="measure how stale old predictions are")
    parser.add_argument("--json", type=Path, default=RESULTS / "ensemble_sweep.json")
    args = parser.parse_args()
    settings = [Setting.parse(c) for c in args.configs.split(",") if c.strip()]

    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"benchmark": "ensemble_sweep", "checkpoint": str(args.checkpoint),
                               "episodes": args.episodes, "seed_start": args.seed_start, "task_set": args.task_set,
                               "done_threshold": args.done_threshold, "load_before": os.getloadavg(), "rows": []}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for setting in settings:
        row = run_setting(args.checkpoint, setting, args)
        row["load_after"] = os.getloadavg()
        results["rows"].append(row)
        print(f"{setting.label}: {row['successes']}/{row['episodes']} ({row['seconds']:.0f} s, "
              f"load {row['load_after'][0]:.1f})", flush=True)
        for lag, d in row.get("drift", {}).items():
            print(f"    prediction made {lag:>2} steps earlier vs the newest: arm {d['arm_rad']:.4f} rad, "
                  f"gripper {d['gripper']:.4f}")
        args.json.write_text(json.dumps(results, indent=2))
    print_table(results["rows"])
    print(f"-> {args.json}")


if __name__ == "__main__":
    main()
