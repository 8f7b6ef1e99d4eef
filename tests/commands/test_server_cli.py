"""`robokit serve CKPT` serves a real checkpoint; Ctrl+C ends it cleanly."""

import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from robokit.deploy.client import PolicyClient
from robokit.errors import ServerUnavailable


@pytest.fixture(scope="module")
def tiny_checkpoint(make_tiny_checkpoint):
    return make_tiny_checkpoint("act", {"fps": 25.0}, camera_names=["top", "wrist"], fps=25.0)


def free_port():
    # A plain socket releases its port when close() returns; a ZeroMQ socket does so later, in
    # libzmq's I/O thread, so a server binding the port right after could find it still taken.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_command_answers_with_the_checkpoint_policy(tiny_checkpoint, stop_signal):
    from robokit.deploy.server import file_sha256

    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "robokit.cli", "serve", str(tiny_checkpoint), "--bind", address,
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with PolicyClient(address, timeout_s=1.0) as client:
            deadline = time.monotonic() + 120
            while True:  # the server needs a few seconds to import torch and load the checkpoint
                try:
                    info = client.hello()
                    break
                except ServerUnavailable:  # not up yet
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
            assert info.type == "act" and info.camera_names == ("top", "wrist") and info.fps == 25.0
            assert info.chunk_size == 10 and info.checkpoint_sha256 == file_sha256(tiny_checkpoint)
            images = {"top": np.zeros((48, 64, 3), np.uint8), "wrist": np.zeros((24, 32, 3), np.uint8)}
            result = client.infer(np.zeros(8, np.float32), images, timeout_s=30)
            assert result.actions.shape == (10, 8) and np.all(np.isfinite(result.actions))
            client.reset()
    finally:
        proc.send_signal(stop_signal)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "served 1 inferences to 1 client(s)" in output
