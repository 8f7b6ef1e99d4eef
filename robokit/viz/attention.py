"""Attention heat-map trees: what each action token looks at, per diffusion step and layer.

:func:`render_tree` is the array entry point (seed 003). It takes attention weights shaped
``[diffusion_steps, layers, batch, kv_heads, q_heads, queries, seq]`` (grouped-query heads; a 6-axis
array without the diffusion axis is accepted too), a :class:`~robokit.viz.layout.TokenLayout`, the
camera images and the text tokens, and writes::

    <out>/inference_timestep_<k>/[diffusion_timestep_<j>/]action_token_<i>/layer_<l>/
        fused_attention_on_<camera>.jpg     one per real camera (padded cameras are skipped)
        fused_attention_on_text.jpg         when the layout has text
    <out>/inference_timestep_<k>/index.html + overview/   (see robokit.viz.overview)

The ``diffusion_timestep_<j>`` level is present only when there are denoising steps (more than
one entry on the diffusion axis, or ``diffusion_level=True``).

Colour scale: heads are fused per key token (``max``: a token is hot if ANY head attends to it —
the usual rule for attention heat maps; or ``mean``), then each figure is normalised on its own to ``[0, max]`` of the
fused weights of that figure's tokens (``scale="figure"``), or one ``[0, max]`` across all cameras
and the text of the same action token / layer (``scale="shared"``), and coloured with one colormap
(turbo by default: dark blue = 0, dark red = the maximum). The caption under every camera figure and
the header of every text strip give the figure's maximum and summed attention, so magnitudes can be
compared between figures.

Speed: fusion and normalisation are done once for the whole array with numpy; figures are rendered
by precomputed OpenCV pipelines (:mod:`robokit.viz.figures`) and encoded/written by a thread pool
(OpenCV and file writes release the GIL); directories are created once up front.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from robokit.errors import UserError
from robokit.viz.figures import CameraFigure, TextStrip, to_rgb_uint8
from robokit.viz.layout import CameraView, TokenLayout

log = logging.getLogger(__name__)

AXES = "[diffusion_steps, layers, batch, kv_heads, q_heads, queries, seq]"
FUSE_MODES = ("max", "mean")
SCALES = ("figure", "shared")


@dataclass
class RenderSummary:
    """What :func:`render_tree` wrote."""

    root: Path  # <out>/inference_timestep_<k>
    files: int = 0
    seconds: float = 0.0
    cameras: list[str] = field(default_factory=list)  # rendered
    skipped_cameras: list[str] = field(default_factory=list)  # padded / absent
    text_tokens: int = 0  # real text tokens drawn (0 = no text figure)
    text_boxes: list[tuple[int, int, int, int]] = field(
        default_factory=list
    )  # token k's (x0, y0, x1, y1) in the strip
    figure_sizes: dict[str, tuple[int, int]] = field(
        default_factory=dict
    )  # camera -> (H, W) of the image part
    diffusion_steps: int = 1
    layers: int = 0
    action_tokens: int = 0
    index_html: Path | None = None


@dataclass
class FusedAttention:
    """Head-fused attention of the action queries: ``weights`` float32 (D, L, Qa, S)."""

    weights: np.ndarray
    action_queries: tuple[int, int]
    diffusion_axis: bool


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - np.max(x, axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= np.sum(x, axis=axis, keepdims=True)
    return x


def fuse_heads(
    attention: np.ndarray,
    layout: TokenLayout,
    *,
    batch_index: int = 0,
    fuse: str = "max",
    logits: bool = False,
    diffusion_steps: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
) -> FusedAttention:
    """Fuse all heads (kv × q groups) of the action queries: ``(D, L, Qa, S)`` float32.

    ``logits=True`` applies a softmax over the key axis first (for pre-softmax scores).
    Weights must otherwise be non-negative. Fusion is done one diffusion step at a time so that
    the float32 copy never exceeds one step of the array.
    """
    if fuse not in FUSE_MODES:
        raise UserError(f"unknown head fusion '{fuse}'; choose one of: {', '.join(FUSE_MODES)}")
    arr = np.asarray(attention)
    if arr.ndim == 6:
        arr, diffusion_axis = arr[None], False
    elif arr.ndim == 7:
        diffusion_axis = True
    else:
        raise UserError(
            f"attention array must have 7 axes {AXES} (or 6 without diffusion_steps); got shape {arr.shape}"
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise UserError(f"attention array must be numeric, got dtype {arr.dtype}")
    shape = tuple(int(s) for s in np.asarray(attention).shape)
    d_n, l_n, b_n, _, _, q_n, s_n = arr.shape
    if min(arr.shape) == 0:
        raise UserError(f"attention array has an empty axis: shape {shape} {AXES}")
    layout.check_sequence(s_n, shape)
    qa, qb = layout.action_query_range(q_n, s_n, shape)
    if not 0 <= batch_index < b_n:
        raise UserError(
            f"batch index {batch_index} is outside the batch axis of length {b_n} (shape {shape})"
        )
    d_sel = _selection(diffusion_steps, d_n, "diffusion step")
    l_sel = _selection(layers, l_n, "layer")
    out = np.empty((len(d_sel), len(l_sel), qb - qa, s_n), np.float32)
    for i, d in enumerate(d_sel):
        block = np.asarray(arr[d][l_sel, batch_index, :, :, qa:qb, :], dtype=np.float32)  # (L, KV, QH, Qa, S)
        if logits:
            block = _softmax(block)  # fancy indexing above made a private copy
        elif float(block.min()) < 0.0:
            raise UserError(
                "attention weights are negative: these look like pre-softmax scores; pass "
                "logits=True (--logits) to apply the softmax over the sequence first"
            )
        out[i] = block.max(axis=(1, 2)) if fuse == "max" else block.mean(axis=(1, 2))
    if not np.all(np.isfinite(out)):
        raise UserError("attention array has NaN or infinite weights for the action queries")
    return FusedAttention(out, (qa, qb), diffusion_axis)


def _selection(sel: Sequence[int] | None, n: int, what: str) -> list[int]:
    if sel is None:
        return list(range(n))
    out = [int(i) for i in sel]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise UserError(f"{what} {bad[0]} is out of range: the array has {n}")
    return out


def _normalise(values: np.ndarray, scale_max: np.ndarray) -> np.ndarray:
    """uint8 ``round(255 · v / max)`` with max broadcast over the last axis; 0 where max is 0."""
    m = scale_max[..., None]
    safe = np.where(m > 0, m, 1.0)
    return np.clip(np.rint(values * (255.0 / safe)), 0, 255).astype(np.uint8)


@dataclass
class _Prepared:
    """Everything a worker needs, computed once with numpy for the whole tree."""

    cam_heat: dict[str, np.ndarray]  # cam -> uint8 (D, L, Qa, h, w)
    cam_stats: dict[str, tuple[np.ndarray, np.ndarray]]  # cam -> (max, sum) float32 (D, L, Qa)
    text_heat: np.ndarray | None  # uint8 (D, L, Qa, n_text)
    text_stats: tuple[np.ndarray, np.ndarray] | None


def _prepare(fused: np.ndarray, cams: list[CameraView], text_idx: np.ndarray | None, scale: str) -> _Prepared:
    d, l_n, qa, _ = fused.shape
    raw: dict[str, np.ndarray] = {c.name: fused[..., c.index.ravel()] for c in cams}
    text_raw = fused[..., text_idx] if text_idx is not None and len(text_idx) else None
    maxes = {k: v.max(axis=-1) for k, v in raw.items()}
    text_max = text_raw.max(axis=-1) if text_raw is not None else None
    if scale == "shared":
        parts = list(maxes.values()) + ([text_max] if text_max is not None else [])
        shared = np.max(np.stack(parts), axis=0)
    cam_heat, cam_stats = {}, {}
    for c in cams:
        m = shared if scale == "shared" else maxes[c.name]
        h, w = c.grid
        cam_heat[c.name] = _normalise(raw[c.name], m).reshape(d, l_n, qa, h, w)
        cam_stats[c.name] = (maxes[c.name], raw[c.name].sum(axis=-1))
    text_heat = text_stats = None
    if text_raw is not None and text_max is not None:  # both or neither
        m = shared if scale == "shared" else text_max
        text_heat = _normalise(text_raw, m)
        text_stats = (text_max, text_raw.sum(axis=-1))
    return _Prepared(cam_heat, cam_stats, text_heat, text_stats)


def _check_images(
    images: Mapping[str, np.ndarray] | None, cams: list[CameraView]
) -> dict[str, np.ndarray | None]:
    """Map each real camera to its RGB image (None = draw the heat alone, only when no images at all)."""
    real = [c.name for c in cams if not c.padded]
    if images is None:
        return {c: None for c in real}
    images = dict(images)
    missing = [c for c in real if c not in images]
    if missing:
        raise UserError(
            f"no image for camera(s) {', '.join(missing)} (images given: {', '.join(images) or 'none'}); "
            f"pass them, or mark absent cameras as padded in the layout ('padded': [...] / --padded)"
        )
    known = {c.name for c in cams}
    extra = [k for k in images if k not in known]
    if extra:
        log.warning(
            "images for %s are not in the layout (cameras: %s); ignored",
            ", ".join(extra),
            ", ".join(sorted(known)),
        )
    return {c: to_rgb_uint8(images[c], f"image for camera '{c}'") for c in real}


def _text_tokens(text_tokens: Sequence[str] | None, seg_len: int) -> tuple[list[str], str]:
    """The real tokens shown (padding dropped, overlong prompts truncated as the model did)."""
    if text_tokens is None:
        return [f"#{i}" for i in range(seg_len)], f"{seg_len} token slots (no token text given)"
    toks = [str(t) for t in text_tokens]
    if len(toks) > seg_len:
        log.info(
            "text has %d tokens, the layout %d: showing the first %d (the model truncates)",
            len(toks),
            seg_len,
            seg_len,
        )
        return toks[:seg_len], f"{seg_len} of {len(toks)} tokens (truncated)"
    note = f"{len(toks)} tokens" + (
        f", {seg_len - len(toks)} padding slots skipped" if len(toks) < seg_len else ""
    )
    return toks, note


def render_tree(
    attention: np.ndarray,
    layout: TokenLayout | Mapping[str, Any],
    out_dir: str | Path,
    images: Mapping[str, np.ndarray] | None = None,
    text_tokens: Sequence[str] | None = None,
    *,
    inference_step: int = 0,
    batch_index: int = 0,
    fuse: str = "max",
    scale: str = "figure",
    logits: bool = False,
    diffusion_level: bool | None = None,
    diffusion_steps: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    padded: Sequence[str] = (),
    colormap: str = "turbo",
    alpha: float = 0.5,
    interpolation: str = "linear",
    image_size: tuple[int, int] | None = None,
    jpeg_quality: int = 85,
    caption: bool = True,
    overview: bool = True,
    workers: int | None = None,
    title: str = "",
) -> RenderSummary:
    """Write the attention tree of one inference step (see the module docstring for the layout).

    Args:
        attention: ``[D, L, B, KV, QH, Q, S]`` (or without D) attention weights, numpy or array-like.
        layout: which key positions are which camera / text (:class:`TokenLayout` or its dict form).
        out_dir: root folder; the step is written to ``out_dir/inference_timestep_<inference_step>``.
        images: camera name -> RGB image (uint8 (H, W, 3) or float in [0, 1]). ``None``: heat maps
            are drawn without a background image. Padded cameras need no image.
        text_tokens: the prompt's tokens as strings; fewer than the text segment = padding (skipped),
            more = truncated to the segment like the model does. ``None``: tokens labelled ``#i``.
        fuse: ``"max"`` (hot if any head attends) or ``"mean"`` over all kv × q heads.
        scale: ``"figure"`` (each figure normalised to [0, its max]) or ``"shared"`` (one [0, max] for
            all figures of one action token and layer).
        logits: apply a softmax over the sequence first (the array holds pre-softmax scores).
        diffusion_level: force (True) or suppress (False) the ``diffusion_timestep_<j>`` level;
            default: present when the array has more than one diffusion step.
        diffusion_steps, layers: subsets to render (default all).
        padded: extra camera names to treat as padded (skipped).
        image_size: (H, W) of the camera figures; default each camera image's own size.
        workers: threads encoding/writing figures (default: number of CPUs).
        overview: also write ``index.html`` and overview mosaics (robokit.viz.overview).

    Returns:
        a :class:`RenderSummary`.
    """
    t0 = time.perf_counter()
    if scale not in SCALES:
        raise UserError(f"unknown colour scale '{scale}'; choose one of: {', '.join(SCALES)}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise UserError(f"jpeg quality must be in 1..100, got {jpeg_quality}")
    if not isinstance(layout, TokenLayout):
        layout = TokenLayout.from_dict(layout, padded=padded)
    elif padded:
        layout = TokenLayout.from_dict(layout.to_dict(), padded=padded)
    fused = fuse_heads(
        attention,
        layout,
        batch_index=batch_index,
        fuse=fuse,
        logits=logits,
        diffusion_steps=diffusion_steps,
        layers=layers,
    )
    weights = fused.weights
    d_n, l_n, qa_n, _ = weights.shape
    arr_shape = np.asarray(attention).shape
    d_ids = _selection(diffusion_steps, arr_shape[0] if fused.diffusion_axis else 1, "diffusion step")
    l_ids = _selection(layers, arr_shape[1 if fused.diffusion_axis else 0], "layer")
    with_diffusion = (
        (arr_shape[0] > 1 and fused.diffusion_axis) if diffusion_level is None else diffusion_level
    )
    if not with_diffusion and d_n > 1:
        raise UserError(
            f"{d_n} diffusion steps cannot share one folder: keep the diffusion_timestep level "
            f"or select a single diffusion step"
        )

    all_cams = layout.cameras()
    cams = [c for c in all_cams if not c.padded]
    cam_images = _check_images(images, all_cams)
    text_seg = layout.text()
    if not cams and text_seg is None:
        raise UserError("the layout has nothing to draw: no (unpadded) camera grid and no text segment")
    if text_seg is None and text_tokens:
        log.warning("text tokens given but the layout has no text segment; ignored")
    shown_tokens: list[str] = []
    text_note = ""
    text_idx = None
    if text_seg is not None:
        shown_tokens, text_note = _text_tokens(text_tokens, text_seg.length)
        text_idx = np.arange(text_seg.start, text_seg.start + len(shown_tokens))
    prep = _prepare(weights, cams, text_idx, scale)

    figures = {
        c.name: CameraFigure(c.grid, cam_images[c.name], image_size, colormap, alpha, interpolation, caption)
        for c in cams
    }
    strip_width = max(448, sum(f.size[1] for f in figures.values()) if figures else 672)
    strip = TextStrip(shown_tokens, strip_width, colormap) if shown_tokens else None

    root = Path(out_dir) / f"inference_timestep_{int(inference_step)}"
    leaf_dirs = _make_dirs(root, d_ids, l_ids, qa_n, with_diffusion)

    mosaics = None
    if overview:
        from robokit.viz.overview import OverviewBuilder

        mosaics = OverviewBuilder(root, figures, d_ids, l_ids, qa_n, with_diffusion, prep.text_heat, colormap)

    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    cam_names = [c.name for c in cams]

    def work(di: int, li: int) -> int:
        written = 0
        for q in range(qa_n):
            folder = leaf_dirs[di][q][li]
            for name in cam_names:
                mx, sm = prep.cam_stats[name]
                img = figures[name].render(
                    prep.cam_heat[name][di, li, q], f"max {mx[di, li, q]:.3g}  sum {sm[di, li, q]:.3g}"
                )
                written += _write_jpeg(os.path.join(folder, f"fused_attention_on_{name}.jpg"), img, params)
            # A strip exists only for shown text tokens, which always have heat and stats.
            if strip is not None and prep.text_heat is not None and prep.text_stats is not None:
                mx, sm = prep.text_stats
                where = f"diff {d_ids[di]} | " if with_diffusion else ""
                header = (
                    f"{where}layer {l_ids[li]} | action {q} | text max {mx[di, li, q]:.3g} "
                    f"sum {sm[di, li, q]:.3g}"
                )
                img = strip.render(prep.text_heat[di, li, q], header)
                written += _write_jpeg(os.path.join(folder, "fused_attention_on_text.jpg"), img, params)
        if mosaics is not None:
            mosaics.add_row(di, li, prep.cam_heat)
        return written

    jobs = [(di, li) for di in range(d_n) for li in range(l_n)]
    n_workers = max(1, int(workers or os.cpu_count() or 1))
    if n_workers == 1:
        files = sum(work(di, li) for di, li in jobs)
    else:
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="viz") as pool:
            files = sum(pool.map(lambda j: work(*j), jobs))

    summary = RenderSummary(
        root=root,
        files=files,
        cameras=cam_names,
        skipped_cameras=[c.name for c in all_cams if c.padded],
        text_tokens=len(shown_tokens),
        diffusion_steps=d_n,
        layers=l_n,
        action_tokens=qa_n,
        text_boxes=list(strip.boxes) if strip else [],
        figure_sizes={n: f.size for n, f in figures.items()},
    )
    if mosaics is not None:
        summary.index_html = mosaics.finish(
            title=title or f"inference step {inference_step}",
            info={
                "array shape": str(tuple(arr_shape)),
                "head fusion": fuse,
                "colour scale": scale,
                "colormap": colormap,
                "action queries": f"{fused.action_queries[0]}..{fused.action_queries[1] - 1}",
                "cameras": ", ".join(cam_names) or "none",
                "padded cameras": ", ".join(summary.skipped_cameras) or "none",
                "text": text_note or "none",
            },
            cam_names=cam_names,
            has_text=strip is not None,
            text_tokens=shown_tokens,
        )
        summary.files += mosaics.files_written
    summary.seconds = time.perf_counter() - t0
    log.debug("wrote %d files under %s in %.1f s", summary.files, root, summary.seconds)
    return summary


def _write_jpeg(path: str, bgr: np.ndarray, params: list[int]) -> int:
    ok, buf = cv2.imencode(".jpg", bgr, params)
    if not ok:
        raise UserError(f"could not encode {path} as JPEG")
    with open(path, "wb") as f:
        f.write(buf.data)
    return 1


def _make_dirs(
    root: Path, d_ids: list[int], l_ids: list[int], qa_n: int, with_diffusion: bool
) -> list[list[list[str]]]:
    """Create every leaf folder once; return leaf[d][q][l] paths."""
    leaves: list[list[list[str]]] = []
    for d in d_ids:
        base = root / f"diffusion_timestep_{d}" if with_diffusion else root
        per_q = []
        for q in range(qa_n):
            tok = base / f"action_token_{q}"
            per_l = []
            for l_id in l_ids:
                p = str(tok / f"layer_{l_id}")
                os.makedirs(p, exist_ok=True)
                per_l.append(p)
            per_q.append(per_l)
        leaves.append(per_q)
    return leaves
