"""Keys from a plain terminal (works over ssh and inside tmux; no X needed) and an optional preview.

    with TerminalKeys() as keys:
        for key in keys.poll():      # never blocks
            ...

The terminal is put in cbreak mode (keys arrive one by one, no echo; Ctrl-C still interrupts) and
restored on exit, also after an exception. Keys come back as single characters, or as names for
special keys: ``up``, ``down``, ``left``, ``right``, ``pageup``, ``pagedown``, ``space``,
``enter``, ``esc``, ``backspace``.

:class:`PreviewWindow` shows all cameras side by side in an OpenCV window (``--preview``); keys
pressed in that window are returned by its :meth:`~PreviewWindow.show` too.
"""

from __future__ import annotations

import os
import re
import select
import sys
from collections.abc import Mapping
from typing import IO

import numpy as np

from robokit.errors import UserError

__all__ = ["PreviewWindow", "TerminalKeys", "parse_keys"]

_ESCAPES = {
    "\x1b[A": "up", "\x1b[B": "down", "\x1b[C": "right", "\x1b[D": "left",
    "\x1bOA": "up", "\x1bOB": "down", "\x1bOC": "right", "\x1bOD": "left",
    "\x1b[5~": "pageup", "\x1b[6~": "pagedown",
}
_INCOMPLETE_ESCAPE = re.compile(r"\x1b(\[[0-9;]*|O)?$")
_SINGLE = {" ": "space", "\r": "enter", "\n": "enter", "\x7f": "backspace", "\x08": "backspace", "\x03": "ctrl-c"}


def parse_keys(text: str) -> list[str]:
    """Split raw terminal input into key names (escape sequences become ``up``, ``pageup``...)."""
    keys: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\x1b":
            for seq, name in _ESCAPES.items():
                if text.startswith(seq, i):
                    keys.append(name)
                    i += len(seq)
                    break
            else:
                # An unknown sequence: skip ESC [ ... up to its final byte, or a lone ESC.
                j = i + 1
                if j < len(text) and text[j] in "[O":
                    j += 1
                    while j < len(text) and not ("@" <= text[j] <= "~"):
                        j += 1
                    i = j + 1
                else:
                    keys.append("esc")
                    i += 1
            continue
        keys.append(_SINGLE.get(text[i], text[i]))
        i += 1
    return keys


class TerminalKeys:
    """Non-blocking key reader on a terminal (cbreak mode while in the ``with`` block)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdin
        try:
            self._fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = -1
        self.is_terminal = self._fd >= 0 and os.isatty(self._fd)
        self._saved: list | None = None

    def __enter__(self) -> TerminalKeys:  # noqa: PYI034
        if self.is_terminal:
            import termios
            import tty

            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def poll(self, timeout_s: float = 0.0) -> list[str]:
        """Keys pressed since the last call (waits at most ``timeout_s`` for the first one)."""
        if self._fd < 0:
            return []
        chunks = []
        wait = timeout_s
        while True:
            ready, _, _ = select.select([self._fd], [], [], wait)
            if not ready:
                break
            data = os.read(self._fd, 1024)
            if not data:  # end of input (a closed pipe): no more keys ever
                self._fd = -1
                break
            chunks.append(data)
            # An arrow key split across reads (slow ssh link): wait briefly for the rest of it.
            wait = 0.03 if _INCOMPLETE_ESCAPE.search(b"".join(chunks).decode("utf-8", "replace")) else 0.0
        return parse_keys(b"".join(chunks).decode("utf-8", "replace")) if chunks else []


class PreviewWindow:
    """An OpenCV window with every camera side by side; also a source of keys (``--preview``)."""

    def __init__(self, title: str = "robokit record", height: int = 240) -> None:
        import cv2

        if os.name == "posix" and sys.platform != "darwin" and not (
                os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UserError("--preview needs a display (no DISPLAY set); over ssh use `ssh -X` or record "
                            "without --preview: the terminal panel shows the rates")
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise UserError("--preview needs OpenCV with GUI support: `pip install opencv-python` (the "
                            "headless build has no windows), or record without --preview") from None
        self._cv2 = cv2
        self.title = title
        self.height = int(height)

    def show(self, images: Mapping[str, np.ndarray], caption: str = "") -> list[str]:
        """Draw the cameras (RGB) and return the keys pressed in the window."""
        cv2 = self._cv2
        tiles = []
        for name, image in images.items():
            h, w = image.shape[:2]
            tile = cv2.resize(image, (max(1, round(w * self.height / h)), self.height))
            tile = cv2.cvtColor(tile, cv2.COLOR_RGB2BGR)
            cv2.putText(tile, name, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        if tiles:
            canvas = np.hstack(tiles)
            if caption:
                cv2.putText(canvas, caption, (6, self.height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                            (0, 255, 255), 1, cv2.LINE_AA)
            cv2.imshow(self.title, canvas)
        code = cv2.waitKeyEx(1)
        if code < 0:
            return []
        special = {65362: "up", 65364: "down", 65361: "left", 65363: "right", 65365: "pageup",
                   65366: "pagedown", 27: "esc", 13: "enter", 32: "space", 8: "backspace", 127: "backspace"}
        if code in special:
            return [special[code]]
        return [chr(code & 0xFF)] if 0 < (code & 0xFF) < 128 else []

    def close(self) -> None:
        try:
            self._cv2.destroyWindow(self.title)
        except self._cv2.error:
            pass
