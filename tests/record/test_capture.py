"""The recorder's frame grabbing and loop timing (robokit.record.capture).

The dropped-frame rules are checked on a camera whose frame arrivals the test controls exactly
(``ScriptedCamera``), so that "a step runs 5 ms late just as a frame arrives" happens on every run;
buffering and phase locking are checked on the threaded synthetic camera.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from robokit.errors import HardwareFault
from robokit.hardware.base import Camera, Frame
from robokit.hardware.synthetic import SyntheticCamera
from robokit.record.capture import CameraGrabber, RateLoop

FPS = 30.0
PERIOD = 1.0 / FPS


class ScriptedCamera(Camera):
    """Frames captured at ``base + k * PERIOD + phase``; :meth:`arrive_until` decides which exist yet."""

    def __init__(self, base: float, phase: float, buffer_frames: int = 4, skip: frozenset[int] = frozenset()) -> None:
        self.name = "scripted"
        self.base, self.phase, self.buffer_frames, self.skip = base, phase, buffer_frames, skip
        self.arrived: list[Frame] = []

    def arrive_until(self, t: float) -> None:
        """Deliver every frame captured up to time ``t`` (frames in ``skip`` are lost by the device)."""
        k = self.arrived[-1].index + 1 if self.arrived else 0
        while self.base + k * PERIOD + self.phase <= t:
            if k not in self.skip:
                t_capture = self.base + k * PERIOD + self.phase
                self.arrived.append(Frame(np.zeros((2, 2, 3), np.uint8), t_capture, t_capture, k))
            k += 1

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def shape(self) -> tuple[int, int, int]:
        return (2, 2, 3)

    def read_latest(self, max_age_s: float = 0.5) -> Frame:
        return self.arrived[-1]

    def frames_after(self, index: int, max_age_s: float = 0.5) -> list[Frame]:
        return [f for f in self.arrived[-self.buffer_frames:] if f.index > index]


def run_steps(camera: ScriptedCamera, ticks: list[float], lateness: list[float], tick_given: bool = True,
              step_hz: float = FPS):
    """Grab one frame per tick, each step running ``lateness`` seconds after its tick."""
    grabber = CameraGrabber({"cam": camera}, step_hz)
    indices = []
    for tick, late in zip(ticks, lateness, strict=True):
        camera.arrive_until(tick + late)
        indices.append(grabber.grab(tick if tick_given else None)["cam"].index)
    return indices, grabber.stats["cam"]


@pytest.mark.parametrize("phase_ms", [0.5, 5.0, 16.0, 32.0])
def test_a_late_step_stores_the_frame_due_at_its_tick_not_a_newer_one(phase_ms):
    # Frames arrive `phase` after each tick; every third step runs 4 ms (or 1.5 periods) late, past
    # the next frame's arrival for the small phases. Every frame is stored exactly once.
    base = time.monotonic() - 1.0
    ticks = [base + 0.5 + n * PERIOD for n in range(30)]
    lateness = [(0.004 if n % 6 == 3 else 1.5 * PERIOD) if n % 3 == 0 else 0.0002 for n in range(30)]
    indices, stats = run_steps(ScriptedCamera(base, phase_ms / 1000), ticks, lateness)
    assert np.all(np.diff(indices) == 1), indices
    assert (stats.dropped, stats.repeated) == (0, 0)


def test_taking_the_newest_frame_would_have_dropped_one():
    # The rule above matters: the naive choice (no tick) skips a frame when a step runs late.
    base = time.monotonic() - 1.0
    ticks = [base + 0.5 + n * PERIOD for n in range(10)]
    lateness = [0.004 if n == 5 else 0.0002 for n in range(10)]
    _, stats = run_steps(ScriptedCamera(base, 0.001), ticks, lateness, tick_given=False)
    assert stats.dropped == 1


def test_frames_the_device_lost_or_the_loop_fell_too_far_behind_for_count_as_dropped():
    base = time.monotonic() - 1.0
    ticks = [base + 0.5 + n * PERIOD for n in range(12)]
    indices, stats = run_steps(ScriptedCamera(base, 0.01, skip=frozenset({20})), ticks, [0.0002] * 12)
    assert stats.dropped == 1 and 20 not in indices  # a gap in the device's frame numbers

    # A step 6 periods late, with the camera buffering 4 frames: the 3 frames due at this step and
    # the next two are gone by then; every other frame is stored once (later steps wait for theirs).
    lateness = [6 * PERIOD if n == 5 else 0.0002 for n in range(12)]
    indices, stats = run_steps(ScriptedCamera(base, 0.01), ticks, lateness)
    assert stats.dropped == 3 and stats.repeated == 3
    assert sorted(set(range(indices[0], indices[-1] + 1)) - set(indices)) == [19, 20, 21]


def test_at_half_the_camera_rate_the_frames_not_needed_are_skipped_not_dropped():
    # 15 Hz steps on a 30 fps camera store every other frame by design: nothing is lost.
    base = time.monotonic() - 1.0
    ticks = [base + 0.5 + n * 2 * PERIOD for n in range(20)]
    indices, stats = run_steps(ScriptedCamera(base, 0.005), ticks, [0.0002] * 20, step_hz=FPS / 2)
    assert np.all(np.diff(indices) == 2), indices
    assert (stats.dropped, stats.skipped, stats.repeated) == (0, 19, 0)

    # The device loses frames 29-31 (30 is due at the 9th step): a hole of one step in the episode.
    indices, stats = run_steps(ScriptedCamera(base, 0.005, skip=frozenset({29, 30, 31})), ticks, [0.0002] * 20,
                               step_hz=FPS / 2)
    assert stats.dropped == 1, indices
    # Losing only a frame no step needs changes nothing.
    _, stats = run_steps(ScriptedCamera(base, 0.005, skip=frozenset({29})), ticks, [0.0002] * 20, step_hz=FPS / 2)
    assert (stats.dropped, stats.skipped) == (0, 19)


def test_a_camera_slower_than_the_loop_repeats_frames_and_drops_none():
    base = time.monotonic() - 1.0
    ticks = [base + 0.5 + n * PERIOD / 2 for n in range(20)]  # 60 Hz steps, 30 fps camera
    indices, stats = run_steps(ScriptedCamera(base, 0.005), ticks, [0.0002] * 20, step_hz=2 * FPS)
    assert (stats.dropped, stats.skipped) == (0, 0)
    assert stats.repeated == 20 - stats.new_frames >= 9 and sorted(set(indices)) == list(range(indices[0], indices[-1] + 1))


def test_threaded_camera_buffers_the_frames_a_late_reader_has_not_used():
    with SyntheticCamera("top", size=(16, 16), fps=50.0) as cam:
        first = cam.wait_frame(timeout_s=2.0)
        time.sleep(0.1)  # ~5 frames arrive; the camera keeps the last 4
        unused = cam.frames_after(first.index)
        assert len(unused) >= 2
        assert [f.index for f in unused] == list(range(unused[0].index, unused[0].index + len(unused)))
        assert cam.wait_frame(newer_than=unused[0].index - 1).index == unused[0].index  # the oldest unused
        assert cam.frames_after(unused[-1].index) == []


class RecordingSyntheticCamera(SyntheticCamera):
    """Remembers the index of every frame it publishes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.published: list[int] = []

    def _publish(self, image, t_capture, skipped=0) -> None:
        super()._publish(image, t_capture, skipped)
        self.published.append(self.frames_received - 1)


