"""The torch-free core: ``pip install robokit`` without extras records, replays, inspects and deploys.

Each check runs robokit in a fresh interpreter whose import system refuses torch and torchvision,
as a venv without the ``train`` extra would: what works there works on a robot PC that installed
only the core, and a command that needs torch says which extra to install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "robokit"

# Packages that belong to the `train` extra (they import torch at module level), and modules
# elsewhere that only `robokit train` loads.
TRAIN_ONLY = ("robokit.policies", "robokit.training", "robokit.segmentation", "robokit.deploy.train_eval")

# Prepended to every subprocess: torch and torchvision fail to import as if not installed.
NO_TORCH = '''
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
for _name in [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")]:
    del sys.modules[_name]
'''

# Runs the CLI like the console script, then checks that nothing brought torch in after all.
RUN_CLI = NO_TORCH + '''
from robokit.cli import main

main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
if loaded:
    raise SystemExit(f"torch was imported: {loaded}")
'''


def run_without_torch(code: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True,
                          timeout=timeout)


def cli_without_torch(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return run_without_torch(RUN_CLI, *args, timeout=timeout)


def core_modules() -> list[str]:
    """Every robokit module outside the training-only packages."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if not name.startswith(TRAIN_ONLY) and not name.endswith("__main__"):
            names.append(name)
    return names


def test_the_blocker_really_blocks_torch():
    proc = run_without_torch(NO_TORCH + "import torch")
    assert proc.returncode != 0 and "No module named 'torch'" in proc.stderr


def test_every_core_module_imports_without_torch():
    code = NO_TORCH + '''
import importlib
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        failed.append(f"{name}: {exc}")
if failed:
    raise SystemExit("\\n".join(failed))
'''
    proc = run_without_torch(code, *core_modules())
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("core") / "data"
    proc = cli_without_torch("record", "--sim", "--teleop", "scripted", "--episodes", "1", "--out", str(out),
                             "--image-size", "32x40")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_record_inspect_and_replay_run_without_torch(recorded):
    assert [p.name for p in recorded.glob("*.hdf5")] == ["episode_0.hdf5"]
    proc = cli_without_torch("inspect", str(recorded))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 episode(s)" in proc.stdout
    proc = cli_without_torch("replay", str(recorded / "episode_0.hdf5"), "--sim")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replayed" in proc.stdout


def test_help_and_devices_run_without_torch():
    for args in (["--help"], ["deploy", "--help"], ["train", "--help"], ["devices"]):
        proc = cli_without_torch(*args)
        assert proc.returncode == 0, f"robokit {' '.join(args)}: {proc.stderr[-3000:]}"


def test_the_deploy_client_runs_without_torch(make_tiny_checkpoint):
    from robokit.deploy.server import PolicyServer

    ckpt = make_tiny_checkpoint("act", {"fps": 30.0}, fps=30.0)
    with PolicyServer.from_checkpoint(ckpt, device="cpu", bind="tcp://127.0.0.1:0", warmup=False) as server:
        server.start()
        proc = cli_without_torch("deploy", "--sim", "--server", server.address, "--episodes", "1",
                                 "--max-steps", "4", "--mode", "chunk")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "overall" in proc.stdout


@pytest.mark.parametrize("args", [["train", "{data}", "--out", "{tmp}/run"], ["serve", "{file}"],
                                  ["deploy", "--sim", "{file}"], ["seg", "train", "{data}", "--out", "{tmp}/seg.pt"]])
def test_a_command_that_needs_torch_names_the_extra(args, recorded, tmp_path):
    # An existing file stands in for a checkpoint: loading one is where torch is needed.
    args = [a.format(data=recorded, tmp=tmp_path, file=recorded / "episode_0.hdf5") for a in args]
    proc = cli_without_torch(*args)
    command = " ".join(a for a in args[:2] if not a.startswith(("-", "/")))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"robokit {command} needs torch: pip install 'robokit[train]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_inspecting_a_checkpoint_names_the_extra(make_tiny_checkpoint):
    proc = cli_without_torch("inspect", str(make_tiny_checkpoint("cnnmlp")))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "robokit inspect CHECKPOINT needs torch: pip install 'robokit[train]'" in proc.stderr
