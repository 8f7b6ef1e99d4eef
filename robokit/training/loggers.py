"""Experiment loggers next to ``metrics.jsonl``: TensorBoard and Weights & Biases (``--log``).

Both get the same scalars, named ``group/name``: ``train/<loss term>``, ``train/lr``,
``train/steps_per_s`` every log interval, ``val/loss`` at every validation and
``sim/success_rate`` at every simulation evaluation, against optimizer steps.

* ``tensorboard``: event files in ``<out>/tensorboard`` (``tensorboard --logdir runs``).
* ``wandb``: a run under ``<out>/wandb``. Without a network it works offline: ``WANDB_MODE``
  defaults to ``offline`` unless set, or unless a project is named (``--wandb-project``), which
  means online; ``wandb sync <out>/wandb/offline-run-*`` uploads an offline run later. A resumed
  training run goes on in the same wandb run (its id is kept in ``<out>/wandb/run_id``).

The packages are the ``logs`` extra (``pip install 'robokit[logs]'``), imported only when asked for.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any, Protocol

from robokit.errors import ConfigError
from robokit.training.options import TrainOptions

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'robokit[logs]'"


class ScalarLogger(Protocol):
    """One experiment logger: opened once the run folder exists, then fed scalars."""

    def open(self, out: Path, options: TrainOptions, start_step: int) -> None: ...

    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _missing(target: str, package: str, exc: ImportError) -> ConfigError:
    return ConfigError(f"--log {target} needs the {package} package, which is not installed ({exc}); "
                       f"install it with: {EXTRA_HINT}")


class TensorBoardLogger:
    """Scalars as TensorBoard event files in ``<out>/tensorboard``."""

    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch raises ImportError when tensorboard is missing
            raise _missing("tensorboard", "tensorboard", exc) from None
        self._writer_class = SummaryWriter
        self.writer: Any = None

    def open(self, out: Path, options: TrainOptions, start_step: int) -> None:
        # On a resume, purge_step hides what a previous attempt logged past the resumed step.
        self.writer = self._writer_class(log_dir=str(out / "tensorboard"),
                                         purge_step=start_step if start_step > 0 else None)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbLogger:
    """Scalars to a wandb run in ``<out>/wandb``, offline unless told otherwise."""

    def __init__(self, project: str | None = None) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise _missing("wandb", "wandb", exc) from None
        self._wandb = wandb
        self.project = project
        self.run: Any = None

    def mode(self) -> str | None:
        """``WANDB_MODE`` if the user set it; else online for a named project, offline otherwise."""
        if os.environ.get("WANDB_MODE"):
            return None  # wandb reads it itself
        return None if self.project else "offline"

    def open(self, out: Path, options: TrainOptions, start_step: int) -> None:
        wandb = self._wandb
        folder = out / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "run_id"
        run_id = id_file.read_text().strip() if start_step > 0 and id_file.is_file() else None
        run_id = run_id or uuid.uuid4().hex[:12]
        try:
            self.run = wandb.init(
                project=self.project or "robokit", name=out.name, id=run_id, resume="allow", dir=str(out),
                config=options.to_dict(), mode=self.mode(),
                # console="off": wandb must not wrap stdout/stderr under the progress bar.
                settings=wandb.Settings(console="off", silent=True))
        except Exception as exc:  # noqa: BLE001 - wandb raises many kinds (login, network, usage)
            raise ConfigError(f"wandb could not start a run ({type(exc).__name__}: {exc}); log in with "
                              "`wandb login`, or log offline with WANDB_MODE=offline") from None
        id_file.write_text(run_id + "\n")
        if (os.environ.get("WANDB_MODE") or self.mode()) == "offline":
            folder = Path(self.run.dir).parent  # run.dir is the run's files/ folder
            log.info("wandb logs offline to %s; upload it with `wandb sync %s`", folder, folder)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def flush(self) -> None:
        pass  # wandb's own process writes as it goes

    def close(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish()


def make_loggers(options: TrainOptions) -> list[ScalarLogger]:
    """The loggers ``options.log`` names, not yet opened. Raises ConfigError naming the extra to
    install when a logger's package is missing."""
    loggers: list[ScalarLogger] = []
    for target in options.log:
        if target == "tensorboard":
            loggers.append(TensorBoardLogger())
        elif target == "wandb":
            loggers.append(WandbLogger(options.wandb_project))
    return loggers
