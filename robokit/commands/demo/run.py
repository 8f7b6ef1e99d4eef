"""The whole demo: every stage in turn, their times, ``summary.json`` and the closing summary."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def openmp_wait_policy(busy_cores: float, cores: int) -> str | None:
    """The OMP_WAIT_POLICY for the demo's training when other processes keep ``busy_cores`` of the
    machine's ``cores`` busy (None: OpenMP's default).

    Idle OpenMP threads spin for a while before they sleep, by default. On a quiet machine that is
    what keeps the many small parallel regions of a training step fast: a 2-thread step of the demo's
    model took 0.71x the time of one with sleeping threads (PASSIVE). On a machine that other
    processes keep busy, a spinning thread waits for a descheduled peer at every region: with two
    busy loops beside it the spinning step took 1.25x (up to 2.4x) the sleeping one
    (``benchmarks/omp_wait.py``).
    """
    return "PASSIVE" if busy_cores >= cores / 2 else None


def busy_cores_now(seconds: float = 0.3) -> float | None:
    """How many cores other processes keep busy, measured over ``seconds`` (this process sleeps
    meanwhile) from /proc/stat; None where that cannot be read. The load average would not do: it
    trails by a minute, so the install that ``make demo`` runs first would still count."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1.0 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


# Before torch loads OpenMP, and unless the user chose already.
if "OMP_WAIT_POLICY" not in os.environ and (_busy := busy_cores_now()) is not None:
    _policy = openmp_wait_policy(_busy, os.cpu_count() or 1)
    if _policy is not None:
        os.environ["OMP_WAIT_POLICY"] = _policy

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

# The simulator package picks the GL backend (and preloads Triton's library, see docs/sim.md)
# before anything imports torch or mujoco.
import robokit.hardware.sim  # noqa: F401
from robokit.commands.common import format_duration, log_to_console
from robokit.commands.demo.config import MARKER, DemoConfig, DemoResult, StageTime, prepare_output
from robokit.commands.demo.estimate import estimate
from robokit.commands.demo.stages import (
    check_expert,
    deploy_in_sim,
    record_demonstrations,
    recorded_seeds,
    render_scene,
    train_policy,
)


@contextlib.contextmanager
def _timed(stages: list[StageTime], name: str) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        stages.append(StageTime(name, time.perf_counter() - wall, time.process_time() - cpu))


def run_demo(cfg: DemoConfig, console: Console | None = None) -> DemoResult:
    """Run every stage with ``cfg``; returns the figures and paths (also written to ``summary.json``)."""
    console = console or Console()
    result = DemoResult(config=cfg)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    removed = prepare_output(cfg.out)
    (cfg.out / MARKER).write_text(json.dumps({"config": cfg.to_dict()}, indent=1))
    console.print(Rule("[bold]robokit demo[/]: scripted demonstrations -> ACT -> deploy, all in simulation"))
    if removed:
        console.print(removed, highlight=False)
    console.print(f"output: {cfg.out.resolve()}   torch threads: {_torch_threads()}", highlight=False)
    expected = estimate(cfg)
    result.expected_s, result.measured_step_s = expected.total_s, expected.step_s
    console.print(f"expected duration on this machine now: about {format_duration(expected.total_s)} "
                  f"(a training step measured at {expected.step_s:.2f} s: {cfg.steps} steps "
                  f"~{format_duration(expected.train_s)}, the other stages ~{format_duration(expected.other_s)})",
                  highlight=False)

    def header(n: int, title: str) -> None:
        console.print()
        console.print(Rule(f"[bold]{n}/5 {title}", align="left"))

    stages = result.stages
    with log_to_console(console):
        header(1, "scene")
        with _timed(stages, "scene"):
            result.scene_png = render_scene(cfg, console)
        header(2, "scripted expert")
        with _timed(stages, "expert"):
            result.expert_success = check_expert(cfg, console)
        header(3, f"record {cfg.episodes} scripted demonstrations")
        with _timed(stages, "record"):
            result.data_dir, saved = record_demonstrations(cfg, console)
            result.recorded_episodes = len(saved)
            train_seeds = set(recorded_seeds(saved))
            held_out = range(cfg.eval_seed_start, cfg.eval_seed_start + cfg.eval_episodes)
            overlap = sorted(train_seeds.intersection(held_out))
            if overlap:  # a 1 in ~10^7 chance with the default seeds; say so rather than hide it
                console.print(f"[yellow]note: evaluation seeds {overlap} were also recorded[/]")
        header(4, "train ACT")
        with _timed(stages, "train"):
            train_result = train_policy(cfg, result.data_dir, console)
        result.run_dir = train_result.out_dir
        result.train_steps = train_result.step
        result.train_seconds = train_result.train_seconds
        result.train_device = train_result.device
        result.final_train_loss = train_result.train_loss
        result.best_val_loss = train_result.best_val_loss
        result.recorded_steps = int(train_result.dataset.get("num_steps", 0))
        result.plots = sorted(train_result.out_dir.glob("train_val_*.png"))
        result.checkpoint = (train_result.best_path if cfg.checkpoint == "best" and train_result.best_path
                             else train_result.last_path)
        header(5, f"deploy in simulation on {cfg.eval_episodes} held-out seeds")
        with _timed(stages, "deploy"):
            evals, result.videos, result.rollout_plots = deploy_in_sim(cfg, result.checkpoint, console)
        result.rollout_dir = cfg.out / "rollouts"
        result.successes, result.eval_episodes = evals.successes, evals.episodes
        result.success_rate = evals.success_rate
        result.failed_seeds = [o.seed for o in evals.outcomes if not o.success]
        (cfg.out / "eval.json").write_text(json.dumps(evals.to_dict(), indent=1, default=str))
    result.total_wall_s = time.perf_counter() - t_wall
    result.total_cpu_s = time.process_time() - t_cpu
    (cfg.out / "summary.json").write_text(json.dumps(result.to_dict(), indent=1))
    print_summary(result, console)
    return result


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _mode_text(cfg: DemoConfig) -> str:
    if cfg.mode == "chunk" and cfg.query_every:
        return f"chunk mode, a chunk of {cfg.chunk_size} every {cfg.query_every} steps"
    return f"{cfg.mode} mode"


