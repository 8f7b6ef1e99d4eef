"""PolicyServer over tcp loopback: the four requests, REQ and DEALER clients, and hostile input."""

import threading
import time
from types import SimpleNamespace

import msgpack
import numpy as np
import pytest
import zmq

from robokit.deploy import protocol as P
from robokit.deploy.client import PolicyClient
from robokit.deploy.server import PolicyServer
from robokit.errors import ConfigError, ProtocolError, ServerUnavailable

H, W = 24, 32


class EchoPolicy:
    """Chunk row i = qpos + i; column 0 also carries the mean of the image it was given, so a test
    can see that the image arrived (resized) and the qpos was not mangled."""

    name = "echo"

    def __init__(self, chunk=5, delay_s=0.0):
        self.config = SimpleNamespace(camera_names=["top", "wrist"], image_shape=(H, W, 3), state_dim=8,
                                      action_dim=8, chunk_size=chunk, fps=30.0)
        self.delay_s = delay_s
        self.resets = 0
        self.seen = []

    def predict_chunk(self, obs):
        if obs.get("task") == "explode":
            raise RuntimeError("boom")
        if obs.get("task") == "overflow":  # a forward pass that overflows, as models do on extreme input
            with np.errstate(over="ignore", invalid="ignore"):
                chunk = np.full((self.config.chunk_size, 8), 3e38, np.float32) * np.float32(10)
                chunk[0] -= chunk[0]
            return chunk, {"done": 0.5}
        if obs.get("task") == "undecided":
            return np.zeros((self.config.chunk_size, 8)), {"done": float("nan")}
        self.seen.append({k: (v if k != "images" else {c: i.shape for c, i in v.items()})
                          for k, v in obs.items() if k != "qpos"})
        time.sleep(self.delay_s)
        chunk = obs["qpos"][None, :] + np.arange(self.config.chunk_size, dtype=np.float32)[:, None]
        chunk[:, 0] = obs["images"]["top"].mean()
        return chunk.astype(np.float32), {"done": 0.75}

    def reset(self):
        self.resets += 1


@pytest.fixture
def server():
    srv = PolicyServer(EchoPolicy(), "tcp://127.0.0.1:0", max_message_bytes=2_000_000).start()
    yield srv
    srv.close()


@pytest.fixture
def client(server):
    with PolicyClient(server.address, timeout_s=3.0) as c:
        yield c


def images(h=H, w=W, value=7):
    return {"top": np.full((h, w, 3), value, np.uint8), "wrist": np.zeros((h, w, 3), np.uint8)}


def raw_request(address, frames, kind=zmq.DEALER, timeout_ms=3000):
    """Send frames from a fresh raw socket; return the decoded reply (or None on timeout)."""
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        sock.send_multipart(frames)
        if not sock.poll(timeout_ms):
            return None
        reply = sock.recv_multipart()
        return P.decode(reply)
    finally:
        sock.close(0)


def test_hello_infer_reset_ping(server, client):
    info = client.hello()
    assert info.camera_names == ("top", "wrist") and info.image_shape == (H, W, 3)
    assert (info.state_dim, info.action_dim, info.chunk_size, info.fps) == (8, 8, 5, 30.0)
    qpos = np.arange(8, dtype=np.float32)
    result = client.infer(qpos, images(value=9))
    assert result.actions.shape == (5, 8) and result.actions.dtype == np.float32
    np.testing.assert_allclose(result.actions[:, 1:], qpos[None, 1:] + np.arange(5)[:, None])
    np.testing.assert_allclose(result.actions[:, 0], 9.0)
    assert result.done == 0.75
    assert result.model_ms >= 0 and result.server_ms >= result.model_ms and result.rtt_ms > 0
    client.reset()
    assert server.policy.resets >= 1
    assert client.ping() > 0


def test_other_image_sizes_are_resized_and_task_and_goal_image_travel(server, client):
    result = client.infer(np.zeros(8, np.float32), images(h=2 * H, w=3 * W, value=200), task="put the red cube",
                          goal_image=np.zeros((10, 10, 3), np.uint8))
    np.testing.assert_allclose(result.actions[:, 0], 200.0)
    seen = server.policy.seen[-1]
    assert seen["images"] == {"top": (H, W, 3), "wrist": (H, W, 3)}
    assert seen["task"] == "put the red cube" and seen["goal_image"].shape == (H, W, 3)


