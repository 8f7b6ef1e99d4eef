"""Writing the seed-shaped attention tree: render_tree vs a plain one-file-at-a-time loop.

openpi's pi0 attention array is [10 diffusion steps, 18 layers, 1, 1 kv head, 8 q heads, 51 queries, 867
tokens]; the tree has 10 x 50 x 18 leaf folders with 3 camera figures (224x224) + 1 text strip each:
27,000 heat-map JPEGs + 9,000 strips. Both writers produce the same pixels (checked on a sample):

* render_tree: heads fused and normalised once for the whole array (numpy), figure pipelines
  precomputed, JPEG encoding + writing on a thread pool, folders made once;
* plain loop: for every file, slice the raw array, fuse the heads, normalise, build the figure
  (background scaling, colour table, text-strip layout), encode, make its folder, write: sequential.

The whole tree is written once by render_tree (the headline figure). The plain loop is run only on
a subset (one diffusion step, a few layers), alternated with render_tree on the same subset for a
like-for-like ratio, and extrapolated to the whole tree by files per second; the output says so.
Creating ~36k files and ~9k folders has a cost no writer avoids: it is measured too (the floor).
Usage:

    python benchmarks/viz_tree.py            # full tree (~36k files) + plain-loop subset
    python benchmarks/viz_tree.py --quick    # 2 diffusion steps + a smaller subset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robokit.viz.attention import render_tree
from robokit.viz.figures import CameraFigure, TextStrip
from robokit.viz.layout import pi0_layout

CAMS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
WORDS = [
    "pick",
    "up",
    "the",
    "red",
    "cube",
    "on",
    "the",
    "left",
    "and",
    "put",
    "it",
    "in",
    "the",
    "blue",
    "bowl",
    "next",
    "to",
    "the",
    "green",
    "plate",
]
BUDGET_S = 120.0


def seed_attention(diffusion: int, rng: np.random.Generator) -> np.ndarray:
    """Softmax-like weights of pi0's shape with a few hot tokens per query."""
    logits = rng.standard_normal((diffusion, 18, 1, 1, 8, 51, 867), dtype=np.float32)
    hot = rng.integers(0, 816, size=(diffusion, 18, 1, 1, 8, 51, 3))
    np.put_along_axis(logits, hot, 6.0, axis=-1)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    return logits


