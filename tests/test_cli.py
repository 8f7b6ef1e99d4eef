"""The CLI lists every command and maps errors to one line with exit code 2."""

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robokit.cli", *args], capture_output=True, text=True, check=False,
                          timeout=120)


def test_help_lists_every_command():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("record", "train", "deploy", "serve", "inspect", "replay", "viz", "devices", "sim"):
        assert command in out.stdout


def test_usage_error_exits_2_without_traceback():
    out = run_cli("devices", "--no-such-option")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


def test_robokit_error_is_one_line_with_exit_2(tmp_path):
    out = run_cli("inspect", str(tmp_path / "missing"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "error:" in out.stderr
