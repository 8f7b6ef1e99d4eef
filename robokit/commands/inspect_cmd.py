"""`robokit inspect PATH`: what is in a dataset folder, an episode file or a checkpoint.

    robokit inspect data/pick                 # table of episodes + validation of each file
    robokit inspect data/pick/episode_3.hdf5  # one episode in detail
    robokit inspect data/pick --plot --video  # also joint/action PNGs and camera MP4s
    robokit inspect runs/act/best.pt          # policy type, config, data trained on, step, val loss
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, JustifyMethod
from rich.table import Table

from robokit.commands.import_cmd import show_lerobot_summary
from robokit.errors import DataError, UserError
from robokit.extras import missing_extra
from robokit.lerobot.layout import is_lerobot_folder


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect_command(
        path: Annotated[Path, typer.Argument(help="Dataset folder, episode .hdf5 file or checkpoint .pt file.")],
        plot: Annotated[bool, typer.Option("--plot", help="Write a joint/action plot (PNG) per episode.")] = False,
        video: Annotated[bool, typer.Option(
            "--video", help="Write an MP4 of the cameras side by side per episode.")] = False,
        output: Annotated[Path | None, typer.Option(
            "--output", "-o", help="Folder for the PNG/MP4 files (default: beside the episodes).")] = None,
    ) -> None:
        """Show episodes (steps, duration, achieved rate, cameras, size, task, success), validate each file,
        and optionally plot them or make videos. A .pt path shows a checkpoint's summary."""
        console = Console()
        if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
            console = Console(width=160)
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_file() and path.suffix == ".pt":
            _inspect_checkpoint(console, path)
            return
        if path.is_dir() and is_lerobot_folder(path):  # metadata only: train and view need `robokit import`
            show_lerobot_summary(console, path)
            return
        if path.is_dir():
            bad = _inspect_folder(console, path, plot, video, output)
        else:
            bad = _inspect_file(console, path, plot, video, output)
        if bad:
            raise DataError(f"{bad} file(s) under {path} have problems (listed above)")


# -- folder -----------------------------------------------------------------------------------------
def _inspect_folder(console: Console, folder: Path, plot: bool, video: bool, output: Path | None) -> int:
    from robokit.episodes import format as fmt
    from robokit.episodes.mask_files import check_mask_pngs
    from robokit.episodes.reader import list_episodes, open_episode
    from robokit.episodes.summary import EpisodeShape, episode_summary, folder_mismatches, safety_brief

    partials = sorted(p.name for p in folder.iterdir() if fmt.partial_index(p) is not None)
    try:
        paths = list_episodes(folder)
    except DataError:
        if not partials:
            raise
        paths = []
    rows: list[list[str]] = []
    safety_texts: list[str] = []  # per row: the rollout's safety record in short ("" for a recording)
    mask_cameras: list[str] = []  # per readable episode: its cameras with masks ("" for none)
    problems: list[str] = []
    total_steps = total_bytes = bad = 0
    successes = known = 0
    shapes: list[EpisodeShape] = []
    recovered: list[str] = []
    for path in paths:
        size = path.stat().st_size
        total_bytes += size
        try:
            with open_episode(path) as ep:
                found = ep.check()
                info = episode_summary(ep)
                rate = info["fps_achieved"] or ep.fps
                rows.append([
                    path.name, str(ep.length), _seconds(info["duration_s"]),
                    f"{rate:.1f}" if rate else "-",
                    ", ".join(f"{c} {ep.image_shape(c)[1]}x{ep.image_shape(c)[0]}" for c in ep.camera_names),
                    _bytes(size), _clip(ep.task or "-", 40), _yes_no(ep.success), _check(found, ep)])
                safety_texts.append(safety_brief(ep.attrs))
                mask_cameras.append(",".join(ep.mask_cameras))
                shapes.append(EpisodeShape.of(ep))
                if _recovered(ep):
                    recovered.append(path.name)
                total_steps += ep.length
                if ep.success is not None:
                    known += 1
                    successes += int(ep.success)
                if plot or video:
                    _render(console, ep, plot, video, output)
        except DataError as exc:
            found = [str(exc)]
            rows.append([path.name, "-", "-", "-", "-", _bytes(size), "-", "-", "[red]unreadable[/]"])
            safety_texts.append("")
        if found:
            bad += 1
            problems += found
    for name in partials:
        rows.append([name, "-", "-", "-", "-", _bytes((folder / name).stat().st_size), "-", "-",
                     "[yellow]unfinished[/]"])
        safety_texts.append("")
    columns: list[tuple[str, JustifyMethod]] = [
        ("episode", "left"), ("steps", "right"), ("duration", "right"), ("fps", "right"), ("cameras", "left"),
        ("size", "right"), ("task", "left"), ("success", "center"), ("check", "left")]
    if any(safety_texts):  # rollouts: how often the policy needed the safety filter
        columns.insert(-1, ("safety", "left"))
        rows = [[*row[:-1], text or "-", row[-1]] for row, text in zip(rows, safety_texts, strict=True)]
    table = Table(title=f"{folder} ", title_justify="left")
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col == "safety")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    summary = f"{len(paths)} episode(s), {total_steps} steps, {_bytes(total_bytes)}"
    if known:
        summary += f", success {successes}/{known}"
    console.print(summary)
    if partials:
        console.print(f"[yellow]{len(partials)} unfinished recording(s)[/]: `robokit record --out {folder}` "
                      "recovers them")
    if recovered:
        console.print(f"[yellow]{len(recovered)} recovered episode(s)[/] ({', '.join(recovered)}): cut short by a "
                      "crash, without end frames, success unknown; training uses them, delete them to leave "
                      "them out", highlight=False, soft_wrap=True)
    masked = sum(1 for text in mask_cameras if text)
    if masked:
        console.print(f"instance masks in {masked} episode file(s)")
    png_line, png_problems = check_mask_pngs(folder)
    if png_line:
        console.print(png_line)
    bad += len(png_problems)
    problems += png_problems
    mismatches = folder_mismatches(shapes)
    for problem in problems + mismatches:
        console.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    if mismatches and not bad:
        raise DataError(f"the episodes under {folder} cannot be trained on together (listed above)")
    return bad