def scene(k: int) -> np.ndarray:
    """A smooth synthetic 224x224 camera frame (JPEG-compressible like a real one)."""
    yy, xx = np.mgrid[0:224, 0:224].astype(np.float32)
    img = np.stack([80 + 0.4 * yy, 90 + 0.3 * xx, 110 + 0.2 * (xx + yy) / 2], axis=-1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    cv2.rectangle(img, (40 + 30 * k, 80), (100 + 30 * k, 140), (200, 40, 40), -1)
    cv2.circle(img, (160, 60 + 20 * k), 25, (40, 160, 60), -1)
    return img


def plain_loop(
    att: np.ndarray,
    images: dict[str, np.ndarray],
    tokens: list[str],
    out: Path,
    diffusion_ids: list[int],
    layer_ids: list[int],
) -> int:
    """The same figures written one at a time with no vectorisation or reuse (the baseline)."""
    layout = pi0_layout(CAMS)
    cams = layout.cameras()
    text = layout.text()
    q0, q1 = layout.action_queries
    params = [cv2.IMWRITE_JPEG_QUALITY, 85]
    files = 0
    for d in diffusion_ids:
        for i in range(q1 - q0):
            for li in layer_ids:
                folder = (
                    out
                    / "inference_timestep_0"
                    / f"diffusion_timestep_{d}"
                    / f"action_token_{i}"
                    / f"layer_{li}"
                )
                heads = att[d, li, 0, :, :, q0 + i, :].astype(np.float32)  # (kv, q_heads, seq)
                fused = heads.max(axis=(0, 1))
                for cam in cams:
                    vals = fused[cam.index.ravel()]
                    m = vals.max()
                    u8 = np.clip(np.rint(vals * (255.0 / (m if m > 0 else 1.0))), 0, 255).astype(np.uint8)
                    fig = CameraFigure(cam.grid, images[cam.name])
                    img = fig.render(u8.reshape(cam.grid), f"max {m:.3g}  sum {vals.sum():.3g}")
                    os.makedirs(folder, exist_ok=True)
                    cv2.imwrite(str(folder / f"fused_attention_on_{cam.name}.jpg"), img, params)
                    files += 1
                vals = fused[text.start : text.start + len(tokens)]
                m = vals.max()
                u8 = np.clip(np.rint(vals * (255.0 / (m if m > 0 else 1.0))), 0, 255).astype(np.uint8)
                strip = TextStrip(tokens, 224 * len(cams))
                img = strip.render(
                    u8, f"diff {d} | layer {li} | action {i} | text max {m:.3g} sum {vals.sum():.3g}"
                )
                os.makedirs(folder, exist_ok=True)
                cv2.imwrite(str(folder / "fused_attention_on_text.jpg"), img, params)
                files += 1
    return files


def same_pixels(a_root: Path, b_root: Path, rels: list[str]) -> bool:
    for rel in rels:
        a, b = cv2.imread(str(a_root / rel)), cv2.imread(str(b_root / rel))
        if a is None or b is None or a.shape != b.shape or not np.array_equal(a, b):
            return False
    return True


def file_creation_ms(work: Path, n_dirs: int = 100, per_dir: int = 4) -> float:
    """The floor no writer avoids: ms to create one small file (in fresh folders) on this disk."""
    data = b"x" * 8000
    t0 = time.perf_counter()
    for d in range(n_dirs):
        folder = work / "floor" / f"d{d}"
        os.makedirs(folder)
        for k in range(per_dir):
            (folder / f"f{k}.jpg").write_bytes(data)
    return (time.perf_counter() - t0) * 1e3 / (n_dirs * (per_dir + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 diffusion steps, smaller plain-loop subset")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "viz_tree.json"))
    ap.add_argument("--workdir", default=None, help="scratch folder for the trees (default: a temp dir)")
    args = ap.parse_args()

    diffusion = 2 if args.quick else 10
    sub_layers = [0, 9] if args.quick else [0, 4, 8, 12, 17]
    rng = np.random.default_rng(0)
    att = seed_attention(diffusion, rng)
    images = {c: scene(k) for k, c in enumerate(CAMS)}
    tokens = [f"\u2581{w}" for w in WORDS]
    layout = pi0_layout(CAMS)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="viz_tree_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        # 1. the headline: the whole tree with render_tree
        t0 = time.perf_counter()
        fast_files = render_tree(att, layout, work / "fast", images, tokens, overview=False).files
        fast_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        render_tree(att[:1], layout, work / "ov", images, tokens, overview=True)
        ov_s = time.perf_counter() - t0

        # 2. the same subset with both writers, alternated (the machine is shared): best of two each
        sub_fast, sub_plain = [], []
        for rep in range(2):
            t0 = time.perf_counter()
            n_fast = render_tree(
                att,
                layout,
                work / f"sf{rep}",
                images,
                tokens,
                overview=False,
                diffusion_steps=[0],
                layers=sub_layers,
            ).files
            sub_fast.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            n_plain = plain_loop(att, images, tokens, work / f"sp{rep}", [0], sub_layers)
            sub_plain.append(time.perf_counter() - t0)
        rels = [
            f"inference_timestep_0/diffusion_timestep_0/action_token_{i}/layer_{li}/fused_attention_on_{n}.jpg"
            for i in (0, 25, 49)
            for li in sub_layers
            for n in (*CAMS, "text")
        ]
        identical = same_pixels(work / "fast", work / "sp0", rels)
        floor_ms = file_creation_ms(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    full_files = diffusion * 18 * 50 * 4
    full_dirs = diffusion * 18 * 50
    fast_rate = fast_files / fast_s
    sub_fast_rate = n_fast / min(sub_fast)
    plain_rate = n_plain / min(sub_plain)
    plain_full_s = full_files / plain_rate
    floor_s = (full_files + full_dirs) * floor_ms / 1e3
    result = {
        "benchmark": "viz_tree",
        "quick": args.quick,
        "tree": {
            "diffusion_steps": diffusion,
            "layers": 18,
            "action_tokens": 50,
            "cameras": 3,
            "image": [224, 224],
            "files": full_files,
            "folders": full_dirs,
            "camera_figures": diffusion * 18 * 50 * 3,
            "text_strips": diffusion * 18 * 50,
        },
        "render_tree_full_tree": {
            "files": fast_files,
            "seconds": round(fast_s, 2),
            "files_per_s": round(fast_rate, 1),
            "workers": os.cpu_count(),
        },
        "subset": f"1 diffusion step x {len(sub_layers)} layers x 50 action tokens ({n_plain} files), "
        f"both writers, alternated, best of 2",
        "render_tree_subset": {
            "files": n_fast,
            "seconds": round(min(sub_fast), 2),
            "files_per_s": round(sub_fast_rate, 1),
        },
        "plain_loop_subset": {
            "files": n_plain,
            "seconds": round(min(sub_plain), 2),
            "files_per_s": round(plain_rate, 1),
            "extrapolated_full_tree_s": round(plain_full_s, 1),
        },
        "ratio_same_subset": round(sub_fast_rate / plain_rate, 2),
        "ratio_full_tree_vs_extrapolated_plain": round(plain_full_s / fast_s, 2),
        "file_creation_floor": {
            "ms_per_file_or_folder": round(floor_ms, 3),
            "full_tree_s": round(floor_s, 1),
        },
        "overview_one_diffusion_step_s": round(ov_s, 2),
        "identical_output_on_sample": identical,
        "budget_s": BUDGET_S,
        "full_tree_within_budget": None if args.quick else fast_s <= BUDGET_S,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "opencv": cv2.__version__,
            "load_avg_1min": round(os.getloadavg()[0], 2),
        },
    }
    tree = "full" if not args.quick else "quick"
    print(f"render_tree, whole {tree} tree : {fast_files} files in {fast_s:.1f} s = {fast_rate:.0f} files/s")
    print(
        f"same subset ({n_plain} files)   : render_tree {sub_fast_rate:.0f} files/s, plain loop "
        f"{plain_rate:.0f} files/s -> ratio {sub_fast_rate / plain_rate:.2f}x"
    )
    print(
        f"plain loop extrapolated to the whole tree ({full_files} files): {plain_full_s:.0f} s "
        f"(render_tree {fast_s:.0f} s, {plain_full_s / fast_s:.2f}x)"
    )
    print(
        f"file-creation floor: {floor_ms:.2f} ms per file/folder -> {floor_s:.0f} s for the tree's "
        f"{full_files} files + {full_dirs} folders"
    )
    print(
        f"same pixels on a sample: {identical}; overview of one diffusion step (incl. its files): {ov_s:.1f} s"
    )
    if not args.quick:
        print(
            f"full seed tree (27,000 camera figures + 9,000 text strips): {fast_s:.1f} s "
            f"(budget {BUDGET_S:.0f} s: {'OK' if fast_s <= BUDGET_S else 'OVER'})"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
