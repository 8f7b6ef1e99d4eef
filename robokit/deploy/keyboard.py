"""Single-key commands in the terminal during deploy (space pause/resume, r reset, q quit).

The terminal is put in cbreak mode (keys arrive without Enter, Ctrl+C still works) while a reader
thread collects key presses; :meth:`TerminalKeys.poll` hands them to the control loop without
blocking. Where stdin is not a terminal (pipes, CI, Windows) it reads nothing and says so in the log.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)


class TerminalKeys:
    """Collect key presses from the controlling terminal; use as a context manager."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved: Any = None
        self.active = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        try:
            import termios
            import tty
        except ImportError:
            log.info("keyboard commands are unavailable on this platform")
            return
        if not sys.stdin.isatty():
            log.info("stdin is not a terminal: keyboard commands are off")
            return
        fd = sys.stdin.fileno()
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self.active = True
        self._thread = threading.Thread(target=self._read, args=(fd,), name="deploy-keys", daemon=True)
        self._thread.start()

    def _read(self, fd: int) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                data = os.read(fd, 32)
                if not data:
                    return
                for ch in data.decode(errors="ignore"):
                    self._queue.put(ch)

    def poll(self) -> list[str]:
        """Keys pressed since the last call (never blocks)."""
        keys = []
        while True:
            try:
                keys.append(self._queue.get_nowait())
            except queue.Empty:
                return keys

    def close(self) -> None:
        """Restore the terminal. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None
        if self._saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None
        self.active = False
