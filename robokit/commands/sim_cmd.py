"""`robokit sim` subcommands."""

from __future__ import annotations

import typer

sim_app = typer.Typer(help="sim tools", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")
