"""`robokit demo`: the whole loop in simulation, scene -> scripted expert -> record -> train ACT ->
deploy (what `make demo` runs; see :mod:`robokit.commands.demo`).

    robokit demo                                   # the measured default, about 6 minutes on 2 cores
    robokit demo --out /tmp/demo --episodes 2 --steps 5 --eval-episodes 1 --image-size 32x40
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from robokit.commands.common import parse_image_size
from robokit.commands.demo.config import DemoConfig

_D = DemoConfig()


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        out: Annotated[Path, typer.Option(
            "--out", help="Output folder; an earlier demo's output there is replaced.")] = _D.out,
        episodes: Annotated[int, typer.Option("--episodes", min=1, help="Demonstrations.")] = _D.episodes,
        image_size: Annotated[str, typer.Option(
            "--image-size", metavar="HxW", help="Camera images, recorded and trained on.")
        ] = f"{_D.image_size[0]}x{_D.image_size[1]}",
        cameras: Annotated[str, typer.Option("--cameras", help="Comma-separated.")] = ",".join(_D.cameras),
        fps: Annotated[float, typer.Option("--fps", help="Control rate.")] = _D.fps,
        steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps.")] = _D.steps,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Training batch size.")] = _D.batch_size,
        chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Action chunk length.")] = _D.chunk_size,
        eval_episodes: Annotated[int, typer.Option(
            "--eval-episodes", min=1, help="Held-out evaluation episodes.")] = _D.eval_episodes,
        eval_seed_start: Annotated[int, typer.Option(
            "--eval-seed-start", help="First held-out scene seed.")] = _D.eval_seed_start,
        lr_schedule: Annotated[Literal["constant", "cosine"], typer.Option(
            "--lr-schedule", help="Learning-rate schedule.")] = _D.lr_schedule,
        augment_shift: Annotated[int, typer.Option(
            "--augment-shift", min=0, help="Random image shift in pixels while training.")] = _D.augment_shift,
        mode: Annotated[Literal["ensemble", "chunk"], typer.Option(
            "--mode", help="How deploy blends action chunks.")] = _D.mode,
        query_every: Annotated[int | None, typer.Option(
            "--query-every", min=1, help="Chunk mode: steps between queries.")] = _D.query_every,
        videos: Annotated[int, typer.Option("--videos", min=0, help="Rollouts rendered to MP4.")] = _D.videos,
        expert_seeds: Annotated[int, typer.Option(
            "--expert-seeds", min=1, help="Seeds of the scripted-expert check.")] = _D.expert_seeds,
        device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps.")] = _D.device,
        threads: Annotated[int | None, typer.Option(
            "--threads", min=1, help="Torch CPU threads (default: torch's).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Training seed.")] = _D.seed,
    ) -> None:
        """The whole loop in simulation: scene -> scripted expert -> record -> train ACT -> deploy."""
        from rich.console import Console

        from robokit.commands.demo import run_demo  # first: it sets up the process before torch loads

        config = DemoConfig(
            out=out, episodes=episodes, image_size=parse_image_size(image_size),
            cameras=tuple(c.strip() for c in cameras.split(",") if c.strip()), fps=fps, steps=steps,
            batch_size=batch_size, chunk_size=chunk_size, eval_episodes=eval_episodes,
            eval_seed_start=eval_seed_start, mode=mode, query_every=query_every, lr_schedule=lr_schedule,
            augment_shift=augment_shift, videos=videos, expert_seeds=expert_seeds, device=device, seed=seed)
        if threads:
            import torch

            torch.set_num_threads(threads)
        console = Console()
        try:
            run_demo(config, console)
        except KeyboardInterrupt:
            console.print("[yellow]demo interrupted[/]")
            raise typer.Exit(130) from None
