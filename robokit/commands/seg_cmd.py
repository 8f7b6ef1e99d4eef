"""`robokit seg`: train and evaluate the segmentation model that gives the VLA policy its image features.

    robokit record --sim --task-set multi --teleop scripted --episodes 60 --segmentation --out data/seg
    robokit seg train data/seg --out seg.pt                       # the small CPU model, ~5 minutes
    robokit seg eval seg.pt data/seg-heldout                      # mask IoU per instance and kind
    robokit seg train data/seg --arch maskrcnn --weights maskrcnn_coco.pth --device cuda --out seg.pt
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from robokit.commands.common import format_duration, parse_image_size
from robokit.errors import UserError

seg_app = typer.Typer(help="Segmentation models of robot images (for the VLA policy).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(seg_app, name="seg")


@seg_app.command("train")
def train_command(
    data: Annotated[Path, typer.Argument(help="Dataset folder with masks (record --sim --segmentation, or PNGs).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write.")] = Path("seg.pt"),
    arch: Annotated[str, typer.Option("--arch", help="small (CPU, default) | maskrcnn (torchvision, for GPUs).")
                    ] = "small",
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="maskrcnn: a local weights file to start from (nothing is downloaded).")] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps.")] = 500,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, cosine).")] = 2e-3,
    image_size: Annotated[str, typer.Option("--image-size", metavar="HxW", help="Size the model sees.")] = "64x80",
    camera: Annotated[list[str] | None, typer.Option(
        "--camera", help="Cameras to train on (default: every camera with masks).")] = None,
    width: Annotated[int, typer.Option("--width", min=4, help="small: channels of the first level.")] = 24,
    stride: Annotated[int, typer.Option("--stride", min=1, help="Use every N-th masked step.")] = 2,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")] = "auto",
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Train a segmentation model on the masked frames of a dataset folder."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from robokit.segmentation.data import load_labelled_frames
    from robokit.segmentation.models import SegmenterConfig
    from robokit.segmentation.train import save_segmenter, timed, train_segmenter
    from robokit.training.runtime import pick_device

    console = Console()
    size = parse_image_size(image_size)
    if weights is not None and not weights.is_file():
        raise UserError(f"--weights {weights}: no such file")
    frames = load_labelled_frames(data, size, cameras=camera, stride=stride)
    config = SegmenterConfig(arch=arch, image_size=size, cameras=frames.cameras,
                             instances=[list(i) for i in frames.instances], width=width)
    console.print(f"{len(frames)} masked frames of {frames.episodes} episode(s), {len(frames.instances)} instances; "
                  f"{arch} model at {size[0]}x{size[1]}, {steps} steps")
    torch_device = pick_device(device)
    with Progress(TextColumn("[bold]seg train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[info]}"), console=console, transient=False) as progress:
        task = progress.add_task("train", total=steps, info="")

        def on_step(step: int, terms: dict[str, float]) -> None:
            progress.update(task, completed=step + 1, info=f"loss {terms['loss']:.3f}")

        (model, history), seconds = timed(lambda: train_segmenter(
            frames, config, steps=steps, batch_size=batch_size, lr=lr, device=torch_device, seed=seed,
            weights=weights, on_step=on_step))
    save_segmenter(out, model.cpu(), {"data": str(data), "steps": steps, "frames": len(frames),
                                      "train_seconds": round(seconds, 1), "history": history[-5:]})
    console.print(f"trained in {format_duration(seconds)}; saved {out}")
    console.print(f"next: robokit seg eval {out} HELD_OUT_DATA")


@seg_app.command("eval")
def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="A segmenter checkpoint (robokit seg train).")],
    data: Annotated[Path, typer.Argument(help="Held-out episodes with masks (other scenes than training's).")],
    stride: Annotated[int, typer.Option("--stride", min=1, help="Use every N-th masked step.")] = 1,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")] = "auto",
) -> None:
    """Mask IoU of a segmenter on a folder's masked frames: per instance and per kind."""
    from robokit.errors import DataError
    from robokit.segmentation.data import load_labelled_frames
    from robokit.segmentation.train import evaluate_segmenter, load_segmenter
    from robokit.training.runtime import pick_device

    console = Console()
    torch_device = pick_device(device)
    model, _ = load_segmenter(checkpoint, map_location=torch_device)
    config = model.config
    frames = load_labelled_frames(data, config.image_size, cameras=config.cameras, stride=stride)
    if [tuple(i) for i in config.instances] != list(frames.instances):
        raise DataError(f"{data} labels {len(frames.instances)} instances but {checkpoint} was trained on "
                        f"{len(config.instances)} others: evaluate it on data of the same task set")
    result = evaluate_segmenter(model, frames, device=torch_device)
    table = Table(title=f"mask IoU on {result.frames} frames of {data}", title_justify="left")
    table.add_column("instance")
    table.add_column("kind")
    table.add_column("IoU", justify="right")
    for name, kind in frames.instances:
        if name in result.instances:
            table.add_row(name, kind, f"{result.instances[name]:.3f}")
    console.print(table)
    console.print("by kind: " + ", ".join(f"{k} {v:.3f}" for k, v in result.kinds.items())
                  + " (robot: the arm and gripper as one mask; others: the mean of their instances)")

