"""The CLI lists every command and maps errors to one line with exit code 2."""

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robokit.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_help_lists_every_command():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("record", "train", "deploy", "serve", "inspect", "replay", "viz", "devices", "sim"):
        assert command in out.stdout
