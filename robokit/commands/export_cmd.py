"""`robokit export DATA --format lerobot --out DIR`: robokit episodes as a LeRobotDataset v3.0 folder.

    robokit export data/pick --format lerobot --out exports/pick --repo-id lab/pick
    robokit export data/act_sim --format lerobot --out exports/act --fps 50 --codec h264
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robokit.errors import UserError

#: Dataset formats robokit writes and reads besides its own.
FORMATS = ("lerobot",)


def check_format(value: str) -> str:
    """``value`` if robokit knows the format, else a UserError listing the ones it does."""
    if value not in FORMATS:
        raise UserError(f"unknown --format {value!r}; robokit knows {', '.join(FORMATS)}")
    return value


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        data: Annotated[Path, typer.Argument(help="Folder of robokit episodes (episode_<N>.hdf5).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the exported dataset.")],
        fmt: Annotated[str, typer.Option("--format", help="Dataset format to write: lerobot (LeRobotDataset v3.0).")]
        = "lerobot",
        repo_id: Annotated[str | None, typer.Option(
            "--repo-id", help="Dataset name for LeRobot, e.g. lab/pick (default: local/<out folder name>).")] = None,
        fps: Annotated[float | None, typer.Option(
            help="Frame rate to declare (needed for ACT files, which do not store one).")] = None,
        codec: Annotated[str, typer.Option(
            help="Video codec: auto (AV1 where PyAV has libsvtav1, else H.264), av1 or h264.")] = "auto",
        crf: Annotated[int, typer.Option(help="Video quality, lower is better and larger (LeRobot's default 30).")]
        = 30,
    ) -> None:
        """Write robokit episodes as a LeRobotDataset v3.0 folder (parquet tables + one MP4 per camera)."""
        from robokit.lerobot.export import export_lerobot

        check_format(fmt)
        console = Console()
        with Progress(TextColumn("[bold]export[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            job = bar.add_task("episodes", total=None)
            report = export_lerobot(data, out, repo_id, fps=fps, codec=codec, crf=crf,
                                    progress=lambda done, total: bar.update(job, completed=done, total=total))
        console.print(f"wrote {report.out}: LeRobot v3.0, {report.episodes} episode(s), {report.frames} frames at "
                      f"{report.fps} fps, cameras {', '.join(report.cameras)} ({report.codec}), "
                      f"{report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s ({report.frames_per_s:.0f} frames/s)",
                      highlight=False, soft_wrap=True)
        console.print(f"load it with LeRobot: LeRobotDataset({(repo_id or 'local/' + out.name)!r}, root={str(out)!r})",
                      highlight=False, soft_wrap=True)
