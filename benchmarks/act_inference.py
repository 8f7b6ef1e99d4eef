"""ACT batch-1 inference latency: robokit's predict path against a plain eager path, same weights.

Full default ACT (ResNet-18, hidden 512, 8 heads, ff 3200, 4 encoder / 7 decoder layers, chunk 100),
two cameras at 480x640, state/action 8. Both paths start from the same observation (uint8 images,
raw qpos) and end with de-normalised float32 actions:

* eager: the original network as written (``robokit.policies.act.reference``): cameras one at a
  time through the backbone, frozen batch norms computed each call, all 7 decoder layers run and
  the first kept, autograd on (no ``inference_mode``);
* eager + inference_mode: the same, wrapped as the original's evaluation loop wraps it;
* ours: ``ACTPolicy.predict_chunk`` (cameras batched, batch norm folded into the convolutions,
  channels-last, one decoder layer, ``inference_mode``).

Timings are interleaved (eager, ours, eager+inference_mode, ...) so machine noise hits all paths
alike; p50 over the repeats. Prints the ratio ours / eager (target <= 0.5) and the max abs
difference of the action chunks (target <= 1e-4). Writes benchmarks/results/act_inference.json.

    python benchmarks/act_inference.py            # CPU (and CUDA when available)
    python benchmarks/act_inference.py --quick    # smoke run: 240x320, few repeats
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from robokit.policies.act.import_original import convert_state_dict
from robokit.policies.act.model import ACTConfig, ACTPolicy
from robokit.policies.act.reference import OriginalACT, random_original_state_dict

CAMS = ["top", "wrist"]
RESULTS = Path(__file__).resolve().parent / "results" / "act_inference.json"


def build(image_hw: tuple[int, int]) -> tuple[ACTPolicy, OriginalACT, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    cfg = ACTConfig(camera_names=CAMS, image_shape=(*image_hw, 3), state_dim=8, action_dim=8)
    ref = OriginalACT(CAMS, state_dim=8, action_dim=8, chunk_size=cfg.chunk_size, hidden_dim=cfg.hidden_dim,
                      nheads=cfg.nheads, dim_feedforward=cfg.dim_feedforward, enc_layers=cfg.enc_layers,
                      dec_layers=cfg.dec_layers, latent_dim=cfg.latent_dim)
    sd = random_original_state_dict(ref, seed=0)
    ref.load_state_dict(sd)
    ref.eval()
    policy = ACTPolicy(cfg)
    convert_state_dict(sd, policy)
    rng = np.random.default_rng(0)
    stats = {"qpos_mean": rng.normal(size=8).astype(np.float32),
             "qpos_std": rng.uniform(0.1, 1, 8).astype(np.float32),
             "action_mean": rng.normal(size=8).astype(np.float32),
             "action_std": rng.uniform(0.1, 1, 8).astype(np.float32)}
    policy.set_norm_stats({**stats, "qpos_min": -np.ones(8), "qpos_max": np.ones(8),
                           "action_min": -np.ones(8), "action_max": np.ones(8)})
    policy.eval()
    return policy, ref, stats


def eager_predict(ref: OriginalACT, stats: dict[str, np.ndarray], obs: dict, device: torch.device) -> np.ndarray:
    """The original evaluation step: pre_process, get_image, policy(qpos, image), post_process."""
    qpos = (obs["qpos"] - stats["qpos_mean"]) / stats["qpos_std"]
    qpos = torch.from_numpy(qpos).float().to(device)[None]
    image = np.stack([obs["images"][c].transpose(2, 0, 1) for c in CAMS])
    image = torch.from_numpy(image / 255.0).float().to(device)[None]
    a_hat = ref(qpos, image)[0]
    return a_hat.detach().cpu().numpy() * stats["action_std"] + stats["action_mean"]


def timed(fn, device: torch.device) -> tuple[float, np.ndarray]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000.0, out


def run_device(device: torch.device, image_hw: tuple[int, int], repeats: int, warmup: int) -> dict:
    policy, ref, stats = build(image_hw)
    policy.to(device)
    ref.to(device)
    rng = np.random.default_rng(1)
    observations = [{"qpos": (stats["qpos_mean"] + stats["qpos_std"] * rng.normal(size=8)).astype(np.float32),
                     "images": {c: rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8) for c in CAMS}}
                    for _ in range(4)]

    def ours(o):
        return policy.predict_chunk(o)[0]

    def eager(o):
        return eager_predict(ref, stats, o, device)

    def eager_inference_mode(o):
        with torch.inference_mode():
            return eager_predict(ref, stats, o, device)

    paths = {"eager": eager, "ours": ours, "eager_inference_mode": eager_inference_mode}
    for i in range(warmup):
        for fn in paths.values():
            fn(observations[i % len(observations)])
    times: dict[str, list[float]] = {k: [] for k in paths}
    max_diff = 0.0
    for i in range(repeats):
        o = observations[i % len(observations)]
        outs = {}
        for name, fn in paths.items():
            ms, outs[name] = timed(lambda fn=fn, o=o: fn(o), device)
            times[name].append(ms)
        max_diff = max(max_diff, float(np.abs(outs["ours"] - outs["eager"]).max()))
    p50 = {k: statistics.median(v) for k, v in times.items()}
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "image_hw": list(image_hw),
        "repeats": repeats,
        "p50_ms": p50,
        "all_ms": times,
        "ratio_ours_over_eager": p50["ours"] / p50["eager"],
        "ratio_ours_over_eager_inference_mode": p50["ours"] / p50["eager_inference_mode"],
        "max_abs_diff": max_diff,
        "target_ratio": 0.5,
        "target_max_abs_diff": 1e-4,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (240x320, few repeats)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU, and CUDA too when available")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # exact fp32 on GPUs too, so that the outputs can be compared to 1e-4
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    image_hw = (240, 320) if args.quick else (480, 640)
    repeats = args.repeats or (3 if args.quick else 15)
    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    results = {"benchmark": "act_inference", "quick": args.quick, "torch": torch.__version__,
               "config": "ACT defaults: resnet18, hidden 512, 8 heads, ff 3200, 4 enc / 7 dec layers, chunk 100, "
                         "2 cameras, batch 1",
               "devices": {}}
    for device in devices:
        r = run_device(device, image_hw, repeats, warmup=1 if args.quick else 3)
        results["devices"][device.type] = r
        p = r["p50_ms"]
        print(f"[{device.type}: {r['device']}, {r['threads']} threads, {image_hw[0]}x{image_hw[1]}, "
              f"{repeats} repeats]")
        print(f"  eager p50 {p['eager']:.1f} ms | eager+inference_mode p50 {p['eager_inference_mode']:.1f} ms | "
              f"ours p50 {p['ours']:.1f} ms")
        print(f"  ratio ours/eager {r['ratio_ours_over_eager']:.3f} (target <= 0.5), "
              f"ours/eager+inference_mode {r['ratio_ours_over_eager_inference_mode']:.3f}; "
              f"max |diff| {r['max_abs_diff']:.2e} (target <= 1e-4)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
