"""`make demo`: the whole imitation-learning loop on the embedded MuJoCo simulator, in one process.

Stages (each calls the library robokit's commands use, nothing is re-implemented here):

1. scene      render the ``top`` and ``wrist`` cameras into ``scene.png``
2. expert     run the scripted expert on a few seeds and check that it solves the task
3. record     record scripted demonstrations (:class:`robokit.record.session.RecordingSession`)
4. train      train a CPU-sized ACT on them (:func:`robokit.training.trainer.train`)
5. deploy     run the trained policy in the simulator on held-out seeds
              (:func:`robokit.deploy.evaluate.evaluate_in_sim`), record the first rollouts and turn
              them into joint plots and MP4s (:func:`robokit.viz.episode.render_episode`)

and prints the success rate and where everything is. The default sizes (:class:`DemoConfig`) finish
in about 6 minutes on 2 CPU cores (the budget is 15); see docs/demo.md for the measured figures. A tiny run::

    python -m robokit.demo --out /tmp/demo --episodes 2 --steps 5 --eval-episodes 1 --image-size 32x40

The output folder is the demo's own: an earlier demo's output there is deleted first (and said so);
a folder holding anything else is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a 2-core machine that
# other processes also use, spinning threads wait for a descheduled peer at every parallel region;
# measured here under load, a 2-thread training step of the demo's model took 4.5x longer
# spinning than sleeping (1.13 s vs 0.24 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.rule import Rule
from rich.table import Table

# The simulator package picks the GL backend (and preloads Triton's library, see docs/sim.md)
# before anything imports torch or mujoco.
import robokit.hardware.sim  # noqa: F401
from robokit.errors import RobokitError, UserError

MARKER = "robokit-demo.json"  # written first into the output folder: marks it as the demo's own
TASK = "pick_place"


# -------------------------------------------------------------------------------------------------
# Configuration
# -------------------------------------------------------------------------------------------------
@dataclass
class DemoConfig:
    """Every size of the demo. The defaults are what ``make demo`` runs (docs/demo.md)."""

    out: Path = Path("demo_out")
    # data
    episodes: int = 50  # scripted demonstrations recorded
    image_size: tuple[int, int] = (64, 80)  # (H, W) recorded, trained on and rendered at deploy
    cameras: tuple[str, ...] = ("top", "wrist")
    fps: float = 15.0  # control/recording rate: the 5 s expert episode is 75 steps (+5 end frames)
    record_seed: int = 0  # seeds the scene draws of the recording (random 31-bit scene seeds)
    expert_seeds: int = 5  # seeds of the scripted-expert check
    # model and training
    steps: int = 2500
    batch_size: int = 32
    chunk_size: int = 20  # 1.3 s at 15 Hz
    lr: float = 3e-4
    lr_schedule: str = "cosine"  # constant | cosine (measured: 96% vs 88% on 50 held-out seeds)
    augment_shift: int = 0  # random image shift (pixels) while training
    val_fraction: float = 0.0  # every demonstration trains; the held-out seeds in simulation test
    val_samples: int = 128
    seed: int = 0
    device: str = "auto"
    policy_config: dict[str, Any] = field(default_factory=lambda: {
        "backbone": "small", "hidden_dim": 128, "nheads": 4, "dim_feedforward": 512, "enc_layers": 2,
        "dec_layers": 1, "vae_enc_layers": 2, "latent_dim": 32, "dropout": 0.0, "kl_weight": 10.0,
        "lr_backbone": 3e-4,
    })
    checkpoint: str = "last"  # which checkpoint is deployed: last | best
    # deploy
    eval_episodes: int = 20
    eval_seed_start: int = 1000  # held out: recorded scenes use random 31-bit seeds
    mode: str = "chunk"  # ensemble | chunk (see docs/demo.md for why chunk)
    query_every: int | None = 10  # chunk mode: a new chunk every N steps, blended with the last one
    videos: int = 2  # rollouts recorded and rendered into a plot + MP4
    video_height: int = 240

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["out"] = str(self.out)
        out["image_size"] = list(self.image_size)
        out["cameras"] = list(self.cameras)
        return out


@dataclass
class StageTime:
    name: str
    wall_s: float
    cpu_s: float  # this process's CPU time (all threads): what the stage costs on a free machine


@dataclass
class DemoResult:
    """Where everything is, and the figures."""

    config: DemoConfig
    scene_png: Path | None = None
    expert_success: float | None = None
    data_dir: Path | None = None
    recorded_episodes: int = 0
    recorded_steps: int = 0
    run_dir: Path | None = None
    checkpoint: Path | None = None
    plots: list[Path] = field(default_factory=list)
    train_steps: int = 0
    train_seconds: float = 0.0
    train_device: str = ""
    final_train_loss: float | None = None
    best_val_loss: float | None = None
    success_rate: float | None = None
    successes: int = 0
    eval_episodes: int = 0
    failed_seeds: list[int] = field(default_factory=list)
    rollout_dir: Path | None = None
    videos: list[Path] = field(default_factory=list)
    rollout_plots: list[Path] = field(default_factory=list)
    stages: list[StageTime] = field(default_factory=list)
    total_wall_s: float = 0.0
    total_cpu_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, list):
                return [plain(x) for x in v]
            return v

        out = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)
               if f.name not in ("config", "stages")}
        out["config"] = self.config.to_dict()
        out["stages"] = [dataclasses.asdict(s) for s in self.stages]
        return out


# -------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------
def prepare_output(out: Path) -> str | None:
    """Make ``out`` an empty demo folder. Returns a message when an earlier demo's output was removed.

    A folder that holds something other than a demo's output is never touched (UserError).
    """
    out = Path(out)
    message = None
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out} is a file; choose a folder for the demo's output")
        if any(out.iterdir()):
            if not (out / MARKER).is_file():
                raise UserError(f"--out {out} is not empty and was not written by the demo; choose "
                                "another folder (the demo deletes only its own earlier output)")
            shutil.rmtree(out)
            message = f"removed the previous demo output in {out}"
    out.mkdir(parents=True, exist_ok=True)
    return message


@contextlib.contextmanager
def _timed(stages: list[StageTime], name: str) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        stages.append(StageTime(name, time.perf_counter() - wall, time.process_time() - cpu))


@contextlib.contextmanager
def _log_to(console: Console) -> Iterator[None]:
    """Library warnings (clamped joint targets, ...) go through the console, not over the bars."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = [RichHandler(console=console, show_path=False, show_time=False, level=logging.WARNING)]
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers, root.level = saved, level


