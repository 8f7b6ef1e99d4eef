"""A camera that draws a moving test pattern: for tests and benchmarks without MuJoCo or a device.

Frame ``k`` after (re)connecting is captured at exactly ``t0 + k / fps`` (``time.monotonic()``
clock) and shows :func:`synthetic_pattern` of its frame index, so a test can check which frame it
got and how old it is. Like a camera driver it queues up to :data:`DRIVER_QUEUE_FRAMES` frames
for a capture thread that runs late; beyond that frames are lost and leave a gap in the indices.
:meth:`SyntheticCamera.disconnect` / :meth:`SyntheticCamera.reconnect` (or
``fail_after=N``) simulate an unplug for tests of what uses cameras.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from robokit.errors import ConfigError, HardwareFault
from robokit.hardware.threaded_camera import ThreadedCamera

_GRADIENT_CACHE: dict[tuple[int, int], np.ndarray] = {}

#: Frames a camera driver queues for a reader that runs late (V4L2 drivers usually hold 4).
DRIVER_QUEUE_FRAMES = 4


def synthetic_pattern(index: int, height: int, width: int) -> np.ndarray:
    """The RGB uint8 (height, width, 3) test image of frame ``index``.

    A colour gradient that scrolls 4 px per frame to the right, with the frame index written in the
    top-left corner (white on black). Deterministic: the same index gives the same image.
    """
    key = (height, width)
    base = _GRADIENT_CACHE.get(key)
    if base is None:
        x = np.arange(2 * width, dtype=np.float32) % width / max(width - 1, 1)
        y = np.arange(height, dtype=np.float32)[:, None] / max(height - 1, 1)
        red = np.broadcast_to(x[None, :], (height, 2 * width))
        green = np.broadcast_to(y, (height, 2 * width))
        blue = 1.0 - 0.5 * (red + green)
        base = (np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)
        _GRADIENT_CACHE[key] = base
    shift = (index * 4) % width
    image = np.ascontiguousarray(base[:, width - shift : 2 * width - shift])
    scale = max(height / 240.0, 0.3)
    text = str(index)
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(image, (0, 0), (tw + 4, th + baseline + 4), (0, 0, 0), thickness=-1)
    cv2.putText(image, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


class SyntheticCamera(ThreadedCamera):
    """A threaded camera that renders :func:`synthetic_pattern` at ``fps`` with exact timestamps.

    Args:
        name: camera name (used in messages and episode files).
        size: (height, width) of the images.
        fps: frames per second (the capture thread sleeps to this schedule).
        fail_after: simulate an unplug after this many frames (None: never); :meth:`reconnect` ends it.
        reconnect_delay_s: first retry delay of the reconnect loop (small, so tests run fast).
    """

    def __init__(
        self,
        name: str = "synthetic",
        size: tuple[int, int] = (240, 320),
        fps: float = 30.0,
        *,
        fail_after: int | None = None,
        reconnect_delay_s: float = 0.02,
        max_reconnect_delay_s: float = 0.2,
    ) -> None:
        height, width = (int(v) for v in size)
        if height < 8 or width < 8:
            raise ConfigError(f"synthetic camera '{name}': size {size} is too small (at least 8x8)")
        if not fps > 0:
            raise ConfigError(f"synthetic camera '{name}': fps must be > 0, got {fps}")
        if fail_after is not None and fail_after < 0:
            raise ConfigError(f"synthetic camera '{name}': fail_after must be >= 0, got {fail_after}")
        super().__init__(
            name, reconnect_delay_s=reconnect_delay_s, max_reconnect_delay_s=max_reconnect_delay_s
        )
        self._size = (height, width)
        self.fps = float(fps)
        self.fail_after = fail_after
        self._unplugged = threading.Event()
        self._t0 = 0.0
        self._k = 0

    def describe(self) -> str:
        return f"camera '{self.name}' (synthetic)"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self._size[0], self._size[1], 3)

    def disconnect(self) -> None:
        """Simulate pulling the cable: frames stop and :meth:`read_latest` raises HardwareFault."""
        self._unplugged.set()

    def reconnect(self) -> None:
        """Simulate plugging it back in (also ends a ``fail_after`` unplug); frames resume shortly."""
        self.fail_after = None
        self._unplugged.clear()

    # ---------------------------------------------------------------- ThreadedCamera hooks
    def _open_device(self) -> None:
        if self._unplugged.is_set():
            raise HardwareFault(f"{self.describe()} is unplugged")
        self._t0 = time.monotonic()
        self._k = 0

    def _read_frame(self) -> tuple[np.ndarray, float, int] | None:
        if self.fail_after is not None and self.frames_received >= self.fail_after:
            self._unplugged.set()
        if self._unplugged.is_set():
            self._last_error = "simulated unplug"
            return None
        now = time.monotonic()
        due = int((now - self._t0) * self.fps)  # the newest frame whose capture time has passed
        skipped = 0
        if due - self._k >= DRIVER_QUEUE_FRAMES:
            # Fell behind by more than a driver queue holds (busy CPU): the oldest frames are lost,
            # as on a real camera, and show as a gap in the frame indices. A shorter delay is no
            # loss: the queued frames come out late, with their true capture times.
            skipped = due - self._k - (DRIVER_QUEUE_FRAMES - 1)
            self._k += skipped
        t_capture = self._t0 + self._k / self.fps
        wait = t_capture - now
        if wait > 0 and self._stop.wait(wait):
            return None
        if self._unplugged.is_set():
            self._last_error = "simulated unplug"
            return None
        self._k += 1
        return synthetic_pattern(self.frames_received + skipped, *self._size), t_capture, skipped

    def _release_device(self) -> None:
        pass
