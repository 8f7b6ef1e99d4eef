"""What watches a training run besides ``metrics.jsonl``: experiment loggers and evaluators.

The trainer calls one progress callback (:class:`Observers`) after every step and validation. It
forwards each :class:`~robokit.training.options.TrainProgress` to

* the loggers ``TrainOptions.log`` names (TensorBoard, wandb; :mod:`robokit.training.loggers`):
  the loss terms and the learning rate at every log interval, the validation loss, steps/s;
* observers given to :func:`~robokit.training.trainer.train` (``observers=[...]``), which get a
  :class:`RunHandle` on rank 0 before the first step: the policy being trained, a way to save it
  as a checkpoint, and :meth:`RunHandle.log` to add scalars to every logger. The simulation
  evaluation of ``--eval-sim`` is one (:class:`robokit.deploy.train_eval.SimEvaluation`; it lives
  with the simulation evaluation, which training code does not import);
* the caller's own progress callback (the CLI's progress bar), last.

Under DDP only rank 0 observes; every rank checks the options, so a bad one stops them all alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from robokit.errors import ConfigError
from robokit.training.loggers import ScalarLogger, make_loggers
from robokit.training.options import ProgressCallback, TrainOptions, TrainProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunHandle:
    """What an observer may use of the live run (rank 0 only)."""

    #: The policy being trained, in train mode: an observer that runs it puts it in eval mode and
    #: back, without gradients, and must not change its weights.
    policy: Any
    out: Path  # the run folder
    #: ``save(path, step)`` writes the current weights as a robokit checkpoint (best.pt's format).
    save: Callable[[Path, int], None]
    #: ``log(step, {"group/name": value})`` adds scalars to every logger of the run.
    log: Callable[[int, dict[str, float]], None]


class TrainObserver(Protocol):
    """Something that watches a run: bound to it once, then called with every progress report."""

    #: The ``TrainOptions`` field whose work the observer does ("eval_sim"), if any: the trainer
    #: refuses a run that asks for that work with no observer to do it.
    provides: str | None

    def bind(self, run: RunHandle, /) -> None: ...

    def __call__(self, progress: TrainProgress, /) -> None: ...

    def close(self) -> None: ...


def train_scalars(p: TrainProgress) -> dict[str, float]:
    """The scalars of a training-window report: every loss term, the learning rate, steps/s."""
    values = {f"train/{k}": float(v) for k, v in p.terms.items()}
    values["train/lr"] = float(p.lr)
    if p.steps_per_s is not None:
        values["train/steps_per_s"] = float(p.steps_per_s)
    return values


class Observers:
    """The trainer's progress callback: loggers, observers and the caller's callback behind one call.

    A context manager: leaving it closes the loggers and observers, also when an error ends the run.

    Raises ConfigError when ``options`` asks for a logger whose package is missing (naming the
    extra to install) or for work no observer does (``eval_sim`` without the simulation evaluation).
    """

    def __init__(self, options: TrainOptions, progress: ProgressCallback | None = None,
                 observers: Sequence[TrainObserver] = (), is_main: bool = True) -> None:
        if options.eval_sim and not any(getattr(o, "provides", None) == "eval_sim" for o in observers):
            raise ConfigError("eval_sim needs the simulation evaluation: pass observers="
                              "[robokit.deploy.train_eval.SimEvaluation(options)] to train() "
                              "(robokit train --eval-sim does)")
        loggers = make_loggers(options)  # on every rank: a missing package stops them all
        self.options = options
        self.is_main = is_main
        self.progress = progress if is_main else None
        self.loggers: list[ScalarLogger] = loggers if is_main else []
        self.observers = list(observers) if is_main else []
        self._closed = False

    def __enter__(self) -> Observers:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bind(self, policy: Any, save: Callable[[Path, int], None]) -> None:
        """Give the observers the run (called by the trainer on rank 0 before the first step)."""
        run = RunHandle(policy=policy, out=Path(self.options.out), save=save, log=self.log)
        for observer in self.observers:
            observer.bind(run)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Scalars to every logger."""
        for logger in self.loggers:
            logger.scalars(step, values)

    def __call__(self, p: TrainProgress) -> None:
        if p.phase == "start":
            for logger in self.loggers:
                logger.open(Path(self.options.out), self.options, p.step)
        elif p.phase == "train" and (p.step % self.options.log_every == 0 or p.step == p.total_steps):
            self.log(p.step, train_scalars(p))
        elif p.phase == "val" and p.val_loss is not None:
            self.log(p.step, {"val/loss": float(p.val_loss)})
        if p.phase in ("val", "done"):
            for logger in self.loggers:
                logger.flush()
        for observer in self.observers:
            observer(p)
        if self.progress is not None:
            self.progress(p)
        if p.phase == "done":
            self.close()

    def close(self) -> None:
        """Close the observers and loggers (idempotent; also after an error stopped the run)."""
        if self._closed:
            return
        self._closed = True
        closeables: list[TrainObserver | ScalarLogger] = [*self.observers, *self.loggers]
        for closeable in closeables:
            try:
                closeable.close()
            except Exception as exc:  # noqa: BLE001 - closing one must not hide why the run ended
                log.warning("could not close %s: %s", type(closeable).__name__, exc)
