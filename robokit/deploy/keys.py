"""CurveZMQ key files for using the policy server across a network.

``robokit keys --out DIR`` writes, in ZeroMQ's own certificate format (plain text, no pickle)::

    DIR/server.key          server public key     -> copy to the robot computer
    DIR/server.key_secret   server secret key     -> stays on the GPU box
    DIR/client.key          client public key
    DIR/client.key_secret   client secret key     -> copy to the robot computer
    DIR/clients/client.key  public keys of the clients the server accepts (add more files to allow more)

``robokit serve --secure --keys DIR`` encrypts with the server pair and, when ``DIR/clients`` exists,
accepts only clients whose public key is there. ``robokit deploy --secure --keys DIR`` needs
``server.key`` and ``client.key_secret``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from robokit.errors import ConfigError, UserError

SERVER_NAME = "server"
CLIENT_NAME = "client"
CLIENTS_DIR = "clients"


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    authorized_clients: Path | None = None  # folder of client *.key files; None accepts any client


@dataclass(frozen=True)
class ClientKeys:
    server_public: bytes
    public: bytes
    secret: bytes


def _require_curve() -> None:
    import zmq

    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CURVE support; install pyzmq from its wheels "
                          "(pip install --force-reinstall pyzmq) to use --secure")


def create_keys(out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write a server and a client key pair (and the client's public key under ``clients/``)."""
    import zmq.auth

    _require_curve()
    out = Path(out_dir)
    existing = [p for p in (out / f"{SERVER_NAME}.key_secret", out / f"{CLIENT_NAME}.key_secret") if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already exists; choose another --out folder or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(str(out), SERVER_NAME)
    client_public, client_secret = zmq.auth.create_certificates(str(out), CLIENT_NAME)
    clients = out / CLIENTS_DIR
    clients.mkdir(exist_ok=True)
    shutil.copyfile(client_public, clients / f"{CLIENT_NAME}.key")
    for secret in (server_secret, client_secret):
        Path(secret).chmod(0o600)
    return {"server_public": Path(server_public), "server_secret": Path(server_secret),
            "client_public": Path(client_public), "client_secret": Path(client_secret),
            "authorized_clients": clients}


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise UserError(f"key file {path} not found; create keys with `robokit keys --out DIR`")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise UserError(f"{path} is not a ZeroMQ certificate ({exc})") from exc
    if need_secret and not secret:
        raise UserError(f"{path} holds no secret key")
    return public, secret


def load_server_keys(keys_dir: str | Path) -> ServerKeys:
    """The server's key pair from ``keys_dir`` (see the module docstring for the layout)."""
    _require_curve()
    folder = Path(keys_dir)
    public, secret = _load(folder / f"{SERVER_NAME}.key_secret", need_secret=True)
    clients = folder / CLIENTS_DIR
    return ServerKeys(public=public, secret=secret or b"", authorized_clients=clients if clients.is_dir() else None)


def load_client_keys(keys_dir: str | Path) -> ClientKeys:
    """The server's public key and the client's key pair from ``keys_dir``."""
    _require_curve()
    folder = Path(keys_dir)
    server_public, _ = _load(folder / f"{SERVER_NAME}.key", need_secret=False)
    public, secret = _load(folder / f"{CLIENT_NAME}.key_secret", need_secret=True)
    return ClientKeys(server_public=server_public, public=public, secret=secret or b"")
