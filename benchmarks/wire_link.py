"""Images on the wire: raw against JPEG frames across a 1 Gbit/s link with 0.2 ms delay, and the
same-host transports (tcp loopback, ipc).

The link (root needed) is a network namespace joined to this one by a veth pair, both ends shaped
with ``netem delay 0.2ms rate 1gbit``; a kernel without netem gets ``tbf rate 1gbit`` (``--burst``,
64 KiB by default) and the 0.2 ms each way is added to every round trip. Without namespaces
(``--no-netns``, or when ``ip netns add`` is refused) only loopback and ipc are measured.
Namespaces are removed at exit.

Per transport, interleaved in rounds so that machine load hits every row alike, ``infer`` round trips
with 1 and 2 cameras of 480x640 sim frames (+ 8 float32; reply 100x8 float32 from a constant model):
robokit raw / JPEG (:class:`~robokit.deploy.client.PolicyClient` -> :class:`~robokit.deploy.server.PolicyServer`,
JPEG encoded in the client and decoded in the server inside the round trip), and a bare REQ/REP of
the same bytes as multipart frames (JPEG bytes encoded beforehand: the transport alone). With
``--anchors PYTHON`` (a separate venv, see ``wire_anchors.py``) the raw payload also goes over openpi's
websocket server and client, gRPC + pickle and pickle REQ/REP, on the link and on loopback. Then the
codec on sim frames (bytes, PSNR, times by quality; OpenCV, and simplejpeg when importable) and the
action error of a sim policy given JPEG frames instead of raw ones (``--checkpoint``; default
``demo_out/run/last.pt``, else a tiny ACT trained here).

    sudo .venv/bin/python benchmarks/wire_link.py --anchors /work/anchors-venv/bin/python  # ~3 min (+ training without a checkpoint)
    .venv/bin/python benchmarks/wire_link.py --quick --skip-policy  # smoke run

Client and server share this machine's CPUs, so the codec work of both ends lands on the same cores,
as it would not across two machines. Writes benchmarks/results/wire_link.json.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import zmq

from robokit.deploy import image_codec as C

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the wire_* helpers beside this script
from wire_anchors import TRANSPORTS, Anchors, Batch
from wire_codec import codec_table, pair_ms

H, W, CHUNK, DIM = 480, 640, 100, 8
CAMS = ("top", "wrist")
NS_ADDR, HOST_ADDR = "10.213.0.2", "10.213.0.1"


class ConstantPolicy:
    """The same chunk for every observation: only the wire is measured."""

    name = "constant"

    def __init__(self, cams: tuple[str, ...]) -> None:
        self.config = SimpleNamespace(camera_names=list(cams), image_shape=(H, W, 3), state_dim=DIM,
                                      action_dim=DIM, chunk_size=CHUNK, fps=15.0)
        self.chunk = np.arange(CHUNK * DIM, dtype=np.float32).reshape(CHUNK, DIM)

    def predict_chunk(self, obs: dict) -> tuple[np.ndarray, dict]:
        return self.chunk, {}

    def reset(self) -> None:
        pass


def _multipart_echo(sock: zmq.Socket, chunk: bytes) -> None:
    while True:
        try:
            sock.recv_multipart(copy=False)
            sock.send(chunk)
        except zmq.ContextTerminated:
            return


def serve(kind: str, host: str) -> None:
    """Child process: robokit servers for 1 and 2 cameras and a bare REQ/REP echo; prints their
    addresses on one line, then serves until stdin closes."""
    from robokit.deploy.server import PolicyServer

    if kind == "ipc":
        binds = [f"ipc:///tmp/rk_wire_{os.getppid()}_{name}.sock" for name in ("one", "two", "echo")]
    else:
        binds = [f"tcp://{host}:0"] * 3
    servers = [PolicyServer(ConstantPolicy(CAMS[:n]), bind).start() for n, bind in zip((1, 2), binds)]
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind(binds[2].replace(":0", ":*"))
    echo = rep.getsockopt_string(zmq.LAST_ENDPOINT)
    threading.Thread(target=_multipart_echo, args=(rep, ConstantPolicy(CAMS).chunk.tobytes()), daemon=True).start()
    print("READY", servers[0].address, servers[1].address, echo, flush=True)
    sys.stdin.read()  # the parent closes our stdin (or dies) to stop us
    for srv in servers:
        srv.close()  # (removes their ipc socket files)
    if echo.startswith("ipc://"):
        Path(echo[6:]).unlink(missing_ok=True)
    os._exit(0)  # the echo thread is blocked in recv: no orderly zmq shutdown is needed


class Link:
    """A namespace with a veth pair shaped at both ends; removed on :meth:`close` (also at exit).

    netem delays and paces; where the kernel has no netem (as in some containers) tbf paces alone
    and :attr:`added_ms` says how much fixed delay the caller adds to each round trip instead.
    """

    def __init__(self, delay_ms: float, rate: str, burst: int = 3028) -> None:
        self.ns = f"rk_wire_{os.getpid()}"
        self.host_if, self.ns_if = f"rkw{os.getpid() % 100000}a", f"rkw{os.getpid() % 100000}b"
        self.delay_ms, self.rate, self.burst = delay_ms, rate, burst
        self.up, self.added_ms, self.shaping = False, 0.0, ""

    def _run(self, *cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def open(self) -> None:
        atexit.register(self.close)
        self._run("ip", "netns", "add", self.ns)
        self.up = True
        ns = ("ip", "netns", "exec", self.ns)
        for cmd in (("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if),
                    ("ip", "link", "set", self.ns_if, "netns", self.ns),
                    ("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", self.host_if), ("ip", "link", "set", self.host_if, "up"),
                    (*ns, "ip", "addr", "add", f"{NS_ADDR}/30", "dev", self.ns_if),
                    (*ns, "ip", "link", "set", self.ns_if, "up"), (*ns, "ip", "link", "set", "lo", "up")):
            self._run(*cmd)
        # netem paces every packet at the rate after the delay; its queue must hold a whole
        # 2-camera raw request (1.8 MB) or TCP would see drops that a real switch would not cause.
        netem = ("root", "netem", "delay", f"{self.delay_ms}ms", "rate", self.rate, "limit", "100000")
        # tbf with a bucket of two packets paces every packet as a 1 GbE NIC serialises it; a large
        # bucket would let a whole JPEG frame through at memory speed.
        tbf = ("root", "tbf", "rate", self.rate, "burst", str(self.burst), "limit", "4mb")
        try:
            self._run("tc", "qdisc", "add", "dev", self.host_if, *netem)
            self._run(*ns, "tc", "qdisc", "add", "dev", self.ns_if, *netem)
            self.shaping = " ".join(netem[1:5]) + " each way"
        except subprocess.CalledProcessError as exc:
            if "unknown" not in (exc.stderr or ""):
                raise
            subprocess.run(["tc", "qdisc", "del", "dev", self.host_if, "root"], check=False, capture_output=True)
            self._run("tc", "qdisc", "add", "dev", self.host_if, *tbf)
            self._run(*ns, "tc", "qdisc", "add", "dev", self.ns_if, *tbf)
            self.added_ms = 2 * self.delay_ms
            self.shaping = (f"tbf rate {self.rate} burst {self.burst} B each way (no netem in this kernel: "
                            f"{self.delay_ms} ms each way added to every round trip, {self.added_ms:g} ms)")

    def close(self) -> None:
        if self.up:
            self.up = False
            # Deleting the namespace takes the veth pair along; the second call is for a half-built link.
            subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)
            subprocess.run(["ip", "link", "del", self.host_if], check=False, capture_output=True)


def server_side(kind: str, link: Link | None) -> tuple[list[str], str]:
    """The command prefix that runs a server where ``kind`` wants it, and the host it binds."""
    if kind == "link" and link is not None:
        return ["ip", "netns", "exec", link.ns], NS_ADDR
    return [], "127.0.0.1"


def start_servers(kind: str, link: Link | None) -> tuple[subprocess.Popen, list[str]]:
    prefix, host = server_side(kind, link)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([*prefix, sys.executable, __file__, "--serve", kind, "--host", host],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"the {kind} servers did not start (got {line!r})")
    return proc, line.split()[1:]


def sim_frames(cams: tuple[str, ...], seeds: range, every: int, size: tuple[int, int] = (H, W),
               task_set: str = "pick_place") -> list[tuple[np.ndarray, dict[str, np.ndarray], str]]:
    """(qpos, {camera: image}, instruction) along the scripted expert's episodes, every ``every`` steps."""
    from robokit.hardware.sim import PandaSimEnv

    out = []
    with PandaSimEnv(task=task_set, seed=0, image_size=size, camera_names=cams, control_hz=15.0) as env:
        for seed in seeds:
            env.reset(seed=seed)
            expert = env.task.expert()
            step = 0
            while (action := expert.next_action(env.robot.read())) is not None:
                if step % every == 0:
                    out.append((env.robot.read().as_vector(), {c: env.render(c) for c in cams}, env.task.name))
                env.robot.send_action(action)
                env.step()
                step += 1
    return out


