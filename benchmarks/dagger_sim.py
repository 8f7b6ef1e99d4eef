"""Learning from corrections (HG-DAgger) in the simulation: does taking over and retraining help?

1. Record ``--demos`` scripted demonstrations of the demo's pick-and-place task (the demo's camera,
   image size and rate) and train ACT on them with the demo's model (``robokit demo``'s config).
2. Evaluate it on ``--eval`` held-out seeds without help: success X.
3. ``--rounds`` times: deploy the current policy for ``--rollouts`` episodes with
   ``--takeover scripted`` (the scripted expert takes over whenever the policy strays) on seeds of their
   own (``--rollout-scenes spread``: seeds whose cubes spread evenly over the workspace;
   ``--rollout-scenes failed``: scenes where the policy, tried alone on ``--tries`` of them first, failed),
   recording the rollouts; retrain from the deployed policy's weights (``--no-finetune``: from
   scratch) on the demonstrations + every rollout so far (intervention steps drawn
   ``--intervention-weight`` times as often, the policy's own steps of failed rollouts left out).
4. Evaluate the last policy on the same held-out seeds: success Y.
5. With ``--reference [N]``: train ACT from scratch on ``--demos`` + N scripted demonstrations (the
   first ``--demos`` are the same ones; N defaults to ``--rounds`` x ``--rollouts``) and evaluate it there
   too: success R, what as many whole demonstrations as there were corrected rollouts give
   (``--rounds 0 --reference 20``: X and R only).

Rollouts and evaluations execute as the demo does (a new chunk every 10 steps, blended with the last),
or with ``--mode ensemble`` as ``robokit deploy`` does by default (temporal ensembling every step).

Prints X, Y, the intervention steps per round and the times; writes them to
benchmarks/results/dagger_sim.json.

    python benchmarks/dagger_sim.py                       # 10 demos, 2 rounds of 10, 50 held-out seeds
    python benchmarks/dagger_sim.py --quick               # a smoke run (minutes)
    python benchmarks/dagger_sim.py --out W --reuse       # keep W's demos, first policy and X
    python benchmarks/dagger_sim.py --reference           # + R: 30 whole demonstrations instead

``--reuse`` with ``--out`` takes the demonstrations, the first policy and its X from an earlier run
into the same folder (its ``first.json``), so that takeover or retraining settings can be compared
from the same starting policy (the earlier run's rounds are removed and run again); the report says that it did. X is evaluated again when ``--eval``,
``--eval-seed`` or ``--mode`` differ from that run's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from robokit.commands.demo.config import DemoConfig
from robokit.deploy.evaluate import EvalConfig, EvalResults, evaluate_in_sim

RESULTS = HERE / "results"
ROLLOUT_SEEDS = 5000  # rollout r of round k is on seed ROLLOUT_SEEDS + 100 k + r: never an evaluation seed
SPREAD_POOL = 1000  # --rollout-scenes spread picks round k's seeds from ROLLOUT_SEEDS + 1000 k + [0, 1000)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demos", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rollouts", type=int, default=10, help="deploy episodes with takeover per round")
    ap.add_argument("--rollout-scenes", choices=("random", "spread", "failed"), default="random",
                    help="the rollouts' scenes: consecutive seeds (random cube places), seeds whose cubes "
                         "spread over the workspace (as a person resetting the scene would place them), or "
                         "scenes where the deployed policy failed when tried alone first (--tries of them)")
    ap.add_argument("--tries", type=int, default=30,
                    help="with --rollout-scenes failed: scenes of the round's own the policy is tried on alone")
    ap.add_argument("--mode", choices=("chunk", "ensemble"), default="chunk",
                    help="execution in the rollouts and evaluations: the demo's (a chunk every 10 steps, blended "
                         "with the last) or temporal ensembling every step (robokit deploy's default)")
    ap.add_argument("--eval", type=int, default=50, help="held-out evaluation seeds (1000 on)")
    ap.add_argument("--eval-seed", type=int, default=1000, help="the first held-out evaluation seed")
    ap.add_argument("--steps", type=int, default=2000, help="training steps of every policy")
    # 32, not the demo's 16: the demo halved its batch to fit its time budget, and at 16 the
    # corrections did not help (36% -> 34%) where at 32 they did (38% -> 46%).
    ap.add_argument("--batch-size", type=int, default=32, help="training batch of every policy")
    ap.add_argument("--intervention-weight", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0, help="training seed of every policy (the demo's: 0)")
    # Measured over four training seeds: fine-tuning +11 points on average, from scratch +4.
    ap.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=True,
                    help="retrain each round from the deployed policy's weights (--init-from); "
                         "--no-finetune: from scratch")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None,
                    help="where the figures go (default: benchmarks/results/dagger_sim.json, _quick with --quick)")
    ap.add_argument("--reuse", action="store_true",
                    help="with --out: reuse the demos, first policy and X of an earlier run in that folder")
    ap.add_argument("--reference", type=int, nargs="?", const=-1, default=0, metavar="N",
                    help="also train from scratch on --demos + N more whole scripted demonstrations (N: rounds x "
                         "rollouts unless given) and evaluate it: success R")
    ap.add_argument("--quick", action="store_true", help="2 demos, 1 round of 2, 4 seeds, 30 steps")
    args = ap.parse_args(argv)
    if args.json is None:
        args.json = RESULTS / ("dagger_sim_quick.json" if args.quick else "dagger_sim.json")
    if args.rollout_scenes == "failed" and args.tries < args.rollouts:
        ap.error(f"--tries ({args.tries}) must be at least --rollouts ({args.rollouts})")
    if args.reuse and args.out is None:
        ap.error("--reuse needs --out (the folder of the earlier run)")
    if args.quick:
        args.demos, args.rounds, args.rollouts, args.eval, args.steps = 2, 1, 2, 4, 30
    if args.reference < 0:
        args.reference = args.rounds * args.rollouts
    return args


def record_demos(folder: Path, cfg: DemoConfig, n: int) -> float:
    """``n`` scripted demonstrations into ``folder``; returns the seconds."""
    from robokit.cli import main as robokit

    t0 = time.perf_counter()
    robokit(["record", "--sim", "--teleop", "scripted", "--episodes", str(n), "--out", str(folder),
             "--image-size", f"{cfg.image_size[0]}x{cfg.image_size[1]}", "--fps", f"{cfg.fps:g}",
             "--compress", "lzf"])
    return time.perf_counter() - t0


def train(out: Path, data: Path, rollouts: list[Path], cfg: DemoConfig, steps: int, weight: float,
          init_from: Path | None = None) -> float:
    """The demo's ACT on ``data`` (+ ``rollouts``) into ``out``, from scratch or from ``init_from``'s
    weights; returns the seconds."""
    from robokit.training.trainer import TrainOptions
    from robokit.training.trainer import train as run_training

    options = TrainOptions(
        data=data, out=out, policy="act", steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
        lr_schedule=cfg.lr_schedule, camera_names=list(cfg.cameras), chunk_size=cfg.chunk_size,
        device="cpu", seed=cfg.seed, val_fraction=0.0, policy_config=dict(cfg.policy_config), num_workers=0,
        rollouts=[str(r) for r in rollouts], intervention_weight=weight,
        init_from=str(init_from) if init_from is not None else None)
    t0 = time.perf_counter()
    run_training(options)
    return time.perf_counter() - t0


def scene_seeds(folder: Path) -> list[int]:
    """The simulator's scene seed of each episode in ``folder``, in episode order."""
    from robokit.episodes.reader import list_episodes, open_episode

    seeds = []
    for path in list_episodes(folder):
        with open_episode(path) as ep:
            seeds.append(int(ep.attrs["sim_seed"]))
    return seeds


