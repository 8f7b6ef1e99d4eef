"""The messages of the server fuzzer (benchmarks/fuzz_server.py): valid requests and their mutations.

:func:`make_message` builds message ``index`` of a run with ``seed`` from a generator seeded with
``(seed, index)`` alone, so any message of a run can be rebuilt by itself: a valid request (hello,
ping, reset, or infer with qpos, images of random sizes, task, goal image, objects) and, in eleven
cases of twelve, one to three mutations of its header fields, array descriptors, arrays or frames.

    .venv/bin/python benchmarks/fuzz_mutations.py --seed 0 --index 1234   # print one message
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from robokit.deploy import protocol as P

CAMS = ("top", "wrist")
IMAGE_SHAPE = (24, 32, 3)
VOCABULARY = ["cube", "in", "pick", "put", "the", "bowl"]
TASKS = ["pick the cube", "put the cube in the bowl"]
LIMIT = 1024 * 1024  # the server's message limit: small, so that too_large takes small frames

SPECIAL_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**31), -(2**63)]
SPECIAL_FLOATS = [0.0, -0.0, 1.5, float("nan"), float("inf"), float("-inf"), 1e308, 5e-324, 3e38]
STRINGS = ["", "infer", "hello", "ping", "reset", "pong", "error", "qpos", "images/top", "float32", "uint8",
           "ünïcödé", "深度学习の方策", "🤖🦾" * 8, "\u202eRTL\u202c", "a\x00b", "x" * 200, "\uffff\ufeff"]
# Headers no encoder writes: bad UTF-8, integer keys, a lone array, nil, an extension, a timestamp,
# containers and strings that claim 4 GiB, a reserved byte.
RAW_HEADERS = [b"\x81\xa4type\xa2\xff\xfe", msgpack.packb({1: 2}), msgpack.packb([1, 2]), b"\xc0",
               b"\x81\xa4type\xd4\x05\x00", b"\x82\xa4type\xa4ping\xa1t\xd6\xff\x00\x00\x00\x01",
               b"\xdf\xff\xff\xff\xff", b"\x81\xa4type\xdb\xff\xff\xff\xff", b"\x81\xa4type\xc6\xff\xff\xff\xff",
               b"\xc1", b"\x81\xa4type\xa4ping" + b"\x00" * 64, msgpack.packb({"type": "ping"})[:-2]]


@dataclass
class Draft:
    """One message on its way through the mutations."""

    header: dict[str, Any]
    arrays: list[tuple[str, np.ndarray]]
    descriptors: list[Any] | None = None
    frames: list[bytes] | None = None
    packed: list[bytes] | None = None  # the frames as packed, before any frame mutation
    applied: list[str] = field(default_factory=list)


# -- valid messages ------------------------------------------------------------------------------
def valid_message(rng: np.random.Generator, msg_id: int) -> Draft:
    kind = str(rng.choice(["hello", "ping", "reset", "infer", "infer", "infer"]))
    header: dict[str, Any] = {"type": kind, "id": msg_id}
    arrays: list[tuple[str, np.ndarray]] = []
    if kind == "hello":
        header["protocol"] = P.PROTOCOL_VERSION
        if rng.random() < 0.5:
            header["client"] = "fuzz"
    elif kind == "infer":
        arrays.append(("qpos", rng.normal(size=8).astype(np.float32)))
        for cam in CAMS:
            arrays.append((f"images/{cam}", random_image(rng)))
        header["task"] = str(rng.choice(TASKS))
        if rng.random() < 0.3:
            arrays.append(("goal_image", random_image(rng)))
        if rng.random() < 0.3:
            header["objects"] = [{"name": "cube", "box": [1.0, 2.0, 5.0, 6.0], "camera": "top"}]
    return Draft(header, arrays)


def random_image(rng: np.random.Generator) -> np.ndarray:
    h, w = (IMAGE_SHAPE[:2] if rng.random() < 0.5 else rng.integers(1, 65, 2))
    return rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)


def descriptors(arrays: list[tuple[str, np.ndarray]]) -> list[Any]:
    return [{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)} for n, a in arrays]


def pack(draft: Draft) -> list[bytes]:
    header = dict(draft.header)
    descs = draft.descriptors if draft.descriptors is not None else descriptors(draft.arrays)
    if descs or "arrays" in header:
        header.setdefault("arrays", descs)
    return [msgpack.packb(header, use_bin_type=True, datetime=False),
            *(np.ascontiguousarray(a).tobytes() for _, a in draft.arrays)]


# -- random values -------------------------------------------------------------------------------
def pick(rng: np.random.Generator, options: list[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def random_value(rng: np.random.Generator, depth: int = 0) -> Any:
    kind = int(rng.integers(12 if depth < 3 else 8))
    if kind == 0:
        return pick(rng, [None, True, False])
    if kind == 1:
        return pick(rng, SPECIAL_INTS)
    if kind == 2:
        return pick(rng, SPECIAL_FLOATS)
    if kind == 3:
        return pick(rng, STRINGS)
    if kind == 4:
        return rng.bytes(int(rng.integers(0, 64)))
    if kind == 5:
        return int(rng.integers(-(2**63), 2**63 - 1))
    if kind == 6:
        return msgpack.ExtType(int(rng.integers(0, 128)), rng.bytes(int(rng.integers(0, 9))))
    if kind == 7:
        return msgpack.Timestamp(int(rng.integers(0, 2**34)), int(rng.integers(0, 10**9)))
    if kind == 8:
        return [random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 6)))]
    if kind == 9:
        return {pick(rng, STRINGS): random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 6)))}
    if kind == 10:
        return nest(pick(rng, [8, 31, 32, 33, 64, 300, 500]))
    return "long " * int(rng.integers(100, 20000))


# -- mutations: (stage, function); stage 0 edits header/arrays, 1 descriptors, 2 frames --------
def m_drop_key(rng: np.random.Generator, d: Draft) -> None:
    if d.header:
        del d.header[pick(rng, list(d.header))]


def m_retype_key(rng: np.random.Generator, d: Draft) -> None:
    d.header[pick(rng, [*d.header, "protocol", "task", "objects", "arrays", "client"])] = random_value(rng)


def m_add_keys(rng: np.random.Generator, d: Draft) -> None:
    for _ in range(int(rng.integers(1, 6))):
        d.header[pick(rng, STRINGS) + str(rng.integers(100))] = random_value(rng)


def m_type(rng: np.random.Generator, d: Draft) -> None:
    d.header["type"] = pick(rng, STRINGS) if rng.random() < 0.6 else random_value(rng)


def m_id(rng: np.random.Generator, d: Draft) -> None:
    d.header["id"] = pick(rng, [*SPECIAL_INTS, 1.5, "7", True, None, [1], msgpack.Timestamp(0)])


def m_deep(rng: np.random.Generator, d: Draft) -> None:
    d.header[pick(rng, ["task", "objects", "x", "arrays", "protocol"])] = nest(pick(rng, [8, 31, 32, 33, 64, 300, 500]))


def m_ext(rng: np.random.Generator, d: Draft) -> None:
    ext = pick(rng, [msgpack.ExtType(int(rng.integers(0, 128)), b"payload"), msgpack.Timestamp(1_700_000_000, 5),
                     msgpack.Timestamp(2**34 + 1, 0)])
    d.header[pick(rng, ["sent", "task", "id", "protocol"])] = pick(rng, [ext, [1, ext], {"at": ext}])


def m_task(rng: np.random.Generator, d: Draft) -> None:
    d.header["task"] = pick(rng, ["x " * 2500, "x" * 4096, 12, ["pick"], "🤖" * 1500, "", "pick the 深度",
                                  "pick   the cube", "PICK THE CUBE", None, "the " * 40])


def m_objects(rng: np.random.Generator, d: Draft) -> None:
    def obj() -> Any:
        box = pick(rng, [[0, 0, 1, 1], [float("nan"), 0, 1, 1], [2, 2, 1, 1], [1, 2, 3], "box",
                         [float("inf")] * 4, [2**64 - 1] * 4, [True, 0, 1, 1], [-5.0, -5.0, 1e300, 1e300]])
        return pick(rng, [{"name": pick(rng, STRINGS), "box": box, "camera": pick(rng, [*CAMS, "nope", 5])},
                          random_value(rng, 2)])
    d.header["objects"] = pick(rng, [[obj() for _ in range(int(rng.integers(0, 4)))], [obj()] * 70,
                                     random_value(rng)])


def m_protocol(rng: np.random.Generator, d: Draft) -> None:
    d.header["protocol"] = pick(rng, [0, 2, 1.0, True, "1", None, 2**63, -1, [1]])


def m_array_dtype(rng: np.random.Generator, d: Draft) -> None:
    if d.arrays:
        i = int(rng.integers(len(d.arrays)))
        with np.errstate(all="ignore"):
            d.arrays[i] = (d.arrays[i][0], d.arrays[i][1].astype(pick(rng, list(P.DTYPES.values()))))


def m_array_shape(rng: np.random.Generator, d: Draft) -> None:
    if d.arrays:
        i = int(rng.integers(len(d.arrays)))
        name, arr = d.arrays[i]
        new = pick(rng, [arr.reshape(-1), arr.reshape(1, -1), np.zeros(tuple(rng.integers(0, 5, rng.integers(0, 5))),
                                                                         arr.dtype), arr[..., :1] if arr.ndim else arr])
        d.arrays[i] = (name, new)


def m_qpos_values(rng: np.random.Generator, d: Draft) -> None:
    for i, (name, arr) in enumerate(d.arrays):
        if name == "qpos" and arr.dtype.kind == "f" and arr.size:
            arr = arr.copy()
            with np.errstate(over="ignore"):  # 3e38 in a float16 qpos is inf, which is fine here
                arr.reshape(-1)[int(rng.integers(arr.size))] = pick(rng, [np.nan, np.inf, -np.inf, 3e38, -3e38, 1e10,
                                                                          1e9, -0.0])
            d.arrays[i] = (name, arr)


def m_array_set(rng: np.random.Generator, d: Draft) -> None:
    choice = int(rng.integers(3))
    if choice == 0 and d.arrays:
        del d.arrays[int(rng.integers(len(d.arrays)))]
    elif choice == 1:
        d.arrays.append((pick(rng, ["extra", "qpos", "images/top", "goal_image"]), np.zeros(3, np.float32)))
    elif d.arrays:
        i = int(rng.integers(len(d.arrays)))
        d.arrays[i] = (pick(rng, STRINGS), d.arrays[i][1])


def m_image_size(rng: np.random.Generator, d: Draft) -> None:
    shape = pick(rng, [(0, 10, 3), (10, 0, 3), (8193, 1, 3), (1, 8193, 3), (1, 1, 3), (700, 700, 3),
                       (10, 10, 4), (10, 10), (10, 10, 3, 1), (8192, 2, 3)])
    name = pick(rng, ["images/top", "images/wrist", "goal_image"])
    d.arrays = [(n, a) for n, a in d.arrays if n != name] + [(name, np.zeros(shape, np.uint8))]


def m_desc_shape(rng: np.random.Generator, d: Draft) -> None:
    if d.descriptors:
        desc = pick(rng, d.descriptors)
        if isinstance(desc, dict):
            desc["shape"] = pick(rng, [[-1], [2**63 - 1, 0, 3], [2**64 - 1], [2**31], [0, 2**31], [1] * 9, [],
                                       "8", [1.5], [True], [[8]], None, [2**40, 0, 2**40], [8], [24, 32, 3],
                                       list(rng.integers(0, 40, rng.integers(0, 4)).tolist())])


def m_desc_empty(rng: np.random.Generator, d: Draft) -> None:
    """An empty frame under a shape with a zero in it: the byte count matches whatever the other
    dimensions claim."""
    if d.descriptors and len(d.descriptors) == len(d.arrays):
        i = int(rng.integers(len(d.arrays)))
        name, arr = d.arrays[i]
        d.arrays[i] = (name, np.zeros(0, arr.dtype))
        if isinstance(d.descriptors[i], dict):
            d.descriptors[i]["shape"] = pick(rng, [[2**63 - 1, 0, 3], [2**40, 0, 2**40], [0, 2**31 - 1, 2**31 - 1],
                                                   [2**31 - 1] * 7 + [0], [0], [0, 8], [24, 0, 3], [0, 0, 3]])


def m_desc_dtype(rng: np.random.Generator, d: Draft) -> None:
    if d.descriptors:
        desc = pick(rng, d.descriptors)
        if isinstance(desc, dict):
            desc["dtype"] = pick(rng, ["object", "<f4", "float128", "complex64", "U4", "", 5, None, *P.DTYPES])


def m_desc_entry(rng: np.random.Generator, d: Draft) -> None:
    if d.descriptors:
        i = int(rng.integers(len(d.descriptors)))
        desc = d.descriptors[i]
        choice = int(rng.integers(3))
        if choice == 0 and isinstance(desc, dict):
            desc.pop(pick(rng, ["name", "dtype", "shape"]), None)
        elif choice == 1 and isinstance(desc, dict):
            desc["name"] = pick(rng, [None, "", "x" * 200, 5, "qpos", *STRINGS])
        else:
            d.descriptors[i] = random_value(rng)


def m_desc_list(rng: np.random.Generator, d: Draft) -> None:
    assert d.descriptors is not None
    choice = int(rng.integers(3))
    if choice == 0:
        d.header["arrays"] = random_value(rng)
    elif choice == 1 and d.descriptors:
        d.descriptors.pop(int(rng.integers(len(d.descriptors))))
    else:
        d.descriptors.append({"name": "extra", "dtype": "uint8", "shape": [int(rng.integers(0, 4))]})


def m_frames_count(rng: np.random.Generator, d: Draft) -> None:
    assert d.frames is not None
    if rng.random() < 0.5 and len(d.frames) > 1:
        for _ in range(int(rng.integers(1, len(d.frames)))):
            d.frames.pop(int(rng.integers(len(d.frames))))
    else:
        n = pick(rng, [1, 2, P.MAX_ARRAYS, P.MAX_ARRAYS + 5, P.MAX_ARRAYS + 40])
        d.frames.extend(rng.bytes(int(rng.integers(0, 16))) for _ in range(n))


def m_frame_bytes(rng: np.random.Generator, d: Draft) -> None:
    assert d.frames is not None
    i = int(rng.integers(len(d.frames)))
    frame = d.frames[i]
    choice = int(rng.integers(4))
    if choice == 0:
        d.frames[i] = frame[:int(rng.integers(len(frame) + 1))]
    elif choice == 1:
        d.frames[i] = frame + rng.bytes(int(rng.integers(1, 64)))
    elif choice == 2 and frame:
        buf = bytearray(frame)
        for _ in range(int(rng.integers(1, 9))):
            buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
        d.frames[i] = bytes(buf)
    else:
        d.frames[i] = rng.bytes(int(rng.integers(0, 256)))


def m_header_raw(rng: np.random.Generator, d: Draft) -> None:
    assert d.frames is not None
    d.frames[0] = pick(rng, [*RAW_HEADERS, msgpack.packb({"type": "ping", "pad": "x" * (P.MAX_HEADER_BYTES + 1)})])


def m_oversize(rng: np.random.Generator, d: Draft) -> None:
    assert d.frames is not None
    big = bytes(LIMIT + int(rng.integers(1, 2 * LIMIT)))
    if rng.random() < 0.5 and len(d.frames) > 1:
        d.frames[int(rng.integers(1, len(d.frames)))] = big
    else:
        d.frames.append(big)


def m_frame_order(rng: np.random.Generator, d: Draft) -> None:
    assert d.frames is not None
    if rng.random() < 0.5:
        d.frames.insert(0, b"")  # what REQ's delimiter looks like to the server
    elif len(d.frames) > 1:
        i, j = (int(v) for v in rng.choice(len(d.frames), 2, replace=False))
        d.frames[i], d.frames[j] = d.frames[j], d.frames[i]


MUTATIONS: dict[str, tuple[int, Callable[[np.random.Generator, Draft], None]]] = {
    f.__name__[2:]: (stage, f) for stage, f in [
        (0, m_drop_key), (0, m_retype_key), (0, m_add_keys), (0, m_type), (0, m_id), (0, m_deep), (0, m_ext),
        (0, m_task), (0, m_objects), (0, m_protocol), (0, m_array_dtype), (0, m_array_shape), (0, m_qpos_values),
        (0, m_array_set), (0, m_image_size), (1, m_desc_shape), (1, m_desc_empty), (1, m_desc_dtype), (1, m_desc_entry),
        (1, m_desc_list), (2, m_frames_count), (2, m_frame_bytes), (2, m_header_raw), (2, m_oversize),
        (2, m_frame_order)]}


def make_message(seed: int, index: int) -> Draft:
    """Message ``index`` of the run with ``seed``: a valid request and its mutations, packed."""
    rng = np.random.default_rng([seed, index])
    draft = valid_message(rng, msg_id=index + 1)
    n = 0 if rng.random() < 1 / 12 else int(rng.integers(1, 4))
    names = sorted((str(v) for v in rng.choice(list(MUTATIONS), n, replace=False)), key=lambda k: MUTATIONS[k][0])
    draft.applied = names
    draft.descriptors = descriptors(draft.arrays)
    for name in names:
        stage, mutate = MUTATIONS[name]
        if stage == 2 and draft.frames is None:
            draft.packed = pack(draft)
            draft.frames = list(draft.packed)
        mutate(rng, draft)
        if stage == 0:  # descriptors that match the edited arrays, for later stages to break
            draft.descriptors = descriptors(draft.arrays)
    if draft.frames is None:
        draft.packed = pack(draft)
        draft.frames = list(draft.packed)
    return draft


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print one message of a fuzzing run.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="no effect (every benchmark script takes it)")
    args = parser.parse_args(argv)
    draft = make_message(args.seed, args.index)
    print(f"message {args.index} of seed {args.seed}; mutations: {', '.join(draft.applied) or '(none)'}")
    for i, frame in enumerate(draft.frames or []):
        print(f"frame {i}: {len(frame)} bytes: {frame[:200]!r}{' ...' if len(frame) > 200 else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
