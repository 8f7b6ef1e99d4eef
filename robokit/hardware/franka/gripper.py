"""The Franka Hand's command state machine: targets in, asynchronous grasp/move commands out.

With ``mode="binary"`` a target of 0.6 or more grasps (with ``force_n``), 0.4 or less opens, and a
value in between keeps the last command (hysteresis, so a policy hovering around 0.5 does not make
the hand chatter). With ``"continuous"`` the fingers move to ``0.08 * (1 - g)`` metres, re-sent only
when the target moved by 0.05 or more. One command is in flight at a time; a newer target waits
(replacing any older waiting one) and is sent once the hand finished. Nothing here blocks except
:meth:`FrankaGripper.wait`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from robokit.errors import HardwareFault, RobokitError
from robokit.hardware.base import GRIPPER_MAX_WIDTH_M
from robokit.hardware.franka.errors import guard, translate_error
from robokit.hardware.franka.link import Link

__all__ = ["GRIPPER_MODES", "FrankaGripper"]

log = logging.getLogger(__name__)

GRIPPER_MODES = ("binary", "continuous")
# Continuous targets closer than this to the last one are not re-sent (4 mm: below what the hand
# resolves usefully).
_CONTINUOUS_STEP = 0.05


class FrankaGripper:
    """Commands and width of the Franka Hand on an open :class:`~robokit.hardware.franka.link.Link`.

    Args:
        host: the robot's address (for messages).
        mode: ``"binary"`` or ``"continuous"`` (see the module docstring).
        speed_mps / force_n: finger speed and grasp force.
    """

    def __init__(self, host: str, mode: str, speed_mps: float, force_n: float) -> None:
        self.host = host
        self.mode = mode
        self.speed_mps = float(speed_mps)
        self.force_n = float(force_n)
        #: Number of commands sent to the hand (repeated identical targets send nothing).
        self.commands = 0
        self._lock = threading.RLock()
        self._link: Link | None = None
        self._future: Any = None
        self._inflight: float | None = None
        self._pending: float | None = None
        self._last: float | None = None
        self._width = GRIPPER_MAX_WIDTH_M
        self._error: RobokitError | None = None
        self._poller: threading.Thread | None = None
        self._poller_stop = threading.Event()

    # ------------------------------------------------------------------------------ lifecycle
    def attach(self, link: Link) -> None:
        """Read the width once, then keep reading it in a background thread."""
        with guard(self.host, "reading the gripper"):
            self._width = link.gripper_width()
        self._link = link
        self._poller_stop.clear()
        self._poller = threading.Thread(target=self._poll_width, name="franka-gripper", daemon=True)
        self._poller.start()

    def detach(self) -> None:
        """Stop the width reader, give the command in flight up to 2 s, forget all targets. Idempotent."""
        self._poller_stop.set()
        if self._poller is not None:
            self._poller.join(timeout=2.0)
            self._poller = None
        with self._lock:
            if self._future is not None and self._link is not None:
                try:
                    self._link.future_wait(self._future, 2.0)
                except Exception as exc:  # noqa: BLE001 - the session is closing either way
                    log.warning("while releasing the gripper: %s", exc)
            self._link = None
            self._future = self._inflight = self._pending = self._last = None

    # ------------------------------------------------------------------------------ state
    @property
    def closed(self) -> float:
        """The measured width normalised: 0 fully open .. 1 fully closed."""
        return float(np.clip(1.0 - self._width / GRIPPER_MAX_WIDTH_M, 0.0, 1.0))

    def raise_error(self) -> None:
        """Raise (once) the error the width reader ran into, if any."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # ------------------------------------------------------------------------------ commands
    def command(self, g: float) -> None:
        """Ask for the normalised target ``g`` (0 open .. 1 closed); returns at once."""
        self.raise_error()
        with self._lock:
            want = self._wanted(g)
            if want is not None:
                self._pending = want
            self.service()

    def service(self) -> None:
        """Collect a finished command and send the waiting target, never blocking."""
        link = self._link
        if link is None:
            return
        with self._lock:
            if self._future is not None:
                if not link.future_done(self._future):
                    return
                try:
                    if not link.future_result(self._future):
                        log.warning("gripper command to %.2f did not succeed", self._inflight)
                except Exception as exc:  # noqa: BLE001 - a failed grasp/move is reported, not fatal
                    log.warning("gripper command to %.2f failed: %s", self._inflight, exc)
                self._last = self._inflight
                self._future = None
                self._inflight = None
            if self._pending is None:
                return
            target, self._pending = self._pending, None
            with guard(self.host, "commanding the gripper"):
                if self.mode == "binary" and target >= 0.5:
                    future = link.gripper_grasp(self.speed_mps, self.force_n)
                else:
                    future = link.gripper_move(GRIPPER_MAX_WIDTH_M * (1.0 - target), self.speed_mps)
            self._future = future
            self._inflight = target
            self.commands += 1

    def wait(self, timeout_s: float) -> None:
        """Block until the command in flight and the waiting one have finished."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.service()
            with self._lock:
                future, link = self._future, self._link
                idle = future is None and self._pending is None
            if idle or link is None:
                return
            if future is not None:
                link.future_wait(future, min(0.05, max(0.0, deadline - time.monotonic())))
        raise HardwareFault(f"the Franka Hand at {self.host} did not finish its command within {timeout_s:.0f} s")

    def open_fully(self, timeout_s: float) -> None:
        """Open the hand (sent even if "open" was the last command: it may have been pushed); blocks."""
        self.wait(timeout_s)
        with self._lock:
            self._last = None
        self.command(0.0)
        self.wait(timeout_s)

    # ------------------------------------------------------------------------------ internals
    def _wanted(self, g: float) -> float | None:
        """The normalised target to send for input ``g``, or None to keep the current command."""
        g = float(np.clip(g, 0.0, 1.0))
        last = next((v for v in (self._pending, self._inflight, self._last) if v is not None), None)
        if self.mode == "binary":
            if g >= 0.6:
                want = 1.0
            elif g <= 0.4:
                want = 0.0
            else:
                return None  # hysteresis band: keep the last command
            return None if last == want else want
        if last is not None and abs(g - last) < _CONTINUOUS_STEP:
            return None
        return g

    def _poll_width(self) -> None:
        # franky's Gripper.width waits for the hand's next state message; reading it here keeps the
        # robot's read() from blocking on the hand.
        link = self._link
        while not self._poller_stop.is_set() and link is not None:
            try:
                self._width = link.gripper_width()
            except Exception as exc:  # noqa: BLE001
                if not self._poller_stop.is_set():
                    self._error = translate_error(exc, self.host, "reading the gripper")
                    log.warning("%s", self._error)
                    self._poller_stop.wait(1.0)
            self._poller_stop.wait(0.02)