def _progress(console: Console, label: str, *fields: str) -> Progress:
    columns = [TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn()]
    columns += [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    return Progress(*columns, console=console, transient=False)


def _fmt_s(seconds: float) -> str:
    seconds = max(0, round(seconds))
    m, s = divmod(seconds, 60)
    return f"{m}:{s:02d}" if m else f"{s} s"


# -------------------------------------------------------------------------------------------------
# Stages
# -------------------------------------------------------------------------------------------------
def render_scene(cfg: DemoConfig, console: Console, size: tuple[int, int] = (240, 320)) -> Path:
    """Stage 1: ``scene.png``, the ``top`` and ``wrist`` cameras side by side (seed 0)."""
    import cv2
    import numpy as np

    from robokit.hardware.sim import CAMERA_NAMES, PandaSimEnv

    path = cfg.out / "scene.png"
    with PandaSimEnv(task=TASK, seed=0, image_size=size) as env:
        image = np.concatenate([env.render(cam) for cam in CAMERA_NAMES], axis=1)
        instruction = env.task.instruction
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1])):
        raise UserError(f"could not write {path}; check the folder is writable")
    console.print(f"{path}: cameras {' | '.join(CAMERA_NAMES)} at {size[0]}x{size[1]}; task: {instruction}",
                  highlight=False)
    return path


def check_expert(cfg: DemoConfig, console: Console) -> float:
    """Stage 2: the scripted expert on seeds 0..expert_seeds-1; returns its success rate."""
    from robokit.hardware.sim import PandaSimEnv, run_expert_episode

    ok = 0
    with PandaSimEnv(task=TASK, seed=0, camera_names=(), control_hz=cfg.fps) as env, \
            _progress(console, "expert", "info") as progress:
        bar = progress.add_task("expert", total=cfg.expert_seeds, info="")
        for seed in range(cfg.expert_seeds):
            result = run_expert_episode(env, seed=seed)
            ok += int(result.success)
            progress.update(bar, advance=1, info=f"solved {ok}/{seed + 1}")
    rate = ok / cfg.expert_seeds
    console.print(f"scripted expert: {ok}/{cfg.expert_seeds} seeds solved ({rate:.0%})", highlight=False)
    if ok < cfg.expert_seeds:
        console.print("[yellow]the expert failed on some seeds; failed demonstrations are not recorded[/]")
    return rate


