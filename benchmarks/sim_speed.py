"""Simulation speed: control steps per second against a 50 Hz real-time control loop.

One control step = physics for one 20 ms control period (``env.step()`` at 50 Hz) + a robot read
+ a joint command + rendering both cameras (``top`` and ``wrist``) through ``Camera.read_latest``:
what recording or deploying in simulation costs per step. The commands replay a scripted
pick-and-place episode (recorded before timing, so the expert's IK is not counted).

The baseline is the real-time loop itself: 50 steps per simulated second of wall clock. A ratio
above 1 means the simulation runs faster than real time at that image size. Measured at 240x320
and 480x640 in the same run, plus physics alone (no rendering) for reference. Each rate is given per
wall-clock second and per CPU second used (process time, render threads included): on a shared
machine the first shrinks with other processes' load, the second much less.

    .venv/bin/python benchmarks/sim_speed.py            # ~1 min
    .venv/bin/python benchmarks/sim_speed.py --quick    # a few seconds

Writes benchmarks/results/sim_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from robokit.hardware.sim import PandaSimEnv, _gl

BASELINE_HZ = 50.0
SIZES = ((240, 320), (480, 640))
RESULTS = Path(__file__).resolve().parent / "results" / "sim_speed.json"


def expert_actions(control_hz: float) -> list[np.ndarray]:
    """Actions of one scripted pick-and-place episode (replayed in every timed run)."""
    with PandaSimEnv(task="pick_place", seed=0, camera_names=(), control_hz=control_hz) as env:
        expert = env.task.expert()
        actions = []
        while (action := expert.next_action(env.robot.read())) is not None:
            env.robot.send_action(action)
            env.step()
            actions.append(action)
    return actions


def timed_run(size: tuple[int, int] | None, actions: list[np.ndarray], steps: int) -> tuple[float, float]:
    """(control steps per wall-clock second, per CPU second of this process and its render threads);
    ``size`` None runs physics + robot I/O without rendering."""
    cameras = ("top", "wrist") if size is not None else ()
    with PandaSimEnv(task="pick_place", seed=0, image_size=size or (240, 320), camera_names=cameras,
                     control_hz=BASELINE_HZ) as env:
        for cam in env.cameras.values():  # create the GL context outside the timed region
            cam.read_latest()
        done = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        while done < steps:
            env.reset(seed=done)
            for action in actions:
                state = env.robot.read()
                env.robot.send_action(action)
                env.step()
                frames = [cam.read_latest() for cam in env.cameras.values()]
                done += 1
                if done >= steps:
                    break
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    del state, frames
    return steps / elapsed, steps / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--steps", type=int, default=None, help="control steps per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    steps = args.steps or (60 if args.quick else 600)

    actions = expert_actions(BASELINE_HZ)
    rows = []
    for size in (None, *SIZES):
        rate, cpu_rate = timed_run(size, actions, steps)
        label = "physics only" if size is None else f"{size[0]}x{size[1]}, 2 cameras"
        rows.append({"config": label, "image_size": list(size) if size else None,
                     "steps_per_s": round(rate, 1), "realtime_ratio": round(rate / BASELINE_HZ, 2),
                     "steps_per_cpu_s": round(cpu_rate, 1),
                     "realtime_ratio_per_cpu_s": round(cpu_rate / BASELINE_HZ, 2)})
        print(f"{label:>22}: {rate:8.1f} control steps/s = {rate / BASELINE_HZ:6.2f}x a {BASELINE_HZ:.0f} Hz "
              f"real-time loop  ({cpu_rate / BASELINE_HZ:6.2f}x per CPU second)")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"1-minute load average {load:.1f} on {os.cpu_count()} cores: wall-clock ratios shrink under load; "
          "the per-CPU-second ratios do not" if load is not None else "")
    result = {
        "benchmark": "sim_speed",
        "baseline": f"{BASELINE_HZ:.0f} Hz real-time control loop ({BASELINE_HZ:.0f} steps per wall-clock second)",
        "step": "physics for 1/50 s + robot read + command + render top and wrist",
        "gl_backend": _gl.configure(),
        "steps_per_measurement": steps,
        "quick": args.quick,
        "results": rows,
        "machine": {"cpu_count": os.cpu_count(), "load_average_1min": load, "platform": platform.platform(),
                    "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
