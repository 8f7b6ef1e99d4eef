"""`robokit serve CKPT`: serve a trained policy over ZeroMQ (protocol v1, docs/deploy.md)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from robokit.commands.common import on_stop_signals


def _is_loopback(bind: str) -> bool:
    host = bind.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name or a host name: reachable from elsewhere
        return bind.startswith(("ipc://", "inproc://"))


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        checkpoint: Annotated[Path, typer.Argument(help="A robokit checkpoint (.pt) of any policy.")],
        bind: Annotated[str, typer.Option(
            "--bind", help="ZeroMQ endpoint; loopback by default. Use tcp://0.0.0.0:5555 (with --secure) "
                           "to accept clients from the network, ipc:///tmp/robokit.sock for the fastest "
                           "link to a client on this host.")] = "tcp://127.0.0.1:5555",
        device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")] = "auto",
        secure: Annotated[bool, typer.Option("--secure", help="Encrypt with CurveZMQ (keys from --keys).")] = False,
        keys: Annotated[Path | None, typer.Option(
            "--keys", help="Folder made by `robokit keys` (needs server.key_secret).")] = None,
        max_message_mb: Annotated[float, typer.Option("--max-message-mb", help="Largest accepted request.")] = 64.0,
        engine: Annotated[str, typer.Option(
            "--engine", help="torch | onnx | openvino | ncnn: run the network in a CPU inference engine (exported "
                             "and checked against torch at start; falls back to torch with a warning). "
                             "ncnn (ACT only) was the fastest on the 2-core AVX2 CPU measured.")] = "torch",
    ) -> None:
        """Serve a checkpoint: answers hello / infer / reset / ping until Ctrl+C."""
        from rich.console import Console
        from rich.table import Table

        from robokit.deploy.engines import accelerate, check_engine
        from robokit.deploy.image_codec import CODECS
        from robokit.deploy.keys import load_server_keys
        from robokit.deploy.server import PolicyServer
        from robokit.errors import UserError

        console = Console(soft_wrap=True)
        if secure and keys is None:
            raise UserError("--secure needs --keys DIR (create one with `robokit keys --out DIR`)")
        curve = load_server_keys(keys) if secure and keys is not None else None
        if not secure and not _is_loopback(bind):
            console.print(f"[yellow]warning:[/] {bind} is reachable from the network and --secure is off: "
                          "anyone who can reach it can drive this policy. Add --secure --keys DIR.")
        engine = check_engine(engine)  # an unknown engine or a missing extra fails before the model loads
        device = "cpu" if engine != "torch" and device == "auto" else device  # the engines run on the CPU
        server = PolicyServer.from_checkpoint(checkpoint, device=device, bind=bind, curve=curve,
                                              max_message_bytes=int(max_message_mb * 1024 * 1024))
        server.policy = accelerate(server.policy, engine)  # same config and outputs, so info and hello hold
        info = server.info
        table = Table(show_header=False, box=None)
        table.add_row("policy", info.type)
        table.add_row("cameras", ", ".join(info.camera_names))
        table.add_row("image", "×".join(str(v) for v in info.image_shape))
        table.add_row("state / action", f"{info.state_dim} / {info.action_dim}")
        table.add_row("chunk", str(info.chunk_size))
        table.add_row("fps", f"{info.fps:g}")
        table.add_row("sha256", (info.checkpoint_sha256 or "")[:16])
        table.add_row("engine", getattr(server.policy, "engine", "torch"))
        table.add_row("image codecs", ", ".join(CODECS))
        table.add_row("address", server.address + ("  (CurveZMQ)" if curve else ""))
        console.print(table)
        console.print("serving; Ctrl+C to stop")
        # Ctrl+C / SIGTERM ask the loop to finish the request in hand and return, instead of a
        # KeyboardInterrupt landing at an arbitrary point (mid-send, inside the zmq context).
        try:
            with on_stop_signals(server.stop):
                server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
            stats = server.stats
            console.print(f"served {stats.infers} inferences to {len(stats.clients)} client(s), "
                          f"{stats.errors} error replies")
