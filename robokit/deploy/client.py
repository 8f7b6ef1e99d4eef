"""PolicyClient: a small client for the policy server (protocol v1). Imports no torch.

It connects a DEALER socket and tags every request with an id so that a late reply to a request
that already timed out is recognised and dropped. A timeout raises
:class:`~robokit.errors.ServerUnavailable` and replaces the socket (the "lazy pirate" pattern), so
nothing queued for a dead server is delivered to its successor; the next request after a server
restart simply works. :meth:`PolicyClient.submit_infer` runs requests on one background thread
for asynchronous inference (the socket is only ever used under a lock).

With ``image_codec="jpeg"`` (or ``"jpeg:Q"``) the client asks the server in :meth:`PolicyClient.hello`
whether it decodes JPEG, and from then on sends every camera image as a JPEG file
(:mod:`robokit.deploy.image_codec`): 30-55x fewer bytes for a 480x640 frame for ~1.7 ms of CPU,
worth it whenever the link, not the CPU, is the bottleneck (a network; not the same host). An older server that
does not announce codecs gets raw frames; a server that refuses the codec fails the hello.

Example::

    with PolicyClient("tcp://gpu-box:5555") as client:
        info = client.hello()  # PolicyClient(..., image_codec="jpeg:90") to compress images
        result = client.infer(qpos, {"top": image})
        result.actions  # (chunk_size, action_dim) float32
"""

from __future__ import annotations

import itertools
import logging
import socket as _socket
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from robokit.deploy import protocol as P
from robokit.deploy.image_codec import RAW, ImageCodec, encode_images
from robokit.deploy.keys import ClientKeys
from robokit.errors import ProtocolError, ServerUnavailable, UserError

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
# The codec of clients created without one. `robokit deploy --image-codec` sets it, because the
# deploy command builds its client deep inside the evaluation and runner code.
_default_codec = ImageCodec()


def set_default_image_codec(spec: str | ImageCodec | None) -> ImageCodec:
    """Make ``spec`` (``raw``, ``jpeg``, ``jpeg:Q``) the image codec of clients created without one
    from now on; returns the previous default. :class:`~robokit.errors.ConfigError` if malformed."""
    global _default_codec
    previous, _default_codec = _default_codec, ImageCodec.parse(spec)
    return previous


@dataclass(frozen=True)
class InferResult:
    """One reply to ``infer``: the chunk and how long it took."""

    actions: np.ndarray  # (chunk_size, action_dim) float32, de-normalised (read-only view)
    done: float | None  # probability the task is finished, if the policy predicts it
    model_ms: float  # policy forward pass on the server
    server_ms: float  # receive to reply on the server (decode, resize, model, encode)
    rtt_ms: float  # send to reply on this side, image encoding included
    encode_ms: float = 0.0  # compressing the images on this side (0 for raw frames)


