"""The robokit policy wire protocol, version 1.

Every message is a ZeroMQ multipart message:

* frame 0 — a msgpack map, the *header*: ``type`` (str) always; ``id`` (int) optional, echoed in the
  reply; ``arrays``: a list of ``{"name": str, "dtype": str, "shape": [int, ...]}``.
* frames 1..n — the raw C-contiguous, little-endian bytes of those arrays, in the order listed.

Nothing here uses pickle: the header is plain msgpack (no extension types accepted) and arrays are
raw bytes whose dtype must be one of :data:`DTYPES`. Decoding is zero-copy: arrays are read-only
``np.frombuffer`` views over the received frames.

This module knows nothing about sockets or policies; :mod:`robokit.deploy.server` and
:mod:`robokit.deploy.client` use it. It imports neither torch nor zmq so that any client stays light.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from robokit.errors import ProtocolError

PROTOCOL_VERSION = 1

#: Largest whole message (all frames together) a peer accepts by default: 64 MiB holds three
#: 1080p RGB images with room to spare.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Largest header (frame 0).
MAX_HEADER_BYTES = 64 * 1024
#: Most arrays one message may carry.
MAX_ARRAYS = 32
#: Most dimensions an array may have.
MAX_NDIM = 8
#: Largest size of one array dimension.
MAX_DIM = 2**31 - 1
#: Deepest nesting of lists and maps in a header (a valid one nests four deep).
MAX_HEADER_DEPTH = 32
#: Longest array name / message type / object name.
MAX_NAME_CHARS = 128
#: Most objects one ``infer`` request may describe.
MAX_OBJECTS = 64

#: dtype names accepted on the wire, each mapped to its little-endian numpy dtype.
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                 "float16", "float32", "float64")
}

# numpy's dtype.name is slow (pure Python); these lookups keep encode/decode in the microseconds.
_NAME_OF: dict[np.dtype, str] = {dt: name for name, dt in DTYPES.items()}

# Error codes of ``{"type": "error", "code": ..., "message": ...}`` replies (documented in
# docs/deploy.md; a client in another language switches on them).
BAD_MESSAGE = "bad_message"        # frames cannot be parsed: header not msgpack/map, frame count,
                                   # extension types (timestamps too), nesting too deep
BAD_ARRAY = "bad_array"            # an array descriptor is invalid: dtype, shape, byte size
TOO_LARGE = "too_large"            # message, header, array count or image side over the limits
UNKNOWN_TYPE = "unknown_type"      # request type the server does not know
UNSUPPORTED_VERSION = "unsupported_version"  # hello with a protocol version the server cannot speak
MISSING_ARRAY = "missing_array"    # infer without qpos or without a camera image
WRONG_DTYPE = "wrong_dtype"        # an array of the wrong dtype for its name
WRONG_SHAPE = "wrong_shape"        # an array of the wrong shape for its name
BAD_REQUEST = "bad_request"        # any other invalid field (e.g. ``task`` not a string)
UNSUPPORTED_CODEC = "unsupported_codec"  # hello or infer names an image codec the server cannot decode
BAD_IMAGE = "bad_image"            # an encoded image is not a complete, decodable file of its codec
POLICY_ERROR = "policy_error"      # the policy raised, or answered with NaN or infinite values
INTERNAL = "internal"              # a bug in the server; it keeps serving

ERROR_CODES = (BAD_MESSAGE, BAD_ARRAY, TOO_LARGE, UNKNOWN_TYPE, UNSUPPORTED_VERSION, MISSING_ARRAY,
               WRONG_DTYPE, WRONG_SHAPE, BAD_REQUEST, UNSUPPORTED_CODEC, BAD_IMAGE, POLICY_ERROR, INTERNAL)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass
class Message:
    """One decoded message: its ``type``, the whole header, and its arrays by name."""

    type: str
    header: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def id(self) -> int | None:
        """The request id the header carries (echoed in replies), or None."""
        return self.header.get("id")


def dtype_name(dtype: np.dtype) -> str:
    """The wire name of a numpy dtype; :class:`ProtocolError` if it is not allowed on the wire."""
    dt = np.dtype(dtype)
    name = dt.name
    if name not in DTYPES or dt.kind not in "biuf":
        raise ProtocolError(f"dtype '{dt}' cannot be sent; allowed: {', '.join(DTYPES)}", BAD_ARRAY)
    return name


def encode(msg_type: str, fields: Mapping[str, Any] | None = None,
           arrays: Mapping[str, np.ndarray] | None = None, msg_id: int | None = None) -> list[Any]:
    """Frames of one message, ready for ``socket.send_multipart(frames, copy=False)``.

    ``fields`` are extra header keys (plain msgpack values). Array frames are the arrays' own
    buffers (no copy when an array is already C-contiguous little-endian).
    """
    header: dict[str, Any] = dict(fields or {})
    header["type"] = msg_type
    if msg_id is not None:
        header["id"] = int(msg_id)
    frames: list[Any] = []
    descriptors = []
    for name, value in (arrays or {}).items():
        arr = np.asarray(value)
        wire_name = _NAME_OF.get(arr.dtype)
        if wire_name is None:  # big-endian input (the wire is little-endian) or not allowed at all
            wire_name = dtype_name(arr.dtype)
            arr = arr.astype(DTYPES[wire_name])
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
            arr = arr.copy(order="C")
        descriptors.append({"name": name, "dtype": wire_name, "shape": list(arr.shape)})
        # A 0-d array has no buffer shape pyzmq likes; a 1-element view carries the same bytes.
        frames.append(arr.reshape(-1) if arr.ndim == 0 else arr)
    if descriptors:
        header["arrays"] = descriptors
    return [msgpack.packb(header, use_bin_type=True), *frames]


def error_frames(code: str, message: str, msg_id: int | None = None) -> list[Any]:
    """Frames of an ``error`` reply."""
    return encode("error", {"code": code, "message": message}, msg_id=msg_id)


def _buffer(frame: Any) -> memoryview:
    # zmq.Frame (copy=False receive) exposes .buffer; bytes/bytearray/memoryview work as is.
    buf = getattr(frame, "buffer", None)
    return buf if buf is not None else memoryview(frame)


def _reject_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension types are not allowed in a header (got type {code})",
                        BAD_MESSAGE)


def _check_header_values(header: Any) -> None:
    """Refuse timestamps and nesting deeper than :data:`MAX_HEADER_DEPTH`.

    msgpack decodes its timestamp extension (type -1) itself, without calling ``ext_hook``, so a
    timestamp has to be found in the decoded header. The walk is iterative: a hostile header can
    nest a thousand levels deep within its 64 KiB.
    """
    stack: list[tuple[Any, int]] = [(header, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, msgpack.Timestamp):
            raise ProtocolError("msgpack extension types are not allowed in a header (got a timestamp, "
                                "type -1)", BAD_MESSAGE)
        if isinstance(value, (list, dict)):
            if depth > MAX_HEADER_DEPTH:
                raise ProtocolError(f"header nests lists and maps more than {MAX_HEADER_DEPTH} levels deep",
                                    BAD_MESSAGE)
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)


def decode(frames: Sequence[Any], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Parse and validate one message (without its routing envelope).

    Raises :class:`ProtocolError` with one of the codes above and a message that names the problem.
    """
    if not frames:
        raise ProtocolError("empty message: expected a msgpack header frame", BAD_MESSAGE)
    buffers = [_buffer(f) for f in frames]
    total = sum(b.nbytes for b in buffers)
    if total > max_message_bytes:
        largest = max(range(len(buffers)), key=lambda i: buffers[i].nbytes)
        raise ProtocolError(f"message of {total} bytes exceeds the limit of {max_message_bytes} bytes "
                            f"(frame {largest} has {buffers[largest].nbytes} bytes)", TOO_LARGE)
    raw_header = buffers[0]
    if raw_header.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {raw_header.nbytes} bytes exceeds {MAX_HEADER_BYTES} bytes",
                            TOO_LARGE)
    if raw_header.nbytes == 0:
        raise ProtocolError("empty header frame", BAD_MESSAGE)
    try:
        header = msgpack.unpackb(raw_header, raw=False, strict_map_key=True, ext_hook=_reject_ext,
                                 use_list=True)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"header is not valid msgpack ({type(exc).__name__})", BAD_MESSAGE) from exc
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a msgpack map, got {type(header).__name__}", BAD_MESSAGE)
    _check_header_values(header)
    msg_type = header.get("type")
    if not isinstance(msg_type, str) or not msg_type or len(msg_type) > MAX_NAME_CHARS:
        raise ProtocolError("header needs 'type': a non-empty string", BAD_MESSAGE)
    msg_id = header.get("id")
    if msg_id is not None and (isinstance(msg_id, bool) or not isinstance(msg_id, int)
                               or not _INT64_MIN <= msg_id <= _INT64_MAX):
        raise ProtocolError("header 'id' must be a 64-bit integer", BAD_MESSAGE)
    descriptors = header.get("arrays", [])
    if not isinstance(descriptors, list):
        raise ProtocolError("header 'arrays' must be a list", BAD_MESSAGE)
    if len(descriptors) > MAX_ARRAYS:
        raise ProtocolError(f"{len(descriptors)} arrays exceed the limit of {MAX_ARRAYS}", TOO_LARGE)
    if len(descriptors) != len(buffers) - 1:
        raise ProtocolError(f"header lists {len(descriptors)} arrays but {len(buffers) - 1} data "
                            "frames follow", BAD_MESSAGE)
    arrays: dict[str, np.ndarray] = {}
    for desc, buf in zip(descriptors, buffers[1:]):
        name, dtype, shape = _parse_descriptor(desc, max_message_bytes)
        if name in arrays:
            raise ProtocolError(f"array '{name}' is listed twice", BAD_ARRAY)
        expected = math.prod(shape) * dtype.itemsize
        if buf.nbytes != expected:
            raise ProtocolError(f"array '{name}': {dtype.name} {shape} needs {expected} bytes, its frame "
                                f"has {buf.nbytes}", BAD_ARRAY)
        arrays[name] = np.frombuffer(buf, dtype=dtype).reshape(shape)
    return Message(type=msg_type, header=header, arrays=arrays)


