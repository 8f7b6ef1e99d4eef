"""Goal-conditioned policies on the 6-instruction ``multi`` scene: record, train, evaluate, explain.

One run of the whole pipeline for one policy, on held-out seeds:

1. **record** (or reuse) N scripted demonstrations of each of the 6 instructions of the ``multi``
   task set (3 cubes x blue bowl / yellow plate): 64x80, cameras top + wrist, 15 fps, lzf, two
   ``robokit record`` processes in parallel over disjoint instructions, every instruction on the
   same scenes (one recording seed for all). A folder that already holds
   >= N episodes of every instruction is reused as it is; one that holds fewer is topped up.
2. **train** with the policy's configuration file ``benchmarks/configs/goal_<policy>.toml``
   (``robokit train DATA --config FILE``; ``--steps`` and ``--set KEY=VALUE`` override it).
3. **evaluate** the last checkpoint on the held-out seeds A..B-1 (default 2000:2120, 20 episodes per
   instruction) in chunk mode (a new chunk every 10 steps), through the same control loop as a
   robot, with the instruction (``--goal text``) or the expert's final frame (``--goal image``).
4. **explain**: per instruction, successes, each failure's category (wrong object lifted, grasp
   missed, wrong target, not released, time out; robokit.deploy.rollout_review) and grounding
   accuracy (the gripper went to the named cube first).

Baseline, same run, same seeds: the scripted expert driven directly; every row prints the ratio
policy / expert. ``--paraphrases`` also evaluates the policy with one paraphrase per instruction in
words the training set never had ("place the red block on the dish"), on the same seeds, so each
episode is paired with the original instruction's; a policy with a word vocabulary reads the new
words as its one unknown-word token.

Recorded scenes draw 31-bit seeds from each recording's ``--seed``; the script predicts those draws
before recording (skipping a recording seed whose draws would hit the held-out range) and checks the
seeds stored in the episodes (``sim_seed``) afterwards: an overlap is an error.

    MUJOCO_GL=egl OMP_NUM_THREADS=2 .venv/bin/python benchmarks/goal_sim_success.py \\
        --policy act --goal text --episodes-per-task 20 --eval-seeds 2000:2120 \\
        --json benchmarks/results/goal_act_text.json
    .venv/bin/python benchmarks/goal_sim_success.py --policy grp --goal image --episodes-per-task 50 \\
        --data data/goal_multi --set lr=5e-4 --paraphrases
    .venv/bin/python benchmarks/goal_sim_success.py --policy act --eval-only runs/goal_sim_success/act-text/last.pt

Smoke run (not a figure, a couple of minutes): ``--quick`` = ``--episodes-per-task 1 --steps 5
--eval-seeds 2000:2006`` in a temporary folder. Default JSON:
benchmarks/results/goal_sim_success_<policy>_<goal>[_quick].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from robokit.deploy.evaluate import EvalConfig, EvalResults, evaluate_in_sim
from robokit.deploy.rollout_review import FAILURES, Grounding

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
RESULTS = HERE / "results"
POLICIES = ("act", "grp", "vima", "vla")
SEGMENTED = {"vla"}  # policies that read a segmentation model: their data has masks, the run trains one

TASK_SET = "multi"
IMAGE_SIZE = "64x80"
FPS = 15
COMPRESS = "lzf"
RECORD_WORKERS = 2
RECORD_SEED_BASE = 100  # every instruction is recorded from --seed 100: the same scenes for each
CHECKPOINT = "last.pt"
EVAL_MODE, QUERY_EVERY, ENSEMBLE_K = "chunk", 10, 0.01

FAILURE_LABELS = {"wrong_object": "wrong object lifted", "grasp_missed": "grasp missed",
                  "wrong_target": "wrong target", "not_released": "not released", "time_out": "time out"}

# One paraphrase per instruction, each with words no training instruction has (move, block, into,
# drop, place, inside, dish, onto, set, box), the colour kept: the scene and its success check stay
# the original instruction's. One per instruction (not five) so every evaluation episode is paired
# with the same seed's episode under the original words.
PARAPHRASES = {
    "put the red cube in the blue bowl": "move the red block into the blue bowl",
    "put the green cube in the blue bowl": "drop the green cube into the bowl",
    "put the blue cube in the blue bowl": "place the blue block inside the bowl",
    "put the red cube on the yellow plate": "place the red block on the dish",
    "put the green cube on the yellow plate": "move the green cube onto the plate",
    "put the blue cube on the yellow plate": "set the blue box on the yellow dish",
}


# -- seeds ---------------------------------------------------------------------------------------------
def parse_seeds(text: str) -> range:
    """``"A:B"`` -> range(A, B): the held-out evaluation seeds A..B-1."""
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError:
        raise SystemExit(f"--eval-seeds takes A:B (seeds A..B-1), got {text!r}") from None
    if not 0 <= start < stop:
        raise SystemExit(f"--eval-seeds {text}: need 0 <= A < B")
    return range(start, stop)


def scene_seeds(record_seed: int, draws: int) -> list[int]:
    """The first ``draws`` scene seeds ``robokit record --seed record_seed`` gives its episodes.

    The simulator draws each new scene's seed from a generator seeded with ``--seed``
    (robokit.hardware.sim.env.PandaSimEnv.reset with ``seed=None``); a scripted episode whose task
    check fails is discarded and the next one draws again, so a recording of K episodes uses K
    or more of these.
    """
    rng = np.random.default_rng(record_seed)
    return [int(rng.integers(0, 2**31 - 1)) for _ in range(draws)]


def recording_seed(have: int, episodes: int, held_out: range) -> int:
    """``--seed`` for recording ``episodes`` more demonstrations of an instruction that already has
    ``have``: 100 (+ have for a top-up, so a top-up draws other scenes than the first recording),
    skipped ahead while its predicted scene seeds would hit the held-out range.

    Every instruction records from the same seed, so each scene is demonstrated once per
    instruction: a policy cannot fit the data by remembering which cube each scene's demonstration
    went for, only by reading the instruction (measured: with a scene stream per instruction,
    multi-task ACT learnt to ignore the instruction and went for the middle slot)."""
    seed = RECORD_SEED_BASE + have
    while overlap(scene_seeds(seed, 3 * episodes + 20), held_out):
        seed += 1000
    return seed


def overlap(seeds: Iterable[int], held_out: range) -> list[int]:
    """The seeds that are also evaluation seeds, sorted."""
    return sorted({s for s in seeds if s in held_out})


# -- dataset -------------------------------------------------------------------------------------------
@dataclass
class Census:
    """What a dataset folder holds: episodes and scene seeds per instruction."""

    counts: dict[str, int]
    seeds: dict[str, list[int]]

    @property
    def all_seeds(self) -> list[int]:
        return [s for seeds in self.seeds.values() for s in seeds]


def census(folder: Path) -> Census:
    """Count the episodes of each instruction in ``folder`` (none if it holds no episodes)."""
    from robokit.episodes import list_episodes, open_episode
    from robokit.errors import DataError

    counts: dict[str, int] = {}
    seeds: dict[str, list[int]] = {}
    try:
        paths = list_episodes(folder)
    except DataError:
        return Census(counts, seeds)
    for path in paths:
        with open_episode(path) as ep:
            task = str(ep.attrs.get("task", ""))
            seed = ep.attrs.get("sim_seed")
        counts[task] = counts.get(task, 0) + 1
        if seed is not None:
            seeds.setdefault(task, []).append(int(seed))
    return Census(counts, seeds)


def _subprocess_env(threads: str | None = None) -> dict[str, str]:
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    return env


def _run_logged(cmd: Sequence[str], log: Path, what: str, threads: str | None = None) -> None:
    """Run ``cmd`` with its output in ``log``; a failure ends the benchmark with the log's tail."""
    with log.open("w") as out:
        done = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              env=_subprocess_env(threads), check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"{what} failed (exit {done.returncode}); end of {log}:\n{tail}")


