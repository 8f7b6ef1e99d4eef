"""`robokit deploy`."""

from __future__ import annotations

import typer

from robokit.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("deploy", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def deploy_command() -> None:
        """(not yet available)"""
        raise UserError("`robokit deploy` is not yet available in this version")