def _parse_descriptor(desc: Any, max_bytes: int) -> tuple[str, np.dtype, tuple[int, ...]]:
    if not isinstance(desc, dict):
        raise ProtocolError("each entry of 'arrays' must be a map with name, dtype, shape", BAD_ARRAY)
    name, dtype, shape = desc.get("name"), desc.get("dtype"), desc.get("shape")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise ProtocolError("array 'name' must be a non-empty string", BAD_ARRAY)
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ProtocolError(f"array '{name}': dtype {str(dtype)[:32]!r} is not allowed; use one of "
                            f"{', '.join(DTYPES)}", BAD_ARRAY)
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape):
        raise ProtocolError(f"array '{name}': shape must be a list of at most {MAX_NDIM} integers "
                            f"from 0 to {MAX_DIM}, got {str(shape)[:80]}", BAD_ARRAY)
    # numpy refuses shapes whose non-zero dimensions multiply past its index range even when a zero
    # makes the array empty; bounding that product by the message limit keeps every shape that
    # reaches numpy one it can build. Python integers cannot overflow here.
    bytes_needed = DTYPES[dtype].itemsize * math.prod(d or 1 for d in shape)
    if bytes_needed > max_bytes:
        raise ProtocolError(f"array '{name}': shape {shape} of {dtype} is larger than a message may be "
                            f"({max_bytes} bytes)", BAD_ARRAY)
    return name, DTYPES[dtype], tuple(shape)