def test_req_client_works_through_the_echoed_envelope(server):
    reply = raw_request(server.address, P.encode("ping", msg_id=5), kind=zmq.REQ)
    assert reply.type == "pong" and reply.id == 5
    frames = P.encode("infer", arrays={"qpos": np.ones(8, np.float32),
                                       **{f"images/{c}": v for c, v in images().items()}})
    reply = raw_request(server.address, frames, kind=zmq.REQ)
    assert reply.type == "infer" and reply.arrays["actions"].shape == (5, 8)


def expect_error(address, frames, code, kind=zmq.DEALER):
    reply = raw_request(address, frames, kind=kind)
    assert reply is not None, "no reply"
    assert reply.type == "error" and reply.header["code"] == code, reply.header
    assert reply.header["message"]
    return reply


def infer_frames(fields=None, **overrides):
    arrays = {"qpos": np.zeros(8, np.float32), "images/top": np.zeros((H, W, 3), np.uint8),
              "images/wrist": np.zeros((H, W, 3), np.uint8)}
    arrays.update(overrides)
    return P.encode("infer", arrays={k: v for k, v in arrays.items() if v is not None}, msg_id=11)


def test_malformed_messages_get_typed_errors_and_the_server_keeps_serving(server, client):
    rng = np.random.default_rng(0)
    expect_error(server.address, [rng.bytes(64)], P.BAD_MESSAGE)
    expect_error(server.address, [rng.bytes(64), rng.bytes(10)], P.BAD_MESSAGE, kind=zmq.REQ)
    expect_error(server.address, [msgpack.packb(["not", "a", "map"])], P.BAD_MESSAGE)
    expect_error(server.address, [msgpack.packb({"type": "launch_missiles"})], P.UNKNOWN_TYPE)
    expect_error(server.address, P.encode("hello", {"protocol": 99}), P.UNSUPPORTED_VERSION)
    bad_dtype = {"type": "infer", "arrays": [{"name": "qpos", "dtype": "object", "shape": [8]}]}
    expect_error(server.address, [msgpack.packb(bad_dtype), b"\x00" * 8], P.BAD_ARRAY)
    huge = {"type": "infer", "arrays": [{"name": "qpos", "dtype": "float32", "shape": [2**62]}]}
    expect_error(server.address, [msgpack.packb(huge), b"\x00" * 32], P.BAD_ARRAY)
    reply = expect_error(server.address, infer_frames(qpos=np.zeros(8, np.float64)), P.WRONG_DTYPE)
    assert reply.id == 11  # the id is echoed even on errors
    expect_error(server.address, infer_frames(qpos=np.zeros(7, np.float32)), P.WRONG_SHAPE)
    expect_error(server.address, infer_frames(**{"images/top": np.zeros((H, W, 4), np.uint8)}), P.WRONG_SHAPE)
    expect_error(server.address, infer_frames(**{"images/top": np.zeros((H, W, 3), np.float32)}), P.WRONG_DTYPE)
    expect_error(server.address, infer_frames(**{"images/top": np.zeros((0, W, 3), np.uint8)}), P.WRONG_SHAPE)
    expect_error(server.address, infer_frames(**{"images/wrist": None}), P.MISSING_ARRAY)
    expect_error(server.address, infer_frames(qpos=np.full(8, np.nan, np.float32)), P.BAD_REQUEST)
    arrays = P.decode(infer_frames()).arrays
    expect_error(server.address, P.encode("infer", {"task": 12}, arrays), P.BAD_REQUEST)
    # still healthy
    assert client.infer(np.zeros(8, np.float32), images()).actions.shape == (5, 8)
    assert server.stats.errors >= 15


def test_policy_exceptions_become_policy_errors(server, client):
    with pytest.raises(ProtocolError) as err:
        client.infer(np.zeros(8, np.float32), images(), task="explode")
    assert err.value.code == P.POLICY_ERROR and "boom" in str(err.value)
    assert client.infer(np.zeros(8, np.float32), images()).actions.shape == (5, 8)