def reference(work: Path, cfg: DemoConfig, args: argparse.Namespace) -> dict[str, Any]:
    """ACT from scratch on the first policy's ``--demos`` plus ``--reference`` more whole demonstrations,
    evaluated on the held-out seeds: success R. The recorder draws each episode's scene from the same
    seed sequence, so the first ``--demos`` of them are the first policy's demonstrations (checked)."""
    count = args.demos + args.reference
    data, run = work / "demos_reference", work / "run_reference"
    for folder in (data, run):
        shutil.rmtree(folder, ignore_errors=True)
    record_s = record_demos(data, cfg, count)
    if scene_seeds(data)[:args.demos] != scene_seeds(work / "demos"):
        raise SystemExit(f"{data}: its first {args.demos} demonstrations are not the first policy's")
    train_s = train(run, data, [], cfg, args.steps, args.intervention_weight)
    results, eval_s = evaluate(run / "last.pt", cfg, args.eval)
    print(f"reference: {count} demonstrations, trained {train_s:.0f} s, evaluated {eval_s:.0f} s", flush=True)
    return {"reference_demos": count, "r": results.success_rate, "r_successes": results.successes,
            "r_failures": results.failure_counts(), "reference_record_seconds": round(record_s, 1),
            "reference_train_seconds": round(train_s, 1), "reference_eval_seconds": round(eval_s, 1)}