def require_array(arrays: Mapping[str, np.ndarray], name: str, dtype: str,
                  shape: Iterable[int | None] | None = None) -> np.ndarray:
    """The array ``name`` checked for dtype and shape (``None`` in ``shape`` matches any size)."""
    if name not in arrays:
        raise ProtocolError(f"missing array '{name}'", MISSING_ARRAY)
    arr = arrays[name]
    if arr.dtype != DTYPES[dtype]:
        raise ProtocolError(f"array '{name}' must be {dtype}, got {arr.dtype.name}", WRONG_DTYPE)
    if shape is not None:
        want = tuple(shape)
        if len(want) != arr.ndim or any(w is not None and w != s for w, s in zip(want, arr.shape)):
            shown = "(" + ", ".join("*" if w is None else str(w) for w in want) + ("," if len(want) == 1 else "") + ")"
            raise ProtocolError(f"array '{name}' must have shape {shown}, got {tuple(arr.shape)}",
                                WRONG_SHAPE)
    return arr


def parse_objects(value: Any, camera_names: Sequence[str]) -> list[dict[str, Any]]:
    """Validate the optional ``objects`` header field of an ``infer`` request.

    ``value``: a list of at most :data:`MAX_OBJECTS` maps ``{"name": str, "box": [x0, y0, x1, y1],
    "camera": str}``, the box in pixels of that camera's image as sent (4 finite numbers,
    x0 <= x1, y0 <= y1), the camera one of ``camera_names``. Returns them as plain dicts with float
    boxes; :class:`ProtocolError` (``bad_request``) naming the offending field otherwise.
    """
    if not isinstance(value, list):
        raise ProtocolError(f"'objects' must be a list of {{name, box, camera}} maps, got "
                            f"{type(value).__name__}", BAD_REQUEST)
    if len(value) > MAX_OBJECTS:
        raise ProtocolError(f"'objects' lists {len(value)} objects, at most {MAX_OBJECTS} are allowed", TOO_LARGE)
    parsed = []
    for i, obj in enumerate(value):
        where = f"objects[{i}]"
        if not isinstance(obj, dict):
            raise ProtocolError(f"'{where}' must be a map with name, box and camera", BAD_REQUEST)
        name, box, camera = obj.get("name"), obj.get("box"), obj.get("camera")
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            raise ProtocolError(f"'{where}.name' must be a string of at most {MAX_NAME_CHARS} characters",
                                BAD_REQUEST)
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
                or not all(math.isfinite(v) for v in box)):
            raise ProtocolError(f"'{where}.box' of object '{name[:64]}' must be 4 finite numbers "
                                f"[x0, y0, x1, y1] (pixels), got {str(box)[:80]}", BAD_REQUEST)
        if box[2] < box[0] or box[3] < box[1]:
            raise ProtocolError(f"'{where}.box' of object '{name[:64]}' must have x0 <= x1 and y0 <= y1, "
                                f"got {box}", BAD_REQUEST)
        if not isinstance(camera, str) or camera not in camera_names:
            raise ProtocolError(f"'{where}.camera' of object '{name[:64]}' must be one of the policy's cameras "
                                f"({', '.join(camera_names)}), got {str(camera)[:64]!r}", BAD_REQUEST)
        parsed.append({"name": name, "box": [float(v) for v in box], "camera": camera})
    return parsed


