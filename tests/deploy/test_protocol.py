"""Wire protocol v1: round trips and typed rejection of malformed messages (no sockets here)."""

import pickle

import msgpack
import numpy as np
import pytest

from robokit.deploy import protocol
from robokit.errors import ProtocolError


def wire(frames):
    """What the other end receives: plain bytes per frame."""
    return [f.tobytes() if isinstance(f, np.ndarray) else bytes(f) for f in frames]


def header(**fields):
    return msgpack.packb(fields, use_bin_type=True)


def test_round_trip_keeps_dtypes_shapes_values_and_id():
    arrays = {
        "qpos": np.linspace(-1, 1, 8, dtype=np.float32),
        "images/top": np.random.default_rng(0).integers(0, 255, (6, 7, 3), dtype=np.uint8),
        "flags": np.array([True, False]),
        "scalar": np.float64(2.5),
        "transposed": np.arange(6, dtype=np.int16).reshape(2, 3).T,
        "big_endian": np.arange(4, dtype=">f8"),
        "empty": np.zeros((0, 8), np.float32),
    }
    msg = protocol.decode(wire(protocol.encode("infer", {"task": "pick"}, arrays, msg_id=42)))
    assert msg.type == "infer" and msg.id == 42 and msg.header["task"] == "pick"
    assert list(msg.arrays) == list(arrays)
    for name, value in arrays.items():
        got = msg.arrays[name]
        assert got.shape == np.shape(value)
        np.testing.assert_array_equal(got, value)
    assert msg.arrays["big_endian"].dtype.name == "float64"


def test_decoded_arrays_are_views_over_the_received_frames():
    frames = wire(protocol.encode("x", arrays={"a": np.arange(1000, dtype=np.float32)}))
    msg = protocol.decode(frames)
    assert not msg.arrays["a"].flags.owndata
    assert not msg.arrays["a"].flags.writeable


@pytest.mark.parametrize("bad", [np.array(["text"]), np.array([1 + 2j]), np.array([object()], dtype=object)])
def test_encode_refuses_dtypes_outside_the_allow_list(bad):
    with pytest.raises(ProtocolError) as err:
        protocol.encode("x", arrays={"a": bad})
    assert err.value.code == protocol.BAD_ARRAY


def expect(code, frames, **kw):
    with pytest.raises(ProtocolError) as err:
        protocol.decode(frames, **kw)
    assert err.value.code == code, str(err.value)
    return str(err.value)


def test_garbage_and_non_map_headers_are_bad_messages():
    expect(protocol.BAD_MESSAGE, [])
    expect(protocol.BAD_MESSAGE, [b""])
    expect(protocol.BAD_MESSAGE, [b"\xc1\xc1garbage"])
    expect(protocol.BAD_MESSAGE, [msgpack.packb([1, 2, 3])])
    expect(protocol.BAD_MESSAGE, [header(id=1)])  # no type
    expect(protocol.BAD_MESSAGE, [header(type=5)])
    expect(protocol.BAD_MESSAGE, [header(type="x", id="seven")])
    expect(protocol.BAD_MESSAGE, [header(type="x", id=True)])
    expect(protocol.BAD_MESSAGE, [header(type="x", arrays="nope")])


def test_pickle_and_msgpack_extensions_are_never_unpacked():
    expect(protocol.BAD_MESSAGE, [pickle.dumps({"type": "ping"})])
    ext = msgpack.packb({"type": "ping", "x": msgpack.ExtType(1, b"payload")})
    assert "extension" in expect(protocol.BAD_MESSAGE, [ext])


def test_array_descriptors_are_checked_against_the_frames():
    data = np.zeros(4, np.float32).tobytes()
    desc = {"name": "a", "dtype": "float32", "shape": [4]}
    assert "2 data frames" in expect(protocol.BAD_MESSAGE, [header(type="x", arrays=[desc]), data, data])
    expect(protocol.BAD_MESSAGE, [header(type="x", arrays=[desc])])
    assert "16 bytes" in expect(protocol.BAD_ARRAY, [header(type="x", arrays=[desc]), data[:-1]])
    for bad in ({**desc, "dtype": "object"}, {**desc, "dtype": "<U4"}, {**desc, "shape": [-4]},
                {**desc, "shape": "4"}, {**desc, "shape": [1] * 9}, {**desc, "name": ""}, [1, 2]):
        expect(protocol.BAD_ARRAY, [header(type="x", arrays=[bad]), data])
    expect(protocol.BAD_ARRAY, [header(type="x", arrays=[desc, desc]), data, data])


