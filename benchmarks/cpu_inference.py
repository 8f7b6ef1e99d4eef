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
* onnx / openvino / ncnn: :func:`robokit.deploy.engines.accelerate` (exported at start, checked
  <= 1e-4); ncnn runs the backbone (Winograd 3x3 convolutions) and ONNX Runtime the transformer;
* lerobot / lerobot model (with ``--lerobot-python``): LeRobot's ACT at its defaults (the same
  architecture, from scratch) in its own environment, run by ``lerobot_act_cpu.py`` as a persistent
  worker: its observation -> de-normalised chunk path (``prepare_observation_for_inference``,
  preprocessor, ``predict_action_chunk``, postprocessor), and ``predict_action_chunk`` alone. The
  worker times each call itself, so the pipe adds nothing; its torch runs with the same threads.

The rounds are interleaved (each variant once per round, the LeRobot worker's calls among them) so
the machine's noise hits all alike; min and median over ``--repeats`` rounds after ``--warmup``.
The error is the max abs difference of the de-normalised chunk from torch's on the timed
observation. LeRobot's network has other (random) weights, so its outputs cannot be compared with
robokit's: its chunk is checked for shape (chunk, action) and finiteness instead. Ratios are given
against robokit's torch and against LeRobot's observation -> chunk path. The load average before and
after is recorded: quote figures only from a quiet machine (load below ~1.5 on 2 cores).
Writes benchmarks/results/cpu_inference.json.

    python benchmarks/cpu_inference.py                  # 1 and 2 cameras, 480x640, 20 rounds
    python benchmarks/cpu_inference.py --quick          # smoke run: 120x160, 3 rounds
    python benchmarks/cpu_inference.py --lerobot-python /work/lerobot-venv/bin/python --skip "torch bf16"
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
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
LEROBOT_WORKER = Path(__file__).resolve().parent / "lerobot_act_cpu.py"
CAMS = ["top", "wrist"]
LEROBOT = "lerobot"  # the variant every "x lerobot" ratio is against


class LeRobotWorker:
    """``lerobot_act_cpu.py`` running in another Python (LeRobot's environment), asked line by line."""

    def __init__(self, python: str, threads: int) -> None:
        self.process = subprocess.Popen([python, str(LEROBOT_WORKER), "--threads", str(threads)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.versions = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the LeRobot worker exited (code {self.process.wait()}); see its stderr above")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"LeRobot worker: {reply['error']}")
        return reply

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)


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


def _timed(fn: Callable[[], Any]) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    return run


def measure(cams: list[str], image_hw: tuple[int, int], engines: list[str], repeats: int, warmup: int,
            skip: set[str], lerobot: LeRobotWorker | None = None) -> dict[str, Any]:
    policy = build(cams, image_hw)
    rng = np.random.default_rng(1)
    obs = {"qpos": rng.normal(size=8).astype(np.float32),
           "images": {c: rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8) for c in cams}}
    variants: dict[str, Callable[[], np.ndarray]] = {"torch": lambda: policy.predict_chunk(obs)[0]}
    if "torch NCHW" not in skip:
        nchw = channels_first_copy(policy)
        variants["torch NCHW"] = lambda: nchw.predict_chunk(obs)[0]

    def bf16() -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return policy.predict_chunk(obs)[0]

    if "torch bf16" not in skip:
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
    errors: dict[str, float | None] = {name: float(np.max(np.abs(fn() - reference)))
                                       for name, fn in variants.items()}
    timers = {name: _timed(fn) for name, fn in variants.items()}
    if lerobot is not None:
        t0 = time.perf_counter()
        check = lerobot.ask(cmd="setup", cameras=len(cams), image_hw=list(image_hw))
        chunk_ok = check["chunk_shape"][-2:] == [policy.config.chunk_size, 8] and check["finite"]
        startup[LEROBOT] = {**check, "build_s": time.perf_counter() - t0, "output_ok": chunk_ok}
        if not chunk_ok:
            raise RuntimeError(f"LeRobot's chunk is not a finite (chunk, 8) array: {check}")
        for name, what in ((LEROBOT, "pipeline"), ("lerobot model", "model")):
            timers[name] = lambda what=what: float(lerobot.ask(cmd="time", what=what)["ms"])
            errors[name] = None  # other weights: nothing to compare with
    for _ in range(warmup):
        for timer in timers.values():
            timer()
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            times[name].append(timer())
    base = statistics.median(times["torch"])
    anchor = statistics.median(times[LEROBOT]) if LEROBOT in times else None
    rows = {name: {"min_ms": min(ts), "median_ms": statistics.median(ts),
                   "ratio_median": statistics.median(ts) / base, "max_abs_error": errors[name],
                   **({"ratio_lerobot_median": statistics.median(ts) / anchor,
                       "ratio_lerobot_min": min(ts) / min(times[LEROBOT])} if anchor else {}),
                   "times_ms": ts}
            for name, ts in times.items()}
    return {"cameras": len(cams), "image_hw": list(image_hw), "variants": rows, "startup": startup}


def print_run(result: dict[str, Any]) -> None:
    print(f"\n{result['cameras']} camera(s):")
    anchored = any("ratio_lerobot_median" in row for row in result["variants"].values())
    print(f"  {'variant':<14} {'min ms':>8} {'median ms':>10} {'x torch':>8}"
          + (f" {'x lerobot':>10} {'(min)':>6}" if anchored else "") + f" {'max abs err':>12}")
    for name, row in result["variants"].items():
        error = "n/a" if row["max_abs_error"] is None else f"{row['max_abs_error']:.2e}"
        print(f"  {name:<14} {row['min_ms']:8.1f} {row['median_ms']:10.1f} {row['ratio_median']:8.2f}"
              + (f" {row['ratio_lerobot_median']:10.2f} {row['ratio_lerobot_min']:6.2f}" if anchored else "")
              + f" {error:>12}")
    for engine, info in result["startup"].items():
        if engine == LEROBOT:
            print(f"  lerobot: chunk {info['chunk_shape']}, finite {info['finite']}, "
                  f"{info['parameters'] / 1e6:.1f} M parameters")
        elif "skipped" in info:
            print(f"  {engine}: skipped ({info['skipped']})")
        else:
            print(f"  {engine}: export + check {info['export_and_check_s']:.1f} s, "
                  f"check error {info['check_error']:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--engines", nargs="+", default=["onnx", "openvino", "ncnn"])
    parser.add_argument("--skip", nargs="+", default=[], choices=["torch NCHW", "torch bf16"],
                        help="leave these torch variants out (bf16 is slow where it is emulated)")
    parser.add_argument("--lerobot-python", help="a Python with lerobot installed: time LeRobot's ACT too")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="120x160, 3 rounds: a smoke run")
    parser.add_argument("--out", type=Path, help=f"where the JSON goes (default {RESULTS})")
    args = parser.parse_args()
    image_hw = (120, 160) if args.quick else (480, 640)
    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    torch.set_num_threads(args.threads)
    lerobot = LeRobotWorker(args.lerobot_python, args.threads) if args.lerobot_python else None
    load_before = load()
    print(f"threads {args.threads}, {image_hw[0]}x{image_hw[1]}, {repeats} rounds; load {load_before:.2f}; "
          f"{bf16_capable()}" + (f"; LeRobot worker {lerobot.versions}" if lerobot else ""))
    runs = []
    try:
        for k in args.cameras:
            runs.append(measure(CAMS[:k], image_hw, args.engines, repeats, warmup, set(args.skip), lerobot))
            print_run(runs[-1])
    finally:
        if lerobot is not None:
            lerobot.close()
    load_after = load()
    print(f"\nload average before {load_before:.2f}, after {load_after:.2f}")
    out = {"benchmark": "cpu_inference", "threads": args.threads, "repeats": repeats, "warmup": warmup,
           "quick": args.quick, "load_before": load_before, "load_after": load_after,
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpus": os.cpu_count(), **bf16_capable()},
           "python": sys.version.split()[0], "torch": torch.__version__, "runs": runs}
    if lerobot is not None:
        out["lerobot_worker"] = lerobot.versions
    for module in ("onnxruntime", "openvino", "ncnn", "pnnx"):
        try:
            out[module] = __import__(module).__version__
        except ImportError:
            pass
    path = args.out or RESULTS.with_name("cpu_inference_quick.json" if args.quick else RESULTS.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
