"""Images on the wire: the codec negotiated in hello (both ways with older peers), JPEG round trips
through client and server, corrupt JPEG payloads, and the ipc:// transport."""

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from robokit.deploy import client as client_mod
from robokit.deploy import image_codec as C
from robokit.deploy import protocol as P
from robokit.deploy import server as server_mod
from robokit.deploy.client import PolicyClient, set_default_image_codec
from robokit.deploy.server import PolicyServer
from robokit.errors import ConfigError, ProtocolError, UserError

H, W = 96, 128


class RecordingPolicy:
    """Keeps the images it is given (at the size sent, so no resize blurs the comparison)."""

    name = "recording"

    def __init__(self):
        self.config = SimpleNamespace(camera_names=["top", "wrist"], image_shape=(H, W, 3), state_dim=8,
                                      action_dim=8, chunk_size=4, fps=15.0)
        self.images = []

    def predict_chunk(self, obs):
        self.images.append({cam: img.copy() for cam, img in obs["images"].items()})
        if "goal_image" in obs:
            self.images[-1]["goal"] = obs["goal_image"].copy()
        chunk = np.tile(obs["qpos"][None, :], (4, 1)).astype(np.float32)
        chunk[:, 0] = obs["images"]["top"].mean()
        return chunk, {}

    def reset(self):
        pass


