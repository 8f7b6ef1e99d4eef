"""Recording throughput: the streaming episode writer against the original Franka recorder's approach.

Two measurements per storage kind (raw, lzf, jpeg), in the same run on the same machine:

1. **Live**: three synthetic 640x480 cameras at 30 fps plus a robot state, recorded by the
   recorder's loop (``robokit.record.capture``: fixed-rate ticks phase-locked to the first camera,
   each step storing the frame due at its tick) into the streaming
   :class:`~robokit.episodes.writer.EpisodeWriter` for ``--seconds`` (default 60), counted after a
   ``--warmup`` of 5 s (as an episode starts after the recorder's idle loop has run): frames
   dropped, achieved loop and camera rates, loop overruns, peak RSS growth, and how long saving
   takes after "stop".
2. **Throughput**: ``--throughput-steps`` steps pushed as fast as possible (a) through the streaming
   writer and (b) the original recorder's way (live_record.py / ALOHA: frames kept in a list, written — and for
   jpeg encoded and padded — at the end). Steps per second, raw-equivalent MB/s, peak RSS growth,
   the pause after "stop" and the ratios streaming / seed.

Every measurement runs in a fresh process, so memory freed by one run cannot hide another's growth.

    .venv/bin/python benchmarks/record_throughput.py            # full run (~7 min)
    .venv/bin/python benchmarks/record_throughput.py --quick    # smoke run (~1 min)
    .venv/bin/python benchmarks/record_throughput.py --compress lzf,jpeg --compare-naive --phase-ms 0.5
        # + the baseline grabbing rule (newest frame on a plain timer) live, in the same run, with the
        #   first camera's frames arriving 0.5 ms after the ticks

Writes benchmarks/results/record_throughput.json. Targets: 0 dropped frames and RSS growth
below 50 MB with lzf or jpeg for 3 cameras x 640x480 @ 30 fps over 60 s on the 2-core machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import h5py
import numpy as np

from robokit.episodes.writer import EpisodeWriter
from robokit.hardware.synthetic import SyntheticCamera, synthetic_pattern
from robokit.record.capture import CameraGrabber, RateLoop

MB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class RssMonitor(threading.Thread):
    """Samples RSS every 10 ms; ``peak_since(mark)`` gives the peak growth over a baseline."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_bytes()
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_bytes())

    def mark(self) -> int:
        now = rss_bytes()
        self.peak = now
        return now

    def stop(self) -> None:
        self._stop.set()


def robot_state(t: float) -> tuple[np.ndarray, np.ndarray]:
    q = np.sin(t + np.arange(8)).astype(np.float32)
    return q, np.cos(t + np.arange(8)).astype(np.float32)


def live_run(compress: str, seconds: float, warmup_s: float, folder: Path, n_cams: int,
             size: tuple[int, int], fps: float, naive: bool = False, phase_ms: float | None = None, *,
             monitor: RssMonitor) -> dict:
    """One live recording. ``naive``: the baseline rule — each step takes the newest frame, on a
    plain fixed-rate timer (what robokit did before, and what "read the latest frame" loops do).
    ``phase_ms``: start the ticks so that the first camera's frames arrive this long after them
    (None: wherever the start lands)."""
    names = [f"cam{i}" for i in range(n_cams)]
    with contextlib.ExitStack() as stack:
        cameras = {n: stack.enter_context(SyntheticCamera(n, size=size, fps=fps)) for n in names}
        grabber = CameraGrabber(cameras, fps)
        writer = EpisodeWriter(folder, 0, {n: (*size, 3) for n in names},
                               attrs={"fps": fps, "robot": "synthetic", "sim": False, "source": "benchmark",
                                      "task": "record throughput"}, compress=compress)
        loop = RateLoop(fps)
        if phase_ms is not None:
            first = cameras[names[0]].wait_frame(timeout_s=2.0)
            loop.restart(at=first.t_capture + 2 * loop.period - phase_ms / 1000.0)
        start = time.monotonic()
        baseline = None
        warmup_dropped, counted_from, overruns_before = 0, start, 0
        steps = 0
        while True:
            tick = loop.wait()
            if tick - start >= warmup_s + seconds:
                break
            if baseline is None and tick - start >= warmup_s:
                # The recorder's loop runs (idle) before an episode starts and counts each episode
                # afresh; the warm-up covers the tick grid locking onto the first camera.
                baseline = monitor.mark()
                warmup_dropped = sum(s.dropped for s in grabber.stats.values())
                grabber.reset_stats()
                counted_from, steps, overruns_before = tick, 0, loop.overruns
            frames = grabber.grab(None if naive else tick)
            if not naive:
                loop.follow(frames[names[0]])  # as the recorder does: ticks follow the first camera
            q, dq = robot_state(tick)
            writer.append(q, dq, q, {n: f.image for n, f in frames.items()}, t_robot=time.monotonic(),
                          t_images={n: f.t_capture for n, f in frames.items()})
            steps += 1
        elapsed = time.monotonic() - start
        counted_s = time.monotonic() - counted_from
        growth = monitor.peak - (baseline or monitor.peak)
        peak_total = monitor.peak
        t0 = time.monotonic()
        path = writer.save()
        save_s = time.monotonic() - t0
    size_bytes = path.stat().st_size
    path.unlink()
    cams = {n: {"dropped": s.dropped, "repeated": s.repeated, "skipped": s.skipped, "new_frames": s.new_frames,
                "rate_hz": s.new_frames / counted_s} for n, s in grabber.stats.items()}
    return {
        "steps": steps, "seconds": counted_s, "achieved_hz": steps / counted_s,
        "overruns": loop.overruns - overruns_before, "seconds_with_warmup": elapsed,
        "phase_locked": loop.locked, "dropped_during_warmup": warmup_dropped,
        "dropped_frames": sum(c["dropped"] for c in cams.values()),
        "repeated_frames": sum(c["repeated"] for c in cams.values()),
        "cameras": cams, "rss_growth_mb": growth / MB, "rss_peak_mb": peak_total / MB, "save_after_stop_s": save_s,
        "file_mb": size_bytes / MB, "mb_per_minute": size_bytes / MB / elapsed * 60,
    }


