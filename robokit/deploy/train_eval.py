"""Success in the simulation while a policy trains (``robokit train --eval-sim N --eval-every K``).

:class:`SimEvaluation` is a training observer (:mod:`robokit.training.observers`): every K
optimizer steps and after the last one it runs the policy being trained for N episodes through
:func:`~robokit.deploy.evaluate.evaluate_in_sim`, on the held-out seeds ``eval_seed``,
``eval_seed + 1``, ... (the same seeds every time, so the figures are comparable), and

* appends ``{"split": "sim", "step", "success_rate", "successes", "episodes", ...}`` to
  ``<out>/sim_eval.jsonl`` and ``sim/success_rate`` to the run's loggers (TensorBoard, wandb);
* redraws ``<out>/train_success.png``, the success curve against steps;
* saves ``<out>/best_success.pt`` (a normal robokit checkpoint) whenever the success rate is the
  highest so far; a tie goes to the later checkpoint, which has trained longer for the same success.

The scene is the one the data was recorded in: the task set whose instructions the episodes hold
(``pick_place`` for single-task demonstrations, ``multi`` for several instructions; only the
instructions the data has). Data not recorded in the simulation is refused up front, before any
training. The policy runs in eval mode without gradients and goes back to train mode; the
evaluation leaves the training's RNG streams as they were, so a run is the same with or without it.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robokit.errors import ConfigError
from robokit.training.logs import MetricsLog
from robokit.training.observers import RunHandle
from robokit.training.options import TrainOptions, TrainProgress

log = logging.getLogger(__name__)

SUCCESS_LOG = "sim_eval.jsonl"
SUCCESS_PLOT = "train_success.png"
BEST_SUCCESS = "best_success.pt"


@dataclass(frozen=True)
class SimData:
    """What the evaluation needs to know of a simulated dataset."""

    task_set: str
    tasks: tuple[str, ...]  # task names of the set the data holds; () = all of them
    seeds: frozenset[int]  # the scene seeds the episodes were recorded on


def sim_data(folder: str | Path) -> SimData:
    """The simulated task set of the episodes in ``folder`` (read from their attributes only).

    Raises ConfigError when an episode was not recorded in the simulation or its instructions are
    not those of one simulated task set.
    """
    from robokit.episodes.reader import list_episodes, open_episode
    from robokit.hardware.sim.tasks import TASK_SETS
    from robokit.lerobot.layout import refuse_lerobot_folder

    refuse_lerobot_folder(folder)
    paths = list_episodes(folder)
    instructions: set[str] = set()
    seeds: set[int] = set()
    real: list[Path] = []
    for path in paths:
        with open_episode(path) as ep:
            if ep.attrs.get("sim") not in (True, 1):
                real.append(path)
            if ep.task:
                instructions.add(ep.task)
            if ep.attrs.get("sim_seed") is not None:
                seeds.add(int(ep.attrs["sim_seed"]))
    if real:
        raise ConfigError(f"--eval-sim needs data recorded in the simulation; {len(real)} of {len(paths)} "
                          f"episodes in {folder} are not (first: {real[0].name}, its 'sim' attribute is not "
                          "true). Drop --eval-sim, or record with `robokit record --sim`")
    for name, spec in TASK_SETS.items():
        texts = spec.instructions  # task name -> instruction
        if instructions and instructions <= set(texts.values()):
            names = tuple(task for task, text in texts.items() if text in instructions)
            return SimData(name, () if len(names) == len(texts) else names, frozenset(seeds))
    known = "; ".join(f"{name}: {', '.join(repr(t) for t in spec.instructions.values())}"
                      for name, spec in TASK_SETS.items())
    found = ", ".join(repr(t) for t in sorted(instructions)) or "none"
    raise ConfigError(f"--eval-sim: the instructions of {folder} ({found}) are not those of a simulated task "
                      f"set ({known}); drop --eval-sim")


@contextmanager
def training_rng_kept(device: Any) -> Iterator[None]:
    """Give torch's, numpy's and Python's global RNG states back after the body."""
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if getattr(device, "type", "cpu") == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class SimEvaluation:
    """The ``--eval-sim`` observer of a training run (see the module docstring).

    Built on every rank before training (it checks the data then); only rank 0's is bound and runs.
    After the run, ``best`` / ``best_step`` say the highest success rate and where it was reached.
    """

    provides: str | None = "eval_sim"

    def __init__(self, options: TrainOptions) -> None:
        if options.eval_sim <= 0:
            raise ConfigError(f"--eval-sim must be positive to evaluate, got {options.eval_sim}")
        self.options = options
        self.episodes = int(options.eval_sim)
        self.seed_start = int(options.eval_seed)
        self.data = sim_data(options.data)
        held_out = set(range(self.seed_start, self.seed_start + self.episodes))
        if held_out & self.data.seeds:
            log.warning("%d of the evaluation seeds %d-%d are seeds the training data was recorded on; "
                        "choose others with --eval-seed for a held-out success rate",
                        len(held_out & self.data.seeds), self.seed_start, self.seed_start + self.episodes - 1)
        self.every = options.eval_every
        self.run: RunHandle | None = None
        self.history: MetricsLog | None = None
        self.best: float | None = None
        self.best_step: int | None = None

    def bind(self, run: RunHandle) -> None:
        self.run = run

    def __call__(self, p: TrainProgress) -> None:
        if self.run is None:
            return
        if p.phase == "start":
            self.every = self.options.eval_every or self.options.val_every or max(1, min(1000, p.total_steps // 10))
            # A resumed run keeps the evaluations up to its step (and the best of them).
            self.history = MetricsLog(self.run.out / SUCCESS_LOG)
            self.history.load(up_to_step=p.step)
            for record in self.history.records:
                rate = record.get("success_rate")
                if isinstance(rate, (int, float)) and (self.best is None or rate >= self.best):
                    self.best, self.best_step = float(rate), int(record["step"])
        elif p.phase == "train" and self.every and (p.step % self.every == 0 or p.step == p.total_steps):
            self.evaluate(p.step, p.epoch)

    def evaluate(self, step: int, epoch: float = 0.0) -> float:
        """Run the evaluation episodes now; log, plot and keep the checkpoint; returns the success rate."""
        from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim
        from robokit.deploy.server import policy_info

        if self.run is None or self.history is None:
            raise RuntimeError("the simulation evaluation is not bound to a started training run")
        run, policy = self.run, self.run.policy
        device = next(policy.parameters()).device
        goal = "image" if policy_info(policy).goal_camera else "text"
        config = EvalConfig(episodes=self.episodes, seed_start=self.seed_start, task_set=self.data.task_set,
                            tasks=self.data.tasks, goal=goal, device=str(device))
        was_training = policy.training
        t0 = time.perf_counter()
        policy.eval()
        try:
            import torch

            with torch.no_grad(), training_rng_kept(device):
                results = evaluate_in_sim(policy, config)
        finally:
            policy.train(was_training)
        rate = float(results.success_rate)
        improved = not math.isnan(rate) and (self.best is None or rate >= self.best)
        self.history.append({
            "split": "sim", "step": int(step), "epoch": epoch, "time": round(time.time(), 3), "success_rate": rate,
            "successes": results.successes, "episodes": results.episodes, "seed_start": self.seed_start,
            "task_set": self.data.task_set, "per_task": {k: list(v) for k, v in results.per_task().items()},
            "best": improved, "seconds": round(time.perf_counter() - t0, 2)})
        run.log(step, {"sim/success_rate": rate})
        if improved:
            self.best, self.best_step = rate, int(step)
            run.save(run.out / BEST_SUCCESS, step)
        log.info("step %d: success in simulation %d/%d (%.0f%%) on seeds %d-%d, best %.0f%% at step %s (%.1f s)",
                 step, results.successes, results.episodes, 100 * rate, self.seed_start,
                 self.seed_start + self.episodes - 1, 100 * (self.best or 0.0), self.best_step,
                 time.perf_counter() - t0)
        try:
            plot_success(self.history.records, run.out)
        except Exception as exc:  # noqa: BLE001 - a plot must never cost a training run
            log.warning("could not write %s: %s", SUCCESS_PLOT, exc)
        return rate

    def close(self) -> None:
        pass  # everything is written as it happens


def plot_success(records: list[dict[str, Any]], out_dir: str | Path) -> Path:
    """Write ``train_success.png``: the success rate (%) of each simulation evaluation against steps,
    the best one marked; returns its path."""
    # The object-oriented API with an Agg canvas, as the loss plots: no pyplot global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = [(int(r["step"]), 100.0 * float(r["success_rate"])) for r in records
           if isinstance(r.get("success_rate"), (int, float)) and math.isfinite(r["success_rate"])]
    fig = Figure(figsize=(6, 4), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, "o-", markersize=4, label="success")
        best = max(range(len(pts)), key=lambda i: (ys[i], xs[i]))  # a tie: the later one, as kept
        ax.plot([xs[best]], [ys[best]], "*", markersize=12, label=f"best ({ys[best]:.0f}% at step {xs[best]})")
        ax.legend(loc="best")
    per_eval = f" ({records[-1].get('episodes')} episodes per evaluation)" if records else ""
    ax.set_title(f"success in simulation{per_eval}")
    ax.set_xlabel("step")
    ax.set_ylabel("success (%)")
    ax.set_ylim(-3, 103)
    ax.grid(True, alpha=0.3)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
    path = Path(out_dir) / SUCCESS_PLOT
    tmp = path.with_suffix(".png.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path