def evaluation(cfg: DemoConfig, episodes: int, seed_start: int, **extra: Any) -> EvalConfig:
    query_every = cfg.query_every if cfg.mode == "chunk" else None
    return EvalConfig(episodes=episodes, seed_start=seed_start, task_set="pick_place", mode=cfg.mode,
                      query_every=query_every, **extra)


def evaluate(checkpoint: Path, cfg: DemoConfig, episodes: int) -> tuple[EvalResults, float]:
    t0 = time.perf_counter()
    results = evaluate_in_sim(str(checkpoint), evaluation(cfg, episodes, cfg.eval_seed_start))
    return results, time.perf_counter() - t0


def takeover_reasons(results: EvalResults) -> dict[str, int]:
    """How often each reason made the scripted expert take over, from the recorded rollouts."""
    from collections import Counter

    from robokit.episodes.reader import open_episode

    counts: Counter[str] = Counter()
    for outcome in results.outcomes:
        if outcome.episode_file is not None:
            with open_episode(outcome.episode_file) as ep:
                counts.update(r for r in str(ep.attrs.get("takeover_reasons", "")).split("; ") if r)
    return dict(counts)


def halton(index: int, base: int) -> float:
    """Element ``index`` of the van der Corput sequence in ``base`` (a Halton coordinate) in [0, 1)."""
    value, scale = 0.0, 1.0
    while index > 0:
        scale /= base
        value += scale * (index % base)
        index //= base
    return value


def spread_rollout_seeds(round_k: int, count: int) -> list[int]:
    """Scene seeds for round ``round_k``'s rollouts whose cubes spread over the workspace.

    Independent random seeds can crowd the rollouts into part of the cube's range (seeds 5100-5109 and
    5200-5209 put 4 of 20 cubes in the third of its range nearest the robot and 11 in the farthest),
    where a person collecting corrections would spread them. Each point of the k-th group of ``count``
    points of a 2-D Halton sequence over the cube's range (all rounds together stay evenly spread) gets
    the seed, from a pool of the round's own, whose cube lies nearest. Only the scenes are looked at,
    never how a policy does in them.
    """
    import numpy as np

    from robokit.hardware.sim import PandaSimEnv

    pool = [ROLLOUT_SEEDS + 1000 * round_k + j for j in range(SPREAD_POOL)]
    places = []
    with PandaSimEnv(task="pick_place", seed=0, image_size=(16, 16), camera_names=()) as env:
        for seed in pool:
            env.reset(seed=seed)
            places.append(env.object_pose(env.task.object_name)[0][:2])
    places_arr = np.array(places)
    low, high = places_arr.min(axis=0), places_arr.max(axis=0)
    chosen: list[int] = []
    for i in range((round_k - 1) * count + 1, round_k * count + 1):
        point = low + (high - low) * np.array([halton(i, 2), halton(i, 3)])
        order = np.argsort(np.linalg.norm(places_arr - point, axis=1))
        chosen.append(next(pool[j] for j in order if pool[j] not in chosen))
    return chosen


def failed_first(pool: list[int], failed: list[int], count: int) -> list[int]:
    """``count`` seeds of ``pool``: those in ``failed`` first, then the others, each in pool order."""
    return ([s for s in pool if s in failed] + [s for s in pool if s not in failed])[:count]


