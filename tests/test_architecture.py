"""The package keeps its shape: which parts may import which, and small modules.

These rules are what lets a robot PC run the client without torch, a policy be read without the
trainer, and a driver be tested without the rest; a change that breaks one fails here first.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "robokit"
MAX_MODULE_LINES = 500

# package -> robokit subpackages it must never import (at module level or inside a function)
FORBIDDEN = {
    "policies": ("training", "deploy", "record", "commands"),
    "hardware": ("record", "policies", "deploy", "training", "commands"),
    "episodes": ("hardware", "record", "policies", "deploy", "training", "commands", "viz"),
    "training": ("deploy", "record", "commands"),
}


def robokit_imports(path: Path) -> set[str]:
    """Every ``robokit.X`` module a source file imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("robokit"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("robokit"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules_of(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_they_may(package: str):
    bad = []
    for path in modules_of(package):
        for name in robokit_imports(path):
            parts = name.split(".")
            if len(parts) > 1 and parts[1] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not bad, "\n".join(bad)


def test_episodes_import_nothing_of_robokit_but_errors():
    allowed = ("robokit.errors", "robokit.episodes")
    bad = [f"{path.relative_to(PACKAGE.parent)} imports {name}" for path in modules_of("episodes")
           for name in robokit_imports(path) if not name.startswith(allowed)]
    assert not bad, "\n".join(bad)


def test_no_module_is_longer_than_the_limit():
    long = [f"{path.relative_to(PACKAGE.parent)}: {n} lines" for path in sorted(PACKAGE.rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, "\n".join(long)


@pytest.mark.parametrize("module", ["robokit.deploy.client", "robokit.deploy.protocol", "robokit.deploy.runner",
                                    "robokit.deploy.observation"])
def test_the_client_side_of_deploy_loads_no_torch(module: str):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