def scene(seed: int = 0) -> np.ndarray:
    """A camera-like image: smooth shading, a few flat-coloured boxes and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([60 + 80 * x / W, 90 + 60 * y / H, 120 + 40 * (x + y) / (H + W)], -1)
    for _ in range(4):
        y0, x0 = rng.integers(0, H - 20), rng.integers(0, W - 20)
        img[y0:y0 + 18, x0:x0 + 18] = rng.integers(0, 256, 3)
    return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)


QPOS = np.arange(8, dtype=np.float32)


@pytest.fixture
def server():
    srv = PolicyServer(RecordingPolicy(), "tcp://127.0.0.1:0", max_message_bytes=2_000_000).start()
    yield srv
    srv.close()


@pytest.fixture
def old_server(monkeypatch):
    """A server as it was before codecs: hello without codec fields, infer arrays read as sent."""
    monkeypatch.setattr(server_mod, "decode_request_images", lambda msg, side, limit: 0)
    srv = PolicyServer(RecordingPolicy(), "tcp://127.0.0.1:0")
    srv._handlers["hello"] = lambda msg, t0: P.encode(
        "hello", {"protocol": P.PROTOCOL_VERSION, "policy": srv.info.to_header()}, msg_id=msg.id)
    srv.start()
    yield srv
    srv.close()


def test_codec_spec_parsing():
    assert C.ImageCodec.parse(None) == C.ImageCodec.parse("raw") == C.ImageCodec()
    assert C.ImageCodec.parse("jpeg") == C.ImageCodec("jpeg", C.DEFAULT_JPEG_QUALITY)
    assert str(C.ImageCodec.parse(" JPEG:75 ")) == "jpeg:75"
    for bad, words in (("png", "unknown image codec"), ("jpeg:0", "1 to 100"), ("jpeg:x", "1 to 100"),
                       ("raw:5", "unknown image codec")):
        with pytest.raises(ConfigError, match=words):
            C.ImageCodec.parse(bad)


def test_jpeg_round_trip_through_client_and_server(server):
    images = {"top": scene(1), "wrist": scene(2)}
    with PolicyClient(server.address, image_codec="jpeg:90") as client:
        client.hello()
        assert client.wire_codec == C.ImageCodec("jpeg", 90)
        result = client.infer(QPOS, images, goal_image=scene(3)[:, ::-1])  # a non-contiguous view too
    got = server.policy.images[-1]
    for cam, sent in {**images, "goal": scene(3)[:, ::-1]}.items():
        assert got[cam].shape == sent.shape and got[cam].dtype == np.uint8
        assert C.psnr(sent, got[cam]) > 28.0, cam  # pixel noise and 4:2:0 chroma cost the most here
        np.testing.assert_array_equal(got[cam], C.decode_jpeg(C.encode_jpeg(sent, 90)))
    assert result.encode_ms > 0 and result.rtt_ms >= result.encode_ms
    np.testing.assert_array_equal(result.actions[:, 1:], np.tile(QPOS[1:], (4, 1)))


def test_decoded_jpeg_is_rgb_whichever_way_opencv_decodes(monkeypatch):
    """Decoding straight to RGB and decoding to BGR then swapping give the same pixels, in RGB order."""
    img = scene(4)
    img[:8, :8] = (255, 0, 0)  # a pure red corner: swapped channels would turn it blue
    data = C.encode_jpeg(img, 95)
    direct = C.decode_jpeg(data)
    reference = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(direct, reference)
    assert direct[2, 2, 0] > 200 and direct[2, 2, 2] < 60
    monkeypatch.delattr(cv2, "IMREAD_COLOR_RGB", raising=False)  # an OpenCV before 4.10
    np.testing.assert_array_equal(C.decode_jpeg(data), reference)


def test_codec_threads_keep_order_and_errors(monkeypatch):
    """Several images are coded on the calling thread and the pool together; results stay in order
    and an error from any of them reaches the caller."""
    import threading

    monkeypatch.setattr(C, "PARALLEL_WORKERS", 2)
    barrier = threading.Barrier(2, timeout=10)

    def meet(i):  # returns only when two threads run it at once
        if i < 2:
            barrier.wait()
        return i * 10

    assert C._map(meet, [0, 1, 2, 3]) == [0, 10, 20, 30]

    def fail(i):
        if i == 2:
            raise ProtocolError("bad frame", P.BAD_IMAGE)
        return i

    for items in ([0, 1, 2], [2, 0]):
        with pytest.raises(ProtocolError, match="bad frame"):
            C._map(fail, items)
    monkeypatch.setattr(C, "PARALLEL_WORKERS", 1)
    assert C._map(lambda i: (i, threading.current_thread().name), [1, 2]) == [
        (1, threading.current_thread().name), (2, threading.current_thread().name)]


def test_encoded_jpeg_is_the_standard_file_of_the_rgb_image():
    """The channel swap before libjpeg gives the very bytes OpenCV writes for the BGR image."""
    img = scene(5)
    expected = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), (cv2.IMWRITE_JPEG_QUALITY, 80))[1]
    np.testing.assert_array_equal(C.encode_jpeg(img, 80), expected.reshape(-1))
    np.testing.assert_array_equal(C.encode_jpeg(img[:, ::-1], 80), C.encode_jpeg(img[:, ::-1].copy(), 80))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux /proc")
def test_codec_leaves_opencv_worker_pool_asleep():
    """Encoding and decoding run on the calling thread only: OpenCV's worker pool, whose threads
    spin after each job, is never started by the codec (checked in a fresh process)."""
    code = textwrap.dedent("""
        import os
        import cv2
        import numpy as np
        from robokit.deploy import image_codec as C
        img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)  # large enough to split
        before = len(os.listdir("/proc/self/task"))
        for _ in range(3):
            C.decode_jpeg(C.encode_jpeg(img, 90))
        print(before, len(os.listdir("/proc/self/task")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = map(int, out.split())
    assert after == before


def test_first_codec_use_keeps_freed_buffers_once(monkeypatch):
    """The codec's first use raises glibc's trim and mmap limits, once, and only where allowed."""
    import ctypes
    import platform

    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    img = scene(6)
    monkeypatch.setattr(C, "_malloc_tuned", False)
    monkeypatch.setattr(C, "KEEP_FREED_BUFFERS", False)
    C.decode_jpeg(C.encode_jpeg(img))
    assert calls == []
    monkeypatch.setattr(C, "KEEP_FREED_BUFFERS", True)
    C.decode_jpeg(C.encode_jpeg(img))
    C.decode_jpeg(C.encode_jpeg(img))
    assert calls == [(C._M_MMAP_THRESHOLD, 32 << 20), (C._M_TRIM_THRESHOLD, 64 << 20)]
    monkeypatch.setattr(C, "_malloc_tuned", False)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))  # musl, or not Linux: left alone
    C.encode_jpeg(img)
    assert len(calls) == 2


def test_quality_changes_size_and_error():
    img = scene(3)
    small, large = C.encode_jpeg(img, 30), C.encode_jpeg(img, 95)
    assert small.nbytes < large.nbytes < img.nbytes
    assert C.psnr(img, C.decode_jpeg(small)) < C.psnr(img, C.decode_jpeg(large))
    # A grey JPEG decodes to three equal channels; the header parser reads the size either way.
    grey = cv2.imencode(".jpg", img[..., 0])[1].reshape(-1)
    assert C.jpeg_size(grey) == (H, W, 1)
    decoded = C.decode_jpeg(grey)
    assert decoded.shape == (H, W, 3) and np.array_equal(decoded[..., 0], decoded[..., 2])