def camera_like(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """A render with sensor-like noise: real camera frames compress worse than clean renders."""
    if sigma <= 0:
        return image
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def timed(fn: Callable[[], Any], n: int, warmup: int = 5) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e3


def rtt_rows(addresses: list[str], images: dict[str, np.ndarray], qpos: np.ndarray, quality: int
             ) -> dict[str, Callable[[], Any]]:
    """Round-trip functions by row name for one transport (sockets stay open across rounds)."""
    from robokit.deploy.client import PolicyClient
    from robokit.deploy.image_codec import encode_jpeg

    rows: dict[str, Callable[[], Any]] = {}
    req: zmq.Socket = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(addresses[2])
    jpegs = {c: encode_jpeg(img, quality) for c, img in images.items()}
    for n, address in zip((1, 2), addresses[:2]):
        cams = {c: images[c] for c in CAMS[:n]}
        for codec in ("raw", f"jpeg:{quality}"):
            client = PolicyClient(address, timeout_s=30.0, image_codec=codec)
            client.hello()
            rows[f"robokit {codec.split(':')[0]} {n} cam"] = functools.partial(client.infer, qpos, cams)
        for name, frames in (("raw", [images[c] for c in CAMS[:n]]), ("jpeg", [jpegs[c] for c in CAMS[:n]])):
            def echo(frames: list[np.ndarray] = frames) -> None:
                req.send_multipart([qpos.data, *(f.data for f in frames)], copy=False)
                req.recv_multipart(copy=False)
            rows[f"multipart {name} {n} cam"] = echo
    return rows


def summarise(samples: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
    """Per row: min and median over rounds of the rounds' p50 and p95."""
    out = {}
    for row, rounds in samples.items():
        p50 = [float(np.percentile(r, 50)) for r in rounds]
        p95 = [float(np.percentile(r, 95)) for r in rounds]
        out[row] = {"p50_min": min(p50), "p50_median": float(np.median(p50)), "p95_min": min(p95),
                    "p95_median": float(np.median(p95)), "rounds": len(rounds), "n": int(rounds[0].size)}
    return out


def tiny_checkpoint(steps: int) -> Path:
    """A small ACT trained here on a few scripted sim demonstrations (the demo's pipeline, shrunk)."""
    import tempfile

    from rich.console import Console

    from robokit.commands.demo.config import DemoConfig
    from robokit.commands.demo.stages import record_demonstrations, train_policy

    cfg = DemoConfig(out=Path(tempfile.mkdtemp(prefix="rk_wire_act_")), episodes=6, steps=steps)
    console = Console(quiet=True)
    data, _ = record_demonstrations(cfg, console)
    return Path(train_policy(cfg, data, console).out_dir) / "last.pt"


def action_error(checkpoint: Path, quality: tuple[int, ...], seeds: range, task_set: str) -> dict[str, Any]:
    """How far a sim policy's chunks move when its 480x640 frames arrive as JPEG instead of raw."""
    import torch

    from robokit.deploy.image_codec import decode_jpeg, encode_jpeg, psnr
    from robokit.deploy.observation import Observation, prepare_observation
    from robokit.deploy.server import policy_info
    from robokit.policies.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    policy, meta = load_checkpoint(checkpoint, map_location="cpu")
    info = policy_info(policy)
    frames = sim_frames(tuple(info.camera_names), seeds, every=8, task_set=task_set)
    out: dict[str, Any] = {"checkpoint": str(checkpoint), "policy": info.type, "trained_steps": meta.get("step"),
                           "image_shape": list(info.image_shape), "frames": len(frames), "by_quality": {}}
    raw_chunks = []
    with torch.no_grad():
        for qpos, images, task in frames:
            policy.reset()
            obs = Observation(qpos, images, task=task if info.instruction else None)
            raw_chunks.append(np.asarray(policy.predict_chunk(prepare_observation(obs, info))[0]))
        raw = np.stack(raw_chunks)
        motion = float(np.mean(np.abs(np.diff(raw[:, :, :7], axis=1))))  # joint change per chunk step
        out["joint_step_rad"] = motion
        for q in quality:
            errs, scores = [], []
            for (qpos, images, task), chunk in zip(frames, raw_chunks):
                jpeg = {c: decode_jpeg(encode_jpeg(img, q)) for c, img in images.items()}
                scores += [psnr(images[c], jpeg[c]) for c in images]
                policy.reset()
                obs = Observation(qpos, jpeg, task=task if info.instruction else None)
                errs.append(np.abs(np.asarray(policy.predict_chunk(prepare_observation(obs, info))[0]) - chunk))
            e = np.stack(errs)
            out["by_quality"][q] = {"psnr_mean": float(np.mean(scores)),
                                    "joint_mae_rad": float(e[:, :, :7].mean()), "joint_max_rad": float(e[:, :, :7].max()),
                                    "gripper_mae": float(e[:, :, 7:].mean()),
                                    "joint_mae_over_step": float(e[:, :, :7].mean() / motion) if motion else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=("link", "loopback", "ipc"), help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=200, help="round trips per row and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--noise", type=float, default=2.0, help="sensor-like noise added to the renders (sigma)")
    parser.add_argument("--delay-ms", type=float, default=0.2, help="netem delay on each end of the link")
    parser.add_argument("--rate", default="1gbit")
    # A bucket of a few packets makes tbf wake a timer per packet, which on a loaded 2-core box
    # stretches raw frames far past their wire time; 64 KiB keeps raw near it, as a NIC would.
    parser.add_argument("--burst", type=int, default=65536, help="tbf bucket in bytes (without netem)")
    parser.add_argument("--anchors", default=None, metavar="PYTHON", help="python of a venv with openpi-client "
                        "0.1.2, grpcio, pyzmq and websockets: measure those transports too (wire_anchors.py)")
    parser.add_argument("--no-netns", action="store_true", help="measure loopback and ipc only")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--train-steps", type=int, default=300, help="without a checkpoint: ACT steps to train")
    parser.add_argument("--task-set", default="pick_place", help="sim scenes for the action error (multi for "
                                                                     "a goal-conditioned checkpoint)")
    parser.add_argument("--skip-policy", action="store_true")
    parser.add_argument("--quick", action="store_true", help="n=30, 1 round")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "wire_link.json")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.host)
        return
    if args.quick:
        args.n, args.rounds = 30, 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up of namespaces and servers
    load_start = os.getloadavg()
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in load_start)} ({os.cpu_count()} CPUs)")
    link: Link | None = None
    kinds = ["loopback", "ipc"]
    if not args.no_netns:
        link = Link(args.delay_ms, args.rate, args.burst)
        try:
            link.open()
            kinds.insert(0, "link")
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            print(f"no shaped link: {' '.join(getattr(exc, 'cmd', []) or [])} failed ({str(detail).strip()}); "
                  "measuring loopback and ipc only")
            link.close()
    frames = sim_frames(CAMS, range(2), every=20)
    qpos, clean, _ = frames[len(frames) // 2]
    images = {c: camera_like(img, args.noise, i) for i, (c, img) in enumerate(clean.items())}
    procs = []
    anchors: list[Anchors] = []
    samples: dict[str, dict[str, list[np.ndarray]]] = {}
    npz = Path(f"/tmp/rk_wire_{os.getpid()}_frames.npz")
    np.savez(npz, qpos=qpos, **images)
    try:
        rows: dict[str, dict[str, Any]] = {}
        for kind in kinds:
            proc, addresses = start_servers(kind, link)
            procs.append(proc)
            rows[kind] = rtt_rows(addresses, images, qpos, args.quality)
            if args.anchors and kind != "ipc":
                anchors.append(Anchors(args.anchors, *server_side(kind, link), str(npz)))
                rows[kind].update(anchors[-1].rows())
        print(f"link: {link.shaping}" if link is not None and link.up else "no link")
        for r in range(args.rounds):
            for kind in kinds:
                added = link.added_ms if kind == "link" and link is not None else 0.0
                for row, fn in rows[kind].items():
                    times = fn(args.n) if isinstance(fn, Batch) else timed(fn, args.n)
                    samples.setdefault(kind, {}).setdefault(row, []).append(times + added)
            print(f"round {r + 1}/{args.rounds} done")
    finally:
        npz.unlink(missing_ok=True)
        for a in anchors:
            a.close()
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if link is not None:
            link.close()
    rtt = {kind: summarise(s) for kind, s in samples.items()}
    if "link" in rtt:  # what the wire alone needs: the payload at the link's rate plus the delay
        rate_bps = float(args.rate.lower().replace("gbit", "e9").replace("mbit", "e6"))
        for n, name in itertools.product((1, 2), ("raw", "jpeg")):
            size = sum(images[c].nbytes if name == "raw" else len(C.encode_jpeg(images[c], args.quality)) for c in CAMS[:n])
            floor = (size + qpos.nbytes + CHUNK * DIM * 4) * 8 / rate_bps * 1e3 + 2 * args.delay_ms
            for row in (f"robokit {name} {n} cam", f"multipart {name} {n} cam"):
                rtt["link"][row].update(request_bytes=size, wire_floor_ms=floor)
    codec = codec_table([f for _, f, _ in frames], (75, 90, 95))
    pair = pair_ms([f for _, f, _ in frames], args.quality)
    noisy = codec_table([{c: camera_like(i, args.noise, k) for k, (c, i) in enumerate(f.items())}
                         for _, f, _ in frames], (args.quality,))
    policy = None
    if not args.skip_policy:
        ckpt = args.checkpoint or Path("demo_out/run/last.pt")
        if not ckpt.is_file():
            print(f"no checkpoint at {ckpt}: training a tiny ACT for {args.train_steps} steps")
            ckpt = tiny_checkpoint(args.train_steps)
        policy = action_error(ckpt, (75, args.quality, 95), range(100, 103), args.task_set)
    load_end = os.getloadavg()
    report(rtt, codec, noisy, policy, args)
    print(f"2 cameras, JPEG encode + decode per request: {pair['serial_ms']:.2f} ms one after the other, "
          f"{pair['threads_ms']:.2f} ms on threads")
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in load_end)}")
    result = {"benchmark": "wire_link", "rtt_ms": rtt, "p50_ratios": {k: ratios(v) for k, v in rtt.items()}, "codec": codec, "codec_noisy": noisy, "pair": pair,
              "policy": policy, "setup": {"link": link.shaping if link is not None and "link" in rtt else None,
                        "image": [H, W, 3], "reply": [CHUNK, DIM], "quality": args.quality, "noise": args.noise,
                        "n": args.n, "rounds": args.rounds, "burst": args.burst,
                        "anchors": anchors[0].versions if anchors else None},
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "zmq": zmq.zmq_version(),
                          "load_start": load_start, "load_end": load_end}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"-> {args.out}")


