"""`robokit viz` subcommands: attention heat maps, episode and rollout plots/videos.

    robokit viz attention runs/act/best.pt --episode data/pick/episode_0.hdf5 --steps 0:50:10 --out attention_viz/
    robokit viz attention-array attn.npz --layout pi0 --images base_0_rgb=base.png --images left_wrist_0_rgb=l.png \\
        --padded right_wrist_0_rgb --out attention_viz/
    robokit viz episode data/pick/episode_0.hdf5 --out viz/episode_0
    robokit viz rollout rollouts/ --out viz/rollouts

Formats (npz keys, layout JSON, /predicted_chunks) are in docs/viz.md.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from robokit.errors import DataError, UserError

viz_app = typer.Typer(
    help="Look at what a policy sees: attention heat maps, episode plots and videos.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(viz_app, name="viz")


# -- shared options -------------------------------------------------------------------------------
def _render_options(
    fuse: str,
    scale: str,
    colormap: str,
    alpha: float,
    interpolation: str,
    quality: int,
    overview: bool,
    workers: int | None,
    layers: str | None,
) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "fuse": fuse,
        "scale": scale,
        "colormap": colormap,
        "alpha": alpha,
        "interpolation": interpolation,
        "jpeg_quality": quality,
        "overview": overview,
        "workers": workers,
    }
    if layers is not None:
        opts["layers"] = _indices(layers, "--layers")
    return opts


def _indices(spec: str, what: str) -> list[int]:
    """``"0:18:2"`` (stop required) / ``"3"`` / ``"0,5,17"`` -> sorted distinct indices."""
    try:
        if ":" in spec:
            parts = [p.strip() for p in spec.split(":")]
            if len(parts) > 3 or not parts[1]:
                raise ValueError
            start = int(parts[0]) if parts[0] else 0
            step = int(parts[2]) if len(parts) == 3 and parts[2] else 1
            out = list(range(start, int(parts[1]), step))
        else:
            out = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise UserError(f"{what} '{spec}' must be start:stop[:step], a number or a comma list") from None
    if not out:
        raise UserError(f"{what} '{spec}' selects nothing")
    return sorted(set(out))


COLORMAP_HELP = "turbo, jet, inferno, magma, viridis, plasma, hot, parula or cividis."
INTERP_HELP = "Upsampling of the token grid onto the image: nearest, linear or cubic."
FUSE_HELP = "Head fusion: max (hot if ANY head attends, the default) or mean."
SCALE_HELP = (
    "Colour scale: figure (each figure normalised to [0, its max]) or shared (one [0, max] for "
    "all cameras and the text of one action token and layer)."
)


# -- attention-array --------------------------------------------------------------------------------
@viz_app.command("attention-array")
def attention_array_command(
    array: Annotated[
        Path,
        typer.Argument(
            help="NPZ file with 'attention' \\[diffusion, layers, batch, kv_heads, q_heads, queries, seq] "
            "(docs/viz.md)."
        ),
    ],
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            help="Token layout JSON file (or inline JSON), or 'pi0' for openpi's pi0: 3x256 image + "
            "48 text + 1 state + 50 action tokens.",
        ),
    ],
    images: Annotated[
        list[str] | None,
        typer.Option(
            "--images", "--image", help="CAMERA=IMAGE_FILE, repeatable (or images/<camera> inside the npz)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("attention_viz"),
    text: Annotated[
        str | None,
        typer.Option("--text", help="Prompt tokens separated by spaces (or 'text_tokens' inside the npz)."),
    ] = None,
    padded: Annotated[
        list[str] | None,
        typer.Option("--padded", help="Camera whose image slot is padding (skipped); repeatable."),
    ] = None,
    inference_step: Annotated[
        int | None,
        typer.Option(
            "--inference-step",
            help="k of inference_timestep_<k> (default 0; an 8-axis array counts from it).",
        ),
    ] = None,
    batch_index: Annotated[int, typer.Option("--batch-index", help="Which batch entry to draw.")] = 0,
    logits: Annotated[
        bool, typer.Option("--logits", help="The array holds pre-softmax scores: softmax over seq first.")
    ] = False,
    fuse: Annotated[str, typer.Option("--fuse", help=FUSE_HELP)] = "max",
    scale: Annotated[str, typer.Option("--scale", help=SCALE_HELP)] = "figure",
    colormap: Annotated[str, typer.Option("--colormap", help=COLORMAP_HELP)] = "turbo",
    alpha: Annotated[float, typer.Option("--alpha", help="Heat-map opacity over the camera image.")] = 0.5,
    interpolation: Annotated[str, typer.Option("--interpolation", help=INTERP_HELP)] = "linear",
    layers: Annotated[
        str | None, typer.Option("--layers", help="Subset of layers, e.g. 0:18:3 or 0,8,17.")
    ] = None,
    diffusion_steps: Annotated[
        str | None, typer.Option("--diffusion-steps", help="Subset of diffusion steps, e.g. 0,9.")
    ] = None,
    quality: Annotated[int, typer.Option("--quality", help="JPEG quality 1..100.")] = 85,
    overview: Annotated[
        bool, typer.Option("--overview/--no-overview", help="Write index.html + mosaics.")
    ] = True,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Encoder threads (default: CPU count).")
    ] = None,
) -> None:
    """Write the attention heat-map tree for an attention array from any model (e.g. openpi's pi0)."""
    import numpy as np

    from robokit.viz.attention import render_tree
    from robokit.viz.layout import TokenLayout, pi0_layout

    images, padded = images or [], padded or []
    data = _load_npz(array)
    att = data["attention"]
    if layout == "pi0":
        lay = pi0_layout(padded=padded)
    elif layout.strip().startswith("{"):
        lay = TokenLayout.from_dict(_json(layout, "--layout"), padded=padded)
    else:
        lay = TokenLayout.load(layout, padded=padded)
    steps_axis = att.ndim == 8
    n_inf = att.shape[0] if steps_axis else 1
    imgs: dict[str, np.ndarray] = {}
    for key, value in data.items():
        if key.startswith("images/"):
            imgs[key.split("/", 1)[1]] = value
    for spec in images:
        for item in spec.split(","):
            cam, sep, file = item.partition("=")
            if not sep or not cam or not file:
                raise UserError(f"--images '{item}' must be CAMERA=IMAGE_FILE")
            imgs[cam] = _read_image(Path(file))
    tokens = (
        text.split()
        if text is not None
        else ([str(t) for t in data["text_tokens"].tolist()] if "text_tokens" in data else None)
    )
    opts = _render_options(fuse, scale, colormap, alpha, interpolation, quality, overview, workers, layers)
    if diffusion_steps is not None:
        opts["diffusion_steps"] = _indices(diffusion_steps, "--diffusion-steps")
    console = Console(stderr=True)
    total = 0
    for k in range(n_inf):
        step_imgs = {c: (v[k] if np.asarray(v).ndim == 4 else v) for c, v in imgs.items()}
        idx = k if steps_axis else (inference_step or 0)
        if steps_axis and inference_step is not None:
            idx = inference_step + k
        s = render_tree(
            att[k] if steps_axis else att,
            lay,
            out,
            step_imgs or None,
            tokens,
            inference_step=idx,
            batch_index=batch_index,
            logits=logits,
            title=f"{array.name} inference step {idx}",
            **opts,
        )
        total += s.files
        console.print(
            f"inference step {idx}: {s.files} files in {s.seconds:.1f} s "
            f"(cameras {', '.join(s.cameras) or 'none'}"
            + (f"; skipped {', '.join(s.skipped_cameras)}" if s.skipped_cameras else "")
            + f"; text tokens {s.text_tokens}) -> {s.root}",
            soft_wrap=True,
        )
    console.print(f"[green]wrote {total} files; open {out / 'index.html'}[/]", soft_wrap=True)


def _load_npz(path: Path) -> dict[str, Any]:
    import numpy as np

    if not path.exists():
        raise UserError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz of plain arrays ({exc})") from None
    if "attention" not in data:
        raise DataError(f"{path}: no 'attention' array (keys: {', '.join(sorted(data)) or 'none'})")
    if data["attention"].ndim not in (6, 7, 8):
        raise DataError(
            f"{path}: 'attention' has shape {data['attention'].shape}; expected [diffusion, layers, "
            f"batch, kv_heads, q_heads, queries, seq] (7 axes), 6 without diffusion or 8 with a "
            f"leading inference-step axis"
        )
    return data


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} is not valid JSON: {exc}") from None