def record_demonstrations(cfg: DemoConfig, console: Console) -> tuple[Path, list[Path]]:
    """Stage 3: ``cfg.episodes`` scripted demonstrations into ``out/data`` (robokit episodes)."""
    from robokit.hardware.sim import PandaSimEnv
    from robokit.record.session import RecordConfig, RecordingSession
    from robokit.record.teleop import Scripted

    data = cfg.out / "data"
    config = RecordConfig(out=data, fps=cfg.fps, episodes=cfg.episodes, compress="lzf")
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(PandaSimEnv(task=TASK, seed=cfg.record_seed, image_size=cfg.image_size,
                                              camera_names=cfg.cameras, control_hz=cfg.fps))
        session = RecordingSession(env.robot, env.cameras, Scripted(env), config, sim_env=env)
        session.prepare()
        stack.enter_context(env.robot)
        for cam in env.cameras.values():
            stack.enter_context(cam)
        progress = stack.enter_context(_progress(console, "record", "info"))
        bar = progress.add_task("record", total=cfg.episodes, info="")

        def tick(s: RecordingSession) -> None:
            st = s.status()
            progress.update(bar, completed=len(s.saved),
                            info=f"episode_{st.episode_index} step {st.steps}  failed {s.failed}")

        saved = session.run(None, tick)
        progress.update(bar, completed=len(saved))
    console.print(f"{len(saved)} episodes in {data} ({', '.join(cfg.cameras)} at "
                  f"{cfg.image_size[0]}x{cfg.image_size[1]}, {cfg.fps:g} Hz, lzf)", highlight=False)
    if len(saved) < cfg.episodes:
        raise UserError(f"only {len(saved)} of {cfg.episodes} demonstrations were recorded")
    return data, saved


def _recorded_seeds(paths: Sequence[Path]) -> list[int]:
    from robokit.episodes.reader import open_episode

    seeds = []
    for p in paths:
        with open_episode(p) as ep:
            seed = ep.attrs.get("sim_seed")
            if seed is not None:
                seeds.append(int(seed))
    return seeds


def train_policy(cfg: DemoConfig, data: Path, console: Console) -> Any:
    """Stage 4: ACT on the recorded episodes into ``out/run``; returns the TrainResult."""
    from robokit.training.trainer import TrainOptions, train

    options = TrainOptions(
        data=data, out=cfg.out / "run", policy="act", steps=cfg.steps, batch_size=cfg.batch_size,
        lr=cfg.lr, lr_schedule=cfg.lr_schedule, camera_names=list(cfg.cameras), chunk_size=cfg.chunk_size, device=cfg.device,
        seed=cfg.seed, val_fraction=cfg.val_fraction, val_samples=cfg.val_samples,
        augment_shift=cfg.augment_shift, policy_config=dict(cfg.policy_config), num_workers=0)
    model = ", ".join(f"{k}={v}" for k, v in cfg.policy_config.items())
    console.print(f"ACT ({model}), chunk {cfg.chunk_size}, batch {cfg.batch_size}, lr {cfg.lr:g}, "
                  f"{cfg.steps} steps", highlight=False)
    with _progress(console, "train", "info") as progress:
        bar = progress.add_task("train", total=cfg.steps, info="")

        def on_progress(p: Any) -> None:
            parts = []
            if p.loss is not None:
                parts.append(f"loss {p.loss:.3f}")
            if p.val_loss is not None:
                parts.append(f"val {p.val_loss:.3f}")
            if p.steps_per_s:
                parts.append(f"{p.steps_per_s:.2f} steps/s")
            progress.update(bar, completed=p.step, total=p.total_steps, info="  ".join(parts))

        result = train(options, progress=on_progress)
    if result.interrupted:
        raise KeyboardInterrupt
    console.print(f"trained {result.step} steps in {_fmt_s(result.train_seconds)} on {result.device}; "
                  f"checkpoints in {result.out_dir}", highlight=False)
    return result


def deploy_in_sim(cfg: DemoConfig, checkpoint: Path, console: Console) -> tuple[Any, list[Path], list[Path]]:
    """Stage 5: evaluate on held-out seeds; the first ``videos`` rollouts become a plot + MP4 each.

    Returns (EvalResults of every episode, MP4 paths, plot paths).
    """
    from robokit.deploy.evaluate import EvalResults, evaluate_in_sim
    from robokit.viz.episode import render_episode

    rollouts = cfg.out / "rollouts"
    recorded = min(cfg.videos, cfg.eval_episodes)
    results = EvalResults()
    with _progress(console, "deploy", "info") as progress:
        bar = progress.add_task("deploy", total=cfg.eval_episodes, info="")

        def on_episode(o: Any) -> None:
            results.outcomes.append(o)
            progress.update(bar, advance=1, info=f"success {results.successes}/{results.episodes}  "
                                                 f"(seed {o.seed}: {'ok' if o.success else o.reason})")

        common = {"mode": cfg.mode, "query_every": cfg.query_every if cfg.mode == "chunk" else None,
                  "device": cfg.device, "on_episode": on_episode}
        parts = [(cfg.eval_seed_start, recorded, rollouts), (cfg.eval_seed_start + recorded,
                                                             cfg.eval_episodes - recorded, None)]
        for seed_start, n, record_dir in parts:
            if n > 0:
                part = evaluate_in_sim(checkpoint, episodes=n, seed_start=seed_start, record_dir=record_dir,
                                       **common)
                results.policy, results.settings = part.policy, {**part.settings,
                                                                  "episodes": cfg.eval_episodes,
                                                                  "seed_start": cfg.eval_seed_start}
    videos, plots = [], []
    outcomes = {o.episode_file: o for o in results.outcomes if o.episode_file}
    for path, o in outcomes.items():
        viz = render_episode(path, rollouts / f"seed{o.seed}_{'success' if o.success else 'failure'}",
                             video=True, video_height=cfg.video_height)
        plots.append(viz.plot)
        if viz.video is not None:
            videos.append(viz.video)
    return results, videos, plots


