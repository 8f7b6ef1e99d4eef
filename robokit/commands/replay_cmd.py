"""`robokit replay`."""

from __future__ import annotations

import typer

from robokit.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("replay", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def replay_command() -> None:
        """(not yet available)"""
        raise UserError("`robokit replay` is not yet available in this version")
