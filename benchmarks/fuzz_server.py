"""Seeded mutation fuzzer for the policy server: every message gets a typed reply, the server stays up.

A real :class:`~robokit.deploy.server.PolicyServer` runs in a thread of this process, serving an
untrained tiny multi-task ACT built from scratch (two cameras of 24x32, chunk 10, a six-word
vocabulary, so that unknown words in ``task`` reach the policy and make it refuse). Its message
limit is 1 MiB, so that ``too_large`` is reachable with small frames. Each message starts as a
valid request (hello, ping, reset, or infer with qpos, images of random sizes, task, goal image,
objects) and gets up to three mutations (``benchmarks/fuzz_mutations.py``, seeded with
``(seed, index)`` so that any one message can be rebuilt alone): header fields (dropped, retyped,
huge or odd integers, unicode, deep nesting, msgpack extension types and timestamps), array
descriptors (shapes, dtypes, names), the arrays themselves (dtype, shape, extreme values, image
sizes) and the frames (too few, too many, truncated, extended, bit flips, random bytes, oversized,
an empty first frame). One in twelve messages goes unmutated and must get a valid reply.

Every reply must be either a valid reply (hello with a policy description, pong, reset, infer with
finite float32 actions of the announced shape) or an ``error`` with a known code and a message;
``internal`` (a bug in the server), a missing reply (timeout) or a server that stops answering a
ping after a batch is a failure, and so is RSS growing by more than ``--max-rss-growth-mb``.

    .venv/bin/python benchmarks/fuzz_server.py --messages 10000 --seed 0
    .venv/bin/python benchmarks/fuzz_server.py --quick             # 1000 messages
    .venv/bin/python benchmarks/fuzz_mutations.py --index 1234 --seed 0  # print one message

Exits 1 on any failure. Writes benchmarks/results/fuzz_server.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from robokit.deploy import protocol as P
from robokit.deploy.server import PolicyServer
from robokit.errors import ProtocolError

# The messages live in a sibling module; a test loads this file by its path, without benchmarks/
# on sys.path.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_mutations import CAMS, IMAGE_SHAPE, LIMIT, TASKS, VOCABULARY, Draft, make_message, random_image

RESULTS = Path(__file__).resolve().parent / "results" / "fuzz_server.json"
ANSWERS = {"hello": "hello", "ping": "pong", "reset": "reset", "infer": "infer"}  # request type -> reply type


@dataclass
class FuzzReport:
    """What one fuzzing run saw; :attr:`ok` when nothing went wrong."""

    messages: int = 0
    errors: Counter = field(default_factory=Counter)
    valid: Counter = field(default_factory=Counter)
    mutations: Counter = field(default_factory=Counter)
    timeouts: int = 0
    crashes: int = 0
    failures: list[str] = field(default_factory=list)
    pings: int = 0
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    max_rss_growth_mb: float = 128.0
    wall_s: float = 0.0

    @property
    def rss_growth_mb(self) -> float:
        if self.rss_before_mb is None or self.rss_after_mb is None:
            return 0.0
        return self.rss_after_mb - self.rss_before_mb

    @property
    def ok(self) -> bool:
        return (not self.failures and not self.timeouts and not self.crashes
                and self.rss_growth_mb <= self.max_rss_growth_mb)


def rss_mb() -> float | None:
    """Resident memory of this process (server thread included) in MiB, None where unknown."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return float(psutil.Process().memory_info().rss) / 2**20


def build_policy() -> Any:
    """An untrained tiny multi-task ACT, the same weights for every seed."""
    import torch

    from robokit.policies.act.model import ACTConfig, ACTPolicy

    torch.manual_seed(0)
    cfg = ACTConfig(camera_names=list(CAMS), image_shape=IMAGE_SHAPE, chunk_size=10, backbone="small",
                    hidden_dim=32, nheads=2, dim_feedforward=64, enc_layers=1, dec_layers=1, vae_enc_layers=1,
                    latent_dim=8, vocabulary=VOCABULARY, task_dim=16)
    return ACTPolicy(cfg).eval()


