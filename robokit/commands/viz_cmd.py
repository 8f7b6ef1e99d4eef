"""`robokit viz` subcommands."""

from __future__ import annotations

import typer

viz_app = typer.Typer(help="viz tools", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(viz_app, name="viz")