def make_frames(n: int, size: tuple[int, int], noise: float) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        img = synthetic_pattern(i, *size)
        if noise > 0:
            img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        frames.append(img)
    return frames


def streaming_throughput(compress: str, frames: list[np.ndarray], steps: int, n_cams: int, folder: Path,
                         monitor: RssMonitor) -> dict:
    names = [f"cam{i}" for i in range(n_cams)]
    shape = frames[0].shape
    base = monitor.mark()
    t0 = time.monotonic()
    w = EpisodeWriter(folder, 1, {n: shape for n in names}, attrs={"fps": 30, "source": "benchmark"},
                      compress=compress)
    for i in range(steps):
        q, dq = robot_state(i / 30)
        w.append(q, dq, q, {n: frames[(i + k) % len(frames)] for k, n in enumerate(names)}, t_robot=i / 30,
                 t_images={n: i / 30 for n in names})
    t_stop = time.monotonic()
    path = w.save()
    t1 = time.monotonic()
    out = _throughput(steps, n_cams, shape, t1 - t0, monitor.peak - base, t1 - t_stop, path)
    path.unlink()
    return out


def seed_throughput(compress: str, frames: list[np.ndarray], steps: int, n_cams: int, folder: Path,
                    monitor: RssMonitor) -> dict:
    """The original recorder's live_record.py: append every frame to a list, write everything at "stop"."""
    names = [f"cam{i}" for i in range(n_cams)]
    shape = frames[0].shape
    base = monitor.mark()
    t0 = time.monotonic()
    data: dict[str, list[np.ndarray]] = {n: [] for n in names}
    states = []
    for i in range(steps):
        for k, n in enumerate(names):
            data[n].append(frames[(i + k) % len(frames)].copy())  # a camera read returns a new array
        states.append(np.concatenate([robot_state(i / 30)[0][:7], [0]]).astype(np.float64))
    t_stop = time.monotonic()
    path = folder / "seed_episode.hdf5"
    with h5py.File(path, "w", rdcc_nbytes=1024**2 * 2) as root:
        root.attrs["sim"] = True
        images = root.create_group("observations").create_group("images")
        lengths = []
        for n in names:
            if compress == "jpeg":  # ALOHA's COMPRESS path: encode all, pad to the longest, write
                encoded = [cv2.imencode(".jpg", f, [int(cv2.IMWRITE_JPEG_QUALITY), 90])[1] for f in data[n]]
                lengths.append([len(e) for e in encoded])
                padded = np.zeros((steps, max(lengths[-1])), dtype=np.uint8)
                for t, e in enumerate(encoded):
                    padded[t, : len(e)] = e.reshape(-1)
                images.create_dataset(n, data=padded, chunks=(1, padded.shape[1]))
            else:
                images.create_dataset(n, data=np.array(data[n], dtype="uint8"), chunks=(1, *shape),
                                      compression="lzf" if compress == "lzf" else None)
            data[n] = []
        robot = np.array(states)
        root.create_dataset("observations/qpos", data=robot)
        root.create_dataset("action", data=robot)
        if lengths:
            root.create_dataset("compress_len", data=np.array(lengths, dtype=np.float32))
    t1 = time.monotonic()
    out = _throughput(steps, n_cams, shape, t1 - t0, monitor.peak - base, t1 - t_stop, path)
    path.unlink()
    return out


def _throughput(steps: int, n_cams: int, shape: tuple, seconds: float, growth: int, pause: float,
                path: Path) -> dict:
    raw = steps * n_cams * int(np.prod(shape))
    return {"steps_per_s": steps / seconds, "raw_mb_per_s": raw / MB / seconds,
            "rss_growth_mb": growth / MB, "pause_after_stop_s": pause, "file_mb": path.stat().st_size / MB}