class CountingPolicy:
    """The policy, counting its calls: a ``policy_error`` reply to a request that never reached the
    policy is a server failure given the wrong code."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    def predict_chunk(self, obs: dict[str, Any]) -> Any:
        self.calls += 1
        return self._policy.predict_chunk(obs)

    def reset(self) -> None:
        self.calls += 1
        self._policy.reset()


def must_be_refused(draft: Draft) -> str | None:
    """Why the server must answer this message with an error, or None when it may accept it.

    Only for messages whose frames are the packed header and arrays as built (no frame mutation):
    a header with a msgpack extension type or timestamp anywhere, or a hello without the integer
    protocol 1.
    """
    if draft.packed is None or draft.frames != draft.packed:
        return None
    try:
        header = msgpack.unpackb(draft.frames[0], raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 -- not msgpack at all: nothing to expect beyond a typed reply
        return None
    stack = [header]
    while stack:
        value = stack.pop()
        if isinstance(value, (msgpack.ExtType, msgpack.Timestamp)):
            return "a header with a msgpack extension type"
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    if isinstance(header, dict) and header.get("type") == "hello":
        protocol = header.get("protocol")
        if isinstance(protocol, bool) or not isinstance(protocol, int) or protocol != P.PROTOCOL_VERSION:
            return f"a hello with protocol {str(protocol)[:40]}"
    return None


# -- running -------------------------------------------------------------------------------------
def check_reply(frames: list[bytes], draft: Draft, policy_called: bool = True) -> tuple[str, str | None]:
    """(what the reply is: an error code or a reply type, the problem with it or None)."""
    assert draft.frames is not None
    if draft.frames[0] == b"" and frames and frames[0] == b"":
        frames = frames[1:]  # the server echoes the empty frame it took for REQ's delimiter
    try:
        reply = P.decode(frames, max_message_bytes=2**31)
    except ProtocolError as exc:
        return "?", f"undecodable reply: {exc}"
    if reply.type == "error":
        code, message = reply.header.get("code"), reply.header.get("message")
        if code not in P.ERROR_CODES or not isinstance(message, str) or not message:
            return str(code), f"error reply without a known code and a message: {str(reply.header)[:200]}"
        if code == P.INTERNAL:
            return code, f"internal error (a server bug): {message[:300]}"
        if code == P.POLICY_ERROR and not policy_called:
            return code, f"policy_error from a request the policy never saw: {message[:300]}"
        if not draft.applied:
            return code, f"a valid request got an error: {code}: {message[:300]}"
        return code, None
    if reply.type not in ANSWERS.values():
        return reply.type, f"reply of unknown type {reply.type[:64]!r}"
    refuse = must_be_refused(draft)
    if refuse is not None:
        return reply.type, f"{refuse} got a {reply.type} reply instead of an error"
    if not draft.applied and (reply.id != draft.header["id"] or reply.type != ANSWERS[draft.header["type"]]):
        return reply.type, f"reply {reply.type} id {reply.id} to {draft.header['type']} id {draft.header['id']}"
    try:
        if reply.type == "hello":
            P.PolicyInfo.from_header(reply.header.get("policy"))
        if reply.type == "infer":
            actions = P.require_array(reply.arrays, "actions", "float32", (10, 8))
            if not np.isfinite(actions).all():
                return reply.type, "infer reply with non-finite actions"
    except ProtocolError as exc:
        return reply.type, f"malformed {reply.type} reply: {exc}"
    return reply.type, None


def open_socket(ctx: zmq.Context, address: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


def exchange(sock: zmq.Socket, frames: list[bytes], timeout_s: float) -> list[bytes] | None:
    sock.send_multipart(frames)
    if not sock.poll(int(timeout_s * 1000)):
        return None
    return sock.recv_multipart()


def server_answers_ping(sock: zmq.Socket, timeout_s: float, msg_id: int) -> bool:
    frames = exchange(sock, [bytes(f) for f in P.encode("ping", msg_id=msg_id)], timeout_s)
    if frames is None:
        return False
    reply = P.decode(frames)
    return reply.type == "pong" and reply.id == msg_id


def warmup_messages() -> list[list[bytes]]:
    """One valid request of each type, to warm the server's paths up before RSS is taken."""
    rng = np.random.default_rng(0)
    arrays = {"qpos": np.zeros(8, np.float32), **{f"images/{c}": random_image(rng) for c in CAMS}}
    requests = [P.encode("hello", {"protocol": P.PROTOCOL_VERSION}), P.encode("ping"), P.encode("reset"),
                P.encode("infer", {"task": TASKS[0]}, arrays)]
    return [[f.tobytes() if isinstance(f, np.ndarray) else bytes(f) for f in frames] for frames in requests]