def failed_rollout_seeds(checkpoint: Path, cfg: DemoConfig, round_k: int, count: int, tries: int,
                        ) -> tuple[list[int], dict[str, Any]]:
    """Scene seeds for round ``round_k``'s rollouts where the deployed policy fails on its own.

    The policy is tried without help on ``tries`` scenes of the round's own (never evaluation seeds),
    as a person would try it before collecting corrections; the rollouts go to the scenes it failed
    in, in seed order, filled up with the scenes it did in if it failed fewer than ``count``.
    """
    pool = [ROLLOUT_SEEDS + 1000 * round_k + j for j in range(tries)]
    t0 = time.perf_counter()
    tried = evaluate_in_sim(str(checkpoint), evaluation(cfg, tries, pool[0], seeds=tuple(pool)))
    failed = [o.seed for o in tried.outcomes if not o.success]
    seconds = round(time.perf_counter() - t0, 1)
    return failed_first(pool, failed, count), {"tries": tries, "tries_failed": len(failed), "tries_seconds": seconds}


TRAINING_KEYS = ("demos", "steps", "batch_size", "seed")  # what the first policy is made with
EVAL_KEYS = ("eval", "eval_seed", "mode")  # how X is measured
OLD_DEFAULTS = {"batch_size": 32, "seed": 0, "eval_seed": 1000, "mode": "chunk"}  # before these were options


