"""The ``robokit`` command line. The only place that prints or maps errors to exit codes.

Each command lives in its own module under :mod:`robokit.commands`; this file wires them into one
typer app and turns :class:`~robokit.errors.RobokitError` into one clear line and an exit code.
"""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from robokit.errors import RobokitError
from robokit.extras import missing_extra

console = Console(stderr=True)

app = typer.Typer(
    name="robokit",
    help="Imitation learning on a Franka arm: record demonstrations, train policies, deploy them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _register_commands() -> None:
    # Imported here so that `robokit --help` stays fast: command modules import torch/mujoco lazily.
    from robokit.commands import (
        demo_cmd,
        deploy_cmd,
        devices_cmd,
        export_cmd,
        import_act_cmd,
        import_cmd,
        inspect_cmd,
        keys_cmd,
        record_cmd,
        replay_cmd,
        seg_cmd,
        serve_cmd,
        sim_cmd,
        train_cmd,
        view_cmd,
        viz_cmd,
    )

    for module in (
        record_cmd,
        replay_cmd,
        train_cmd,
        deploy_cmd,
        serve_cmd,
        inspect_cmd,
        viz_cmd,
        view_cmd,
        devices_cmd,
        sim_cmd,
        import_act_cmd,
        export_cmd,
        import_cmd,
        keys_cmd,
        demo_cmd,
        seg_cmd,
    ):
        module.register(app)


_register_commands()


def _command_name(args: list[str]) -> str:
    """``robokit train`` / ``robokit seg train``: the (sub)command words at the front of ``args``."""
    command = typer.main.get_command(app)
    words = ["robokit"]
    for arg in args:
        if arg.startswith("-"):
            continue  # options of the root app (e.g. --verbose) come before the command
        sub = getattr(command, "commands", {}).get(arg)  # only groups have subcommands
        if sub is None:
            break
        words.append(arg)
        command = sub
    return " ".join(words)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map robokit errors to one line + exit code."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        # Standalone mode: click itself reports usage errors (exit 2) and Ctrl-C (exit 1).
        app(args=argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    except RobokitError as exc:
        # Escaped: messages carry brackets such as pip's 'robokit[train]', which are not markup.
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        # Commands import their optional dependencies lazily; a missing one names its extra.
        error = missing_extra(exc, _command_name(sys.argv[1:] if argv is None else argv))
        if error is None:
            raise
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