def print_summary(result: DemoResult, console: Console) -> None:
    """The closing summary: success rate, stage times, where the files are."""
    cfg = result.config
    console.print()
    console.print(Rule("[bold]summary"))
    rate = result.success_rate
    colour = "green" if rate is not None and rate >= 0.8 else "red"
    console.print(f"[bold {colour}]success rate: {result.successes}/{result.eval_episodes} = "
                  f"{100 * (rate or 0):.0f}%[/] on held-out seeds {cfg.eval_seed_start}.."
                  f"{cfg.eval_seed_start + cfg.eval_episodes - 1} ({_mode_text(cfg)})", highlight=False)
    if result.failed_seeds:
        console.print(f"failed seeds: {', '.join(map(str, result.failed_seeds))}", highlight=False)
    times = Table("stage", "wall", "CPU (this process)", box=None)
    for s in result.stages:
        times.add_row(s.name, format_duration(s.wall_s), format_duration(s.cpu_s))
    times.add_row("[bold]total", f"[bold]{format_duration(result.total_wall_s)}", format_duration(result.total_cpu_s))
    console.print(times)
    # Paths one per line and never wrapped, so that they can be copied.
    where = [("scene", str(result.scene_png)),
             ("demonstrations", (f"{result.data_dir}  ({result.recorded_episodes} episodes, "
                                f"{result.recorded_steps} steps)")),
             ("checkpoint", str(result.checkpoint)),
             *[("training curve", str(p)) for p in result.plots],
             *[("rollout video", str(p)) for p in result.videos],
             *[("rollout plot", str(p)) for p in result.rollout_plots],
             ("figures", f"{cfg.out / 'summary.json'}  {cfg.out / 'eval.json'}")]
    for what, path in where:
        console.print(f"{what:>15}  {path}", soft_wrap=True, highlight=False)
    if result.checkpoint is not None:
        console.print(f"next: {deploy_command(cfg, result.checkpoint, 50)}", soft_wrap=True, highlight=False)
    expected = f"; expected {format_duration(result.expected_s)}" if result.expected_s is not None else ""
    console.print(f"demo finished in {format_duration(result.total_wall_s)} (wall clock{expected}; "
                  f"training {result.train_steps} steps at {_rate(result)} steps/s)", highlight=False)


def deploy_command(cfg: DemoConfig, checkpoint: str | Path, episodes: int) -> str:
    """The ``robokit deploy --sim`` command that evaluates ``checkpoint`` as the demo does (its mode
    and query interval: the command's own default, ensembling every step, scores the demo's policy
    differently)."""
    query = f" --query-every {cfg.query_every}" if cfg.mode == "chunk" and cfg.query_every else ""
    return f"robokit deploy --sim {checkpoint} --episodes {episodes} --mode {cfg.mode}{query}"


def _rate(result: DemoResult) -> str:
    return f"{result.train_steps / result.train_seconds:.1f}" if result.train_seconds > 0 else "?"