class PolicyClient:
    """Talk to a :class:`~robokit.deploy.server.PolicyServer`.

    ``timeout_s`` bounds every request unless a call passes its own. ``keys`` enables CurveZMQ
    (see :mod:`robokit.deploy.keys`). ``image_codec``: ``raw``, ``jpeg`` or ``jpeg:Q`` (quality
    1..100, default 90), or None for the process default (raw unless
    :func:`set_default_image_codec` changed it); it applies once :meth:`hello` has agreed on it
    with the server (:attr:`wire_codec`). The address may be ``tcp://`` or, on the same host,
    ``ipc:///path`` (the fastest transport there).
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, timeout_s: float = 2.0, *,
                 keys: ClientKeys | None = None, max_message_bytes: int = P.DEFAULT_MAX_MESSAGE_BYTES,
                 context: zmq.Context | None = None, name: str | None = None,
                 image_codec: str | ImageCodec | None = None) -> None:
        if "://" not in address:
            raise UserError(f"server address '{address}' needs a scheme, e.g. tcp://{address}")
        self.address = address
        self.timeout_s = float(timeout_s)
        self.max_message_bytes = int(max_message_bytes)
        self.info: P.PolicyInfo | None = None
        self.image_codec = _default_codec if image_codec is None else ImageCodec.parse(image_codec)
        #: The codec images are sent with: raw until :meth:`hello` has agreed on :attr:`image_codec`.
        self.wire_codec = ImageCodec()
        self.name = name or f"robokit-client@{_socket.gethostname()}"
        self._keys = keys
        self._ctx = context or zmq.Context.instance()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._sock: zmq.Socket | None = None
        self._closed = False
        self._open_socket()

    # -- socket management -----------------------------------------------------------------------
    def _open_socket(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if self._keys is not None:
            sock.curve_serverkey = self._keys.server_public
            sock.curve_publickey = self._keys.public
            sock.curve_secretkey = self._keys.secret
        try:
            sock.connect(self.address)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise UserError(f"cannot connect to policy server address '{self.address}' ({exc})") from exc
        self._sock = sock

    def _replace_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        self._open_socket()

    def close(self) -> None:
        """Close the socket and the background thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            if self._sock is not None:
                self._sock.close(0)
                self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------------
    def request(self, msg_type: str, fields: Mapping[str, Any] | None = None,
                arrays: Mapping[str, np.ndarray] | None = None, timeout_s: float | None = None) -> P.Message:
        """Send one request and wait for its reply.

        Raises :class:`ServerUnavailable` on timeout and :class:`ProtocolError` (with the server's
        error ``code``) when the server answers with an error.
        """
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        with self._lock:
            if self._closed or self._sock is None:
                raise UserError("the policy client is closed")
            msg_id = next(self._ids)
            frames = P.encode(msg_type, fields, arrays, msg_id=msg_id)
            deadline = time.monotonic() + timeout
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._replace_socket()
                raise self._unavailable(msg_type, timeout) from None
            while True:
                remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
                if not self._sock.poll(remaining_ms, zmq.POLLIN):
                    self._replace_socket()  # drop whatever is queued for a server that is gone
                    raise self._unavailable(msg_type, timeout)
                reply = P.decode(self._sock.recv_multipart(copy=False), self.max_message_bytes)
                if reply.id == msg_id or (reply.id is None and reply.type == "error"):
                    break
                log.debug("dropping a late reply (id %s) to an earlier request", reply.id)
        if reply.type == "error":
            code = str(reply.header.get("code", P.INTERNAL))
            raise ProtocolError(f"policy server refused '{msg_type}': {reply.header.get('message', '')}", code)
        return reply

    def _unavailable(self, msg_type: str, timeout: float) -> ServerUnavailable:
        return ServerUnavailable(f"policy server at {self.address} did not answer '{msg_type}' within "
                                 f"{timeout:g} s; check that `robokit serve` is running there")

    def hello(self, timeout_s: float | None = None) -> P.PolicyInfo:
        """Check the protocol version and learn what the served policy expects: its shapes and
        cameras, and what else it reads (object boxes, a goal image from which camera, an instruction)."""
        fields: dict[str, Any] = {"protocol": P.PROTOCOL_VERSION, "client": self.name}
        if self.image_codec.name != RAW:
            fields["image_codec"] = self.image_codec.name
        reply = self.request("hello", fields, timeout_s=timeout_s)
        if reply.header.get("protocol") != P.PROTOCOL_VERSION:
            raise ProtocolError(f"server speaks protocol {reply.header.get('protocol')!r}, this client "
                                f"{P.PROTOCOL_VERSION}", P.UNSUPPORTED_VERSION)
        self.info = P.PolicyInfo.from_header(reply.header.get("policy"))
        if reply.header.get("image_codec") == self.image_codec.name:
            self.wire_codec = self.image_codec
        else:
            # A server that predates codecs ignores the request and answers without the field;
            # raw frames are what it reads.
            self.wire_codec = ImageCodec()
            if self.image_codec.name != RAW:
                log.warning("the policy server at %s does not decode %s images (an older robokit); sending "
                            "raw frames", self.address, self.image_codec.name)
        return self.info

    def ping(self, timeout_s: float | None = None) -> float:
        """Round-trip time in seconds of an empty request."""
        t0 = time.perf_counter()
        self.request("ping", timeout_s=timeout_s)
        return time.perf_counter() - t0

    def reset(self, timeout_s: float | None = None) -> None:
        """Clear the policy's per-episode state on the server."""
        self.request("reset", timeout_s=timeout_s)

    def infer(self, qpos: np.ndarray, images: Mapping[str, np.ndarray], task: str | None = None,
              goal_image: np.ndarray | None = None, timeout_s: float | None = None,
              objects: Sequence[Mapping[str, Any]] | None = None) -> InferResult:
        """Ask for an action chunk for one observation (images uint8 (H, W, 3) RGB by camera name).

        ``objects``: optional ``[{"name", "box": [x0, y0, x1, y1] pixels of that camera's image,
        "camera"}]`` for policies with object tokens (``info.objects`` after :meth:`hello`).
        """
        arrays: dict[str, np.ndarray] = {"qpos": np.asarray(qpos, dtype=np.float32)}
        for cam, image in images.items():
            arrays[f"images/{cam}"] = _uint8_image(image, cam)
        if goal_image is not None:
            arrays["goal_image"] = _uint8_image(goal_image, "goal_image")
        fields: dict[str, Any] = {}
        if task is not None:
            fields["task"] = task
        if objects is not None:
            fields["objects"] = _wire_objects(objects)
        t0 = time.perf_counter()
        encoded = encode_images(arrays, self.wire_codec)
        encode_ms = (time.perf_counter() - t0) * 1e3 if encoded else 0.0
        fields.update(encoded)
        reply = self.request("infer", fields, arrays, timeout_s=timeout_s)
        rtt_ms = (time.perf_counter() - t0) * 1e3
        actions = P.require_array(reply.arrays, "actions", "float32", (None, None))
        timing = reply.header.get("timing") or {}
        done = reply.header.get("done")
        return InferResult(actions=actions, done=None if done is None else float(done),
                           model_ms=float(timing.get("model_ms", float("nan"))),
                           server_ms=float(timing.get("server_ms", float("nan"))), rtt_ms=rtt_ms,
                           encode_ms=encode_ms)

    def submit_infer(self, qpos: np.ndarray, images: Mapping[str, np.ndarray], task: str | None = None,
                     goal_image: np.ndarray | None = None, timeout_s: float | None = None,
                     objects: Sequence[Mapping[str, Any]] | None = None) -> Future:
        """Run :meth:`infer` on the background thread; returns a Future of :class:`InferResult`.

        The arrays must not be modified until the future is done.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-client")
        return self._executor.submit(self.infer, qpos, images, task, goal_image, timeout_s, objects)


def _wire_objects(objects: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Objects as plain msgpack values (numpy boxes and scalars become Python numbers)."""
    out = []
    for i, obj in enumerate(objects):
        try:
            out.append({"name": str(obj["name"]), "box": np.asarray(obj["box"]).reshape(-1).tolist(),
                        "camera": str(obj["camera"])})
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"object {i} must be a mapping with 'name', 'box' [x0, y0, x1, y1] and "
                            f"'camera' ({exc!r})") from None
    return out


def _uint8_image(image: Any, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise UserError(f"image '{name}' must be uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}")
    return arr