def _read_image(path: Path) -> Any:
    import cv2

    if not path.exists():
        raise UserError(f"image file {path} does not exist")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"{path}: not an image OpenCV can read")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# -- attention (policy) -----------------------------------------------------------------------------
@viz_app.command("attention")
def attention_command(
    checkpoint: Annotated[Path, typer.Argument(help="Policy checkpoint (.pt).")],
    episode: Annotated[
        Path, typer.Option("--episode", "-e", help="Recorded episode (.hdf5) to run the policy on.")
    ],
    steps: Annotated[
        str, typer.Option("--steps", help="Episode steps: start:stop:step, N, or a comma list.")
    ] = "0:50:10",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("attention_viz"),
    task: Annotated[
        str | None, typer.Option("--task", help="Instruction to use instead of the episode's.")
    ] = None,
    history: Annotated[
        bool,
        typer.Option(
            "--history/--no-history",
            help="Run every step up to the last chosen one (policies with observation "
            "history need it); --no-history runs only the chosen steps.",
        ),
    ] = True,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
    fuse: Annotated[str, typer.Option("--fuse", help=FUSE_HELP)] = "max",
    scale: Annotated[str, typer.Option("--scale", help=SCALE_HELP)] = "figure",
    colormap: Annotated[str, typer.Option("--colormap", help=COLORMAP_HELP)] = "turbo",
    alpha: Annotated[float, typer.Option("--alpha", help="Heat-map opacity over the camera image.")] = 0.5,
    interpolation: Annotated[str, typer.Option("--interpolation", help=INTERP_HELP)] = "linear",
    layers: Annotated[str | None, typer.Option("--layers", help="Subset of layers, e.g. 0:4 or 0,3.")] = None,
    quality: Annotated[int, typer.Option("--quality", help="JPEG quality 1..100.")] = 85,
    overview: Annotated[
        bool, typer.Option("--overview/--no-overview", help="Write index.html + mosaics.")
    ] = True,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Encoder threads (default: CPU count).")
    ] = None,
) -> None:
    """Run a policy over chosen steps of an episode and write its attention heat maps."""
    from robokit.policies.checkpoint import load_checkpoint
    from robokit.training.runtime import pick_device
    from robokit.viz.policy_attention import render_policy_attention

    if not checkpoint.exists():
        raise UserError(f"checkpoint {checkpoint} does not exist")
    policy, _ = load_checkpoint(checkpoint, map_location=pick_device(device))
    opts = _render_options(fuse, scale, colormap, alpha, interpolation, quality, overview, workers, layers)
    console = Console(stderr=True)
    summaries = render_policy_attention(policy, episode, steps, out, task=task, history=history, **opts)
    first = summaries[0]
    console.print(
        f"{len(summaries)} step(s) ({', '.join(str(s.root.name.rsplit('_', 1)[1]) for s in summaries)}): "
        f"{first.action_tokens} action token(s) x {first.layers} layer(s), cameras "
        f"{', '.join(first.cameras) or 'none'}"
        + (f" (skipped {', '.join(first.skipped_cameras)})" if first.skipped_cameras else "")
        + f", text tokens {first.text_tokens}",
        soft_wrap=True,
    )
    total = sum(s.files for s in summaries)
    console.print(f"[green]wrote {total} files; open {out / 'index.html'}[/]", soft_wrap=True)


