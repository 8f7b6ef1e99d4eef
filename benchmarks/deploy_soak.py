"""Soak test: a trained ACT deployed in the simulation for 10 minutes, async inference over the protocol.

One control loop, one simulation and one policy client live for the whole run, as in a long session
on a rig; the policy runs in a `robokit serve` process. Episodes of the pick-and-place task follow
each other on new scene seeds (success ends an episode early, as in `robokit deploy --sim`). Every
episode's missed ticks, tick jitter and the resident memory (RSS) of both processes are sampled.

The baseline is the run's own first minute: it prints missed ticks per 1000 in the first and the last
minute and RSS growth after the first minute (warm-up: allocator pools, torch's caches), with the
ratios last/first.

    .venv/bin/python benchmarks/deploy_soak.py                          # 10 minutes, demo_out/run/last.pt
    .venv/bin/python benchmarks/deploy_soak.py --minutes 2 --checkpoint runs/act/last.pt

Writes benchmarks/results/deploy_soak.json. Target: no RSS growth beyond noise (a few MB) after
warm-up, missed ticks not growing over time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (Linux /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(checkpoint: Path) -> tuple[subprocess.Popen, str]:
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "robokit.cli", "serve", str(checkpoint), "--bind", address,
                             "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, address


def soak(address: str, minutes: float, server_pid: int, seed_start: int) -> list[dict]:
    from robokit.deploy.client import PolicyClient
    from robokit.deploy.loop import ControlLoop, LoopConfig, StopReason
    from robokit.deploy.runner import RemoteRunner
    from robokit.hardware.sim import PandaSimEnv
    from robokit.hardware.workspace import SIM_TABLE

    client = PolicyClient(address, timeout_s=0.5)
    runner = RemoteRunner(client, hello_timeout_s=120.0)  # the server loads torch and the checkpoint first
    info = runner.info
    fps = float(info.fps)
    env = PandaSimEnv(task="pick_place", seed=seed_start, image_size=info.image_shape[:2],
                      camera_names=tuple(info.camera_names), control_hz=fps)
    config = LoopConfig(fps=fps, mode="async", realtime=True, max_steps=int(10 * fps), workspace=SIM_TABLE,
                        stats_window=int(10 * fps))
    episodes: list[dict] = []
    start = time.perf_counter()
    with ControlLoop(env.robot, env.cameras, runner, config, step_fn=env.step) as loop:
        seed = seed_start
        while time.perf_counter() - start < minutes * 60.0:
            env.reset(seed=seed)
            streak = [0]

            def reached(streak: list[int] = streak) -> bool:
                streak[0] = streak[0] + 1 if env.task.success() else 0
                return streak[0] >= 5

            missed_before = loop.stats().missed_ticks
            result = loop.run_episode(goal_reached=reached)
            stats = loop.stats()
            episodes.append({"t_s": time.perf_counter() - start, "seed": seed, "steps": result.steps,
                             "success": result.reason == StopReason.SUCCESS, "reason": result.reason.value,
                             "missed_ticks": stats.missed_ticks - missed_before,
                             "jitter_p99_ms": stats.jitter_p99_ms, "rtt_ms": stats.rtt_ms,
                             "rss_client_mb": rss_mb(), "rss_server_mb": rss_mb(server_pid)})
            print(f"{episodes[-1]['t_s']:6.0f} s  seed {seed}: {result.reason.value:9s} {result.steps:3d} steps, "
                  f"missed {episodes[-1]['missed_ticks']}, p99 {stats.jitter_p99_ms:.2f} ms, "
                  f"rss {episodes[-1]['rss_client_mb']:.0f} / {episodes[-1]['rss_server_mb']:.0f} MB", flush=True)
            seed += 1
    runner.close()
    env.close()
    return episodes


def window(episodes: list[dict], t0: float, t1: float) -> dict:
    part = [e for e in episodes if t0 <= e["t_s"] < t1] or episodes[-1:]
    ticks = sum(e["steps"] for e in part)
    return {"episodes": len(part), "ticks": ticks, "missed_ticks": sum(e["missed_ticks"] for e in part),
            "missed_per_1000": 1000.0 * sum(e["missed_ticks"] for e in part) / max(ticks, 1),
            "rss_client_mb": part[-1]["rss_client_mb"], "rss_server_mb": part[-1]["rss_server_mb"]}


def summarise(episodes: list[dict], minutes: float) -> dict:
    end = episodes[-1]["t_s"]
    first, last = window(episodes, 0.0, 60.0), window(episodes, max(end - 60.0, 0.0), end + 1.0)
    p99 = np.array([e["jitter_p99_ms"] for e in episodes])
    out = {
        "minutes": minutes, "episodes": len(episodes), "ticks": sum(e["steps"] for e in episodes),
        "missed_ticks": sum(e["missed_ticks"] for e in episodes),
        "success_rate": float(np.mean([e["success"] for e in episodes])),
        "jitter_p99_ms_min": float(p99.min()), "jitter_p99_ms_median": float(np.median(p99)),
        "first_minute": first, "last_minute": last,
        "rss_client_growth_mb": last["rss_client_mb"] - first["rss_client_mb"],
        "rss_server_growth_mb": last["rss_server_mb"] - first["rss_server_mb"],
        "rss_client_ratio": last["rss_client_mb"] / first["rss_client_mb"],
        "rss_server_ratio": last["rss_server_mb"] / first["rss_server_mb"],
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "demo_out" / "run" / "last.pt",
                        help="ACT checkpoint trained on the pick_place sim task (make demo writes one)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed-start", type=int, default=5000, help="first scene seed (held out)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deploy_soak.json")
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        sys.exit(f"no checkpoint at {args.checkpoint}: run `make demo` first, or pass --checkpoint")
    os.environ.setdefault("MUJOCO_GL", "egl")
    proc, address = start_server(args.checkpoint)
    try:
        episodes = soak(address, args.minutes, proc.pid, args.seed_start)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    summary = summarise(episodes, args.minutes)
    first, last = summary["first_minute"], summary["last_minute"]
    print(f"\n{summary['episodes']} episodes, {summary['ticks']} ticks in {args.minutes:g} min; success "
          f"{100 * summary['success_rate']:.0f}%; missed ticks {summary['missed_ticks']}")
    print(f"missed per 1000 ticks: first minute {first['missed_per_1000']:.2f}, last minute "
          f"{last['missed_per_1000']:.2f}")
    print(f"tick jitter p99 per episode: min {summary['jitter_p99_ms_min']:.2f} ms, median "
          f"{summary['jitter_p99_ms_median']:.2f} ms")
    for side in ("client", "server"):
        print(f"RSS {side}: after the first minute {first[f'rss_{side}_mb']:.1f} MB, at the end "
              f"{last[f'rss_{side}_mb']:.1f} MB: {summary[f'rss_{side}_growth_mb']:+.1f} MB "
              f"(ratio {summary[f'rss_{side}_ratio']:.3f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(),
                                    "checkpoint": str(args.checkpoint), "summary": summary,
                                    "episodes": episodes}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
