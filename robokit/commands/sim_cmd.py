"""`robokit sim` subcommands: look at the simulated scene and measure the scripted expert."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from robokit.commands.common import parse_image_size
from robokit.errors import UserError

sim_app = typer.Typer(help="Simulation tools: render the scene, run the scripted expert.",
                      no_args_is_help=True)
console = Console()


@sim_app.command("snapshot")
def snapshot_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")],
    seed: Annotated[int, typer.Option(help="Scene seed.")] = 0,
    task: Annotated[str, typer.Option(help="Task set (pick_place, multi) or a multi instruction.")] = "pick_place",
    size: Annotated[str, typer.Option(help="Image size of each camera, HEIGHTxWIDTH.")] = "240x320",
) -> None:
    """Render the cameras `top` and `wrist` side by side into one PNG."""
    import cv2
    import numpy as np

    from robokit.episodes.files import prepare_folder
    from robokit.hardware.sim import CAMERA_NAMES, PandaSimEnv

    if out.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file, got {out}")
    height, width = parse_image_size(size)
    with PandaSimEnv(task=task, seed=seed, image_size=(height, width)) as env:
        image = np.concatenate([env.render(cam) for cam in CAMERA_NAMES], axis=1)
        instruction = env.task.instruction
    prepare_folder(out.parent)
    if not cv2.imwrite(str(out), np.ascontiguousarray(image[:, :, ::-1])):
        raise UserError(f"could not write {out}; check the folder is writable")
    console.print(f"wrote {out} ({image.shape[1]}x{image.shape[0]}: {', '.join(CAMERA_NAMES)}) "
                  f"— seed {seed}, task: {instruction}")


@sim_app.command("expert")
def expert_command(
    seeds: Annotated[int, typer.Option(min=1, help="Number of episodes (consecutive seeds).")] = 50,
    task_set: Annotated[str, typer.Option("--task-set", help="pick_place or multi.")] = "pick_place",
    start_seed: Annotated[int, typer.Option("--start-seed", help="First seed.")] = 0,
    task: Annotated[str | None, typer.Option(help="Only this task (a multi instruction).")] = None,
) -> None:
    """Run the scripted expert over many seeds and print its success rate.

    For `multi` the instructions take turns (seed i gets instruction i mod 6) unless --task is given.
    """
    from robokit.hardware.sim import PandaSimEnv, list_tasks, run_expert_episode

    tasks = list_tasks(task_set)
    if task is not None:
        if task not in tasks:
            raise UserError(f"unknown task {task!r} for task set {task_set}; known: {'; '.join(tasks)}")
        tasks = [task]
    results = []
    progress = Progress(TextColumn("[bold]expert[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("ok {task.fields[ok]}"), TimeElapsedColumn(), console=console)
    with PandaSimEnv(task=tasks[0], seed=start_seed, camera_names=()) as env, progress:
        bar = progress.add_task(task_set, total=seeds, ok=0)
        for i in range(seeds):
            seed = start_seed + i
            result = run_expert_episode(env, seed=seed, task=tasks[i % len(tasks)])
            results.append(result)
            progress.update(bar, advance=1, ok=sum(r.success for r in results))
    ok = sum(r.success for r in results)
    if len(tasks) > 1:
        per_task: dict[str, list[bool]] = defaultdict(list)
        for r in results:
            per_task[r.task].append(r.success)
        table = Table("task", "success", "rate")
        for name in tasks:
            runs = per_task.get(name, [])
            if runs:
                table.add_row(name, f"{sum(runs)}/{len(runs)}", f"{100 * sum(runs) / len(runs):.0f}%")
        console.print(table)
    failed = [r.seed for r in results if not r.success]
    console.print(f"expert success: {ok}/{len(results)} = {100 * ok / len(results):.1f}% "
                  f"({task_set}, seeds {start_seed}..{start_seed + seeds - 1}, "
                  f"{results[0].steps} steps per episode at 30 Hz)")
    if failed:
        console.print(f"failed seeds: {', '.join(map(str, failed[:20]))}{' …' if len(failed) > 20 else ''}")


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")