def measure_x(run: Path, cfg: DemoConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate the first policy: X."""
    first, eval_s = evaluate(run / "last.pt", cfg, args.eval)
    return {"x": first.success_rate, "x_successes": first.successes, "eval0_seconds": round(eval_s, 1),
            "x_failures": first.failure_counts(), **{key: getattr(args, key) for key in EVAL_KEYS}}


def first_policy(data: Path, run: Path, cfg: DemoConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Record the demonstrations, train the first policy on them and evaluate it: X."""
    record_s = record_demos(data, cfg, args.demos)
    seconds = train(run, data, [], cfg, args.steps, args.intervention_weight)
    x = measure_x(run, cfg, args)
    print(f"first policy: trained {seconds:.0f} s, evaluated {x['eval0_seconds']:.0f} s", flush=True)
    return {"record_seconds": round(record_s, 1), "train0_seconds": round(seconds, 1), **x,
            **{key: getattr(args, key) for key in TRAINING_KEYS}}


def reuse_first_policy(first_json: Path, run: Path, cfg: DemoConfig, args: argparse.Namespace) -> dict[str, Any]:
    """The first policy of an earlier run in the same folder; X measured again if it was measured otherwise."""
    first_report = json.loads(first_json.read_text())
    if any(first_report.get(key, OLD_DEFAULTS.get(key)) != getattr(args, key) for key in TRAINING_KEYS):
        raise SystemExit(f"{first_json} was made with other settings ({first_report}); "
                         "use another --out or the same --demos/--steps/--batch-size/--seed")
    if any(first_report.get(key, OLD_DEFAULTS.get(key)) != getattr(args, key) for key in EVAL_KEYS):
        print("evaluating the reused first policy again (other --eval/--eval-seed/--mode)", flush=True)
        first_report.update(measure_x(run, cfg, args))
    return first_report


def clear_rounds(work: Path) -> None:
    """Remove an earlier run's rounds from ``work`` (its rollouts would be added to, its policies refused)."""
    for folder in sorted(work.glob("rollouts[0-9]*")) + sorted(work.glob("run[0-9]*")):
        if folder.name != "run0" and folder.is_dir():
            shutil.rmtree(folder)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = DemoConfig(batch_size=args.batch_size, seed=args.seed, mode=args.mode, eval_seed_start=args.eval_seed)
    work = args.out or Path(tempfile.mkdtemp(prefix="dagger_sim_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}; load {os.getloadavg()[0]:.2f}", flush=True)
    report: dict[str, Any] = {"demos": args.demos, "rounds": args.rounds, "rollouts_per_round": args.rollouts,
                              "eval_episodes": args.eval, "eval_seeds": [cfg.eval_seed_start,
                                                                         cfg.eval_seed_start + args.eval - 1],
                              "steps": args.steps, "batch_size": args.batch_size,
                              "seed": args.seed, "intervention_weight": args.intervention_weight,
                              "finetune": args.finetune, "rollout_scenes": args.rollout_scenes, "mode": args.mode,
                              "rounds_detail": []}
    try:
        data, run, first_json = work / "demos", work / "run0", work / "first.json"
        reused = args.reuse and first_json.is_file() and (run / "last.pt").is_file()
        if reused:
            print(f"reusing {data}, {run} and X from {first_json}", flush=True)
            first_report = reuse_first_policy(first_json, run, cfg, args)
            clear_rounds(work)
        else:
            first_report = first_policy(data, run, cfg, args)
            first_json.write_text(json.dumps(first_report, indent=2))
        report.update({k: v for k, v in first_report.items() if k not in TRAINING_KEYS + EVAL_KEYS},
                      reused_first_policy=reused)
        x, x_successes = report["x"], report["x_successes"]
        print(f"X = {x_successes}/{args.eval} after {args.demos} demos", flush=True)
        rollouts: list[Path] = []
        for k in range(1, args.rounds + 1):
            folder = work / f"rollouts{k}"
            tried: dict[str, Any] = {}
            if args.rollout_scenes == "failed":
                seeds, tried = failed_rollout_seeds(run / "last.pt", cfg, k, args.rollouts, args.tries)
                print(f"round {k}: the policy alone failed {tried['tries_failed']} of {args.tries} tries", flush=True)
            elif args.rollout_scenes == "spread":
                seeds = spread_rollout_seeds(k, args.rollouts)
            else:
                seeds = [ROLLOUT_SEEDS + 100 * k + r for r in range(args.rollouts)]
            t0 = time.perf_counter()
            done = evaluate_in_sim(str(run / "last.pt"), evaluation(
                cfg, args.rollouts, seeds[0], seeds=tuple(seeds), takeover="scripted", record_dir=folder))
            deploy_s = time.perf_counter() - t0
            rollouts.append(folder)
            steps = sum(o.intervention_steps for o in done.outcomes)
            reasons = takeover_reasons(done)
            helped = sum(o.intervention_steps > 0 for o in done.outcomes)
            deployed, run = run / "last.pt", work / f"run{k}"
            seconds = train(run, data, rollouts, cfg, args.steps, args.intervention_weight,
                            deployed if args.finetune else None)
            report["rounds_detail"].append({
                "round": k, "seeds": seeds, "intervention_steps": steps, "episodes_taken_over": helped,
                "rollout_steps": sum(o.steps for o in done.outcomes), "assisted_successes": done.successes,
                "deploy_seconds": round(deploy_s, 1), "train_seconds": round(seconds, 1),
                "takeover_reasons": reasons, **tried})
            print(f"round {k}: {helped}/{args.rollouts} rollouts taken over ({reasons}), {steps} intervention steps "
                  f"(deploy {deploy_s:.0f} s); retrained on demos + {len(rollouts)} rollout folder(s) "
                  f"in {seconds:.0f} s", flush=True)
        y = None
        if args.rounds:
            last, eval_s = evaluate(run / "last.pt", cfg, args.eval)
            y = last.success_rate
            report.update(y=y, y_successes=last.successes, eval_last_seconds=round(eval_s, 1),
                          y_failures=last.failure_counts(), gain_points=round((y - x) * 100, 1))
            print(f"\nX = {x_successes}/{args.eval} ({x:.0%}) -> Y = {last.successes}/{last.episodes} ({y:.0%}): "
                  f"{(y - x) * 100:+.0f} points; ratio Y/X {y / x if x else float('inf'):.2f}", flush=True)
        if args.reference:
            report.update(reference(work, cfg, args))
            r = report["r"]
            against = f", the corrections {(y - r) * 100:+.0f} against them" if y is not None else ""
            print(f"R = {report['r_successes']}/{args.eval} ({r:.0%}) with {report['reference_demos']} whole "
                  f"demonstrations: {(r - x) * 100:+.0f} points over X{against}", flush=True)
        report["load_at_end"] = round(os.getloadavg()[0], 2)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