def test_huge_declared_shape_is_rejected_without_allocating():
    desc = {"name": "a", "dtype": "float64", "shape": [2**40, 2**20]}
    expect(protocol.BAD_ARRAY, [header(type="x", arrays=[desc]), b"\x00" * 8])


def test_size_limits():
    big = np.zeros(1000, np.uint8)
    frames = wire(protocol.encode("x", arrays={"a": big}))
    assert "limit" in expect(protocol.TOO_LARGE, frames, max_message_bytes=500)
    expect(protocol.TOO_LARGE, [header(type="x", pad="y" * (protocol.MAX_HEADER_BYTES + 1))])
    many = {f"a{i}": np.zeros(1, np.uint8) for i in range(protocol.MAX_ARRAYS + 1)}
    expect(protocol.TOO_LARGE, wire(protocol.encode("x", arrays=many)))


def test_require_array_names_dtype_and_shape_problems():
    arrays = {"qpos": np.zeros(8, np.float64), "img": np.zeros((4, 5, 3), np.uint8)}
    with pytest.raises(ProtocolError) as err:
        protocol.require_array(arrays, "qpos", "float32", (8,))
    assert err.value.code == protocol.WRONG_DTYPE
    with pytest.raises(ProtocolError) as err:
        protocol.require_array(arrays, "img", "uint8", (None, None, 4))
    assert err.value.code == protocol.WRONG_SHAPE and "(*, *, 4)" in str(err.value)
    with pytest.raises(ProtocolError) as err:
        protocol.require_array(arrays, "images/top", "uint8")
    assert err.value.code == protocol.MISSING_ARRAY
    assert protocol.require_array(arrays, "img", "uint8", (None, None, 3)).shape == (4, 5, 3)


def test_error_frames_decode_to_an_error_message():
    msg = protocol.decode(wire(protocol.error_frames(protocol.UNKNOWN_TYPE, "no such type", msg_id=3)))
    assert msg.type == "error" and msg.id == 3
    assert msg.header["code"] == "unknown_type" and msg.header["message"] == "no such type"


@pytest.mark.parametrize("value", [msgpack.Timestamp(1, 2), [1, msgpack.Timestamp(0)],
                                   {"when": {"at": msgpack.Timestamp(5, 0)}}])
def test_msgpack_timestamps_are_refused_like_every_extension_type(value):
    """msgpack decodes its timestamp extension (type -1) without calling ext_hook."""
    frames = [msgpack.packb({"type": "ping", "t": value}, datetime=False)]
    assert "extension" in expect(protocol.BAD_MESSAGE, frames)
    # A malformed timestamp payload is refused as well.
    expect(protocol.BAD_MESSAGE, [b"\x82\xa4type\xa4ping\xa1t\xd4\xff\x00"])


def test_headers_nested_too_deep_are_bad_messages():
    deep: list = []
    for _ in range(protocol.MAX_HEADER_DEPTH + 5):
        deep = [deep]
    assert "levels deep" in expect(protocol.BAD_MESSAGE, [header(type="x", pad=deep)])
    expect(protocol.BAD_MESSAGE, [b"\x82\xa4type\xa1x\xa3pad" + b"\x91" * 5000 + b"\x00"])


@pytest.mark.parametrize("shape", [[2**63 - 1, 0, 3], [2**40, 0, 2**40], [0, 2**31], [-1, 0], [2**64 - 1],
                                   [2**30, 2**30, 0], [True, 0]])
def test_absurd_shapes_of_empty_arrays_are_bad_arrays(shape):
    frames = [header(type="infer", arrays=[{"name": "images/top", "dtype": "uint8", "shape": shape}]), b""]
    expect(protocol.BAD_ARRAY, frames)


def test_largest_shape_that_fits_the_limit_is_accepted_and_one_more_is_not():
    desc = {"name": "a", "dtype": "float32", "shape": [0, 250]}
    assert protocol.decode([header(type="x", arrays=[desc]), b""], max_message_bytes=1000).arrays["a"].shape == (0, 250)
    desc["shape"] = [0, 251]
    assert "larger than a message" in expect(protocol.BAD_ARRAY, [header(type="x", arrays=[desc]), b""],
                                             max_message_bytes=1000)