def run_fuzz(messages: int, seed: int, *, batch: int = 250, timeout_s: float = 10.0,
             max_rss_growth_mb: float = 128.0, progress: Callable[[str], None] | None = None) -> FuzzReport:
    """Send ``messages`` mutated messages to a fresh in-process server and check every reply."""
    report = FuzzReport(max_rss_growth_mb=max_rss_growth_mb)
    ctx = zmq.Context()
    policy = CountingPolicy(build_policy())
    server = PolicyServer(policy, "tcp://127.0.0.1:0", max_message_bytes=LIMIT, context=ctx).start()
    sock = open_socket(ctx, server.address)
    t0 = time.perf_counter()
    try:
        for frames in warmup_messages():
            exchange(sock, frames, timeout_s)
        gc.collect()
        report.rss_before_mb = rss_mb()
        for index in range(messages):
            draft = make_message(seed, index)
            assert draft.frames is not None
            report.messages += 1
            report.mutations.update(draft.applied or ["(none)"])
            calls = policy.calls
            frames = exchange(sock, draft.frames, timeout_s)
            if frames is None:
                report.timeouts += 1
                report.failures.append(f"message {index} ({', '.join(draft.applied)}): no reply in {timeout_s:g} s")
                sock.close(0)
                sock = open_socket(ctx, server.address)  # a late reply must not answer the next message
            else:
                what, problem = check_reply(frames, draft, policy_called=policy.calls > calls)
                (report.errors if what in P.ERROR_CODES else report.valid)[what] += 1
                if problem is not None:
                    report.failures.append(f"message {index} ({', '.join(draft.applied) or 'valid'}): {problem}")
            if (index + 1) % batch == 0 or index + 1 == messages:
                report.pings += 1
                if not server_answers_ping(sock, timeout_s, msg_id=2**40 + index):
                    report.crashes += 1
                    report.failures.append(f"the server did not answer a ping after message {index}")
                    break
                if progress is not None:
                    progress(f"{index + 1} messages, {sum(report.errors.values())} errors, "
                             f"{sum(report.valid.values())} valid, {len(report.failures)} failures, RSS {rss_mb() or 0:.1f} MiB")
        gc.collect()
        report.rss_after_mb = rss_mb()
    finally:
        report.wall_s = time.perf_counter() - t0
        sock.close(0)
        server.close()
        ctx.term()
    return report


def summary(report: FuzzReport) -> str:
    mb = (lambda v: "n/a" if v is None else f"{v:.1f}")
    lines = [f"messages sent       {report.messages}",
             f"valid replies       {sum(report.valid.values())}  ("
             + ", ".join(f"{k} {v}" for k, v in sorted(report.valid.items())) + ")",
             f"error replies       {sum(report.errors.values())}"]
    lines += [f"  {code:<20}{n}" for code, n in report.errors.most_common()]
    lines += [f"timeouts            {report.timeouts}", f"crashes             {report.crashes}",
              f"other failures      {len(report.failures) - report.timeouts - report.crashes}",
              f"pings after batches {report.pings}",
              (f"RSS before / after  {mb(report.rss_before_mb)} / {mb(report.rss_after_mb)} MiB "
               f"({report.rss_growth_mb:+.1f} MiB, limit +{report.max_rss_growth_mb:g})"),
              f"wall time           {report.wall_s:.1f} s ({report.messages / max(report.wall_s, 1e-9):.0f} messages/s)"]
    lines += [f"FAIL: {f}" for f in report.failures[:20]]
    lines.append("result: " + ("OK" if report.ok else "FAILED"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1000 messages")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="longest wait for one reply")
    parser.add_argument("--max-rss-growth-mb", type=float, default=128.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the server logs every error reply; the summary counts them
    import torch

    torch.set_num_threads(1)
    messages = 1000 if args.quick else args.messages
    print(f"fuzz_server: {messages} messages, seed {args.seed}, server limit {LIMIT // 1024} KiB, "
          f"tiny multi-task ACT ({len(CAMS)} cameras {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}, chunk 10)", flush=True)
    report = run_fuzz(messages, args.seed, timeout_s=args.timeout_s, max_rss_growth_mb=args.max_rss_growth_mb,
                      progress=lambda line: print("  " + line, flush=True))
    print(summary(report))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {"messages": report.messages, "seed": args.seed, "ok": report.ok, "errors": dict(report.errors),
              "valid": dict(report.valid), "mutations": dict(report.mutations), "timeouts": report.timeouts,
              "crashes": report.crashes, "failures": report.failures, "rss_before_mb": report.rss_before_mb,
              "rss_after_mb": report.rss_after_mb, "rss_growth_mb": report.rss_growth_mb, "wall_s": report.wall_s,
              "python": platform.python_version(), "machine": platform.machine()}
    RESULTS.write_text(json.dumps(result, indent=2, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
