"""CPU inference of full ACT, batch 1: torch against the CPU inference engines, channels-last and bf16.

Full default ACT (ResNet-18 from scratch -- nothing is downloaded --, hidden 512, 8 heads, ff 3200,
4 encoder layers, one decoder layer run, chunk 100), 480x640 images, 1 and 2 cameras, state/action 8,
random weights and statistics, ``--threads`` threads (2 by default, the robot-PC case). Every variant
goes from the same observation (uint8 images, raw qpos) to the de-normalised chunk through
``predict_chunk``, as the policy server calls it:

* torch: ``ACTPolicy.predict_chunk`` (batch norm folded into the convolutions, channels-last
  backbone, ``inference_mode``) -- the baseline every ratio is against;
* torch NCHW: the same with the backbone in the default (channels-first) layout, to show what
  channels-last gives;
* torch bf16: the baseline under ``torch.autocast("cpu", torch.bfloat16)``; on a CPU without
  AVX512-BF16/AMX this is emulated, and it is reported either way with its error;
* onnx / openvino: :func:`robokit.deploy.engines.accelerate` (exported at start, checked <= 1e-4).

The rounds are interleaved (each variant once per round) so the machine's noise hits all alike;
min and median over ``--repeats`` rounds after ``--warmup``. The error is the max abs difference of
the de-normalised chunk from torch's on the timed observation. The load average before and after is
recorded: quote figures only from a quiet machine (load below ~1.5 on 2 cores).
Writes benchmarks/results/cpu_inference.json.

    python benchmarks/cpu_inference.py                  # 1 and 2 cameras, 480x640, 20 rounds
    python benchmarks/cpu_inference.py --quick          # smoke run: 120x160, 3 rounds
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robokit.deploy.engines import EnginePolicy, accelerate
from robokit.errors import UserError
from robokit.policies.act.model import ACTConfig, ACTPolicy

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_inference.json"
CAMS = ["top", "wrist"]


def build(cams: list[str], image_hw: tuple[int, int]) -> ACTPolicy:
    torch.manual_seed(0)
    policy = ACTPolicy(ACTConfig(camera_names=cams, image_shape=(*image_hw, 3), state_dim=8, action_dim=8))
    rng = np.random.default_rng(0)
    policy.set_norm_stats({"qpos_mean": rng.normal(size=8), "qpos_std": rng.uniform(0.1, 1, 8),
                           "qpos_min": -np.ones(8), "qpos_max": np.ones(8),
                           "action_mean": rng.normal(size=8), "action_std": rng.uniform(0.1, 1, 8),
                           "action_min": -np.ones(8), "action_max": np.ones(8)})
    return policy.eval()


class _ChannelsFirst(nn.Module):
    """The fused backbone kept in the default layout (its input made contiguous again)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = copy.deepcopy(body).to(memory_format=torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.contiguous())


class _FixedBackbone:
    """Stands in for the policy's inference-backbone cache: always this module."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def get(self, backbone: nn.Module) -> nn.Module:
        return self.module


def channels_first_copy(policy: ACTPolicy) -> ACTPolicy:
    other = copy.deepcopy(policy)
    other._fused = _FixedBackbone(_ChannelsFirst(policy._fused.get(policy.model.backbone)))  # type: ignore[assignment]
    return other


def bf16_capable() -> dict[str, Any]:
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        pass
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "avx512f": "avx512f" in flags}


def load() -> float:
    return os.getloadavg()[0]


def _chunk_of(policy: Any, obs: dict[str, Any]) -> Callable[[], np.ndarray]:
    return lambda: policy.predict_chunk(obs)[0]


def measure(cams: list[str], image_hw: tuple[int, int], engines: list[str], repeats: int, warmup: int,
            ) -> dict[str, Any]:
    policy = build(cams, image_hw)
    rng = np.random.default_rng(1)
    obs = {"qpos": rng.normal(size=8).astype(np.float32),
           "images": {c: rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8) for c in cams}}
    variants: dict[str, Callable[[], np.ndarray]] = {"torch": lambda: policy.predict_chunk(obs)[0]}
    nchw = channels_first_copy(policy)
    variants["torch NCHW"] = lambda: nchw.predict_chunk(obs)[0]

    def bf16() -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return policy.predict_chunk(obs)[0]

    variants["torch bf16"] = bf16
    startup: dict[str, Any] = {}
    for engine in engines:
        t0 = time.perf_counter()
        try:
            fast = accelerate(policy, engine)
        except UserError as exc:  # not installed
            startup[engine] = {"skipped": str(exc)}
            continue
        if not isinstance(fast, EnginePolicy):
            startup[engine] = {"skipped": "fell back to torch (see the warning)"}
            continue
        startup[engine] = {"export_and_check_s": time.perf_counter() - t0, "check_error": fast.max_error}
        variants[engine] = _chunk_of(fast, obs)

    reference = variants["torch"]()
    errors = {name: float(np.max(np.abs(fn() - reference))) for name, fn in variants.items()}
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    base = statistics.median(times["torch"])
    rows = {name: {"min_ms": min(ts), "median_ms": statistics.median(ts),
                   "ratio_median": statistics.median(ts) / base, "max_abs_error": errors[name]}
            for name, ts in times.items()}
    return {"cameras": len(cams), "image_hw": list(image_hw), "variants": rows, "startup": startup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--engines", nargs="+", default=["onnx", "openvino"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="120x160, 3 rounds: a smoke run")
    args = parser.parse_args()
    image_hw = (120, 160) if args.quick else (480, 640)
    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    torch.set_num_threads(args.threads)
    load_before = load()
    print(f"threads {args.threads}, {image_hw[0]}x{image_hw[1]}, {repeats} rounds; load {load_before:.2f}; "
          f"{bf16_capable()}")
    runs = []
    for k in args.cameras:
        result = measure(CAMS[:k], image_hw, args.engines, repeats, warmup)
        runs.append(result)
        print(f"\n{k} camera(s):")
        print(f"  {'variant':<12} {'min ms':>8} {'median ms':>10} {'x torch':>8} {'max abs err':>12}")
        for name, row in result["variants"].items():
            print(f"  {name:<12} {row['min_ms']:8.1f} {row['median_ms']:10.1f} {row['ratio_median']:8.2f} "
                  f"{row['max_abs_error']:12.2e}")
        for engine, info in result["startup"].items():
            if "skipped" in info:
                print(f"  {engine}: skipped ({info['skipped']})")
            else:
                print(f"  {engine}: export + check {info['export_and_check_s']:.1f} s, "
                      f"check error {info['check_error']:.1e}")
    load_after = load()
    print(f"\nload average before {load_before:.2f}, after {load_after:.2f}")
    out = {"benchmark": "cpu_inference", "threads": args.threads, "repeats": repeats, "warmup": warmup,
           "quick": args.quick, "load_before": load_before, "load_after": load_after,
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), **bf16_capable()},
           "torch": torch.__version__, "runs": runs}
    for module in ("onnxruntime", "openvino"):
        try:
            out[module] = __import__(module).__version__
        except ImportError:
            pass
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_name("cpu_inference_quick.json" if args.quick else RESULTS.name).write_text(
        json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