def test_new_client_old_server_falls_back_to_raw(old_server, caplog):
    images = {"top": scene(4), "wrist": scene(5)}
    with (caplog.at_level(logging.WARNING, logger=client_mod.__name__),
          PolicyClient(old_server.address, image_codec="jpeg") as client):
        client.hello()
        result = client.infer(QPOS, images)
    assert client.wire_codec.name == "raw"
    assert sum("does not decode jpeg" in r.getMessage() for r in caplog.records) == 1
    np.testing.assert_array_equal(old_server.policy.images[-1]["top"], images["top"])  # exact: raw
    assert result.encode_ms == 0.0


def test_old_client_new_server_gets_raw(server):
    # An older client's hello has no image_codec; it reads the reply's policy and ignores the rest.
    with PolicyClient(server.address) as client:
        reply = client.request("hello", {"protocol": 1})
        assert reply.header["image_codec"] == "raw" and set(reply.header["image_codecs"]) >= {"raw", "jpeg"}
        images = {"top": scene(6), "wrist": scene(7)}
        arrays = {"qpos": QPOS, **{f"images/{c}": i for c, i in images.items()}}
        reply = client.request("infer", {}, arrays)
    assert "decode_ms" not in reply.header["timing"]
    np.testing.assert_array_equal(server.policy.images[-1]["wrist"], images["wrist"])


def test_hello_with_a_codec_the_server_lacks_is_refused(server):
    with PolicyClient(server.address) as client:
        with pytest.raises(ProtocolError, match="not 'webp'") as err:
            client.request("hello", {"protocol": 1, "image_codec": "webp"})
        assert err.value.code == P.UNSUPPORTED_CODEC
        with pytest.raises(ProtocolError, match="must be a string") as err:
            client.request("hello", {"protocol": 1, "image_codec": 3})
        assert err.value.code == P.BAD_REQUEST
        assert client.hello().camera_names == ("top", "wrist")  # still serving


def _jpeg_request(client, top, *, wrist=None, encoding=None):
    arrays = {"qpos": QPOS, "images/top": top,
              "images/wrist": C.encode_jpeg(scene(9)) if wrist is None else wrist}
    encoding = encoding or {"images/top": "jpeg", "images/wrist": "jpeg"}
    return client.request("infer", {C.ENCODING_FIELD: encoding}, arrays)