def ratios(rows: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per camera count, ratios of the rows' p50 medians: robokit JPEG against robokit raw and each
    anchor, robokit against bare multipart of the same bytes."""
    out = {}
    for n in (1, 2):
        g = {k.replace(f" {n} cam", ""): v["p50_median"] for k, v in rows.items() if k.endswith(f"{n} cam")}
        out[f"{n} cam"] = {"robokit jpeg/raw": g["robokit jpeg"] / g["robokit raw"],
                           "robokit raw/multipart raw": g["robokit raw"] / g["multipart raw"],
                           "robokit jpeg/multipart jpeg": g["robokit jpeg"] / g["multipart jpeg"],
                           **{f"robokit jpeg/{t}": g["robokit jpeg"] / g[t] for t in TRANSPORTS if t in g}}
    return out


def report(rtt: dict, codec: list, noisy: list, policy: dict | None, args: Any) -> None:
    print(f"\nround trip, ms (min / median over {args.rounds} rounds of {args.n}); 480x640 frames, JPEG q{args.quality}")
    for kind, rows in rtt.items():
        print(f"\n{kind}:")
        print(f"  {'row':<24} {'p50 min':>8} {'p50 med':>8} {'p95 min':>8} {'p95 med':>8}")
        for row, s in rows.items():
            floor = f"   wire floor {s['wire_floor_ms']:.2f}" if "wire_floor_ms" in s else ""
            print(f"  {row:<24} {s['p50_min']:8.2f} {s['p50_median']:8.2f} {s['p95_min']:8.2f} "
                  f"{s['p95_median']:8.2f}{floor}")
        for cams, r in ratios(rows).items():
            print(f"  {cams}, p50 ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
    for row in rtt["ipc"] if "ipc" in rtt and "loopback" in rtt else ():
        print(f"ipc/loopback p50 {row}: {rtt['ipc'][row]['p50_median'] / rtt['loopback'][row]['p50_median']:.2f}")
    print("\nJPEG of 480x640 sim renders (per frame):")
    for r in codec + [dict(x, library=x["library"] + f" +noise {args.noise:g}") for x in noisy]:
        print(f"  {r['library']:<22} q{r['quality']:<3} {r['bytes_mean'] / 1024:7.1f} KiB ({r['ratio']:4.1f}x)  "
              f"PSNR {r['psnr_mean']:5.1f} dB (min {r['psnr_min']:5.1f})  encode {r['encode_ms']:5.2f} ms  "
              f"decode {r['decode_ms']:5.2f} ms")
    if policy:
        print(f"\naction error, {policy['policy']} ({policy['trained_steps']} steps, input "
              f"{policy['image_shape'][0]}x{policy['image_shape'][1]}), {policy['frames']} sim frames; "
              f"joint change per chunk step {policy['joint_step_rad']:.4f} rad:")
        for q, e in policy["by_quality"].items():
            print(f"  q{q}: PSNR {e['psnr_mean']:.1f} dB, joints MAE {e['joint_mae_rad']:.5f} rad (max "
                  f"{e['joint_max_rad']:.4f}; {e['joint_mae_over_step']:.2f} of a step), gripper MAE {e['gripper_mae']:.4f}")


if __name__ == "__main__":
    main()
