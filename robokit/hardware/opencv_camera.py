"""USB / V4L2 cameras through OpenCV, one capture thread per camera.

``OpenCVCamera("top", 0)`` or ``OpenCVCamera("wrist", "/dev/video2")``. The requested resolution and
frame rate are set on the device and compared with what it delivers (a logged warning when they
differ: many USB cameras silently fall back to another mode). Images are converted BGR -> RGB.

Timestamps: ``t_receive`` is ``time.monotonic()`` when the frame reached robokit; ``t_capture`` is the
driver's buffer timestamp when OpenCV exposes a plausible one (V4L2 stamps buffers with the same
monotonic clock), else the moment ``grab()`` returned.

An unplugged camera is re-opened with exponential backoff (see
:class:`~robokit.hardware.threaded_camera.ThreadedCamera`). A path to a video file also works as a
source (played at ``fps``, looping), which is handy to test a pipeline without a camera.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import time

import cv2
import numpy as np

from robokit.errors import ConfigError, DeviceNotFound
from robokit.hardware.threaded_camera import ThreadedCamera

log = logging.getLogger(__name__)

# How long to measure the delivered frame rate before comparing it with the requested one.
_FPS_CHECK_AFTER_S = 2.0


def list_video_devices() -> list[str]:
    """The ``/dev/video*`` nodes present on this machine (Linux), sorted by number."""

    def number(path: str) -> int:
        digits = path.removeprefix("/dev/video")
        return int(digits) if digits.isdigit() else 1 << 30

    return sorted(glob.glob("/dev/video*"), key=number)


def _found_devices_hint() -> str:
    found = list_video_devices()
    listing = ", ".join(found) if found else "none"
    return f"video devices on this machine: {listing}; run `robokit devices` to see them"


class OpenCVCamera(ThreadedCamera):
    """A camera read with ``cv2.VideoCapture`` in its own thread.

    Args:
        name: camera name (used in messages and episode files).
        source: device index (``0``), device path (``/dev/video2``) or a video file path.
        size: requested (height, width), or None to keep the device's default.
        fps: requested frame rate, or None to keep the device's default.
        fourcc: pixel format to request, e.g. ``"MJPG"`` (many USB cameras need MJPG for 30 fps at
            640x480 and above), or None for the driver's default.
        first_frame_timeout_s: how long :meth:`open` waits for the first frame.
    """

    def __init__(
        self,
        name: str,
        source: int | str,
        size: tuple[int, int] | None = (480, 640),
        fps: float | None = 30.0,
        *,
        fourcc: str | None = None,
        first_frame_timeout_s: float = 5.0,
        reconnect_delay_s: float = 0.25,
        max_reconnect_delay_s: float = 4.0,
    ) -> None:
        if isinstance(source, str) and source.strip().isdigit():
            source = int(source)
        if isinstance(source, int) and source < 0:
            raise ConfigError(f"camera '{name}': device index must be >= 0, got {source}")
        if fourcc is not None and len(fourcc) != 4:
            raise ConfigError(f"camera '{name}': fourcc must have 4 characters (like MJPG), got {fourcc!r}")
        super().__init__(
            name,
            first_frame_timeout_s=first_frame_timeout_s,
            reconnect_delay_s=reconnect_delay_s,
            max_reconnect_delay_s=max_reconnect_delay_s,
        )
        self.source = source
        self.requested_size = tuple(int(v) for v in size) if size is not None else None
        self.requested_fps = float(fps) if fps else None
        self.fourcc = fourcc
        self._cap: cv2.VideoCapture | None = None
        self._shape: tuple[int, int, int] | None = None
        self._is_file = isinstance(source, str) and os.path.isfile(source)
        if self._is_file:
            self.requested_size = None  # a video file plays at its own size
        self._file_fps = 0.0
        self._next_due = 0.0
        self._checked_once = False
        self._fps_window_start: float | None = None
        self._fps_window_frames = 0
        self.delivered_fps: float | None = None

    def describe(self) -> str:
        return f"camera '{self.name}' ({self._device_label()})"

    def _device_label(self) -> str:
        if isinstance(self.source, int):
            return f"index {self.source}"
        return str(self.source)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of delivered frames; before the first frame, the requested size."""
        if self._shape is not None:
            return self._shape
        if self.requested_size is not None:
            return (self.requested_size[0], self.requested_size[1], 3)
        return (480, 640, 3)

    # ---------------------------------------------------------------- ThreadedCamera hooks
    def _device_path(self) -> str | int:
        """The path (Linux) or index to hand to OpenCV; raises DeviceNotFound if it is not there."""
        if isinstance(self.source, int):
            if sys.platform.startswith("linux"):
                path = f"/dev/video{self.source}"
                if not os.path.exists(path):
                    raise DeviceNotFound(
                        f"{self.describe()}: no such device ({path} does not exist); "
                        + _found_devices_hint()
                    )
                return path
            return self.source
        if not os.path.exists(self.source):
            raise DeviceNotFound(
                f"{self.describe()}: no such file or device; " + _found_devices_hint()
            )
        return self.source

    def _open_device(self) -> None:
        target = self._device_path()
        if self._is_file:
            cap = cv2.VideoCapture(target)
        elif sys.platform.startswith("linux"):
            cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            raise DeviceNotFound(
                f"{self.describe()}: the device exists but OpenCV cannot open it as a camera "
                "(is it a metadata node, or in use by another program?); " + _found_devices_hint()
            )
        if not self._is_file:
            if self.fourcc is not None:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc))
            if self.requested_size is not None:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.requested_size[1])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.requested_size[0])
            if self.requested_fps is not None:
                cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
            # Keep the driver queue short: we want the newest frame, not a backlog.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            # Bound a read on a stalled device (backends without this property ignore it).
            if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):
                cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2000)
        else:
            self._file_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        self._cap = cap
        self._next_due = time.monotonic()
        self._fps_window_start = None
        self._fps_window_frames = 0
        if not self._checked_once:
            self._checked_once = True
            self._check_reported_mode(cap)

    def _check_reported_mode(self, cap: cv2.VideoCapture) -> None:
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        log.info("%s opened: %dx%d at %.1f fps (%s backend)", self.describe(), width, height, fps,
                 cap.getBackendName())
        if self.requested_size is not None and (height, width) != self.requested_size:
            log.warning(
                "%s: requested %dx%d but the device delivers %dx%d; images keep the delivered size",
                self.describe(), self.requested_size[1], self.requested_size[0], width, height,
            )
        if self.requested_fps is not None and fps > 0 and abs(fps - self.requested_fps) > 0.5 \
                and not self._is_file:
            log.warning("%s: requested %.1f fps but the device reports %.1f fps",
                        self.describe(), self.requested_fps, fps)

    def _pace_file(self) -> bool:
        """Sleep until the next frame of a video file is due; False if asked to stop meanwhile."""
        rate = self.requested_fps or self._file_fps or 30.0
        self._next_due = max(self._next_due + 1.0 / rate, time.monotonic() - 1.0 / rate)
        wait = self._next_due - time.monotonic()
        return not (wait > 0 and self._stop.wait(wait))

    def _grab(self) -> bool:
        cap = self._cap
        if cap is None:
            return False
        if cap.grab():
            return True
        if self._is_file:  # end of the video: loop by re-opening it
            self._release_device()
            try:
                self._open_device()
            except Exception as exc:  # noqa: BLE001 - reported as the reason of the loss
                self._last_error = str(exc)
                return False
            return self._cap is not None and self._cap.grab()
        return False

    def _read_frame(self) -> tuple[np.ndarray, float] | None:
        if self._is_file and not self._pace_file():
            return None
        cap = self._cap if self._grab() else None  # after the grab: a video file re-opens at its end
        if cap is None:
            self._last_error = self._last_error or "no frame from the device (unplugged?)"
            return None
        t_grab = time.monotonic()
        t_capture = t_grab
        if not self._is_file:
            # V4L2 stamps buffers with CLOCK_MONOTONIC, the clock of time.monotonic(); use it if plausible.
            t_device = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if t_grab - 1.0 < t_device <= t_grab + 0.001:
                t_capture = t_device
        ok, bgr = cap.retrieve()
        if not ok or bgr is None:
            self._last_error = "the device returned an empty frame"
            return None
        if bgr.ndim == 2:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self._note_delivered(rgb.shape, t_grab)
        return rgb, t_capture

    def _note_delivered(self, shape: tuple[int, ...], now: float) -> None:
        shape3 = (int(shape[0]), int(shape[1]), 3)
        if self._shape is None:
            self._shape = shape3
            if self.requested_size is not None and shape3[:2] != self.requested_size:
                log.warning("%s: delivers %dx%d images (requested %dx%d)", self.describe(),
                            shape3[1], shape3[0], self.requested_size[1], self.requested_size[0])
        elif shape3 != self._shape:
            log.warning("%s: image size changed from %s to %s after a reconnect", self.describe(),
                        self._shape, shape3)
            self._shape = shape3
        if self._fps_window_start is None:
            self._fps_window_start, self._fps_window_frames = now, 0
            return
        self._fps_window_frames += 1
        elapsed = now - self._fps_window_start
        if elapsed >= _FPS_CHECK_AFTER_S:
            measured = self._fps_window_frames / elapsed
            first = self.delivered_fps is None
            self.delivered_fps = measured
            self._fps_window_start, self._fps_window_frames = now, 0
            if first and self.requested_fps is not None and measured < 0.9 * self.requested_fps:
                log.warning(
                    "%s: delivers %.1f fps, requested %.1f fps (low light / auto exposure or a USB "
                    "bandwidth limit; try fourcc MJPG or a lower resolution)",
                    self.describe(), measured, self.requested_fps,
                )

    def _release_device(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def probe_camera(source: int | str, timeout_s: float = 2.0) -> dict | None:
    """Open a device briefly and describe it: ``{"source", "width", "height", "fps", "backend"}``.

    Returns None when the device cannot be opened or delivers no frame (metadata nodes of UVC
    cameras, devices in use). Used by ``robokit devices``.
    """
    path = f"/dev/video{source}" if isinstance(source, int) and sys.platform.startswith("linux") else source
    if isinstance(path, str) and not os.path.exists(path):
        return None
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    cap = cv2.VideoCapture(path, api)
    try:
        if not cap.isOpened():
            return None
        deadline = time.monotonic() + timeout_s
        ok = False
        while not ok and time.monotonic() < deadline:
            ok, frame = cap.read()
        if not ok:
            return None
        return {
            "source": path,
            "width": int(frame.shape[1]),
            "height": int(frame.shape[0]),
            "fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            "backend": cap.getBackendName(),
        }
    finally:
        cap.release()
