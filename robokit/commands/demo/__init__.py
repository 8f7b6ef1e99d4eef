"""``robokit demo`` (``make demo``): the whole imitation-learning loop on the embedded MuJoCo
simulator, in one process.

Scene -> scripted expert -> record -> train ACT -> deploy on held-out seeds
(:mod:`robokit.commands.demo.stages`, each a call into the library the other commands use), then
the success rate and where everything is (:func:`run_demo`). The default sizes
(:class:`DemoConfig`) train for 2500 steps, most of the run's time; docs/demo.md has the measured
figures. A tiny run::

    robokit demo --out /tmp/demo --episodes 2 --steps 5 --eval-episodes 1 --image-size 32x40

The output folder is the demo's own: an earlier demo's output there is deleted first (and said so);
a folder holding anything else is refused.

Importing :class:`DemoConfig` is cheap (the CLI reads its defaults for ``--help``); :func:`run_demo`
is imported on first use, since it sets up the process for the simulator and torch
(:mod:`robokit.commands.demo.run`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from robokit.commands.demo.config import MARKER, DemoConfig, DemoResult, StageTime, prepare_output

if TYPE_CHECKING:
    from robokit.commands.demo.run import print_summary, run_demo

__all__ = ["MARKER", "DemoConfig", "DemoResult", "StageTime", "prepare_output", "print_summary", "run_demo"]


def __getattr__(name: str) -> Any:
    if name in ("run_demo", "print_summary"):
        from robokit.commands.demo import run

        return getattr(run, name)
    raise AttributeError(f"module 'robokit.commands.demo' has no attribute {name!r}")
