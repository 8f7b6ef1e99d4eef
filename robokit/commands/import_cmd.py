"""`robokit import DIR --format lerobot --out DATA`: a LeRobotDataset v3.0 folder as robokit episodes.

    robokit import exports/pick --format lerobot --out data/pick_again
    robokit train data/pick_again --policy act ...

`robokit train` and `robokit inspect` recognise a LeRobot folder; train asks for this import first
(the episodes are written once, with the image storage chosen here, instead of being decoded from
video on every run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robokit.commands.export_cmd import check_format
from robokit.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_command(
        source: Annotated[Path, typer.Argument(help="LeRobotDataset v3.0 folder (with meta/info.json).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the robokit episodes.")],
        fmt: Annotated[str, typer.Option("--format", help="Dataset format to read: lerobot (LeRobotDataset v3.0).")]
        = "lerobot",
        compress: Annotated[str, typer.Option(
            help="Episode image storage: none | lzf (lossless) | jpeg (ALOHA layout).")] = "none",
    ) -> None:
        """Convert a LeRobotDataset v3.0 folder into robokit episodes for train, inspect, replay and view."""
        from robokit.lerobot.importer import import_lerobot

        check_format(fmt)
        if compress not in ("none", "lzf", "jpeg"):
            raise UserError(f"unknown --compress {compress!r}; choose none, lzf or jpeg")
        console = Console()
        with Progress(TextColumn("[bold]import[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            job = bar.add_task("episodes", total=None)
            report = import_lerobot(source, out, compress=compress,
                                    progress=lambda done, total: bar.update(job, completed=done, total=total))
        tasks = "; ".join(repr(t) for t in report.tasks[:3]) + (" …" if len(report.tasks) > 3 else "")
        console.print(f"wrote {report.episodes} episode(s) to {report.out}: {report.frames} steps at {report.fps} fps, "
                      f"cameras {', '.join(report.cameras)}, tasks {tasks or '-'} ({report.seconds:.1f} s)",
                      highlight=False, soft_wrap=True)


def show_lerobot_summary(console: Console, path: Path) -> None:
    """``robokit inspect`` of a LeRobot folder: version, fps, features and episodes, from the metadata."""
    from rich.table import Table

    from robokit.lerobot.summary import summarize

    info = summarize(path)
    table = Table(title=f"{path} (LeRobot {info.version}, {info.fps:g} fps, robot {info.robot_type})",
                  title_justify="left")
    for col, justify in (("episode", "right"), ("steps", "right"), ("duration", "right"), ("task", "left"),
                         ("robokit file", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for ep in info.episodes:
        table.add_row(str(ep["episode_index"]), str(ep["length"]), f"{ep['seconds']:.1f} s",
                      "; ".join(ep["tasks"]) or "-", ep["source"] or "-")
    console.print(table)
    console.print("features: " + ", ".join(f"{name} ({kind})" for name, kind in info.features.items()),
                  highlight=False, soft_wrap=True)
    console.print(f"{len(info.episodes)} episode(s), {info.total_frames} frames, {len(info.tasks)} task(s), "
                  f"{info.size_bytes / 1e6:.1f} MB", highlight=False)
    if info.problem:
        raise UserError(info.problem)
    console.print(f"cameras {', '.join(info.cameras)}; to train, replay or view it: "
                  f"`robokit import {path} --format lerobot --out DATA`", highlight=False, soft_wrap=True)
