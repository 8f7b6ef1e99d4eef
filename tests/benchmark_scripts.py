"""Import a script of benchmarks/ as a module, so that tests can check its pure parts."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_script(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` loaded as module ``name``; afterwards it, the sibling scripts it
    imported and any ``sys.path`` entry it added are gone again."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for loaded, mod in list(sys.modules.items()):
            where = getattr(mod, "__file__", None)
            if loaded == name or (where is not None and Path(where).parent == BENCHMARKS):
                sys.modules.pop(loaded, None)
        sys.path[:] = path