def _child(kind: str, args: tuple) -> dict:
    """Run one measurement in this (fresh) process, with its own RSS monitor."""
    monitor = RssMonitor()
    monitor.start()
    try:
        if kind == "live":
            return live_run(*args, monitor=monitor)
        compress, steps, n_cams, size, noise, folder, approach = args
        frames = make_frames(30, size, noise)
        fn = streaming_throughput if approach == "streaming" else seed_throughput
        return fn(compress, frames, steps, n_cams, folder, monitor)
    finally:
        monitor.stop()


def in_fresh_process(kind: str, *args: object) -> dict:
    """Each measurement gets a new process: memory freed by an earlier one would otherwise be reused
    without showing as RSS growth, hiding what a run really needs."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_child, kind, args).result()


def print_live(live: dict) -> None:
    print(f"   steps {live['steps']}  achieved {live['achieved_hz']:.2f} Hz  dropped "
          f"{live['dropped_frames']}  repeated {live['repeated_frames']}  overruns {live['overruns']}  "
          f"(warm-up: dropped {live['dropped_during_warmup']}, locked {live['phase_locked']})  "
          f"RSS growth {live['rss_growth_mb']:.1f} MB  save {live['save_after_stop_s']:.2f} s  "
          f"{live['mb_per_minute']:.0f} MB/min", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="live recording length per storage kind")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before counting starts (RSS baseline, frame counts)")
    parser.add_argument("--throughput-steps", type=int, default=300)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--size", default="480x640", help="HxW of every camera")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--noise", type=float, default=0.0,
                        help="Gaussian noise sigma added to the throughput frames (real sensors are noisy)")
    parser.add_argument("--compress", default="none,lzf,jpeg")
    parser.add_argument("--compare-naive", action="store_true",
                        help="also record live with the naive rule (newest frame, plain timer) as a baseline")
    parser.add_argument("--phase-ms", type=float, default=None,
                        help="start the loop's ticks this many ms before the first camera's frames (a free-running "
                             "camera drifts through every phase; 0.5 is the worst case for the naive rule)")
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "record_throughput.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.throughput_steps = 6.0, 2.0, 45
    size = tuple(int(v) for v in args.size.lower().split("x"))
    kinds = [k.strip() for k in args.compress.split(",") if k.strip()]

    folder = Path(tempfile.mkdtemp(prefix="robokit-bench-", dir=os.environ.get("BENCH_TMP")))
    results: dict = {"config": {**vars(args), "size": list(size), "machine": platform.machine(),
                                "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()},
                     "live": {}, "throughput": {}}
    try:
        for kind in kinds:
            print(f"== {kind}: live {args.cameras} x {size[1]}x{size[0]} @ {args.fps:g} fps for "
                  f"{args.seconds:g} s", flush=True)
            live = in_fresh_process("live", kind, args.seconds, args.warmup, folder, args.cameras, size, args.fps,
                                    False, args.phase_ms)
            results["live"][kind] = live
            print_live(live)
            if args.compare_naive:
                naive = in_fresh_process("live", kind, args.seconds, args.warmup, folder, args.cameras, size,
                                         args.fps, True, args.phase_ms)
                results.setdefault("live_naive", {})[kind] = naive
                print("   baseline, newest frame on a plain timer:")
                print_live(naive)
            common = (kind, args.throughput_steps, args.cameras, size, args.noise, folder)
            stream = in_fresh_process("throughput", *common, "streaming")
            seed = in_fresh_process("throughput", *common, "seed")
            ratio = {"steps_per_s": stream["steps_per_s"] / seed["steps_per_s"],
                     "rss_growth": (stream["rss_growth_mb"] / seed["rss_growth_mb"]
                                    if seed["rss_growth_mb"] > 0 else None),
                     "pause_after_stop": (stream["pause_after_stop_s"] / seed["pause_after_stop_s"]
                                          if seed["pause_after_stop_s"] > 0 else None)}
            results["throughput"][kind] = {"streaming": stream, "seed": seed, "ratio_streaming_vs_seed": ratio}
            print(f"   throughput {args.throughput_steps} steps: streaming {stream['steps_per_s']:.1f} steps/s "
                  f"({stream['raw_mb_per_s']:.0f} MB/s raw, RSS +{stream['rss_growth_mb']:.0f} MB, pause "
                  f"{stream['pause_after_stop_s']:.2f} s) | seed {seed['steps_per_s']:.1f} steps/s "
                  f"(RSS +{seed['rss_growth_mb']:.0f} MB, pause {seed['pause_after_stop_s']:.2f} s) | "
                  f"ratio {ratio['steps_per_s']:.2f}x", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results["config"]["loadavg_after"] = os.getloadavg()
    targets = {k: {"zero_dropped": v["dropped_frames"] == 0, "rss_growth_below_50mb": v["rss_growth_mb"] < 50}
               for k, v in results["live"].items()}
    results["targets"] = targets
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