def test_a_synthetic_camera_that_falls_behind_its_driver_queue_leaves_a_gap_in_the_indices():
    with RecordingSyntheticCamera("top", size=(16, 16), fps=200.0) as cam:
        cam.wait_frame(timeout_s=2.0)
        with cam._cond:  # hold the lock the capture thread publishes under: it falls ~10 frames behind
            time.sleep(0.05)
        time.sleep(0.05)
    gaps = np.diff(cam.published)
    assert gaps.max() > 1 and gaps.min() == 1, cam.published


def test_rate_loop_locks_its_ticks_half_a_period_after_the_camera_frames():
    with SyntheticCamera("top", size=(16, 16), fps=FPS) as cam:
        grabber = CameraGrabber({"top": cam}, FPS)
        loop = RateLoop(FPS)
        phases = []
        for _ in range(75):
            tick = loop.wait()
            frame = grabber.grab(tick)["top"]
            loop.follow(frame)
            phases.append((tick - frame.t_capture) % PERIOD)
    assert loop.locked
    assert np.allclose(phases[-10:], PERIOD / 2, atol=0.003), np.round(np.array(phases) * 1000, 1)


def test_rate_loop_takes_the_camera_phase_as_soon_as_it_knows_the_frame_period():
    # Ticks start 1 ms before the frames (the naive rule's worst case); the first correction is whole.
    base = time.monotonic() + 0.05
    loop = RateLoop(FPS)
    loop.restart(at=base - 0.001)
    phases = []
    for k in range(12):
        tick = loop.wait()
        phases.append((tick - (base + (k - 1) * PERIOD)) % PERIOD)  # after the last frame at the tick
        loop.follow(Frame(np.zeros((1, 1, 3), np.uint8), base + (k - 1) * PERIOD, tick, k))
    assert loop.locked
    assert abs(phases[0] - (PERIOD - 0.001)) < 1e-6
    assert np.allclose(phases[9:], PERIOD / 2, atol=0.002), np.round(np.array(phases) * 1000, 2)


@pytest.mark.parametrize(("tick_hz", "locks"), [(15.0, True), (20.0, False)])
def test_rate_loop_locks_only_to_a_whole_multiple_of_the_frame_period(tick_hz, locks):
    loop = RateLoop(tick_hz)
    base = time.monotonic()
    for k in range(12):
        loop.wait()
        loop.follow(Frame(np.zeros((1, 1, 3), np.uint8), base + k * PERIOD, base + k * PERIOD, k))
    assert loop.locked is locks


def test_a_camera_that_stops_is_named_after_the_stall_timeout():
    base = time.monotonic()
    camera = ScriptedCamera(base - 1.0, 0.0)
    camera.arrive_until(base - 0.9)
    grabber = CameraGrabber({"wrist": camera}, FPS, stall_timeout_s=0.05)
    grabber.grab()
    time.sleep(0.1)
    with pytest.raises(HardwareFault, match="wrist|scripted"):
        grabber.grab()