def record_dataset(data: Path, per_task: int, held_out: range, workers: int = RECORD_WORKERS,
                   only: Sequence[str] = (), segmentation: bool = False) -> dict[str, Any]:
    """Make ``data`` hold >= ``per_task`` scripted episodes of every instruction (or of those in
    ``only``); returns what was done."""
    from robokit.episodes import next_episode_index
    from robokit.hardware.sim import list_tasks

    instructions = list_tasks(TASK_SET)
    before = census(data)
    foreign = sorted(set(before.counts) - set(only or instructions))
    if foreign:
        raise SystemExit(f"{data} holds episodes of other instructions ({'; '.join(foreign)}); "
                         "give another --data folder")
    jobs = []
    for i, task in enumerate(instructions):
        if only and task not in only:
            continue
        have = before.counts.get(task, 0)
        if have < per_task:
            jobs.append((i, task, per_task - have, recording_seed(have, per_task - have, held_out)))
    if not jobs:
        return {"recorded": 0, "record_seconds": 0.0, "record_seeds": {}}
    staging = data / ".staging"
    staging.mkdir(parents=True, exist_ok=True)

    def record(job: tuple[int, str, int, int]) -> Path:
        i, task, n, seed = job
        folder = staging / f"task{i}_seed{seed}"
        shutil.rmtree(folder, ignore_errors=True)  # a crashed earlier try must not add its episodes
        folder.mkdir(parents=True)
        cmd = [sys.executable, "-m", "robokit.cli", "record", "--sim", "--task", task, "--task-set", TASK_SET,
               "--teleop", "scripted", "--episodes", str(n), "--fps", str(FPS), "--image-size", IMAGE_SIZE,
               "--out", str(folder), "--compress", COMPRESS, "--seed", str(seed)]
        cmd += ["--segmentation"] if segmentation else []
        _run_logged(cmd, staging / f"task{i}_seed{seed}.log", f"recording {task!r}", threads="1")
        return folder

    def worker(mine: list[tuple[int, str, int, int]]) -> list[Path]:
        return [record(job) for job in mine]

    print(f"recording {sum(j[2] for j in jobs)} scripted episodes into {data} "
          f"({workers} processes, seeds {', '.join(str(j[3]) for j in jobs)})", flush=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        folders = [f for done in pool.map(worker, [jobs[w::workers] for w in range(workers)]) for f in done]
    seconds = time.perf_counter() - t0
    for folder in sorted(folders):  # each recording into a folder of its own, then renumbered here
        for path in sorted(folder.glob("episode_*.hdf5"), key=lambda p: int(p.stem.split("_")[1])):
            os.replace(path, data / f"episode_{next_episode_index(data)}.hdf5")
    shutil.rmtree(staging, ignore_errors=True)
    return {"recorded": sum(j[2] for j in jobs), "record_seconds": round(seconds, 1),
            "record_seeds": {task: seed for _, task, _, seed in jobs}}


def check_dataset(data: Path, per_task: int, held_out: range, only: Sequence[str] = ()) -> Census:
    """The dataset's census, after checking it has every instruction (or those in ``only``) and no
    held-out scene."""
    from robokit.hardware.sim import list_tasks

    found = census(data)
    wanted = only or list_tasks(TASK_SET)
    short = {t: found.counts.get(t, 0) for t in wanted if found.counts.get(t, 0) < per_task}
    if short:
        raise SystemExit(f"{data} holds too few episodes: {short} (wanted {per_task} each)")
    hits = overlap(found.all_seeds, held_out)
    if hits:
        raise SystemExit(f"{data} was recorded on evaluation seeds {hits[:10]}: choose other --eval-seeds")
    if len(found.all_seeds) < sum(found.counts.values()):
        print(f"warning: some episodes of {data} do not record their scene seed; disjointness is checked "
              "for the others only", flush=True)
    return found


# -- training ------------------------------------------------------------------------------------------
def segmenter_seconds(out: Path) -> dict[str, Any]:
    """The time the run spent on its segmenter (``robokit train`` trains it first, into the run folder)."""
    from robokit.segmentation.train import load_segmenter

    _, meta = load_segmenter(out / "segmenter.pt")
    return {"segmenter": str(out / "segmenter.pt"), "segmenter_seconds": float(meta["train_seconds"])}


def train(policy: str, data: Path, out: Path, steps: int | None, sets: Sequence[str],
          device: str) -> dict[str, Any]:
    """``robokit train`` with the policy's config file; returns its times and the command."""
    config = CONFIGS / f"goal_{policy}.toml"
    cmd = [sys.executable, "-m", "robokit.cli", "train", str(data), "--config", str(config), "--out", str(out),
           "--device", device]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    for item in sets:
        cmd += ["--set", item]
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.train.log"
    command = " ".join(["robokit", *cmd[3:]])
    print(f"training {policy}: {command} (log: {log})", flush=True)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    _run_logged(cmd, log, f"training {policy}")
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    times = {"train_seconds": round(wall, 1), "train_cpu_seconds": round(cpu, 1),
             "train_command": command, "train_log": str(log),
             "train_config_file": str(config), "train_config": train_options(policy, steps, sets)}
    (out / "benchmark_train.json").write_text(json.dumps(times, indent=2) + "\n")
    return times


def train_options(policy: str, steps: int | None, sets: Sequence[str]) -> dict[str, Any]:
    """The training configuration as run: the config file's values with the overrides applied."""
    from robokit.commands.train_cmd import coerce_policy_value, load_config_file

    values = load_config_file(CONFIGS / f"goal_{policy}.toml")
    if steps is not None:
        values["steps"] = steps
    for item in sets:
        key, _, text = item.partition("=")
        key = key.strip().replace("-", "_")
        values.setdefault("policy_config", {})[key] = coerce_policy_value(policy, key, text)
    if "image_size" in values:
        values["image_size"] = "x".join(str(v) for v in values["image_size"])
    return values


# -- evaluation ----------------------------------------------------------------------------------------
def read_unknown_words_as_unk(policy: Any) -> str:
    """Make a loaded policy read words it never saw as its unknown-word token; says what it did."""
    config = getattr(policy, "config", None)
    in_config = hasattr(config, "unknown_words")
    if in_config:
        setattr(config, "unknown_words", "unk")  # noqa: B010 (not every policy config has the field)
    words = False
    for module in policy.modules() if hasattr(policy, "modules") else ():
        tokenizer = getattr(module, "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "unknown_words"):
            tokenizer.unknown_words = "unk"  # built from the config at load time: set it here too
            words = True
    if words:
        return "unknown words read as one unknown token (policy.config.unknown_words = 'unk')"
    if in_config:
        return ("no word tokenizer found in the policy (policy.config.unknown_words = 'unk' set anyway): "
                "the paraphrases reach it as they are")
    return "the policy has no word vocabulary: the paraphrases reach it as they are"


def expert_on_seeds(held_out: range, only: Sequence[str] = ()) -> list[bool]:
    """The baseline: the scripted expert on the evaluation's seeds and instructions, in its order."""
    from robokit.hardware.sim import PandaSimEnv, list_tasks
    from robokit.hardware.sim.expert import run_expert_episode

    instructions = list(only) or list_tasks(TASK_SET)
    with PandaSimEnv(task=TASK_SET, seed=held_out.start, camera_names=(), control_hz=FPS) as env:
        return [bool(run_expert_episode(env, seed=seed, task=instructions[i % len(instructions)]).success)
                for i, seed in enumerate(held_out)]


def _progress(label: str, total: int, names: Mapping[str, str] | None) -> Any:
    def report(outcome: Any) -> None:
        verdict = "success" if outcome.success else FAILURE_LABELS.get(outcome.failure, outcome.failure)
        told = (names or {}).get(outcome.task, outcome.task)
        print(f"  {label} {outcome.index + 1}/{total} seed {outcome.seed}: {told}: {verdict}", flush=True)

    return report


def evaluate(source: Any, held_out: range, goal: str, device: str, task_text: dict[str, str] | None = None,
             label: str = "episode", only: Sequence[str] = (), mode: str = EVAL_MODE,
             query_every: int = QUERY_EVERY, k: float = ENSEMBLE_K) -> tuple[EvalResults, float]:
    """Evaluate a checkpoint path or policy object on the held-out seeds; (results, seconds)."""
    config = EvalConfig(task_set=TASK_SET, episodes=len(held_out), seed_start=held_out.start, goal=goal,
                        mode=mode, query_every=query_every, k=k, device=device, task_text=task_text,
                        tasks=tuple(only))
    t0 = time.perf_counter()
    results = evaluate_in_sim(source, config, on_episode=_progress(label, len(held_out), task_text))
    return results, time.perf_counter() - t0


# -- tables --------------------------------------------------------------------------------------------
GRASP_FIELDS = ("across", "along", "height", "yaw_error", "across_after", "height_after")


def grasp_summary(results: EvalResults) -> dict[str, dict[str, Any]]:
    """Where the hand was against the named cube when it closed, by outcome (success / each failure):
    the number of episodes that closed, and the median and 90th percentile of each offset's
    magnitude (``height`` signed: TCP above the cube's centre)."""
    groups: dict[str, list[Any]] = {}
    for o in results.outcomes:
        if o.grasp is not None:
            groups.setdefault("success" if o.success else str(o.failure), []).append(o.grasp)
    summary: dict[str, dict[str, Any]] = {}
    for name, grasps in groups.items():
        row: dict[str, Any] = {"closed": len(grasps)}
        for f in GRASP_FIELDS:
            values = [getattr(g, f) for g in grasps if getattr(g, f) is not None]
            if not values:
                continue
            v = np.asarray(values, dtype=float)
            mag = v if f.startswith("height") else np.abs(v)
            row[f] = {"median": round(float(np.median(mag)), 4), "p90": round(float(np.percentile(mag, 90)), 4)}
        summary[name] = row
    return summary


def format_grasps(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The grasp summary as a Markdown table: median (90th percentile) per offset, cm and degrees."""
    head = ["outcome", "closed", *GRASP_FIELDS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, row in summary.items():
        cells = [FAILURE_LABELS.get(name, name), str(row["closed"])]
        for f in GRASP_FIELDS:
            scale, unit = (1.0, "°") if f == "yaw_error" else (100.0, " cm")
            cells.append(f"{scale * row[f]['median']:.1f} ({scale * row[f]['p90']:.1f}){unit}" if f in row else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _pct(ok: int, n: int) -> str:
    return f"{ok}/{n} ({100 * ok / n:.0f}%)" if n else "-"


def _grounding_cell(g: Grounding) -> str:
    """Episodes whose first cube was the named one, of those that went to a cube; then how many
    went to no cube at all."""
    cell = _pct(g.correct, g.counted)
    return cell + (f"; {g.without} to no cube" if g.without else "")


def baseline_per_task(results: EvalResults, baseline: Sequence[bool]) -> dict[str, tuple[int, int]]:
    """instruction -> the baseline's (successes, episodes) on the episodes the policy ran
    (``baseline[i]``: did the baseline succeed on evaluation episode i, the same seed)."""
    table: dict[str, tuple[int, int]] = {}
    for o in results.outcomes:
        if o.index < len(baseline):
            s, n = table.get(o.task, (0, 0))
            table[o.task] = (s + int(baseline[o.index]), n + 1)
    return table


def table_rows(results: EvalResults, baseline: Sequence[bool] | None = None,
               names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per instruction and an ``overall`` row: successes, failure counts, grounding and
    (with ``baseline``, its success per evaluation episode) the baseline's successes on the same
    seeds. ``names`` shows an instruction under another name (its paraphrase)."""
    rows = []
    per_baseline = baseline_per_task(results, baseline) if baseline is not None else {}
    keys: list[str | None] = [*results.per_task(), None]
    for task in keys:
        mine = [o for o in results.outcomes if task is None or o.task == task]
        g = results.grounding(task)
        row: dict[str, Any] = {
            "instruction": "overall" if task is None else (names or {}).get(task, task),
            "successes": sum(o.success for o in mine), "episodes": len(mine),
            "failures": results.failure_counts(task), "grounding_accuracy": g.accuracy,
            "grounding": {"correct": g.correct, "counted": g.counted, "without": g.without}}
        row["success_rate"] = row["successes"] / row["episodes"] if row["episodes"] else None
        if task is not None and names:
            row["task"] = task
        if baseline is not None:
            counted = list(per_baseline.values()) if task is None else [per_baseline.get(task, (0, 0))]
            row["baseline_successes"] = sum(s for s, _ in counted)
            row["baseline_episodes"] = sum(n for _, n in counted)
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], first_column: str = "instruction",
                 baseline: str = "expert") -> list[str]:
    """The rows of :func:`table_rows` as a Markdown table (one line each); ``baseline`` heads the
    baseline's column, followed by the ratio policy / baseline."""
    with_baseline = any("baseline_episodes" in r for r in rows)
    head = [first_column, "success", *(FAILURE_LABELS[f] for f in FAILURES), "grounding"]
    if with_baseline:
        head += [baseline, "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        name = r["instruction"] if r["instruction"] != "overall" else "**overall**"
        g = r["grounding"]
        cells = [name, _pct(r["successes"], r["episodes"]), *(str(r["failures"][f]) for f in FAILURES),
                 _grounding_cell(Grounding(g["correct"], g["counted"], g["without"]))]
        if with_baseline:
            bs, bn = r.get("baseline_successes", 0), r.get("baseline_episodes", 0)
            rate = r["successes"] / r["episodes"] if r["episodes"] else 0.0
            cells += [_pct(bs, bn), f"{rate / (bs / bn):.2f}" if bn and bs else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# -- the run -------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--policy", choices=POLICIES, default="act")
    parser.add_argument("--goal", choices=("text", "image"), default="text",
                        help="what the policy is told at evaluation: the instruction or a goal image")
    parser.add_argument("--episodes-per-task", type=int, default=None, metavar="N",
                        help="scripted demonstrations per instruction (default 20)")
    parser.add_argument("--eval-seeds", default=None, metavar="A:B",
                        help="held-out evaluation seeds A..B-1 (default 2000:2120: 20 per instruction)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="results file (default benchmarks/results/goal_sim_success_<policy>_<goal>.json)")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help="dataset folder, recorded or topped up as needed (default data/goal_multi)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="training run folder (default runs/goal_sim_success/<policy>-<goal>)")
    parser.add_argument("--steps", type=int, default=None, help="override the config file's training steps")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="policy option for training (repeatable), as robokit train --set")
    parser.add_argument("--eval-only", type=Path, default=None, metavar="CHECKPOINT",
                        help="skip recording and training: evaluate this checkpoint")
    parser.add_argument("--instruction", dest="instructions", action="append", default=[], metavar="TEXT",
                        help="only this instruction (repeatable): record, train and evaluate on it alone "
                             "(e.g. single-instruction ACT)")
    parser.add_argument("--paraphrases", action="store_true",
                        help="also evaluate one paraphrase per instruction in words the training set never had")
    parser.add_argument("--mode", default=EVAL_MODE, choices=("chunk", "ensemble"),
                        help="how the evaluation executes action chunks (default: chunk)")
    parser.add_argument("--query-every", type=int, default=QUERY_EVERY, metavar="N",
                        help=f"query the policy every N control steps (default {QUERY_EVERY})")
    parser.add_argument("--k", type=float, default=ENSEMBLE_K,
                        help=f"temporal ensembling weight exp(-k*i), ensemble mode (default {ENSEMBLE_K})")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (training and evaluation)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run, not a figure: 1 episode per instruction, 5 steps, 6 seeds, "
                             "data and run in a temporary folder unless given")
    args = parser.parse_args(argv)
    quick = args.quick
    args.episodes_per_task = args.episodes_per_task or (1 if quick else 20)
    args.eval_seeds = args.eval_seeds or ("2000:2006" if quick else "2000:2120")
    if quick and args.steps is None:
        args.steps = 5
    if args.episodes_per_task <= 0:
        parser.error("--episodes-per-task must be positive")
    if args.steps is not None and args.steps <= 0:
        parser.error("--steps must be positive")
    for item in args.sets:
        if "=" not in item:
            parser.error(f"--set takes KEY=VALUE, got {item!r}")
    return args


def _print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)
    sys.stdout.flush()


