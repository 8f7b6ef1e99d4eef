"""`robokit keys`."""

from __future__ import annotations

import typer

from robokit.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("keys", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def keys_command() -> None:
        """(not yet available)"""
        raise UserError("`robokit keys` is not yet available in this version")
