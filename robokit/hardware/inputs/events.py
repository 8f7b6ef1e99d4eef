"""The part every input reader shares: open an evdev node, consume its events on a thread, notice
when the device goes away.

A reader's event handling is one method fed one event at a time (anything with ``type``, ``code``
and ``value``, as ``evdev.InputEvent``). On the device a daemon thread feeds it from the node; a
test feeds the same method a list of recorded events with :meth:`EventReader.consume`. A read
that fails (``OSError``, ``ENODEV`` when the cable is pulled) ends the stream and is kept as
:attr:`EventReader.error`, for the caller to report: drivers never print.
"""

from __future__ import annotations

import abc
import errno
import logging
import select
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from robokit.errors import HardwareFault, UserError
from robokit.hardware.inputs.discovery import InputDeviceInfo, check_readable

__all__ = ["EV_ABS", "EV_KEY", "EV_REL", "EV_SYN", "EventReader", "InputDeviceLost", "import_evdev",
           "open_event_device"]

log = logging.getLogger(__name__)

# Linux input event types (linux/input-event-codes.h, a stable kernel ABI): the processing code
# needs no evdev import, so recorded streams can be replayed without the library.
EV_SYN, EV_KEY, EV_REL, EV_ABS = 0, 1, 2, 3
SYN_DROPPED = 3
INSTALL_HINT = "pip install 'robokit[teleop]'"


class InputDeviceLost(HardwareFault):
    """An input device (SpaceMouse, pedal) stopped delivering events: unplugged, or its node vanished."""


def import_evdev() -> Any:
    """The ``evdev`` module, or a :class:`~robokit.errors.UserError` saying how to install it."""
    try:
        import evdev
    except ImportError:
        raise UserError(f"reading a SpaceMouse or pedal needs python-evdev (Linux only): {INSTALL_HINT}") from None
    return evdev


def open_event_device(info: InputDeviceInfo, what: str, grab: bool = True) -> Any:
    """Open ``info``'s node with evdev; ``grab``: take it exclusively (no other program sees its events).

    Grabbing keeps a pedal's letters out of the terminal and the desktop, and tells us at once when
    another program (spacenavd, a second robokit) holds the device, which would leave us no events.
    """
    evdev = import_evdev()
    check_readable(info, what)
    try:
        device = evdev.InputDevice(info.path)
    except FileNotFoundError:
        raise UserError(f"the {what} {info.name!r} ({info.path}) is gone: plug it in and run again") from None
    except PermissionError:
        check_readable(info, what)
        raise
    if grab:
        try:
            device.grab()
        except OSError as exc:
            device.close()
            if exc.errno == errno.EBUSY:
                raise UserError(f"the {what} {info.name!r} ({info.path}) is in use by another program (spacenavd? "
                                "stop it: sudo systemctl stop spacenavd), or by another robokit") from None
            raise UserError(f"cannot take the {what} {info.name!r} ({info.path}): {exc.strerror}") from None
    return device


def _device_events(device: Any, stop: threading.Event) -> Iterator[Any]:
    """The node's events until ``stop`` is set; a select timeout lets :meth:`EventReader.close` end it."""
    while not stop.is_set():
        ready, _, _ = select.select([device.fd], [], [], 0.1)
        if not ready:
            continue
        try:
            yield from device.read()
        except BlockingIOError:
            continue


class EventReader(abc.ABC):
    """Base of the input readers: events in, state out, thread-safe. Subclasses implement :meth:`_handle`."""

    #: How the device is named in messages.
    what = "input device"

    def __init__(self, name: str = "", path: str = "") -> None:
        self.name = name or self.what
        self.path = path
        #: Why the device stopped delivering (None while it works).
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._device: Any = None

    # -- feeding ---------------------------------------------------------------------------------
    def consume(self, events: Iterable[Any]) -> None:
        """Process ``events`` in order until they end; a failed read marks the device lost."""
        try:
            for event in events:
                with self._lock:
                    self._handle(event)
        except (OSError, ValueError) as exc:  # ValueError: the fd was closed under a running select
            if self._stop.is_set():
                return
            reason = "unplugged" if getattr(exc, "errno", None) == errno.ENODEV else str(exc) or type(exc).__name__
            self._mark_lost(reason)

    @abc.abstractmethod
    def _handle(self, event: Any) -> None:
        """Apply one event to the reader's state (called with the lock held)."""

    def _mark_lost(self, reason: str) -> None:
        where = f" ({self.path})" if self.path else ""
        with self._lock:
            self.error = (f"the {self.what} {self.name!r}{where} stopped sending ({reason}): plug it in again and "
                          "restart; `robokit devices` lists what is connected")
            self._on_lost()
        log.debug("%s", self.error)  # the caller reports it (once), as an error or a notice

    def _on_lost(self) -> None:
        """Called (under the lock) when the device goes away: forget held state."""

    # -- device ----------------------------------------------------------------------------------
    def start(self, device: Any) -> None:
        """Read ``device`` (an open ``evdev.InputDevice``) on a daemon thread until :meth:`close`."""
        self._device = device
        self._thread = threading.Thread(target=self.consume, args=(_device_events(device, self._stop),),
                                        name=f"robokit-{self.what}", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> bool:
        """True once the device stopped delivering events."""
        return self.error is not None

    def check(self) -> None:
        """Raise :class:`InputDeviceLost` (naming the device and what to do) if the device went away."""
        if self.error is not None:
            raise InputDeviceLost(self.error)

    def close(self) -> None:
        """Stop the thread and release the device (safe to call twice)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        device, self._device = self._device, None
        if device is not None:
            try:
                device.ungrab()
            except OSError:
                pass  # unplugged, or never grabbed
            try:
                device.close()
            except OSError:
                pass

    def __enter__(self) -> EventReader:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
