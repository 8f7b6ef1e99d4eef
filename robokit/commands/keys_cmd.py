"""`robokit keys --out DIR`: a CurveZMQ key pair for `robokit serve/deploy --secure`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("keys")
    def keys_command(
        out: Annotated[Path, typer.Option("--out", help="Folder to write the keys into.")],
        force: Annotated[bool, typer.Option("--force", help="Overwrite existing keys in --out.")] = False,
    ) -> None:
        """Create server and client CurveZMQ keys for an encrypted policy connection."""
        from rich.console import Console

        from robokit.deploy.keys import create_keys

        console = Console(soft_wrap=True)
        paths = create_keys(out, overwrite=force)
        console.print(f"wrote CurveZMQ keys to {out}")
        console.print(f"  GPU box  : robokit serve CKPT --bind tcp://0.0.0.0:5555 --secure --keys {out}")
        console.print(f"  robot PC : copy {paths['server_public'].name} and {paths['client_secret'].name} into a "
                      "folder there, then robokit deploy ... --server tcp://GPU:5555 --secure --keys FOLDER")
        console.print(f"  the server accepts only clients whose public key is in {paths['authorized_clients']}")
