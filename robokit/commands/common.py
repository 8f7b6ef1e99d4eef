"""Helpers every command shares: image sizes, number and duration formats, logging through a live
console, and Ctrl-C / SIGTERM handling."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import signal
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console

from robokit.errors import UserError

#: Shown in place of a figure that does not exist yet (the loss before the first logged step).
UNKNOWN = "—"


def parse_image_size(value: str | list | tuple, minimum: int = 8) -> tuple[int, int]:
    """``"240x320"`` (or ``[240, 320]`` from a config file) -> (240, 320) as (height, width).

    Raises :class:`UserError` for anything else, or for a side below ``minimum`` pixels.
    """
    if isinstance(value, (list, tuple)):
        if len(value) not in (2, 3):
            raise UserError(f"image size must be [HEIGHT, WIDTH] such as [96, 128], got {value!r}")
        value = f"{value[0]}x{value[1]}"
    match = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", str(value))
    if not match:
        raise UserError(f"image size must look like HEIGHTxWIDTH (e.g. 240x320), got {value!r}")
    height, width = int(match.group(1)), int(match.group(2))
    if height < minimum or width < minimum:
        raise UserError(f"image size {value!r} is too small (at least {minimum}x{minimum})")
    return height, width


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``5:30`` or ``1:02:03``; :data:`UNKNOWN` when not known (yet)."""
    if seconds is None or not math.isfinite(seconds):
        return UNKNOWN
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}" if minutes else f"{secs} s"


def format_number(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; :data:`UNKNOWN` when there is none yet."""
    return UNKNOWN if value is None else f"{value:.{digits}f}"


def training_fields(progress: Any, digits: int = 4, rate_digits: int = 1) -> list[str]:
    """The loss, the validation loss (once validated) and the speed (once measured) of a
    :class:`~robokit.training.trainer.TrainProgress`, for a progress line."""
    parts = [f"loss {format_number(progress.loss, digits)}"]
    if progress.val_loss is not None:
        parts.append(f"val {progress.val_loss:.{digits}f}")
    if progress.steps_per_s:
        parts.append(f"{progress.steps_per_s:.{rate_digits}f} steps/s")
    return parts


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis where it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextlib.contextmanager
def log_to_console(console: Console, level: int = logging.WARNING) -> Iterator[None]:
    """Send log records of ``level`` and above through ``console`` for the duration, so that they
    print above a live progress bar or panel instead of tearing it."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    root.handlers = [RichHandler(console=console, show_path=False, show_time=False, level=level)]
    root.setLevel(level)
    try:
        yield
    finally:
        root.handlers, root.level = saved, saved_level


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[], None]) -> Iterator[None]:
    """Call ``handler()`` on Ctrl-C (SIGINT) and SIGTERM (`kill`, a closing tmux pane) for the
    duration, then restore the previous handlers. Outside the main thread signals cannot be caught:
    there it changes nothing."""
    signums = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {signum: signal.signal(signum, lambda *_: handler()) for signum in signums}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