# -- single episode ---------------------------------------------------------------------------------
def _inspect_file(console: Console, path: Path, plot: bool, video: bool, output: Path | None) -> int:
    from robokit.episodes.reader import open_episode
    from robokit.episodes.summary import episode_summary

    with open_episode(path) as ep:
        problems = ep.check()
        info = episode_summary(ep)
        table = Table(title=f"{path}", title_justify="left", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        table.add_row("layout", ep.layout)
        table.add_row("steps", str(ep.length))
        table.add_row("duration", _seconds(info["duration_s"]))
        table.add_row("fps (declared)", f"{ep.fps:g}" if ep.fps else "-")
        if info["fps_achieved"]:
            table.add_row("fps (achieved)", f"{info['fps_achieved']:.2f}")
        table.add_row("state / action dims", f"{ep.state_dim} / {ep.action_dim}")
        for cam in ep.camera_names:
            h, w, _ = ep.image_shape(cam)
            line = f"{w}x{h}, {ep.image_compression}"
            if cam in info["camera_rates"]:
                line += f", {info['camera_rates'][cam]:.1f} new frames/s"
            if cam in info["frame_age_ms"]:
                med, worst = info["frame_age_ms"][cam]
                line += f", frame age median {med:.0f} ms / max {worst:.0f} ms"
            if ep.goal_image(cam) is not None:
                line += ", goal image"
            boxes = ep.object_boxes(cam)
            if boxes:
                line += f", object boxes: {', '.join(boxes)}"
            table.add_row(f"camera {cam}", line)
        if ep.mask_cameras:
            kinds = collections.Counter(i.kind for i in ep.mask_instances)
            table.add_row("masks", f"{', '.join(ep.mask_cameras)}: {len(ep.mask_instances)} instances ("
                          + ", ".join(f"{kind} {n}" for kind, n in kinds.items()) + ")")
        table.add_row("done steps", str(info["done_steps"]))
        table.add_row("task", ep.task or "-")
        table.add_row("success", _yes_no(ep.success))
        table.add_row("size", _bytes(ep.size_bytes))
        shown = {"task", "fps", "success", "camera_names", "format", "version", "mask_instances"}
        for key, value in sorted(ep.attrs.items()):
            if key not in shown:
                table.add_row(f"attr {key}", _clip(json.dumps(value, default=str), 100))
        table.add_row("check", _check(problems, ep))
        console.print(table)
        for problem in problems:
            console.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
        if plot or video:
            _render(console, ep, plot, video, output)
    return 1 if problems else 0


def _render(console: Console, ep: Any, plot: bool, video: bool, output: Path | None) -> None:
    from robokit.episodes.files import prepare_folder
    from robokit.viz.episode import plot_episode, write_episode_video

    if ep.length == 0:
        console.print(f"{ep.path.name}: no steps, nothing to plot")
        return
    out = prepare_folder(output, "--output") if output is not None else ep.path.parent
    stem = ep.path.name.removesuffix(".hdf5")
    if plot:
        console.print(f"plot: {plot_episode(ep, out / f'{stem}_joints.png')}")
    if video:
        console.print(f"video: {write_episode_video(ep, out / f'{stem}.mp4')}")


# -- checkpoint -------------------------------------------------------------------------------------
def _inspect_checkpoint(console: Console, path: Path) -> None:
    try:
        from robokit.policies.checkpoint import read_checkpoint_info
    except ImportError as exc:
        missing = missing_extra(exc, "robokit inspect CHECKPOINT") if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None:
            raise missing from None
        raise UserError(f"cannot inspect {path}: checkpoint support is not available ({exc})") from None
    info = read_checkpoint_info(path)
    meta = dict(info.get("train_meta") or {})
    config = dict(info.get("config") or {})
    table = Table(title=f"{path}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("policy", str(info.get("policy_type", "?")))
    for key, label in (("dataset", "trained on"), ("num_episodes", "episodes"), ("step", "step"),
                       ("epoch", "epoch"), ("val_loss", "val loss"), ("train_loss", "train loss"),
                       ("train_seconds", "train time (s)"), ("created", "created"),
                       ("robokit_version", "robokit")):
        if meta.get(key) is not None:
            value = meta[key]
            table.add_row(label, f"{value:.5g}" if isinstance(value, float) else str(value))
    for key, value in sorted(config.items()):
        table.add_row(f"config {key}", _clip(json.dumps(value, default=str), 100))
    console.print(table)


# -- formatting -------------------------------------------------------------------------------------
def _recovered(ep: Any) -> bool:
    return bool(ep.attrs.get("recovered", False))


def _check(problems: list[str], ep: Any) -> str:
    """The check column: problems, or whether the episode was recovered after a crash."""
    if problems:
        return f"[red]{len(problems)} problem(s)[/]"
    return "[yellow]recovered[/] (cut short)" if _recovered(ep) else "[green]ok[/]"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "-"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
