"""Cameras: the synthetic pattern camera, and OpenCV cameras (missing devices, a video file as source)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from robokit.errors import DeviceNotFound, HardwareFault, StaleFrame
from robokit.hardware.opencv_camera import OpenCVCamera
from robokit.hardware.synthetic import SyntheticCamera, synthetic_pattern


def wait_for_frame(camera, deadline_s: float = 5.0, max_age_s: float = 0.5):
    """The first frame read_latest gives within the deadline (reconnects take a moment)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return camera.read_latest(max_age_s=max_age_s)
        except HardwareFault:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)


def wait_until_disconnected(camera, deadline_s: float = 5.0) -> HardwareFault:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            camera.read_latest(max_age_s=10.0)
        except StaleFrame:
            pass
        except HardwareFault as exc:
            return exc
        time.sleep(0.02)
    raise AssertionError("the camera never reported the unplug")


# ------------------------------------------------------------------------------------ synthetic
def test_synthetic_frames_show_their_index_with_exact_timestamps():
    with SyntheticCamera("top", size=(48, 64), fps=50.0) as cam:
        assert cam.shape == (48, 64, 3)
        first = cam.wait_frame(timeout_s=2.0)
        second = cam.wait_frame(newer_than=first.index, timeout_s=2.0)
    for frame in (first, second):
        assert frame.image.dtype == np.uint8 and frame.image.shape == (48, 64, 3)
        np.testing.assert_array_equal(frame.image, synthetic_pattern(frame.index, 48, 64))
        assert frame.t_receive >= frame.t_capture
    assert second.index > first.index
    frames_apart = (second.t_capture - first.t_capture) * 50.0
    assert frames_apart == pytest.approx(round(frames_apart), abs=1e-6)  # on the 1/fps grid
    assert round(frames_apart) >= 1


def test_synthetic_pattern_moves_between_frames():
    assert not np.array_equal(synthetic_pattern(1, 32, 40), synthetic_pattern(2, 32, 40))
    np.testing.assert_array_equal(synthetic_pattern(7, 32, 40), synthetic_pattern(7, 32, 40))


def test_stale_frame_raises_instead_of_returning_an_old_frame():
    with SyntheticCamera("top", size=(32, 32), fps=1.0) as cam:  # next frame only in a second
        fresh = cam.read_latest(max_age_s=5.0)
        time.sleep(0.2)
        with pytest.raises(StaleFrame, match="camera 'top'.*old"):
            cam.read_latest(max_age_s=0.05)
        assert cam.read_latest(max_age_s=5.0).index == fresh.index  # the same frame, if allowed


def test_unplug_is_a_hardware_fault_naming_the_camera_and_reconnect_resumes():
    with SyntheticCamera("wrist", size=(32, 32), fps=100.0) as cam:
        before = wait_for_frame(cam)
        cam.disconnect()
        fault = wait_until_disconnected(cam)
        assert not isinstance(fault, StaleFrame)
        assert "camera 'wrist'" in str(fault) and "disconnected" in str(fault)
        with pytest.raises(HardwareFault, match="disconnected"):
            cam.wait_frame(newer_than=before.index, timeout_s=0.2)
        cam.reconnect()
        after = wait_for_frame(cam)
        assert after.index > before.index
        assert cam.reconnects == 1 and cam.connected


def test_fail_after_simulates_an_unplug_after_n_frames():
    with SyntheticCamera("top", size=(32, 32), fps=200.0, fail_after=5) as cam:
        wait_until_disconnected(cam)
        assert cam.frames_received == 5
        cam.reconnect()
        assert wait_for_frame(cam).index >= 5


def test_reading_a_camera_that_is_not_open_is_an_error():
    cam = SyntheticCamera("top", size=(32, 32))
    with pytest.raises(HardwareFault, match="not open"):
        cam.read_latest()
    cam.close()  # closing a camera that was never opened is fine


# ------------------------------------------------------------------------------------ OpenCV
def test_missing_device_index_is_device_not_found_naming_it():
    with pytest.raises(DeviceNotFound, match=r"camera 'top' \(index 97\)"):
        OpenCVCamera("top", 97).open()


def test_missing_device_path_is_device_not_found_naming_it():
    with pytest.raises(DeviceNotFound, match="/dev/video98"):
        OpenCVCamera("wrist", "/dev/video98").open()


@pytest.fixture
def video_file(tmp_path: Path) -> Path:
    """A 10-frame MJPG clip of one BGR colour: blue 200, green 100, red 10."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG files")
    for _ in range(10):
        writer.write(np.full((48, 64, 3), (200, 100, 10), np.uint8))
    writer.release()
    return path


def test_opencv_camera_delivers_rgb_frames_from_a_video_source(video_file):
    with OpenCVCamera("top", str(video_file), fps=60.0) as cam:
        frame = wait_for_frame(cam)
        later = cam.wait_frame(newer_than=frame.index, timeout_s=2.0)
    assert frame.image.shape == (48, 64, 3) and cam.shape == (48, 64, 3)
    red, green, blue = frame.image[24, 32].astype(int)
    assert abs(red - 10) < 12 and abs(green - 100) < 12 and abs(blue - 200) < 12  # BGR -> RGB
    assert later.index > frame.index and later.t_capture >= frame.t_capture
    assert frame.t_receive >= frame.t_capture


def test_opencv_camera_reconnects_when_its_source_comes_back(video_file):
    hidden = video_file.with_suffix(".gone")
    with OpenCVCamera("top", str(video_file), fps=100.0, reconnect_delay_s=0.05,
                      max_reconnect_delay_s=0.1) as cam:
        before = wait_for_frame(cam)
        video_file.rename(hidden)  # the clip ends within 0.1 s and cannot be re-opened: "unplugged"
        fault = wait_until_disconnected(cam)
        assert "camera 'top'" in str(fault) and "disconnected" in str(fault)
        hidden.rename(video_file)
        after = wait_for_frame(cam)
        assert after.index > before.index and cam.reconnects >= 1
