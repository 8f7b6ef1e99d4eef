"""`robokit import-act`."""

from __future__ import annotations

import typer

from robokit.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("import-act", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def import_act_command() -> None:
        """(not yet available)"""
        raise UserError("`robokit import-act` is not yet available in this version")
