"""Protocol round trip: robokit's msgpack + raw-buffer protocol against pickle over REQ/REP.

One ``infer`` round trip on tcp loopback carrying a 480x640x3 uint8 image and an 8-dim float32 state,
answered with a 100x8 float32 chunk by a constant "model" (so only the transport counts). Both
servers run in their own process, both clients in this one, interleaved in blocks in the same run:

* ours: :class:`~robokit.deploy.client.PolicyClient` (DEALER) -> :class:`~robokit.deploy.server.PolicyServer`
  (ROUTER), header + zero-copy array frames, full validation on the server;
* baseline: a REQ socket sending ``pickle.dumps(obs)`` to a REP socket that answers
  ``pickle.dumps({"actions": chunk})`` (what LeRobot's async inference and many lab scripts do).

    .venv/bin/python benchmarks/protocol_rtt.py            # 3000 round trips each
    .venv/bin/python benchmarks/protocol_rtt.py --quick    # 300 each

Writes benchmarks/results/protocol_rtt.json. Targets: p50 <= 0.5 ms and >= 2.5x faster
than the baseline at p50.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import zmq

H, W, CHUNK, DIM = 480, 640, 100, 8


class ConstantPolicy:
    """Returns the same chunk for every observation: the benchmark measures transport only."""

    name = "constant"

    def __init__(self) -> None:
        self.config = SimpleNamespace(camera_names=["top"], image_shape=(H, W, 3), state_dim=DIM,
                                      action_dim=DIM, chunk_size=CHUNK, fps=50.0)
        self.chunk = np.arange(CHUNK * DIM, dtype=np.float32).reshape(CHUNK, DIM)

    def predict_chunk(self, obs: dict) -> tuple[np.ndarray, dict]:
        return self.chunk, {}

    def reset(self) -> None:
        pass


def serve_ours(port_queue: mp.Queue) -> None:
    from robokit.deploy.server import PolicyServer

    server = PolicyServer(ConstantPolicy(), "tcp://127.0.0.1:0")
    port_queue.put(server.address)
    server.serve_forever()


def serve_pickle(port_queue: mp.Queue) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    port_queue.put(f"tcp://127.0.0.1:{port}")
    chunk = ConstantPolicy().chunk
    while True:
        obs = pickle.loads(sock.recv())  # the remote-code hole this protocol avoids
        _ = obs["images"]["top"].shape, obs["qpos"].shape
        sock.send(pickle.dumps({"actions": chunk, "done": None}, protocol=pickle.HIGHEST_PROTOCOL))


def start(target) -> tuple[mp.Process, str]:
    queue: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=target, args=(queue,), daemon=True)
    proc.start()
    return proc, queue.get(timeout=60)


def percentiles(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "n": int(a.size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--n", type=int, default=None, help="round trips per side")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "protocol_rtt.json"))
    args = parser.parse_args()
    n = args.n or (300 if args.quick else 3000)

    from robokit.deploy.client import PolicyClient

    ours_proc, ours_addr = start(serve_ours)
    base_proc, base_addr = start(serve_pickle)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    qpos = rng.normal(size=DIM).astype(np.float32)

    client = PolicyClient(ours_addr, timeout_s=10.0)
    client.hello()
    req = zmq.Context.instance().socket(zmq.REQ)
    req.connect(base_addr)

    def ours_once() -> float:
        t0 = time.perf_counter()
        result = client.infer(qpos, {"top": image})
        dt = time.perf_counter() - t0
        assert result.actions.shape == (CHUNK, DIM)
        return dt

    def pickle_once() -> float:
        t0 = time.perf_counter()
        req.send(pickle.dumps({"qpos": qpos, "images": {"top": image}}, protocol=pickle.HIGHEST_PROTOCOL))
        reply = pickle.loads(req.recv())
        dt = time.perf_counter() - t0
        assert reply["actions"].shape == (CHUNK, DIM)
        return dt

    for _ in range(50):  # warm up both paths (connections, allocator, caches)
        ours_once()
        pickle_once()
    ours, base = [], []
    block = 50  # interleave so that machine load affects both alike
    while len(ours) < n:
        ours += [ours_once() for _ in range(block)]
        base += [pickle_once() for _ in range(block)]
    client.close()
    req.close(0)
    for proc in (ours_proc, base_proc):
        proc.terminate()
        proc.join(5)

    result = {
        "benchmark": "protocol_rtt",
        "payload": {"image": [H, W, 3], "qpos": DIM, "reply": [CHUNK, DIM], "transport": "tcp loopback"},
        "ours": percentiles(ours),
        "pickle_req_rep": percentiles(base),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "node": platform.node(),
                    "zmq": zmq.zmq_version(), "pyzmq": zmq.__version__},
        "quick": bool(args.quick),
    }
    result["speedup_p50"] = result["pickle_req_rep"]["p50_ms"] / result["ours"]["p50_ms"]
    result["speedup_p99"] = result["pickle_req_rep"]["p99_ms"] / result["ours"]["p99_ms"]
    result["targets"] = {"p50_le_0.5ms": result["ours"]["p50_ms"] <= 0.5, "speedup_ge_2.5": result["speedup_p50"] >= 2.5}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    o, b = result["ours"], result["pickle_req_rep"]
    print(f"ours     p50 {o['p50_ms']:.3f} ms  p99 {o['p99_ms']:.3f} ms")
    print(f"pickle   p50 {b['p50_ms']:.3f} ms  p99 {b['p99_ms']:.3f} ms")
    print(f"speed-up p50 {result['speedup_p50']:.2f}x  p99 {result['speedup_p99']:.2f}x  -> {out}")


if __name__ == "__main__":
    main()
