"""PolicyClient: no torch, timeouts, reconnect after a server restart, background mode, CurveZMQ."""

import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import zmq

from robokit.deploy.client import PolicyClient
from robokit.deploy.keys import ClientKeys, create_keys, load_client_keys, load_server_keys
from robokit.deploy.server import PolicyServer
from robokit.errors import ServerUnavailable, UserError


class CountingPolicy:
    """Returns a chunk filled with how many inferences this instance has answered."""

    name = "counting"

    def __init__(self, delay_s=0.0):
        self.config = SimpleNamespace(camera_names=["top"], image_shape=(8, 8, 3), state_dim=8,
                                      action_dim=8, chunk_size=4, fps=50.0)
        self.calls = 0
        self.delay_s = delay_s

    def predict_chunk(self, obs):
        time.sleep(self.delay_s)
        self.calls += 1
        return np.full((4, 8), self.calls, np.float32), {}

    def reset(self):
        self.calls = 0


OBS = (np.zeros(8, np.float32), {"top": np.zeros((8, 8, 3), np.uint8)})


def free_port():
    # A plain socket releases its port when close() returns; a ZeroMQ socket does so later, in
    # libzmq's I/O thread, so a server binding the port right after could find it still taken.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_importing_the_client_does_not_import_torch():
    code = ("import sys, robokit.deploy.client, robokit.deploy.protocol; "
            "bad = [m for m in ('torch', 'cv2', 'mujoco') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr + out.stdout


def test_no_server_raises_server_unavailable_naming_the_address():
    with PolicyClient(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.2) as client, \
            pytest.raises(ServerUnavailable) as err:
        client.hello()
    assert "127.0.0.1" in str(err.value) and "robokit serve" in str(err.value)


def test_bad_address_and_bad_images_are_user_errors():
    with pytest.raises(UserError):
        PolicyClient("localhost:5555")
    with PolicyClient(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.2) as client, pytest.raises(UserError):
        client.infer(np.zeros(8), {"top": np.zeros((8, 8, 3), np.float32)})


def test_client_reconnects_after_a_server_restart():
    address = f"tcp://127.0.0.1:{free_port()}"
    client = PolicyClient(address, timeout_s=3.0)
    try:
        first = PolicyServer(CountingPolicy(), address, warmup=False).start()
        client.hello()
        assert client.infer(*OBS).actions[0, 0] == 1
        first.close()
        with pytest.raises(ServerUnavailable):
            client.infer(*OBS, timeout_s=0.3)  # nobody there
        second = PolicyServer(CountingPolicy(), address, warmup=False).start()
        try:
            assert client.infer(*OBS).actions[0, 0] == 1  # answered by the new server
            # A restart between two requests, with no timeout in between, is seamless too.
            second.close()
            second = PolicyServer(CountingPolicy(), address, warmup=False).start()
            assert client.infer(*OBS).actions[0, 0] == 1
        finally:
            second.close()
    finally:
        client.close()


def test_background_mode_overlaps_requests_with_other_work():
    policy = CountingPolicy(delay_s=0.05)
    with PolicyServer(policy, "tcp://127.0.0.1:0", warmup=False).start() as srv, \
            PolicyClient(srv.address, timeout_s=3.0) as client:
        futures = [client.submit_infer(*OBS) for _ in range(3)]
        assert not futures[-1].done()  # submit returns at once
        values = [f.result(timeout=5).actions[0, 0] for f in futures]
        assert values == [1, 2, 3]  # one background thread: served in order
        assert client.ping() > 0  # the foreground shares the socket safely


def test_background_mode_reports_an_unavailable_server_through_the_future():
    with PolicyClient(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.2) as client:
        future = client.submit_infer(*OBS)
        with pytest.raises(ServerUnavailable):
            future.result(timeout=5)


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_curve_encryption_accepts_only_authorised_clients(tmp_path):
    create_keys(tmp_path / "keys")
    create_keys(tmp_path / "other")
    with pytest.raises(UserError):
        create_keys(tmp_path / "keys")  # never silently overwrites secrets
    server_keys = load_server_keys(tmp_path / "keys")
    assert server_keys.authorized_clients is not None
    with PolicyServer(CountingPolicy(), "tcp://127.0.0.1:0", curve=server_keys, warmup=False).start() as srv:
        with PolicyClient(srv.address, timeout_s=3.0, keys=load_client_keys(tmp_path / "keys")) as good:
            assert good.infer(*OBS).actions.shape == (4, 8)
        with PolicyClient(srv.address, timeout_s=0.5) as plain, pytest.raises(ServerUnavailable):
            plain.ping()
        other = load_client_keys(tmp_path / "other")
        stranger = ClientKeys(server_public=server_keys.public, public=other.public, secret=other.secret)
        with PolicyClient(srv.address, timeout_s=0.5, keys=stranger) as wrong, pytest.raises(ServerUnavailable):
            wrong.ping()


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_keys_command_writes_keys_that_serve_and_deploy_load(tmp_path):
    out = subprocess.run([sys.executable, "-m", "robokit.cli", "keys", "--out", str(tmp_path / "k")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert load_server_keys(tmp_path / "k").secret
    assert load_client_keys(tmp_path / "k").server_public == load_server_keys(tmp_path / "k").public