def _paraphrase_section(checkpoint: Path, held_out: range, device: str, original: EvalResults | None,
                        execution: Mapping[str, Any]) -> dict[str, Any]:
    from robokit.policies.checkpoint import load_checkpoint
    from robokit.training.runtime import pick_device

    policy, _ = load_checkpoint(checkpoint, map_location=pick_device(device))
    how = read_unknown_words_as_unk(policy)
    print(f"\nparaphrases, on the same seeds, each in its instruction's scene; {how}:", flush=True)
    results, seconds = evaluate(policy, held_out, "text", device, task_text=PARAPHRASES, label="paraphrase",
                                **execution)
    baseline = None
    if original is not None:
        done = {o.index: o.success for o in original.outcomes}
        baseline = [done.get(i, False) for i in range(len(held_out))]
    rows = table_rows(results, baseline, names=PARAPHRASES)
    print()
    _print_lines(format_table(rows, "paraphrase", baseline="original words"))
    print(f"paraphrases: {_pct(results.successes, results.episodes)} in {seconds:.0f} s", flush=True)
    return {"success_rate": results.success_rate, "successes": results.successes, "episodes": results.episodes,
            "unknown_words": how, "paraphrases": PARAPHRASES, "per_instruction": rows,
            "baseline": "the original instruction on the same seeds" if baseline is not None else None,
            "eval_seconds": round(seconds, 1), "evaluation": results.to_dict()}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="goal_sim_success_") as tmp:
        root = Path(tmp) if args.quick else None
        default_data = "data/goal_multi_seg" if args.policy in SEGMENTED else "data/goal_multi"  # masks recorded
        args.data = args.data or (root / "data" if root else Path(default_data))
        args.out = args.out or (root or Path("runs/goal_sim_success")) / f"{args.policy}-{args.goal}"
        run(args)