# -- episode / rollout ------------------------------------------------------------------------------
@viz_app.command("episode")
def episode_command(
    episode: Annotated[Path, typer.Argument(help="Episode file (.hdf5).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: <episode>_viz/ beside it).")
    ] = None,
    video: Annotated[
        bool, typer.Option("--video/--no-video", help="Also write the camera mosaic MP4.")
    ] = True,
    height: Annotated[
        int | None, typer.Option("--height", help="Video height in px (default: the smallest camera's).")
    ] = None,
) -> None:
    """Joint and gripper plots (commanded vs measured) and a camera mosaic video of one episode."""
    from robokit.viz.episode import render_episode

    target = out or episode.with_name(episode.stem + "_viz")
    r = render_episode(episode, target, video=video, video_height=height)
    _report(r)


@viz_app.command("rollout")
def rollout_command(
    path: Annotated[Path, typer.Argument(help="A deploy rollout episode (.hdf5) or a folder of them.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: <file>_viz/, or <folder>/viz/<episode>/)."),
    ] = None,
    video: Annotated[
        bool, typer.Option("--video/--no-video", help="Also write the camera mosaic MP4s.")
    ] = True,
    height: Annotated[int | None, typer.Option("--height", help="Video height in px.")] = None,
) -> None:
    """Like `viz episode`, with the policy's predicted chunks (/predicted_chunks) drawn over the plots."""
    from robokit.episodes.reader import list_episodes
    from robokit.viz.episode import render_episode

    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        base = out or path / "viz"
        for ep in list_episodes(path):
            _report(render_episode(ep, base / ep.stem, video=video, video_height=height))
    else:
        _report(
            render_episode(path, out or path.with_name(path.stem + "_viz"), video=video, video_height=height)
        )


def _report(r: Any) -> None:
    console = Console(stderr=True)
    extra = f", {r.predicted_chunks} predicted chunks drawn" if r.predicted_chunks else ""
    console.print(f"{r.steps} steps{extra}: {r.plot}" + (f", {r.video}" if r.video else ""), soft_wrap=True)
