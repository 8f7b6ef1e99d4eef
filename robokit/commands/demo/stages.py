"""The demo's stages, each a call into the library the ``robokit`` commands use.

1. scene      render the ``top`` and ``wrist`` cameras into ``scene.png``
2. expert     run the scripted expert on a few seeds and check that it solves the task
3. record     record scripted demonstrations (:class:`robokit.record.session.RecordingSession`)
4. train      train a CPU-sized ACT on them (:func:`robokit.training.trainer.train`)
5. deploy     run the trained policy in the simulator on held-out seeds
              (:func:`robokit.deploy.evaluate.evaluate_in_sim`), record the first rollouts and turn
              them into joint plots and MP4s (:func:`robokit.viz.episode.render_episode`)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from robokit.commands.common import format_duration, training_fields
from robokit.commands.demo.config import TASK, DemoConfig
from robokit.errors import UserError


def _progress(console: Console, label: str, *fields: str) -> Progress:
    """A bar with the count, the elapsed and remaining time, and the task's ``fields``."""
    columns = [TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn()]
    columns += [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    return Progress(*columns, console=console, transient=False)


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


def recorded_seeds(paths: Sequence[Path]) -> list[int]:
    """The simulator scene seeds the episodes at ``paths`` were recorded on."""
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
            info = "  ".join(training_fields(p, digits=3, rate_digits=2))
            progress.update(bar, completed=p.step, total=p.total_steps, info=info)

        result = train(options, progress=on_progress)
    if result.interrupted:
        raise KeyboardInterrupt
    console.print(f"trained {result.step} steps in {format_duration(result.train_seconds)} on {result.device}; "
                  f"checkpoints in {result.out_dir}", highlight=False)
    return result


def deploy_in_sim(cfg: DemoConfig, checkpoint: Path, console: Console) -> tuple[Any, list[Path], list[Path]]:
    """Stage 5: evaluate on held-out seeds; the first ``videos`` rollouts become a plot + MP4 each.

    Returns (EvalResults of every episode, MP4 paths, plot paths).
    """
    from robokit.deploy.evaluate import EvalConfig, EvalResults, evaluate_in_sim
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

        query_every = cfg.query_every if cfg.mode == "chunk" else None
        parts = [(cfg.eval_seed_start, recorded, rollouts), (cfg.eval_seed_start + recorded,
                                                             cfg.eval_episodes - recorded, None)]
        for seed_start, n, record_dir in parts:
            if n > 0:
                config = EvalConfig(episodes=n, seed_start=seed_start, record_dir=record_dir, mode=cfg.mode,
                                    query_every=query_every, device=cfg.device)
                part = evaluate_in_sim(checkpoint, config, on_episode=on_episode)
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
