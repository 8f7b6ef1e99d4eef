"""Frame grabbing and loop timing for the recorder (used by the session and the benchmark).

:class:`CameraGrabber` takes one frame per control step from each camera and keeps honest counts:

- a camera at the loop's rate never gives the same frame twice nor skips one, even when its frames
  arrive at almost the same instant as the loop ticks (a naive "take the newest frame" then jitters
  between skipping and repeating frames): if the newest frame was already used at the previous
  step, the grabber waits up to half a period for the next one;
- ``dropped`` counts frames the camera captured that no step stored (the loop fell behind);
  ``repeated`` counts steps that had to reuse a frame (the camera is slower than the loop);
- a camera that stops delivering raises :class:`~robokit.errors.HardwareFault` naming it, after
  ``stall_timeout_s`` without a new frame (a brief stall repeats the last frame and is counted).

:class:`RateLoop` paces a loop at a fixed rate on the monotonic clock, counting overruns.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from robokit.errors import HardwareFault, StaleFrame
from robokit.hardware.base import Camera, Frame

__all__ = ["CameraGrabber", "CameraStats", "RateLoop"]


@dataclass
class CameraStats:
    """Counts of one camera since the last :meth:`CameraGrabber.reset_stats`."""

    frames: int = 0  # steps served
    new_frames: int = 0
    repeated: int = 0
    dropped: int = 0
    _recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=90))

    def rate(self) -> float:
        """New frames per second over the last ~3 s (0 when unknown)."""
        if len(self._recent) < 2:
            return 0.0
        span = self._recent[-1] - self._recent[0]
        return (len(self._recent) - 1) / span if span > 0 else 0.0


class CameraGrabber:
    """One frame per step from each camera; see the module docs for the counting rules."""

    def __init__(self, cameras: Mapping[str, Camera], fps: float, stall_timeout_s: float = 1.0,
                 max_age_s: float | None = None) -> None:
        self.cameras = dict(cameras)
        self.period = 1.0 / float(fps)
        self.stall_timeout_s = float(stall_timeout_s)
        # A frame may be up to a couple of periods old (camera latency); never older than the stall limit.
        self.max_age_s = float(max_age_s if max_age_s is not None else max(3 * self.period, 0.25))
        self.stats = {name: CameraStats() for name in self.cameras}
        self._last: dict[str, Frame | None] = {name: None for name in self.cameras}
        self._last_new_t: dict[str, float] = {name: time.monotonic() for name in self.cameras}

    def reset_stats(self) -> None:
        """Start counting afresh (e.g. at the start of an episode); the last frames are kept."""
        now = time.monotonic()
        self.stats = {name: CameraStats() for name in self.cameras}
        for name in self.cameras:
            self._last_new_t[name] = now

    def forget(self) -> None:
        """Forget the frames used so far (after a simulator reset restarts the frame numbers)."""
        now = time.monotonic()
        for name in self.cameras:
            self._last[name] = None
            self._last_new_t[name] = now

    def grab(self) -> dict[str, Frame]:
        """The frame of every camera for this step.

        Two passes: first the newest frame of every camera, then, for the cameras whose newest frame
        was already used, a wait for the next one (half a period in total at most), so that waiting
        for one camera never delays reading another (which would make it skip a frame).
        """
        start = time.monotonic()
        deadline = start + 0.5 * self.period
        frames: dict[str, Frame | None] = {}
        for name, cam in self.cameras.items():
            frames[name] = self._read(name, cam, start)
        for name, cam in self.cameras.items():
            wait = getattr(cam, "wait_frame", None)
            frame, last = frames[name], self._last[name]
            if wait is None or last is None or (frame is not None and frame.index > last.index):
                continue
            try:
                # With the time used up (waiting for other cameras) still take what arrived meanwhile.
                frames[name] = wait(newer_than=last.index, timeout_s=max(deadline - time.monotonic(), 0.0))
            except StaleFrame:
                pass
            except HardwareFault as exc:
                raise HardwareFault(f"{_describe(cam, name)} failed: {exc}") from exc
        return {name: self._account(name, self.cameras[name], frames[name]) for name in self.cameras}

    def _read(self, name: str, cam: Camera, now: float) -> Frame | None:
        try:
            return cam.read_latest(self.max_age_s)
        except StaleFrame as exc:
            if self._last[name] is None or now - self._last_new_t[name] > self.stall_timeout_s:
                raise HardwareFault(f"{_describe(cam, name)} stopped delivering frames ({exc}); "
                                    "check its cable and connection") from exc
            return None  # a brief stall: the last frame is repeated and counted
        except HardwareFault as exc:
            raise HardwareFault(f"{_describe(cam, name)} failed: {exc}") from exc

    def _account(self, name: str, cam: Camera, frame: Frame | None) -> Frame:  # type: ignore[return]
        stats, last = self.stats[name], self._last[name]
        now = time.monotonic()
        if frame is None:  # a brief stall (_read raises when there never was a frame)
            frame = last
        if last is not None and frame.index <= last.index:
            stats.repeated += 1
            if now - self._last_new_t[name] > self.stall_timeout_s:
                raise HardwareFault(f"{_describe(cam, name)} delivered no new frame for "
                                    f"{now - self._last_new_t[name]:.1f} s; check its cable and connection")
        else:
            if last is not None:
                stats.dropped += max(0, frame.index - last.index - 1)
            stats.new_frames += 1
            stats._recent.append(frame.t_capture)
            self._last_new_t[name] = now
        stats.frames += 1
        self._last[name] = frame
        return frame


def _describe(cam: Camera, name: str) -> str:
    describe = getattr(cam, "describe", None)
    return describe() if callable(describe) else f"camera '{name}'"


class RateLoop:
    """Fixed-rate pacing: :meth:`wait` sleeps until the next tick of a ``1/fps`` grid.

    A tick that starts more than one period late counts as an overrun, and the grid moves on rather
    than trying to catch up with a burst of ticks.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / float(fps)
        self.overruns = 0
        self.ticks = 0
        self._next = time.monotonic()

    def restart(self) -> None:
        self._next = time.monotonic()

    def wait(self) -> float:
        """Sleep until the next tick; return its scheduled time."""
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
        elif now - self._next > self.period:
            self.overruns += 1
            self._next = now
        tick = self._next
        self._next += self.period
        self.ticks += 1
        return tick
