"""PolicyServer: answers hello / infer / reset / ping over ZeroMQ (protocol v1, :mod:`robokit.deploy.protocol`).

The server binds a ROUTER socket. DEALER clients send ``[header, arrays...]``; REQ clients add an
empty delimiter frame. The server echoes whatever envelope it received (identity, and the delimiter
if there was one), so both kinds work. Requests are served one at a time in arrival order (a policy
on one GPU gains nothing from concurrency); any malformed or hostile message gets an ``error`` reply
and the server carries on. A reply never carries NaN or infinite actions: a policy that produces
them gets its request answered with ``policy_error`` instead.

The policy can be any object with a ``config`` (``camera_names``, ``image_shape``, ``state_dim``,
``action_dim``, ``chunk_size``, ``fps``), ``predict_chunk(obs) -> (chunk, extras)`` and ``reset()``;
:meth:`PolicyServer.from_checkpoint` loads a robokit checkpoint. The hello reply says what the
policy reads besides qpos and the current frames (``policy.needs``, from its config's
``data_needs()``: history, goal camera, instruction, and object boxes when the policy
:func:`policy_wants_objects`). An ``infer`` request becomes the policy's observation through
:func:`~robokit.deploy.observation.prepare_observation`, as in-process deployment does: images
resized to the policy's ``image_shape``, object boxes scaled with them. JPEG-compressed images
(:mod:`robokit.deploy.image_codec`, negotiated in ``hello``) are decoded before that.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import socket as _socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from robokit.deploy import protocol as P
from robokit.deploy.image_codec import decode_request_images, hello_reply_fields
from robokit.deploy.keys import ServerKeys
from robokit.deploy.observation import Observation, prepare_observation
from robokit.errors import ConfigError, ProtocolError, RobokitError, UserError

if TYPE_CHECKING:
    from typing_extensions import Self
    from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)

DEFAULT_BIND = "tcp://127.0.0.1:5555"
MAX_TASK_CHARS = 4096
MAX_IMAGE_SIDE = 8192
#: Largest magnitude of a ``qpos`` value. No joint, gripper or Cartesian state in any unit a robot
#: reports comes near it; such values are uninitialised memory or a unit mix-up, and they drive
#: a policy's normalisation into overflow.
MAX_ABS_QPOS = 1e9
#: Smallest per-frame size libzmq accepts before it drops a connection (see ``receive_cap``):
#: an image of MAX_IMAGE_SIDE a side fits, so an oversized image gets a ``too_large`` reply.
MIN_RECEIVE_CAP = 256 * 1024 * 1024
#: Complete messages queued per client before libzmq stops reading from that client's connection:
#: with frames up to the receive cap, this bounds what one client can make the server hold.
RECEIVE_QUEUE = 4
MAX_TRACKED_CLIENTS = 1024  # bounded memory however many identities a peer invents


@dataclass
class ClientRecord:
    """What the server knows about one connected client (for logs and ``stats``)."""

    identity: str
    address: str
    first_seen: float
    last_seen: float
    requests: int = 0
    errors: int = 0
    name: str | None = None


@dataclass
class ServerStats:
    requests: int = 0
    errors: int = 0
    infers: int = 0
    dropped_replies: int = 0
    clients: dict[str, ClientRecord] = field(default_factory=OrderedDict)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def policy_needs(policy: Any) -> dict[str, Any]:
    """What ``policy`` reads from the data (its config's ``data_needs().to_dict()``); a config
    without ``data_needs`` reads the current frames of its cameras alone."""
    data_needs = getattr(policy.config, "data_needs", None)
    if callable(data_needs):
        return dict(data_needs().to_dict())
    return {"camera_names": list(policy.config.camera_names), "history": 0, "object_boxes": False,
            "goal_camera": None, "instruction": False}


def policy_wants_objects(policy: Any) -> bool:
    """Whether ``policy`` reads ``obs["objects"]``: its config declares object boxes (VIMA with
    object slots) and, where it keeps an ``objects_trained`` flag (as VIMA does in its checkpoint),
    it was trained with them. A model trained without boxes ignores them, so nobody sends any."""
    if not policy_needs(policy).get("object_boxes"):
        return False
    return bool(getattr(policy, "objects_trained", True))


def trained_tasks(train_meta: dict[str, Any]) -> tuple[str, ...]:
    """The instructions a checkpoint was trained on (its ``train_meta["tasks"]``), or () if not recorded."""
    tasks = train_meta.get("tasks")
    if not isinstance(tasks, (list, tuple)):
        return ()
    return tuple(str(t) for t in tasks if isinstance(t, str) and t)


def receive_cap(max_message_bytes: int) -> int:
    """Largest single frame the server's socket receives (and answers) for a message limit of
    ``max_message_bytes``; a larger frame makes libzmq drop the connection without a reply."""
    return max(4 * max_message_bytes, MIN_RECEIVE_CAP)


def policy_info(policy: Any, checkpoint_sha256: str | None = None, fps: float | None = None,
                tasks: Sequence[str] = ()) -> P.PolicyInfo:
    """The hello description of ``policy`` from its config and its data needs; ``tasks``: the
    instructions it was trained on (its checkpoint's ``train_meta``), when known."""
    cfg = policy.config
    needs = policy_needs(policy)
    return P.PolicyInfo(
        type=getattr(policy, "name", "") or type(policy).__name__,
        camera_names=tuple(cfg.camera_names), image_shape=tuple(int(v) for v in cfg.image_shape),  # type: ignore[arg-type]
        state_dim=int(cfg.state_dim), action_dim=int(cfg.action_dim), chunk_size=int(cfg.chunk_size),
        fps=float(fps if fps is not None else cfg.fps), checkpoint_sha256=checkpoint_sha256,
        objects=policy_wants_objects(policy), goal_camera=needs.get("goal_camera") or None,
        history=int(needs.get("history", 0)), instruction=bool(needs.get("instruction", False)),
        tasks=tuple(str(t) for t in tasks))


def _check_ipc_free(bind: str) -> None:
    """Refuse an ipc:// path another process is serving on: libzmq would silently take the path over
    (it unlinks the file), where a busy tcp port fails to bind. A socket file nobody answers is stale."""
    if bind.startswith("ipc:///") and Path(bind[6:]).is_socket():
        with _socket.socket(_socket.AF_UNIX) as probe:
            if probe.connect_ex(bind[6:]) == 0:
                raise zmq.ZMQError(errno.EADDRINUSE, f"{bind[6:]} is in use by another process")


class PolicyServer:
    """Serve one policy on a ROUTER socket.

    Use :meth:`serve_forever` in the foreground (``robokit serve``) or :meth:`start` for a
    background thread (tests, benchmarks, in-process tools). :meth:`close` stops and unbinds.
    """

    def __init__(self, policy: Any, bind: str = DEFAULT_BIND, *, checkpoint_sha256: str | None = None,
                 fps: float | None = None, max_message_bytes: int = P.DEFAULT_MAX_MESSAGE_BYTES,
                 curve: ServerKeys | None = None, warmup: bool = True,
                 context: zmq.Context | None = None, tasks: Sequence[str] = ()) -> None:
        if max_message_bytes <= 0:
            raise ConfigError(f"the maximum message size must be positive, got {max_message_bytes} bytes")
        self.policy = policy
        self.info = policy_info(policy, checkpoint_sha256, fps, tasks)
        self.max_message_bytes = int(max_message_bytes)
        self.receive_cap = receive_cap(self.max_message_bytes)
        self.stats = ServerStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._auth: ThreadAuthenticator | None = None
        # An own context by default: terminating it on close() releases the port synchronously,
        # so a restarted server can bind the same address at once.
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._handlers: dict[str, Callable[[P.Message, float], list[Any]]] = {
            "hello": self._on_hello, "infer": self._on_infer, "reset": self._on_reset, "ping": self._on_ping}
        if warmup:
            self.warmup()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        # libzmq silently drops the connection of a peer that sends a frame over ZMQ_MAXMSGSIZE, so
        # the client would wait for a reply that never comes. The socket therefore takes frames
        # well beyond the limit, and decode() checks the real limit (all frames together) and
        # answers too_large; only frames over the receive cap still cost the connection.
        self._sock.setsockopt(zmq.MAXMSGSIZE, self.receive_cap)
        self._sock.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)
        if curve is not None:
            self._setup_curve(curve)
        try:
            _check_ipc_free(bind)
            self._sock.bind(bind.replace(":0", ":*") if bind.endswith(":0") else bind)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            if self._own_ctx:
                self._ctx.term()
            raise UserError(f"cannot bind the policy server to {bind} ({exc}); is another server "
                            "running there? choose another --bind port") from exc
        self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("serving %s policy (%s) on %s", self.info.type,
                 ", ".join(self.info.camera_names), self.address)

    # -- construction from a checkpoint ----------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **kwargs: Any) -> PolicyServer:
        """Load any robokit checkpoint on ``device`` (auto|cpu|cuda|mps) and serve it."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"checkpoint {path} not found")
        from robokit.policies.checkpoint import load_checkpoint
        from robokit.training.runtime import pick_device

        dev = pick_device(device)
        policy, meta = load_checkpoint(path, map_location=dev)  # on dev, in eval mode
        fps = kwargs.pop("fps", None) or getattr(policy.config, "fps", None) or meta.get("fps")
        log.info("loaded %s from %s on %s (trained %s steps)", getattr(policy, "name", "policy"), path,
                 dev, meta.get("step", "?"))
        return cls(policy, checkpoint_sha256=file_sha256(path), fps=fps, tasks=trained_tasks(meta), **kwargs)

    def _setup_curve(self, keys: ServerKeys) -> None:
        if not zmq.has("curve"):
            raise ConfigError("this libzmq has no CURVE support; --secure is unavailable")
        if keys.authorized_clients is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self._ctx)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(keys.authorized_clients))
            log.info("CurveZMQ: accepting clients whose public key is in %s", keys.authorized_clients)
        self._sock.curve_secretkey = keys.secret
        self._sock.curve_publickey = keys.public
        self._sock.curve_server = True

    # -- lifecycle -------------------------------------------------------------------------------
    def warmup(self) -> None:
        """One inference on a blank observation so the first real request is not slow."""
        h, w, _ = self.info.image_shape
        obs = {"qpos": np.zeros(self.info.state_dim, np.float32),
               "images": {c: np.zeros((h, w, 3), np.uint8) for c in self.info.camera_names},
               "task": "warm up", "goal_image": np.zeros((h, w, 3), np.uint8)}
        t0 = time.perf_counter()
        try:
            with self._inference_context():
                self.policy.predict_chunk(obs)
            self.policy.reset()
        except Exception as exc:  # noqa: BLE001 -- a policy that needs more than a blank input warms up on first use
            log.warning("warm-up inference failed (%s: %s); the first request will be slower",
                        type(exc).__name__, exc)
            return
        log.info("warm-up inference took %.1f ms", (time.perf_counter() - t0) * 1e3)

    def start(self) -> PolicyServer:
        """Serve in a background thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, name="policy-server", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self, poll_ms: int = 100) -> None:
        """Serve until :meth:`stop` is called (or KeyboardInterrupt in the foreground)."""
        while not self._stop.is_set():
            if not self._sock.poll(poll_ms, zmq.POLLIN):
                continue
            try:
                self._serve_one()
            except zmq.ZMQError as exc:
                if self._stop.is_set():
                    break
                log.warning("socket error while serving: %s", exc)
            except Exception:  # never let one request take the server down
                log.exception("unexpected error while serving a request")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
            self._thread = None

    def close(self) -> None:
        """Stop serving and release the socket. Idempotent."""
        self.stop()
        if not self._sock.closed:
            self._sock.close(0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_ctx and not self._ctx.closed:
            self._ctx.term()
        if self.address.startswith("ipc:///"):  # libzmq leaves the socket file of a named ipc endpoint behind
            Path(self.address[6:]).unlink(missing_ok=True)
        for rec in self.stats.clients.values():
            log.info("client %s (%s): %d requests, %d errors", rec.identity, rec.address, rec.requests,
                     rec.errors)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one request -----------------------------------------------------------------------------
    def _recv(self) -> tuple[list[zmq.Frame], bool]:
        """All frames of the next message, keeping at most what a valid message can have."""
        keep = P.MAX_ARRAYS + 3  # identity, delimiter, header, arrays
        frames = [self._sock.recv(copy=False)]
        overflow = False
        while self._sock.getsockopt(zmq.RCVMORE):
            frame = self._sock.recv(copy=False)
            if len(frames) < keep:
                frames.append(frame)
            else:
                overflow = True
        return frames, overflow

    def _serve_one(self) -> None:
        t0 = time.perf_counter()
        frames, overflow = self._recv()
        identity = frames[0]
        # A REQ client puts an empty delimiter after its identity; DEALER clients do not (and a
        # valid header is never empty), so this tells the two apart.
        n_env = 2 if len(frames) >= 2 and len(frames[1]) == 0 else 1
        envelope = [f.bytes for f in frames[:n_env]]
        body = frames[n_env:]
        record = self._client(identity)
        if overflow:
            reply = P.error_frames(P.TOO_LARGE, f"a message may have at most {P.MAX_ARRAYS} arrays")
        else:
            reply = self.handle(body, t0, record)
        try:
            self._sock.send_multipart(envelope + reply, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:  # the client stopped reading (or vanished): drop rather than block
            self.stats.dropped_replies += 1
            log.debug("dropped a reply to client %s", record.identity)

    def _client(self, identity: zmq.Frame) -> ClientRecord:
        key = identity.bytes.hex()
        now = time.time()
        rec = self.stats.clients.get(key)
        if rec is None:
            try:
                address = str(identity.get("Peer-Address"))
            except zmq.ZMQError:
                address = "?"
            rec = ClientRecord(identity=key, address=address, first_seen=now, last_seen=now)
            self.stats.clients[key] = rec
            log.info("new client %s from %s", key, address)
            while len(self.stats.clients) > MAX_TRACKED_CLIENTS:
                self.stats.clients.popitem(last=False)  # type: ignore[call-arg]
        rec.last_seen = now
        rec.requests += 1
        return rec

    def handle(self, body: list[Any], t0: float | None = None, record: ClientRecord | None = None) -> list[Any]:
        """Reply frames for one request body (header + arrays, no envelope). Never raises."""
        t0 = time.perf_counter() if t0 is None else t0
        self.stats.requests += 1
        msg_id = None
        try:
            msg = P.decode(body, self.max_message_bytes)
            msg_id = msg.id
            handler = self._handlers.get(msg.type)
            if handler is None:
                raise ProtocolError(f"unknown request type '{msg.type[:64]}'; known: "
                                    f"{', '.join(self._handlers)}", P.UNKNOWN_TYPE)
            return handler(msg, t0)
        except ProtocolError as exc:
            code, text = exc.code, str(exc)
        except Exception as exc:  # a bug in the server itself (the policy's failures are typed above)
            log.exception("unexpected error while answering a request")
            code, text = P.INTERNAL, f"{type(exc).__name__}: {exc}"
        self.stats.errors += 1
        if record is not None:
            record.errors += 1
            log.info("error reply to client %s: %s: %s", record.identity, code, text)
        return P.error_frames(code, text, msg_id)

    # -- handlers --------------------------------------------------------------------------------
    def _on_hello(self, msg: P.Message, t0: float) -> list[Any]:
        if "protocol" not in msg.header:
            raise ProtocolError(f"hello is missing the field 'protocol' (the protocol version the client "
                                f"speaks, {P.PROTOCOL_VERSION})", P.BAD_REQUEST)
        version = msg.header["protocol"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise ProtocolError(f"hello field 'protocol' must be an integer, got {type(version).__name__}",
                                P.BAD_REQUEST)
        if version != P.PROTOCOL_VERSION:
            raise ProtocolError(f"client speaks protocol {version}, this server speaks "
                                f"{P.PROTOCOL_VERSION}; upgrade the older side", P.UNSUPPORTED_VERSION)
        codec_fields = hello_reply_fields(msg.header)
        client = msg.header.get("client")
        if isinstance(client, str):
            log.info("hello from %s (images: %s)", client[:200], codec_fields["image_codec"])
        return P.encode("hello", {"protocol": P.PROTOCOL_VERSION, "policy": self.info.to_header(),
                                  **codec_fields}, msg_id=msg.id)

    def _on_reset(self, msg: P.Message, t0: float) -> list[Any]:
        self._call_policy(self.policy.reset)
        return P.encode("reset", msg_id=msg.id)

    def _on_ping(self, msg: P.Message, t0: float) -> list[Any]:
        return P.encode("pong", msg_id=msg.id)

    @staticmethod
    def _image(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
        img = P.require_array(arrays, name, "uint8", (None, None, 3))
        if not (img.shape[0] > 0 and img.shape[1] > 0):
            raise ProtocolError(f"array '{name}' has an empty image size {img.shape[:2]}", P.WRONG_SHAPE)
        if max(img.shape[:2]) > MAX_IMAGE_SIDE:
            raise ProtocolError(f"array '{name}' is a {img.shape[0]}x{img.shape[1]} image; images may be at "
                                f"most {MAX_IMAGE_SIDE} pixels a side (the server resizes them to the "
                                "policy's image_shape anyway: send them smaller)", P.TOO_LARGE)
        return img

    def _observation(self, msg: P.Message) -> Observation:
        """The request checked field by field (ProtocolError naming the first bad one)."""
        info = self.info
        qpos = P.require_array(msg.arrays, "qpos", "float32", (info.state_dim,))
        images = {cam: self._image(msg.arrays, f"images/{cam}") for cam in info.camera_names}
        task = msg.header.get("task")
        if task is not None and (not isinstance(task, str) or len(task) > MAX_TASK_CHARS):
            raise ProtocolError(f"'task' must be a string of at most {MAX_TASK_CHARS} characters", P.BAD_REQUEST)
        goal_image = self._image(msg.arrays, "goal_image") if "goal_image" in msg.arrays else None
        objects = msg.header.get("objects")
        if objects is not None:
            objects = P.parse_objects(objects, info.camera_names)
        if not np.all(np.isfinite(qpos)):
            raise ProtocolError("array 'qpos' holds NaN or infinite values", P.BAD_REQUEST)
        if np.any(np.abs(qpos) > MAX_ABS_QPOS):
            worst = int(np.argmax(np.abs(qpos)))
            raise ProtocolError(f"array 'qpos' holds {float(qpos[worst]):g} at index {worst}; values of a "
                                f"magnitude above {MAX_ABS_QPOS:g} are not a robot state", P.BAD_REQUEST)
        return Observation(qpos=qpos, images=images, task=task, goal_image=goal_image, objects=objects)

    def _on_infer(self, msg: P.Message, t0: float) -> list[Any]:
        info = self.info
        # Compressed images become raw ones first, so they are checked exactly like raw ones.
        t_decode = time.perf_counter()
        decoded = decode_request_images(msg, MAX_IMAGE_SIDE, self.max_message_bytes)
        decode_ms = (time.perf_counter() - t_decode) * 1e3
        obs = prepare_observation(self._observation(msg), info)
        t_model = time.perf_counter()
        chunk, extras = self._call_policy(self.policy.predict_chunk, obs)
        model_ms = (time.perf_counter() - t_model) * 1e3
        fields: dict[str, Any] = {}
        chunk, done = self._checked_output(chunk, extras)
        if done is not None:
            fields["done"] = done
        self.stats.infers += 1
        fields["timing"] = {"model_ms": model_ms, "server_ms": (time.perf_counter() - t0) * 1e3}
        if decoded:
            fields["timing"]["decode_ms"] = decode_ms
        return P.encode("infer", fields, {"actions": chunk}, msg_id=msg.id)

    def _call_policy(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` under the inference context; whatever it raises becomes ``policy_error``."""
        try:
            with self._inference_context():
                return fn(*args)
        except RobokitError as exc:  # the policy refused the input (e.g. characters it cannot tokenise)
            raise ProtocolError(str(exc), P.POLICY_ERROR) from exc
        except Exception as exc:
            log.exception("the policy failed on a request")
            raise ProtocolError(f"{type(exc).__name__}: {exc}", P.POLICY_ERROR) from exc

    def _checked_output(self, chunk: Any, extras: Any) -> tuple[np.ndarray, float | None]:
        """The chunk as float32 and ``done`` as a float, or ProtocolError: a robot must never be sent
        NaN or infinite targets, and an extreme observation can drive a model there."""
        info = self.info
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32 becomes inf, refused below
                chunk = np.asarray(chunk, dtype=np.float32)
            done = (extras or {}).get("done")
            done = None if done is None else float(done)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"the policy returned something that is not numbers ({exc})", P.POLICY_ERROR) from exc
        if chunk.shape != (info.chunk_size, info.action_dim):
            raise ProtocolError(f"the policy returned actions of shape {chunk.shape}, it announced "
                                f"({info.chunk_size}, {info.action_dim})", P.INTERNAL)
        bad = int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
        if bad or (done is not None and not np.isfinite(done)):
            what = f"{bad} of {chunk.size} action values" if bad else "its 'done' value"
            raise ProtocolError(f"the policy returned NaN or infinite numbers ({what}); no actions were sent. "
                                "The observation is probably outside what it was trained on", P.POLICY_ERROR)
        return chunk, done

    def _inference_context(self) -> Any:
        # Torch policies should not build autograd graphs at serving time; the check keeps the
        # server usable with non-torch policies without importing torch for them.
        torch = sys.modules.get("torch")
        return torch.no_grad() if torch is not None else nullcontext()