# -------------------------------------------------------------------------------------------------
# The whole loop
# -------------------------------------------------------------------------------------------------
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

    def header(n: int, title: str) -> None:
        console.print()
        console.print(Rule(f"[bold]{n}/5 {title}", align="left"))

    stages = result.stages
    with _log_to(console):
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
            train_seeds = set(_recorded_seeds(saved))
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
        times.add_row(s.name, _fmt_s(s.wall_s), _fmt_s(s.cpu_s))
    times.add_row("[bold]total", f"[bold]{_fmt_s(result.total_wall_s)}", _fmt_s(result.total_cpu_s))
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
    console.print(f"next: robokit deploy --sim {result.checkpoint} --episodes 50", soft_wrap=True,
                  highlight=False)
    console.print(f"demo finished in {_fmt_s(result.total_wall_s)} (wall clock)", highlight=False)


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------
def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be HxW, e.g. 96x128, got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"image size {text!r} is below the backbone's 16-pixel stride")
    return h, w


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(
        prog="python -m robokit.demo",
        description="The whole loop in simulation: scene -> scripted expert -> record -> train ACT -> deploy.")
    p.add_argument("--out", type=Path, default=d.out, help="output folder; an earlier demo output there "
                   "is replaced (default %(default)s)")
    p.add_argument("--episodes", type=_positive, default=d.episodes, help="demonstrations (default %(default)s)")
    p.add_argument("--image-size", type=_size, default=d.image_size, metavar="HxW",
                   help="camera images, recorded and trained on (default 64x80)")
    p.add_argument("--cameras", default=",".join(d.cameras), help="comma-separated (default %(default)s)")
    p.add_argument("--fps", type=float, default=d.fps, help="control rate (default %(default)s)")
    p.add_argument("--steps", type=_positive, default=d.steps, help="training steps (default %(default)s)")
    p.add_argument("--batch-size", type=_positive, default=d.batch_size, help="(default %(default)s)")
    p.add_argument("--chunk-size", type=_positive, default=d.chunk_size, help="(default %(default)s)")
    p.add_argument("--eval-episodes", type=_positive, default=d.eval_episodes,
                   help="held-out evaluation episodes (default %(default)s)")
    p.add_argument("--eval-seed-start", type=int, default=d.eval_seed_start, help="(default %(default)s)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default=d.lr_schedule,
                   help="learning-rate schedule (default %(default)s)")
    p.add_argument("--augment-shift", type=int, default=d.augment_shift,
                   help="random image shift in pixels while training (default %(default)s)")
    p.add_argument("--mode", choices=("ensemble", "chunk"), default=d.mode,
                   help="how deploy blends action chunks (default %(default)s)")
    p.add_argument("--query-every", type=_positive, default=d.query_every,
                   help="chunk mode: steps between queries (default %(default)s)")
    p.add_argument("--videos", type=int, default=d.videos, help="rollouts rendered to MP4 (default %(default)s)")
    p.add_argument("--expert-seeds", type=_positive, default=d.expert_seeds, help="(default %(default)s)")
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda | mps (default %(default)s)")
    p.add_argument("--threads", type=_positive, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=d.seed, help="training seed (default %(default)s)")
    return p


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    cameras = tuple(c.strip() for c in args.cameras.split(",") if c.strip())
    if not cameras:
        raise UserError("--cameras needs at least one camera (top, wrist)")
    if not args.fps > 0:
        raise UserError(f"--fps must be positive, got {args.fps}")
    return DemoConfig(out=args.out, episodes=args.episodes, image_size=args.image_size, cameras=cameras,
                      fps=args.fps, steps=args.steps, batch_size=args.batch_size, chunk_size=args.chunk_size,
                      eval_episodes=args.eval_episodes, eval_seed_start=args.eval_seed_start, mode=args.mode,
                      query_every=args.query_every, lr_schedule=args.lr_schedule, augment_shift=max(0, args.augment_shift),
                      videos=max(0, args.videos), expert_seeds=args.expert_seeds, device=args.device,
                      seed=args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m robokit.demo`` (``make demo``); returns the exit code."""
    args = build_parser().parse_args(argv)
    console = Console()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        run_demo(config_from_args(args), console)
    except RobokitError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]demo interrupted[/]")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
