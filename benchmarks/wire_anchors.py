"""Transport anchors for ``wire_link.py``: robokit's ``infer`` payload (1 or 2 uint8 480x640x3 images
+ 8 float32 -> a 100x8 float32 chunk from a dummy policy) over three other stacks:

- **openpi websocket**: openpi-client 0.1.2's ``WebsocketClientPolicy`` against openpi's websocket
  policy server. The server lives in the openpi repository (``openpi.serving.websocket_policy_server``)
  and is not on PyPI (the ``openpi`` name there is an empty placeholder), so :func:`openpi_server`
  is the same server written out: ``websockets`` asyncio ``serve`` with ``compression=None`` and
  ``max_size=None``, the metadata packed and sent on connect, then per message
  ``msgpack_numpy.unpackb`` -> ``policy.infer`` -> ``server_timing`` added -> ``Packer().pack``.
- **gRPC + pickle**: a unary call (grpcio) whose request and reply are pickled dicts of arrays.
- **pickle REQ/REP**: ``pickle.dumps`` of the same dict over a ZMQ REQ/REP pair.

It runs from a venv of its own, so openpi-client's pins never meet robokit's, and imports nothing
from robokit (``wire_link.py --anchors /work/anchors-venv/bin/python``)::

    .venv/bin/uv venv /work/anchors-venv
    VIRTUAL_ENV=/work/anchors-venv .venv/bin/uv pip install openpi-client==0.1.2 grpcio pyzmq websockets numpy

Modes (both started by :class:`Anchors` in the robokit process):
``--serve HOST`` starts the three servers, prints ``READY <ws uri> <grpc host:port> <zmq endpoint>``
and serves until stdin closes; ``--client FRAMES.npz URI HOSTPORT ENDPOINT`` prints the versions it
runs as a JSON line, then answers every ``<transport> <cameras> <n>`` line on stdin with a JSON
list of n round-trip times in milliseconds (after 5 untimed calls).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

CHUNK, DIM = 100, 8
CAMS = ("top", "wrist")
TRANSPORTS = ("openpi websocket", "grpc pickle", "zmq pickle")
GRPC_METHOD = "/anchors.Policy/Infer"
# gRPC refuses messages over 4 MB by default; two raw frames are 1.8 MB, but a larger camera
# setup must not fail on the limit instead of being measured.
GRPC_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


class DummyPolicy:
    """The same chunk for every observation, as in the robokit rows: only the transport is measured."""

    def __init__(self) -> None:
        self.chunk = np.arange(CHUNK * DIM, dtype=np.float32).reshape(CHUNK, DIM)

    def infer(self, obs: dict) -> dict:
        return {"actions": self.chunk}


# -- servers (anchors venv) -------------------------------------------------------------------------
def openpi_server(policy: DummyPolicy, host: str, ready: Callable[[int], None]) -> None:
    """openpi's ``WebsocketPolicyServer.run`` and its handler, minus the health check and the
    episode control messages that an ``infer`` never takes."""
    import asyncio

    import websockets
    import websockets.asyncio.server as ws_server
    from openpi_client import msgpack_numpy

    async def handler(websocket: ws_server.ServerConnection) -> None:
        packer = msgpack_numpy.Packer()
        await websocket.send(packer.pack({}))
        prev_total_time = None
        while True:
            try:
                start_time = time.monotonic()
                obs = msgpack_numpy.unpackb(await websocket.recv())
                infer_time = time.monotonic()
                action = policy.infer(obs)
                infer_time = time.monotonic() - infer_time
                action["server_timing"] = {"infer_ms": infer_time * 1000}
                if prev_total_time is not None:
                    action["server_timing"]["prev_total_ms"] = prev_total_time * 1000
                await websocket.send(packer.pack(action))
                prev_total_time = time.monotonic() - start_time
            except websockets.ConnectionClosed:
                break

    async def run() -> None:
        async with ws_server.serve(handler, host, 0, compression=None, max_size=None) as server:
            ready(next(iter(server.sockets)).getsockname()[1])
            await server.serve_forever()

    asyncio.run(run())


def grpc_server(policy: DummyPolicy, host: str) -> tuple[Any, int]:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    def infer(request: bytes, context: Any) -> dict:
        return policy.infer(request)  # type: ignore[arg-type]

    handler = grpc.method_handlers_generic_handler("anchors.Policy", {"Infer": grpc.unary_unary_rpc_method_handler(
        infer, request_deserializer=pickle.loads, response_serializer=pickle.dumps)})
    server = grpc.server(ThreadPoolExecutor(max_workers=2), handlers=[handler], options=GRPC_OPTIONS)
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    return server, port


def zmq_server(policy: DummyPolicy, host: str) -> str:
    import zmq

    sock = zmq.Context.instance().socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"tcp://{host}:*")

    def loop() -> None:
        while True:
            sock.send(pickle.dumps(policy.infer(pickle.loads(sock.recv()))))

    threading.Thread(target=loop, daemon=True).start()
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def serve(host: str) -> None:
    policy = DummyPolicy()
    port: list[int] = []
    started = threading.Event()

    def ready(p: int) -> None:
        port.append(p)
        started.set()

    threading.Thread(target=openpi_server, args=(policy, host, ready), daemon=True).start()
    grpc_srv, grpc_port = grpc_server(policy, host)
    endpoint = zmq_server(policy, host)
    if not started.wait(30):
        raise SystemExit("the websocket server did not start")
    print("READY", f"ws://{host}:{port[0]}", f"{host}:{grpc_port}", endpoint, flush=True)
    sys.stdin.read()  # the parent closes our stdin (or dies) to stop us
    grpc_srv.stop(0)
    os._exit(0)  # the websocket and REP threads block in their loops: no orderly shutdown is needed


# -- clients (anchors venv) -------------------------------------------------------------------------
def clients(uri: str, grpc_target: str, endpoint: str) -> dict[str, Callable[[dict], dict]]:
    """One infer function per transport, connections kept open across calls."""
    import grpc
    import zmq
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    openpi = WebsocketClientPolicy(host=uri)
    channel = grpc.insecure_channel(grpc_target, options=GRPC_OPTIONS)
    stub = channel.unary_unary(GRPC_METHOD, request_serializer=pickle.dumps, response_deserializer=pickle.loads)
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(endpoint)

    def zmq_infer(obs: dict) -> dict:
        req.send(pickle.dumps(obs))
        return pickle.loads(req.recv())

    return {"openpi websocket": openpi.infer, "grpc pickle": stub, "zmq pickle": zmq_infer}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for dist in ("openpi-client", "websockets", "msgpack", "grpcio", "pyzmq", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "?"
    return out


def client(frames: str, uri: str, grpc_target: str, endpoint: str) -> None:
    data = np.load(frames)
    fns = clients(uri, grpc_target, endpoint)
    print(json.dumps(versions()), flush=True)
    for line in sys.stdin:
        transport, cams, n = line.rsplit(maxsplit=2)
        obs = {"state": data["qpos"], "images": {c: data[c] for c in CAMS[:int(cams)]}}
        fn = fns[transport]
        reply = fn(obs)
        if np.asarray(reply["actions"]).shape != (CHUNK, DIM):
            raise SystemExit(f"{transport}: a reply without a {CHUNK}x{DIM} chunk")
        for _ in range(4):
            fn(obs)
        times = []
        for _ in range(int(n)):
            t0 = time.perf_counter()
            fn(obs)
            times.append((time.perf_counter() - t0) * 1e3)
        print(json.dumps(times), flush=True)


# -- the robokit side: processes and rows for wire_link.py -------------------------------------------
class Anchors:
    """Anchor servers (in the link's namespace when ``prefix`` says so) and one client process on
    this side; :meth:`rows` gives wire_link.py a timing function per transport and camera count."""

    def __init__(self, python: str, prefix: list[str], host: str, frames: str) -> None:
        self.procs: list[subprocess.Popen] = []
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
        server = self._start([*prefix, python, __file__, "--serve", host], env)
        line = server.stdout.readline() if server.stdout else ""
        if not line.startswith("READY"):
            self.close()
            raise RuntimeError(f"the anchor servers did not start (got {line!r})")
        self.client = self._start([python, __file__, "--client", frames, *line.split()[1:]], env)
        first = self.client.stdout.readline() if self.client.stdout else ""
        if not first.startswith("{"):
            self.close()
            raise RuntimeError(f"the anchor client did not start (got {first!r})")
        self.versions: dict[str, str] = json.loads(first)

    def _start(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.procs.append(proc)
        return proc

    def run(self, transport: str, cams: int, n: int) -> np.ndarray:
        assert self.client.stdin is not None and self.client.stdout is not None
        self.client.stdin.write(f"{transport} {cams} {n}\n")
        self.client.stdin.flush()
        line = self.client.stdout.readline()
        if not line.startswith("["):
            raise RuntimeError(f"the anchor client failed on {transport} ({line!r})")
        return np.asarray(json.loads(line))

    def rows(self) -> dict[str, Batch]:
        return {f"{t} {n} cam": Batch(self, t, n) for n in (1, 2) for t in TRANSPORTS}

    def close(self) -> None:
        for proc in self.procs:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()


class Batch:
    """A row timed in the anchor client: ``batch(n)`` returns n round-trip times in ms."""

    def __init__(self, anchors: Anchors, transport: str, cams: int) -> None:
        self.anchors, self.transport, self.cams = anchors, transport, cams

    def __call__(self, n: int) -> np.ndarray:
        return self.anchors.run(self.transport, self.cams, n)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    elif sys.argv[1:2] == ["--client"]:
        client(*sys.argv[2:6])
    else:
        raise SystemExit(__doc__)
