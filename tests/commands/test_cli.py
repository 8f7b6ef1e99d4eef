"""The CLI: every command and subcommand explains itself with its own --help, usage mistakes and
robokit errors are one line with exit code 2, and `robokit --help` loads no heavy library."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from robokit.cli import app

COMMANDS = ("record", "replay", "train", "deploy", "serve", "inspect", "viz", "devices", "sim", "import-act",
            "keys", "demo", "seg", "export", "import", "view")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robokit.cli", *args], capture_output=True, text=True, check=False,
                          timeout=120)


def _commands(group=None, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """(path, click command) of every command and subcommand of the app."""
    group = group if group is not None else typer.main.get_command(app)
    found = []
    for name, command in getattr(group, "commands", {}).items():
        found.append(((*path, name), command))
        found += _commands(command, (*path, name))
    return found


ALL = _commands()


def help_text(*path: str) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "240", "TERMINAL_WIDTH": "240"})
    assert result.exit_code == 0, result.output
    return result.output


def test_help_lists_every_command():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout
    assert {path[0] for path, _ in ALL} == set(COMMANDS)


@pytest.mark.parametrize("path", [path for path, _ in ALL], ids=lambda p: " ".join(p))
def test_each_command_shows_its_own_help(path: tuple[str, ...]):
    command = dict(ALL)[path]
    text = help_text(*path)
    assert f"robokit {' '.join(path)}" in text  # its own usage line, not the app's
    summary = (command.help or "").strip().splitlines()[0].split(":")[0]
    assert summary and summary[:40] in " ".join(text.split())
    for param in command.params:
        for option in param.opts:
            if option.startswith("--"):
                assert option in text, f"robokit {' '.join(path)} --help does not show {option}"
    if getattr(command, "commands", None):  # a group lists its subcommands
        for name in command.commands:
            assert name in text


@pytest.mark.parametrize(("path", "options"), [
    (("train",), ("--batch-size", "--lr-schedule", "--val-every", "--resume", "--set")),
    (("record",), ("--teleop", "--episodes", "--end-frames", "--compress", "--task-set")),
    (("deploy",), ("--server", "--mode", "--query-every", "--goal", "--velocity-scale")),
    (("demo",), ("--episodes", "--image-size", "--eval-episodes", "--query-every", "--threads")),
    (("sim", "expert"), ("--seeds", "--start-seed", "--task-set")),
    (("viz", "episode"), ("--video",)),
])
def test_command_help_names_the_command_options(path: tuple[str, ...], options: tuple[str, ...]):
    text = help_text(*path)
    for option in options:
        assert option in text


def test_usage_error_exits_2_without_traceback():
    out = run_cli("devices", "--no-such-option")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


def test_robokit_error_is_one_line_with_exit_2(tmp_path):
    out = run_cli("inspect", str(tmp_path / "missing"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "error:" in out.stderr


def test_the_cli_loads_torch_and_mujoco_only_when_a_command_needs_them():
    code = ("import os, sys; import robokit.cli; "
            "print(sorted(m for m in ('torch', 'mujoco') if m in sys.modules), os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"})
    assert out.stdout.split() == ["[]", "None"]
