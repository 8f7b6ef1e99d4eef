"""Episode labels and timing for a keyboard-, pedal- or SpaceMouse-driven recording session.

:class:`EpisodeTimer` sits between the keys and the session:

- ``y`` / ``n`` label the last saved episode a success / a failure (stored in its file);
- with ``episode_time_s`` an episode that has run that long is stopped and saved (as if ``s`` was
  pressed);
- with ``reset_time_s`` the next episode starts by itself that long after the last one ended; the live
  panel counts down the seconds meanwhile, so the operator knows how long they have to reset the
  scene. The first episode still waits for ``s``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from robokit.errors import DataError

__all__ = ["LABEL_KEYS", "EpisodeTimer"]

LABEL_KEYS = (("y", "last episode: success"), ("n", "last episode: failure"))


class EpisodeTimer:
    """See the module docstring. ``session`` is a :class:`~robokit.record.session.RecordingSession`."""

    def __init__(self, session: Any, episode_time_s: float | None = None, reset_time_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        for name, value in (("--episode-time", episode_time_s), ("--reset-time", reset_time_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive seconds, got {value}")
        self.session = session
        self.episode_time_s = episode_time_s
        self.reset_time_s = reset_time_s
        self.clock = clock
        self._ended_at: float | None = None  # when the last episode ended (the reset began)
        self._announced: int | None = None  # the last whole second counted down
        self._was = session.state
        session.board.add_keys(list(LABEL_KEYS))

    def filter(self, keys: list[str]) -> list[str]:
        """Consume the label keys; return the others with the keys the clock presses."""
        passed = []
        for key in keys:
            if key in ("y", "n"):
                self._label(key == "y")
            else:
                passed.append(key)
        state, now = self.session.state, self.clock()
        if state == "idle" and self._was != "idle":
            self._ended_at, self._announced = now, None
        if state != "idle":
            self._ended_at = None
        self._was = state
        if state == "recording" and self.episode_time_s is not None and "s" not in passed \
                and self.session.status().elapsed_s >= self.episode_time_s:
            self.session.notify(f"episode time of {self.episode_time_s:g} s reached: saving")
            passed.append("s")
        if state == "idle" and self.reset_time_s is not None and self._ended_at is not None:
            left = self.reset_time_s - (now - self._ended_at)
            if left <= 0:
                self._ended_at = None
                passed.append("s")
            elif math.ceil(left) != self._announced:
                self._announced = math.ceil(left)
                self.session.notify(f"reset the scene: next episode in {self._announced} s")
        return passed

    def _label(self, success: bool) -> None:
        from robokit.episodes.labels import label_episode

        if not self.session.saved:
            self.session.notify("no saved episode to label yet")
            return
        path = self.session.saved[-1]
        try:
            label_episode(path, success)
        except DataError as exc:
            self.session.notify(str(exc))
            return
        self.session.notify(f"{path.name} labelled {'success' if success else 'failure'}")