def scale_object_boxes(objects: Sequence[Mapping[str, Any]], sizes: Mapping[str, tuple[int, int]],
                       size: tuple[int, int]) -> list[dict[str, Any]]:
    """Objects with boxes moved from pixels of their camera's image (``sizes[camera]`` = (H, W))
    to pixels of that image resized to ``size`` (H, W), as the policy sees it."""
    out = []
    for obj in objects:
        h0, w0 = sizes[obj["camera"]]
        sx, sy = size[1] / w0, size[0] / h0
        x0, y0, x1, y1 = (float(v) for v in obj["box"])
        out.append({**obj, "box": [x0 * sx, y0 * sy, x1 * sx, y1 * sy]})
    return out


@dataclass(frozen=True)
class PolicyInfo:
    """What a server announces in its ``hello`` reply about the policy it serves.

    Besides the shapes, the reply says what the policy reads beyond qpos and the current frames
    (its ``needs`` map: history, object boxes, goal camera, instruction). A hello reply without
    ``needs`` describes a policy with no goal camera, no objects, no history and no instruction.
    """

    type: str
    camera_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    state_dim: int
    action_dim: int
    chunk_size: int
    fps: float
    checkpoint_sha256: str | None = None
    #: The policy reads object boxes: send ``objects`` with every ``infer``.
    objects: bool = False
    #: The camera the policy's goal images show; None: it takes no goal image.
    goal_camera: str | None = None
    #: Steps before the current one the policy looks back over (it keeps them itself).
    history: int = 0
    #: The policy reads the instruction (``task``).
    instruction: bool = False
    #: The instructions of the episodes it was trained on (empty: not known).
    tasks: tuple[str, ...] = ()

    def needs(self) -> dict[str, Any]:
        """The ``needs`` map of a hello reply (the form of ``DataNeeds.to_dict()``)."""
        return {"camera_names": list(self.camera_names), "history": self.history,
                "object_boxes": self.objects, "goal_camera": self.goal_camera,
                "instruction": self.instruction}

    def to_header(self) -> dict[str, Any]:
        return {"type": self.type, "camera_names": list(self.camera_names),
                "image_shape": list(self.image_shape), "state_dim": self.state_dim,
                "action_dim": self.action_dim, "chunk_size": self.chunk_size, "fps": self.fps,
                "checkpoint_sha256": self.checkpoint_sha256, "objects": self.objects, "needs": self.needs(),
                "tasks": list(self.tasks)}

    @classmethod
    def from_header(cls, value: Any) -> PolicyInfo:
        """Parse the ``policy`` map of a hello reply; :class:`ProtocolError` if it is malformed."""
        try:
            cameras = tuple(str(c) for c in value["camera_names"])
            needs = value.get("needs") or {}
            if not isinstance(needs, dict):
                raise TypeError(f"'needs' must be a map, got {type(needs).__name__}")
            goal_camera = needs.get("goal_camera")
            if goal_camera is not None and goal_camera not in cameras:
                raise ValueError(f"goal camera {str(goal_camera)[:64]!r} is not one of the cameras")
            tasks = value.get("tasks") or []
            if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
                raise TypeError("'tasks' must be a list of strings")
            history = needs.get("history", 0)
            if isinstance(history, bool) or not isinstance(history, int) or history < 0:
                raise ValueError(f"'history' must be a non-negative integer, got {str(history)[:64]}")
            info = cls(type=str(value["type"]), camera_names=cameras,
                       image_shape=tuple(int(v) for v in value["image_shape"]),  # type: ignore[arg-type]
                       state_dim=int(value["state_dim"]), action_dim=int(value["action_dim"]),
                       chunk_size=int(value["chunk_size"]), fps=float(value["fps"]),
                       checkpoint_sha256=value.get("checkpoint_sha256"),
                       objects=value.get("objects") is True or needs.get("object_boxes") is True,
                       goal_camera=goal_camera, history=history, instruction=needs.get("instruction") is True,
                       tasks=tuple(tasks))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"malformed policy description in hello reply ({exc!r})", BAD_MESSAGE) from exc
        if len(info.image_shape) != 3 or min(info.state_dim, info.action_dim, info.chunk_size) <= 0:
            raise ProtocolError("malformed policy description in hello reply", BAD_MESSAGE)
        return info