def run(args: argparse.Namespace) -> None:
    """The benchmark with the options of :func:`parse_args` (data and out filled in)."""
    held_out = parse_seeds(args.eval_seeds)
    from robokit.hardware.sim import list_tasks

    unknown = [t for t in args.instructions if t not in list_tasks(TASK_SET)]
    if unknown:
        raise SystemExit(f"--instruction {unknown[0]!r} is not one of: {'; '.join(list_tasks(TASK_SET))}")
    out: Path = args.out
    name = f"goal_sim_success_{args.policy}_{args.goal}" + ("_quick" if args.quick else "")
    json_path: Path = args.json or RESULTS / f"{name}.json"
    if len(held_out) % len(PARAPHRASES):
        print(f"warning: {len(held_out)} evaluation episodes do not split evenly over the "
              f"{len(PARAPHRASES)} instructions", flush=True)
    dataset: dict[str, Any] = {"folder": str(args.data)}
    times: dict[str, Any] = {}
    if args.eval_only is not None:
        checkpoint = args.eval_only
        if not checkpoint.is_file():
            raise SystemExit(f"--eval-only {checkpoint}: no such checkpoint")
        saved = checkpoint.parent / "benchmark_train.json"
        times = json.loads(saved.read_text()) if saved.is_file() else {}
        found = census(args.data)
        if found.counts:
            hits = overlap(found.all_seeds, held_out)
            if hits:
                raise SystemExit(f"{args.data} was recorded on evaluation seeds {hits[:10]}: "
                                 "choose other --eval-seeds")
            dataset["seeds_checked"] = True
        else:
            print(f"warning: {args.data} holds no episodes: the held-out seeds are not checked against "
                  "the training data (give the checkpoint's --data)", flush=True)
            dataset["seeds_checked"] = False
    else:
        checkpoint = out / CHECKPOINT
        if checkpoint.exists():
            raise SystemExit(f"{out} already holds a training run: evaluate it with --eval-only {checkpoint}, "
                             "or give another --out")
        segmented = args.policy in SEGMENTED
        dataset.update(record_dataset(args.data, args.episodes_per_task, held_out, only=args.instructions,
                                      segmentation=segmented))
        found = check_dataset(args.data, args.episodes_per_task, held_out, only=args.instructions)
        dataset["seeds_checked"] = True
        extra = {t: n for t, n in found.counts.items() if n > args.episodes_per_task}
        if extra:
            print(f"note: {args.data} holds more than {args.episodes_per_task} episodes of some instructions "
                  f"({extra}); training uses them all", flush=True)
        times.update(train(args.policy, args.data, out, args.steps, args.sets, args.device))
        if segmented:
            times.update(segmenter_seconds(out))
        print(f"training: {times['train_seconds']:.0f} s wall ({times['train_cpu_seconds']:.0f} s CPU)"
              + (f", of which the segmenter {times['segmenter_seconds']:.0f} s" if segmented else ""), flush=True)
    dataset["episodes_per_instruction"] = found.counts
    dataset["scene_seeds"] = found.seeds

    print(f"scripted expert on the held-out seeds {held_out.start}..{held_out.stop - 1} (the baseline)...",
          flush=True)
    t0 = time.perf_counter()
    expert = expert_on_seeds(held_out, args.instructions)
    expert_seconds = time.perf_counter() - t0
    print(f"evaluating {checkpoint} ({args.goal} goals, {args.mode} mode, a chunk every {args.query_every} steps)",
          flush=True)
    results, eval_seconds = evaluate(str(checkpoint), held_out, args.goal, args.device, only=args.instructions,
                                     mode=args.mode, query_every=args.query_every, k=args.k)
    rows = table_rows(results, expert)
    print(f"\n{args.policy}, {args.goal} goals, {len(held_out)} held-out seeds "
          f"{held_out.start}..{held_out.stop - 1}:\n")
    _print_lines(format_table(rows))
    grasps = grasp_summary(results)
    print("\nthe hand against the named cube when the gripper closed, median (90th percentile); "
          "'after' = once the fingers shut:\n")
    _print_lines(format_grasps(grasps))
    expert_rate = sum(expert) / len(expert)
    ratio = f"{results.success_rate / expert_rate:.2f}" if expert_rate else "-"
    print(f"\noverall: {_pct(results.successes, results.episodes)}; scripted expert "
          f"{_pct(sum(expert), len(expert))}; ratio {ratio}", flush=True)
    paraphrases = None
    if args.paraphrases:
        paraphrases = _paraphrase_section(checkpoint, held_out, args.device,
                                          results if args.goal == "text" else None,
                                          {"mode": args.mode, "query_every": args.query_every, "k": args.k})
    if "train_seconds" in times:
        print(f"training time: {times['train_seconds']:.0f} s wall ({times.get('train_cpu_seconds', 0):.0f} s CPU)")
    print(f"evaluation time: {eval_seconds:.0f} s; expert baseline {expert_seconds:.0f} s", flush=True)

    import torch

    report = {
        "benchmark": "goal_sim_success", "quick": args.quick, "policy": args.policy, "goal": args.goal, "task_set": TASK_SET,
        "success_rate": results.success_rate, "successes": results.successes, "episodes": results.episodes,
        "per_instruction": rows, "failure_counts": results.failure_counts(), "grasps": grasps,
        "grounding_accuracy": results.grounding().accuracy, "grounding": rows[-1]["grounding"],
        "baseline": "scripted expert driven directly on the same seeds",
        "expert_success_rate": expert_rate, "ratio_policy_to_expert":
            results.success_rate / expert_rate if expert_rate else None,
        "seeds": {"eval": [held_out.start, held_out.stop - 1], "eval_range": args.eval_seeds,
                  "recording_seeds": dataset.get("record_seeds", {}), "disjoint": dataset["seeds_checked"]},
        "config": {"train_config_file": times.get("train_config_file"),
                   # as trained (saved next to the checkpoint; None for a run this script did not train)
                   "train": times.get("train_config"),
                   "episodes_per_task": args.episodes_per_task,
                   "record": {"task_set": TASK_SET, "image_size": IMAGE_SIZE, "fps": FPS, "cameras": ["top", "wrist"],
                              "compress": COMPRESS, "workers": RECORD_WORKERS},
                   "eval": {"mode": args.mode, "query_every": args.query_every, "k": args.k, "goal": args.goal,
                            "checkpoint": str(checkpoint), "eval_only": args.eval_only is not None}},
        **{k: times.get(k) for k in ("train_seconds", "train_cpu_seconds", "train_command")},
        "eval_seconds": round(eval_seconds, 1), "expert_seconds": round(expert_seconds, 1),
        "dataset": dataset, "paraphrases": paraphrases, "evaluation": results.to_dict(),
        "torch_threads": torch.get_num_threads(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_1m": round(os.getloadavg()[0], 1)},
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results in {json_path}")


if __name__ == "__main__":
    main()