def test_corrupt_jpeg_payloads_get_typed_errors_and_the_server_keeps_serving(server):
    good = C.encode_jpeg(scene(8))
    flipped = good.copy()
    flipped[len(good) // 2:len(good) // 2 + 8] ^= 0x5A  # inside the compressed data: no checksum there
    header = bytearray(good.tobytes())
    sof = header.index(b"\xff\xc0")
    header[sof + 5:sof + 9] = (9000).to_bytes(2, "big") * 2  # claims 9000x9000 (a decompression bomb)
    cases = [
        (good[: len(good) // 2], P.BAD_IMAGE, "truncated"),
        (np.frombuffer(b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9", np.uint8), P.BAD_IMAGE, "corrupt"),
        (np.frombuffer(b"GIF89a" + bytes(64), np.uint8), P.BAD_IMAGE, "not a JPEG"),
        (np.frombuffer(bytes(header), np.uint8), P.TOO_LARGE, "9000x9000"),
        (scene(8), P.WRONG_SHAPE, "images/top"),  # raw pixels announced as JPEG
        (good.astype(np.float32), P.WRONG_DTYPE, "uint8"),
    ]
    with PolicyClient(server.address) as client:
        for payload, code, words in cases:
            with pytest.raises(ProtocolError, match=words) as err:
                _jpeg_request(client, payload)
            assert err.value.code == code, (words, err.value)
        for encoding, code in (({"images/top": "webp"}, P.UNSUPPORTED_CODEC),
                               ({"qpos": "jpeg"}, P.BAD_REQUEST), (["images/top"], P.BAD_REQUEST)):
            with pytest.raises(ProtocolError) as err:
                _jpeg_request(client, good, encoding=encoding)
            assert err.value.code == code, encoding
        try:  # bit errors in the compressed data decode to a damaged picture or to bad_image, never worse
            _jpeg_request(client, flipped)
        except ProtocolError as exc:
            assert exc.code == P.BAD_IMAGE
        reply = _jpeg_request(client, good)
    assert reply.type == "infer" and reply.header["timing"]["decode_ms"] > 0
    assert server.stats.errors >= len(cases) + 3


def test_decoded_images_count_against_the_message_limit():
    # 9 small JPEGs of 8192x8192 would decode to 1.8 GB; the limit is checked from the headers first.
    big = C.encode_jpeg(np.zeros((16, 16, 3), np.uint8))
    data = bytearray(big.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (4000).to_bytes(2, "big") * 2
    arrays = {f"images/c{i}": np.frombuffer(bytes(data), np.uint8) for i in range(9)}
    msg = P.Message("infer", {C.ENCODING_FIELD: {name: "jpeg" for name in arrays}}, dict(arrays))
    with pytest.raises(ProtocolError, match="decode to 432000000 bytes") as err:
        C.decode_request_images(msg, 8192, 64 * 1024 * 1024)
    assert err.value.code == P.TOO_LARGE


def test_ipc_endpoint(tmp_path):
    images = {"top": scene(10), "wrist": scene(11)}
    with PolicyServer(RecordingPolicy(), f"ipc://{tmp_path}/policy.sock").start() as srv:
        assert srv.address == f"ipc://{tmp_path}/policy.sock"
        with PolicyClient(srv.address, image_codec="jpeg") as client:
            assert client.hello().state_dim == 8
            result = client.infer(QPOS, images)
            assert result.actions.shape == (4, 8) and client.ping() > 0
    assert not (tmp_path / "policy.sock").exists()  # libzmq removes the socket file it made


def test_default_codec_applies_to_new_clients(server):
    previous = set_default_image_codec("jpeg:80")
    try:
        with PolicyClient(server.address) as client:
            assert client.image_codec == C.ImageCodec("jpeg", 80)
            client.hello()
            assert client.wire_codec.quality == 80
        with PolicyClient(server.address, image_codec="raw") as client:
            assert client.image_codec.name == "raw"
    finally:
        set_default_image_codec(previous)
    with pytest.raises(ConfigError):
        set_default_image_codec("jpeg:101")


def test_ipc_path_in_use_is_refused(tmp_path):
    address = f"ipc://{tmp_path}/busy.sock"
    with (PolicyServer(RecordingPolicy(), address, warmup=False),
          pytest.raises(UserError, match="in use by another process")):
        PolicyServer(RecordingPolicy(), address, warmup=False)
    # A socket file left by a server that is gone is stale: binding over it works.
    import socket

    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(f"{tmp_path}/busy.sock")
    with PolicyServer(RecordingPolicy(), address, warmup=False).start() as srv, PolicyClient(srv.address) as client:
        assert client.ping() > 0


@pytest.mark.parametrize("args, message", [
    (["CKPT", "--image-codec", "jpeg"], "--image-codec applies to --server"),
    (["--server", "tcp://127.0.0.1:9", "--image-codec", "png"], "unknown image codec 'png'"),
    (["--server", "tcp://127.0.0.1:9", "--image-codec", "jpeg:0"], "JPEG quality must be an integer from 1 to 100"),
])
def test_bad_image_codec_options_are_one_line_errors(tmp_path, capsys, args, message):
    from robokit.cli import main

    ckpt = tmp_path / "policy.pt"
    ckpt.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["deploy", "--sim", *(str(ckpt) if a == "CKPT" else a for a in args)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert client_mod._default_codec == C.ImageCodec()


def test_deploy_sim_over_ipc_with_jpeg(make_tiny_checkpoint, tmp_path, caplog, capsys):
    from robokit.cli import main

    ckpt = make_tiny_checkpoint("act", {"fps": 30.0}, fps=30.0)
    address = f"ipc://{tmp_path}/policy.sock"
    with (caplog.at_level(logging.INFO, logger=server_mod.__name__),
          PolicyServer.from_checkpoint(ckpt, device="cpu", bind=address, warmup=False).start() as srv):
        try:
            main(["deploy", "--sim", "--server", address, "--image-codec", "jpeg:80", "--episodes", "1",
                  "--max-steps", "4", "--mode", "chunk", "--query-every", "2"])
        finally:
            set_default_image_codec(None)
        assert srv.stats.infers == 2 and srv.stats.errors == 0
    assert any("(images: jpeg)" in r.getMessage() for r in caplog.records)
    assert "0/1" in capsys.readouterr().out
