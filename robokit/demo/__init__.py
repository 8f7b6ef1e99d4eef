"""``robokit demo`` (``make demo``): the whole imitation-learning loop on the embedded MuJoCo
simulator, in one process.

Scene -> scripted expert -> record -> train ACT -> deploy on held-out seeds
(:mod:`robokit.demo.stages`, each a call into the library the other commands use), then the success
rate and where everything is (:func:`run_demo`). The default sizes (:class:`DemoConfig`) finish in
about 6 minutes on 2 CPU cores; docs/demo.md has the measured figures. A tiny run::

    robokit demo --out /tmp/demo --episodes 2 --steps 5 --eval-episodes 1 --image-size 32x40

The output folder is the demo's own: an earlier demo's output there is deleted first (and said so);
a folder holding anything else is refused.

Importing :class:`DemoConfig` is cheap (the CLI reads its defaults for ``--help``); :func:`run_demo`
is imported on first use, since it sets up the process for the simulator and torch
(:mod:`robokit.demo.run`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from robokit.demo.config import MARKER, DemoConfig, DemoResult, StageTime, prepare_output

if TYPE_CHECKING:
    from robokit.demo.run import print_summary, run_demo

__all__ = ["MARKER", "DemoConfig", "DemoResult", "StageTime", "prepare_output", "print_summary", "run_demo"]


def __getattr__(name: str) -> Any:
    if name in ("run_demo", "print_summary"):
        from robokit.demo import run

        return getattr(run, name)
    raise AttributeError(f"module 'robokit.demo' has no attribute {name!r}")
