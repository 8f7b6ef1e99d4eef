"""A camera base class with one capture thread, a buffer of recent frames and automatic reconnect.

:class:`~robokit.hardware.opencv_camera.OpenCVCamera` and
:class:`~robokit.hardware.synthetic.SyntheticCamera` share it. A subclass implements three hooks:

* ``_open_device()`` opens the device or raises a :class:`~robokit.errors.RobokitError`;
* ``_read_frame()`` blocks until the next frame and returns ``(rgb_image, t_capture)`` — or
  ``(rgb_image, t_capture, skipped)`` when the device knows it dropped ``skipped`` frames before this
  one, which then leave a gap in the frame indices —, or ``None`` when the device is gone
  (unplugged, read error);
* ``_release_device()`` closes it.

The thread keeps the last ``buffer_frames`` frames (4 by default, like the driver queue of a V4L2
camera): :meth:`read_latest` gives the newest, :meth:`frames_after` the ones a loop has not used yet,
so a loop step that runs a few milliseconds late still stores every frame in order. Each frame is
stamped with its receive time and numbered (``Frame.index``, consecutive unless the device dropped
frames). When ``_read_frame`` reports the device gone, the thread retries
``_open_device`` with exponential backoff; while it is disconnected :meth:`read_latest` raises
:class:`~robokit.errors.HardwareFault` naming the camera, and once frames flow again it returns
them. :meth:`read_latest` never returns a frame older than ``max_age_s``: it raises
:class:`~robokit.errors.StaleFrame` instead.
"""

from __future__ import annotations

import abc
import collections
import logging
import threading
import time

import numpy as np

from robokit.errors import HardwareFault, RobokitError, StaleFrame
from robokit.hardware.base import Camera, Frame

log = logging.getLogger(__name__)


