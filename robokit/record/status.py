"""What the recorder's live panel shows: a snapshot of a session (:class:`SessionStatus`) and the
figures a session keeps for it (:class:`StatusBoard`: messages, loop rate, free disk, keys).

The session never prints; the CLI renders the snapshot.
"""

from __future__ import annotations

import collections
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SESSION_KEYS", "SessionStatus", "StatusBoard"]

log = logging.getLogger(__name__)

SESSION_KEYS = (("s", "start / stop + save"), ("d", "discard"), ("r", "discard + re-record"),
                ("h", "home / new scene"), ("q", "quit (saves)"))

DISK_CHECK_PERIOD_S = 1.0


@dataclass
class SessionStatus:
    """A snapshot of a recording session for the live panel."""

    state: str
    episode_index: int
    elapsed_s: float
    steps: int
    loop_hz: float
    camera_hz: dict[str, float]
    dropped: dict[str, int]
    repeated: dict[str, int]
    overruns: int
    disk_free_bytes: int
    saved: int
    target: int | None
    discarded: int
    task: str
    teleop: str
    messages: list[str]
    key_help: list[tuple[str, str]]


class StatusBoard:
    """The session's recent messages, its loop rate, the free space on the output disk and the keys
    it answers to.

    ``keys`` starts as the session's own keys and the teleop source's jog keys; a front end that
    consumes more keys before the session sees them (the CLI's task prompt) adds them with
    :meth:`add_keys`, so that the help and the message about an unknown key name every key.
    """

    def __init__(self, out: Path, clock: Callable[[], float], keys: Iterable[tuple[str, str]] = ()) -> None:
        self.out = out
        self._clock = clock
        self.messages: collections.deque[str] = collections.deque(maxlen=6)
        self.keys: list[tuple[str, str]] = [*SESSION_KEYS, *keys]
        self.disk_free = 0
        self._disk_checked = -1e9
        self._tick_times: collections.deque[float] = collections.deque(maxlen=60)

    def say(self, message: str) -> None:
        """Add ``message`` to the panel's last lines (and the log)."""
        log.info("%s", message)
        self.messages.append(message)

    def add_keys(self, keys: Iterable[tuple[str, str]]) -> None:
        """Name more keys (``(key, what it does)``) in the help."""
        self.keys.extend(keys)

    def unknown_key(self, key: str) -> None:
        """Say that ``key`` does nothing here, and which keys do (once while it is pressed again)."""
        message = f"key {key!r} does nothing; keys: {' · '.join(k for k, _ in self.keys)}"
        if not self.messages or self.messages[-1] != message:
            self.say(message)

    def tick(self, now: float) -> None:
        """Note one control step at ``now`` (for :meth:`loop_hz`)."""
        self._tick_times.append(now)

    def loop_hz(self) -> float:
        """Control steps per second over the last 60 steps (0 before two steps)."""
        ticks = list(self._tick_times)
        if len(ticks) < 2 or ticks[-1] <= ticks[0]:
            return 0.0
        return (len(ticks) - 1) / (ticks[-1] - ticks[0])

    def free_bytes(self) -> int:
        """Free space on the output disk, measured at most once per second."""
        now = self._clock()
        if now - self._disk_checked > DISK_CHECK_PERIOD_S:
            self._disk_checked = now
            try:
                self.disk_free = shutil.disk_usage(self.out).free
            except OSError:
                self.disk_free = 0
        return self.disk_free