def test_oversized_messages(server, client):
    # Several frames, each under the per-frame limit, together over it: an error reply.
    parts = {f"a{i}": np.zeros(600_000, np.uint8) for i in range(4)}
    expect_error(server.address, P.encode("infer", arrays=parts), P.TOO_LARGE)
    # More frames than any valid message has: an error reply.
    many = [msgpack.packb({"type": "ping"})] + [b"x"] * (P.MAX_ARRAYS + 10)
    expect_error(server.address, many, P.TOO_LARGE)
    # One frame over the limit (libzmq would drop the connection at ZMQ_MAXMSGSIZE): a reply.
    assert "exceeds the limit" in expect_error(server.address, [b"\x00" * 3_000_000], P.TOO_LARGE).header["message"]
    big_image = np.zeros((1000, 1000, 3), np.uint8)
    expect_error(server.address, infer_frames(**{"images/top": big_image}), P.TOO_LARGE)
    expect_error(server.address, [b"\x00" * 3_000_000, b"\x00" * 10], P.TOO_LARGE, kind=zmq.REQ)
    assert server.receive_cap >= 8192 * 8192 * 3  # an image of the largest side gets its reply too
    assert client.infer(np.zeros(8, np.float32), images()).actions.shape == (5, 8)
    # A limit of 0 (libzmq: refuse everything) or below (libzmq: no limit at all) is refused.
    for limit in (0, -1):
        with pytest.raises(ConfigError, match="maximum message size"):
            PolicyServer(EchoPolicy(), "tcp://127.0.0.1:0", max_message_bytes=limit, warmup=False)


def test_client_that_vanishes_mid_request_does_not_hurt_the_server():
    policy = EchoPolicy(delay_s=0.2)
    with PolicyServer(policy, "tcp://127.0.0.1:0").start() as srv:
        warmed_up = len(policy.seen)
        for n, kind in enumerate((zmq.DEALER, zmq.REQ), start=warmed_up + 1):
            sock = zmq.Context.instance().socket(kind)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(srv.address)
            sock.send_multipart(infer_frames())
            while len(policy.seen) < n:  # wait until the server is busy with this request
                time.sleep(0.01)
            sock.close(0)
            time.sleep(0.3)  # the reply now goes to a client that is gone
        with PolicyClient(srv.address, timeout_s=3.0) as client:
            assert client.infer(np.zeros(8, np.float32), images()).actions.shape == (5, 8)
        assert srv.stats.infers == 3


def test_concurrent_clients_each_get_their_own_replies(server):
    errors = []

    def worker(offset):
        try:
            with PolicyClient(server.address, timeout_s=5.0) as c:
                for _ in range(20):
                    qpos = np.full(8, offset, np.float32)
                    got = c.infer(qpos, images()).actions
                    assert got[0, 1] == offset
        except Exception as exc:  # noqa: BLE001 -- reported below: assertions in threads would be lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_slow_reply_times_out_and_the_late_reply_is_not_mistaken_for_the_next(tmp_path):
    policy = EchoPolicy(delay_s=0.4)
    with PolicyServer(policy, "tcp://127.0.0.1:0").start() as srv, \
            PolicyClient(srv.address, timeout_s=0.1) as client:
        with pytest.raises(ServerUnavailable):
            client.infer(np.full(8, 1, np.float32), images())
        policy.delay_s = 0.0
        result = client.infer(np.full(8, 2, np.float32), images(), timeout_s=3.0)
        assert result.actions[0, 1] == 2.0