class ThreadedCamera(Camera):
    """Capture thread + buffer of the last frames (newest last) + reconnect loop; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        first_frame_timeout_s: float = 5.0,
        reconnect_delay_s: float = 0.25,
        max_reconnect_delay_s: float = 4.0,
        buffer_frames: int = 4,
    ) -> None:
        if buffer_frames < 1:
            raise ValueError(f"camera '{name}': buffer_frames must be >= 1, got {buffer_frames}")
        self.name = name
        self.first_frame_timeout_s = float(first_frame_timeout_s)
        self.reconnect_delay_s = float(reconnect_delay_s)
        self.max_reconnect_delay_s = float(max_reconnect_delay_s)
        self._cond = threading.Condition()
        # The last frames, oldest first; [-1] is what read_latest gives.
        self._recent: collections.deque[Frame] = collections.deque(maxlen=int(buffer_frames))
        self._connected = False
        self._disconnected_since: float | None = None
        self._last_error: str = ""
        self._next_index = 0
        self._reconnects = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- subclass hooks
    @abc.abstractmethod
    def _open_device(self) -> None:
        """Open the device; raise a RobokitError (DeviceNotFound, HardwareFault) if it cannot."""

    @abc.abstractmethod
    def _read_frame(self) -> tuple[np.ndarray, float] | tuple[np.ndarray, float, int] | None:
        """Block until the next frame; return (RGB uint8 HxWx3, t_capture[, frames skipped before it])
        or None if the device is gone."""

    @abc.abstractmethod
    def _release_device(self) -> None:
        """Close the device. Must be safe to call when it is not open."""

    def describe(self) -> str:
        """How messages name this camera, e.g. ``camera 'top' (/dev/video2)``."""
        return f"camera '{self.name}'"

    # ---------------------------------------------------------------- public API
    @property
    def connected(self) -> bool:
        """Whether the device is open and delivering (False while a reconnect is pending)."""
        return self._connected

    @property
    def reconnects(self) -> int:
        """How many times the device was re-opened after being lost."""
        return self._reconnects

    @property
    def frames_received(self) -> int:
        """The next frame's ``index``: frames delivered since :meth:`open`, plus any the device dropped."""
        return self._next_index

    def open(self) -> None:
        """Open the device, start the capture thread and wait for the first frame.

        Raises the subclass's :class:`~robokit.errors.DeviceNotFound` for a missing device, and
        :class:`~robokit.errors.HardwareFault` if no frame arrives within ``first_frame_timeout_s``.
        """
        if self._thread is not None:
            return
        self._open_device()
        self._connected = True
        self._disconnected_since = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.first_frame_timeout_s
        with self._cond:
            while not self._recent and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            got_frame = bool(self._recent)
        if not got_frame:
            self.close()
            raise HardwareFault(
                f"{self.describe()} opened but delivered no frame within {self.first_frame_timeout_s:.1f} s; "
                "check that no other program uses it, then unplug and replug it"
            )

    def close(self) -> None:
        """Stop the capture thread and release the device. Idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5.0)
            if thread.is_alive():
                # A driver call that hangs: releasing the device under it could crash the driver, so
                # leave it to the daemon thread's end (it dies with the process at the latest).
                log.warning("%s: capture thread did not stop within 5 s", self.describe())
            else:
                self._release_device()
        else:
            self._release_device()
        self._connected = False
        with self._cond:
            self._recent.clear()
            self._cond.notify_all()

    def read_latest(self, max_age_s: float = 0.5) -> Frame:
        """The newest frame, if it was captured at most ``max_age_s`` ago.

        Raises :class:`~robokit.errors.HardwareFault` while the camera is disconnected (or was never
        opened) and :class:`~robokit.errors.StaleFrame` when the newest frame is too old.
        """
        with self._cond:
            frame = self._recent[-1] if self._recent else None
        return self._fresh(frame, max_age_s)

    def frames_after(self, index: int, max_age_s: float = 0.5) -> list[Frame]:
        """The buffered frames with ``Frame.index > index``, oldest first (empty when none is newer).

        Raises like :meth:`read_latest`, which checks the newest frame's age.
        """
        with self._cond:
            recent = list(self._recent)
        self._fresh(recent[-1] if recent else None, max_age_s)
        return [f for f in recent if f.index > index]

    def _fresh(self, frame: Frame | None, max_age_s: float) -> Frame:
        """``frame`` (the newest) if usable; else HardwareFault (not open / disconnected) or
        StaleFrame (none yet / too old)."""
        with self._cond:  # the capture thread sets both together
            connected, since = self._connected, self._disconnected_since
        if self._thread is None:
            raise HardwareFault(f"{self.describe()} is not open; call open() or use it in a `with` block")
        if not connected:
            gone_for = time.monotonic() - since if since is not None else 0.0
            detail = self._last_error.removeprefix(self.describe()).strip(" :")
            reason = f" ({detail})" if detail else ""
            raise HardwareFault(
                f"{self.describe()} is disconnected{reason} for {gone_for:.1f} s; robokit keeps retrying "
                "- check its USB cable and replug it"
            )
        if frame is None:
            raise StaleFrame(f"{self.describe()} has not delivered a frame yet")
        age = time.monotonic() - frame.t_capture
        if age > max_age_s:
            raise StaleFrame(
                f"{self.describe()}: newest frame is {age * 1000:.0f} ms old (limit {max_age_s * 1000:.0f} ms); "
                "the camera stalled or delivers slower than the loop needs"
            )
        return frame

    def wait_frame(self, newer_than: int = -1, timeout_s: float = 1.0) -> Frame:
        """The oldest buffered frame with ``index > newer_than``, waiting for one if there is none.

        Raises :class:`~robokit.errors.StaleFrame` on timeout and
        :class:`~robokit.errors.HardwareFault` if the camera is disconnected.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if not self._connected:
                    break
                newer = [f for f in self._recent if f.index > newer_than]
                if newer:
                    return newer[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StaleFrame(f"{self.describe()}: no new frame within {timeout_s:.2f} s")
                self._cond.wait(timeout=remaining)
        return self.read_latest(max_age_s=float("inf"))  # raises the disconnected HardwareFault

    # ---------------------------------------------------------------- capture thread
    def _publish(self, image: np.ndarray, t_capture: float, skipped: int = 0) -> None:
        index = self._next_index + max(int(skipped), 0)
        frame = Frame(image=image, t_capture=t_capture, t_receive=time.monotonic(), index=index)
        with self._cond:
            self._recent.append(frame)
            self._next_index = index + 1
            self._cond.notify_all()

    def _mark_lost(self, reason: str) -> None:
        with self._cond:
            self._connected = False
            self._disconnected_since = time.monotonic()
            self._last_error = reason
            self._cond.notify_all()
        log.warning("%s lost (%s); reconnecting", self.describe(), reason)
        self._release_device()

    def _run(self) -> None:
        delay = self.reconnect_delay_s
        while not self._stop.is_set():
            if not self._connected:
                try:
                    self._open_device()
                except RobokitError as exc:
                    self._last_error = str(exc)
                    log.debug("%s: reconnect failed: %s", self.describe(), exc)
                    self._stop.wait(delay)
                    delay = min(delay * 2.0, self.max_reconnect_delay_s)
                    continue
                delay = self.reconnect_delay_s
                self._reconnects += 1
                with self._cond:
                    self._connected = True
                    self._disconnected_since = None
                    self._last_error = ""
                    self._cond.notify_all()
                log.info("%s reconnected", self.describe())
            try:
                result = self._read_frame()
            except Exception as exc:  # noqa: BLE001 - a driver error must not kill the thread: an unplug
                result = None
                self._last_error = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                break
            if result is None:
                self._mark_lost(self._last_error or "read failed")
                continue
            self._publish(*result)
