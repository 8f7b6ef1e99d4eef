"""Frame grabbing and loop timing for the recorder (used by the session and the benchmark).

:class:`CameraGrabber` takes one frame per control step from each camera and keeps honest counts:

- a camera at the loop's rate never gives the same frame twice nor skips one, even when its frames
  arrive at almost the same instant as the loop ticks, or a step runs late: each step stores the
  newest frame captured at or before its scheduled tick, taken from the few frames the camera
  buffers (a naive "take the newest frame" jitters between skipping and repeating frames), and
  when that frame has not arrived yet the grabber waits up to half a period for it;
- ``dropped`` counts frames the episode needed and does not have, i.e. holes in its image time
  series: a stored frame captured more than one step period (for a camera slower than the loop, one
  frame period) after the previous stored one (the loop fell behind by more than the camera
  buffers, or the device lost frames). ``skipped`` counts frames a camera faster than the loop
  captured that no step needed (15 Hz steps on a 30 fps camera skip one per step by design);
  ``repeated`` counts steps that had to reuse a frame (the camera is slower than the loop, or stalled);
- a camera that stops delivering raises :class:`~robokit.errors.HardwareFault` naming it, after
  ``stall_timeout_s`` without a new frame (a brief stall repeats the last frame and is counted).

:class:`RateLoop` paces a loop at a fixed rate on the monotonic clock, counting overruns, and can
phase-lock its ticks to a camera (:meth:`RateLoop.follow`): a camera free-runs on its own crystal,
so a fixed timer drifts against it (a 30 fps camera 0.01 % fast gives one frame more than there are
steps every ~5 minutes, which would have to be dropped) and may tick right on top of its frames.
Locked, the ticks fall half a frame period after the camera's frames and keep its rate.
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
    skipped: int = 0
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

    def grab(self, tick: float | None = None) -> dict[str, Frame]:
        """The frame of every camera for this step.

        ``tick`` is the step's scheduled time (what :meth:`RateLoop.wait` returns). With it, each
        camera gives the newest unused frame captured at or before the tick, so a step that runs a
        few milliseconds late stores the frame it would have stored on time rather than a newer one
        (which would skip a frame); without it (a simulator), the newest unused frame. Where no
        unused frame is there yet, a second pass waits for the next one (half a period in total at
        most), so that waiting for one camera never delays reading another.
        """
        start = time.monotonic()
        deadline = start + 0.5 * self.period
        frames = {name: self._pick(name, cam, start, tick) for name, cam in self.cameras.items()}
        for name, cam in self.cameras.items():
            wait = getattr(cam, "wait_frame", None)
            last = self._last[name]
            if wait is None or last is None or frames[name] is not None:
                continue
            try:
                # With the time used up (waiting for other cameras) still take what arrived meanwhile.
                frames[name] = wait(newer_than=last.index, timeout_s=max(deadline - time.monotonic(), 0.0))
            except StaleFrame:
                pass
            except HardwareFault as exc:
                raise HardwareFault(f"{_describe(cam, name)} failed: {exc}") from exc
        return {name: self._account(name, self.cameras[name], frames[name]) for name in self.cameras}

    def _pick(self, name: str, cam: Camera, now: float, tick: float | None) -> Frame | None:
        """This step's frame among the camera's unused ones, or None when it has none (yet)."""
        last = self._last[name]
        try:
            unused = cam.frames_after(last.index if last is not None else -1, self.max_age_s)
        except StaleFrame as exc:
            if last is None or now - self._last_new_t[name] > self.stall_timeout_s:
                raise HardwareFault(f"{_describe(cam, name)} stopped delivering frames ({exc}); "
                                    "check its cable and connection") from exc
            return None  # a brief stall: the last frame is repeated and counted
        except HardwareFault as exc:
            raise HardwareFault(f"{_describe(cam, name)} failed: {exc}") from exc
        if not unused:
            return None
        if tick is not None:
            due = [f for f in unused if f.t_capture <= tick]
            return due[-1] if due else unused[0]
        return unused[-1]

    def _account(self, name: str, cam: Camera, frame: Frame | None) -> Frame:
        stats, last = self.stats[name], self._last[name]
        now = time.monotonic()
        if frame is None:  # no new frame: repeat the last
            if last is None:
                raise HardwareFault(f"{_describe(cam, name)} has delivered no frame yet; check its cable "
                                    "and connection")
            frame = last
        if last is not None and frame.index <= last.index:
            stats.repeated += 1
            if now - self._last_new_t[name] > self.stall_timeout_s:
                raise HardwareFault(f"{_describe(cam, name)} delivered no new frame for "
                                    f"{now - self._last_new_t[name]:.1f} s; check its cable and connection")
        else:
            if last is not None:
                lost = self._lost_between(last, frame)
                stats.dropped += lost
                stats.skipped += frame.index - last.index - 1 - lost
            stats.new_frames += 1
            stats._recent.append(frame.t_capture)
            self._last_new_t[name] = now
        stats.frames += 1
        self._last[name] = frame
        return frame

    def _lost_between(self, last: Frame, frame: Frame) -> int:
        """Frames the episode needed between two consecutive stored frames and does not have.

        The gap in capture time is measured in steps, or in the camera's frame periods when it is
        slower than the loop (its frame period then being the time per index between the two
        frames); a gap of about one step is no loss, however many frames the camera captured in it.
        Without usable timestamps every frame missing from the numbering counts as lost.
        """
        gap = frame.index - last.index
        elapsed = frame.t_capture - last.t_capture
        if elapsed <= 0:
            return gap - 1
        interval = max(self.period, elapsed / gap)
        return min(gap - 1, max(0, round(elapsed / interval) - 1))


def _describe(cam: Camera, name: str) -> str:
    describe = getattr(cam, "describe", None)
    return describe() if callable(describe) else f"camera '{name}'"


class RateLoop:
    """Fixed-rate pacing: :meth:`wait` sleeps until the next tick of a ``1/fps`` grid.

    A tick that starts more than one period late counts as an overrun, and the grid moves on rather
    than trying to catch up with a burst of ticks. :meth:`follow` nudges the grid so that ticks
    fall half a frame period after a reference camera's frames (see the module docs).

    Args:
        fps: ticks per second.
        lock_gain: share of the phase error corrected per tick by :meth:`follow` once locked (0.05:
            a camera's timestamp jitter moves the ticks by only 5 % of it). The first correction
            after the frame period is known is whole, so the ticks sit at the target phase
            ~0.3 s after the camera starts rather than settling over seconds.
    """

    #: Frames of the reference camera that :meth:`follow` uses to measure its frame period.
    PERIOD_WINDOW = 60

    def __init__(self, fps: float, lock_gain: float = 0.05) -> None:
        self.period = 1.0 / float(fps)
        self.lock_gain = float(lock_gain)
        self.overruns = 0
        self.ticks = 0
        #: Whether the last :meth:`follow` call steered the grid (False until the camera's frame
        #: period is known, and whenever it is not a whole fraction of the tick period).
        self.locked = False
        self._next = time.monotonic()
        self._tick = self._next
        self._frames: collections.deque[tuple[int, float]] = collections.deque(maxlen=self.PERIOD_WINDOW)
        self._phase_set = False  # whether the whole first correction was made

    def restart(self, at: float | None = None) -> None:
        """Start the grid afresh: the next tick is at ``at`` (``time.monotonic()`` clock) or now.

        The phase to a followed camera is then taken afresh, with a whole correction.
        """
        self._next = time.monotonic() if at is None else float(at)
        self._phase_set = False

    def wait(self) -> float:
        """Sleep until the next tick; return its scheduled time."""
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
        elif now - self._next > self.period:
            self.overruns += 1
            self._next = now
        tick = self._tick = self._next
        self._next += self.period
        self.ticks += 1
        return tick

    def follow(self, frame: Frame) -> None:
        """Steer the next ticks towards half a frame period after ``frame``'s capture time.

        Call once per step with the reference camera's frame of that step (repeated frames are
        ignored). Locks only when the tick period is a whole multiple of the camera's frame period
        (within 2 %; measured from the last frames' timestamps), e.g. 30 Hz steps on a 30 fps camera
        or 15 Hz steps on it; otherwise the grid stays a plain fixed-rate timer.
        """
        if self._frames and frame.index <= self._frames[-1][0]:
            return
        if self._frames and frame.t_capture - self._frames[-1][1] > 1.0:
            self._frames.clear()  # a stall or reconnect: measure the period afresh
            self._phase_set = False
        self._frames.append((frame.index, frame.t_capture))
        self.locked = False
        if len(self._frames) < 8:
            return
        (i0, t0), (i1, t1) = self._frames[0], self._frames[-1]
        frame_period = (t1 - t0) / (i1 - i0)
        if not frame_period > 0:
            return
        multiple = self.period / frame_period
        if round(multiple) < 1 or abs(multiple - round(multiple)) > 0.02:
            return
        self.locked = True
        # Phase error in [-P/2, P/2) for frame period P: > 0 when the tick came later after the frame than wanted.
        error = (self._tick - frame.t_capture) % frame_period - frame_period / 2
        self._next -= self.lock_gain * error if self._phase_set else error
        self._phase_set = True