def test_a_client_written_from_the_docs_alone_works(server):
    """Plain pyzmq + msgpack + numpy, no robokit code: what docs/deploy.md tells another language."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.address)

    def request(header, arrays=()):
        header["arrays"] = [{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)} for n, a in arrays]
        sock.send_multipart([msgpack.packb(header)] + [np.ascontiguousarray(a).tobytes() for _, a in arrays])
        assert sock.poll(3000)
        head, *frames = sock.recv_multipart()
        reply = msgpack.unpackb(head)
        out = {d["name"]: np.frombuffer(f, d["dtype"]).reshape(d["shape"])
               for d, f in zip(reply.get("arrays", []), frames)}
        return reply, out

    try:
        info = request({"type": "hello", "protocol": 1, "id": 1})[0]["policy"]
        arrays = [("qpos", np.full(info["state_dim"], 2, np.float32))]
        arrays += [(f"images/{c}", np.full((48, 64, 3), 5, np.uint8)) for c in info["camera_names"]]
        reply, out = request({"type": "infer", "id": 2}, arrays)
        assert reply["type"] == "infer" and reply["id"] == 2 and set(reply["timing"]) == {"model_ms", "server_ms"}
        assert out["actions"].shape == (info["chunk_size"], info["action_dim"])
        np.testing.assert_allclose(out["actions"][0], [5, 2, 2, 2, 2, 2, 2, 2])
        assert request({"type": "reset", "id": 3})[0] == {"type": "reset", "id": 3}
    finally:
        sock.close(0)


def test_images_larger_than_the_largest_side_are_too_large(server):
    reply = expect_error(server.address, infer_frames(**{"images/top": np.zeros((8193, 2, 3), np.uint8)}),
                         P.TOO_LARGE)
    assert "8192" in reply.header["message"] and "images/top" in reply.header["message"]


def test_absurd_shape_of_an_empty_image_is_a_bad_array_not_a_policy_error(server):
    arrays = P.decode(infer_frames()).arrays
    head = msgpack.unpackb(P.encode("infer", arrays=arrays)[0])
    head["arrays"][1]["shape"] = [2**63 - 1, 0, 3]
    frames = [msgpack.packb(head), arrays["qpos"].tobytes(), b"", arrays["images/wrist"].tobytes()]
    expect_error(server.address, frames, P.BAD_ARRAY)


def test_timestamps_in_a_header_are_refused(server):
    frames = [msgpack.packb({"type": "ping", "id": 4, "sent": msgpack.Timestamp(1_700_000_000, 0)})]
    assert "extension" in expect_error(server.address, frames, P.BAD_MESSAGE).header["message"]


@pytest.mark.parametrize("fields, code, words", [
    ({}, P.BAD_REQUEST, "missing the field 'protocol'"),
    ({"protocol": True}, P.BAD_REQUEST, "'protocol' must be an integer"),
    ({"protocol": "1"}, P.BAD_REQUEST, "'protocol' must be an integer"),
    ({"protocol": 1.0}, P.BAD_REQUEST, "'protocol' must be an integer"),
    ({"protocol": 2**64 - 1}, P.UNSUPPORTED_VERSION, "protocol"),
])
def test_hello_must_say_which_protocol_it_speaks(server, fields, code, words):
    reply = expect_error(server.address, P.encode("hello", fields, msg_id=1), code)
    assert words in reply.header["message"]


def test_extreme_qpos_is_refused_before_it_reaches_the_policy(server, client):
    seen = len(server.policy.seen)
    for value in (3e38, -2e9):
        qpos = np.zeros(8, np.float32)
        qpos[3] = value
        reply = expect_error(server.address, infer_frames(qpos=qpos), P.BAD_REQUEST)
        assert "'qpos'" in reply.header["message"] and "index 3" in reply.header["message"]
    assert len(server.policy.seen) == seen
    assert client.infer(np.full(8, 1e9, np.float32), images()).actions.shape == (5, 8)


@pytest.mark.parametrize("task", ["overflow", "undecided"])
def test_non_finite_policy_output_is_never_sent(server, client, task):
    with pytest.raises(ProtocolError) as err:
        client.infer(np.zeros(8, np.float32), images(), task=task)
    assert err.value.code == P.POLICY_ERROR and "NaN or infinite" in str(err.value)
    assert np.isfinite(client.infer(np.zeros(8, np.float32), images()).actions).all()


def test_an_act_policy_given_an_extreme_qpos_answers_with_a_typed_error(make_tiny_policy):
    policy = make_tiny_policy("act")
    policy.eval()
    with PolicyServer(policy, "tcp://127.0.0.1:0", warmup=False).start() as srv, \
            PolicyClient(srv.address, timeout_s=10.0) as client:
        info = client.hello()
        frame = {c: np.zeros(info.image_shape, np.uint8) for c in info.camera_names}
        with pytest.raises(ProtocolError) as err:
            client.infer(np.full(info.state_dim, 3e38, np.float32), frame)
        assert err.value.code == P.BAD_REQUEST
        # Past the input check (a model that diverges on input it accepts): the output check.
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("robokit.deploy.server.MAX_ABS_QPOS", float("inf"))
            with pytest.raises(ProtocolError) as err:
                client.infer(np.full(info.state_dim, 3e38, np.float32), frame)
        assert err.value.code == P.POLICY_ERROR and "NaN or infinite" in str(err.value)
        assert np.isfinite(client.infer(np.zeros(info.state_dim, np.float32), frame).actions).all()
