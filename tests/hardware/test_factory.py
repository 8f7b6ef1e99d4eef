"""Hardware factory and the shared CLI hardware options: camera specs, robot choice, sim wiring."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robokit.commands.common import parse_image_size
from robokit.commands.hardware_options import HardwareOptions
from robokit.errors import UserError
from robokit.hardware.factory import (
    CameraSpec,
    make_cameras,
    make_robot,
    open_cameras,
    parse_camera_spec,
    parse_camera_specs,
)
from robokit.hardware.franka import FrankaRobot
from robokit.hardware.opencv_camera import OpenCVCamera
from robokit.hardware.synthetic import SyntheticCamera


@pytest.mark.parametrize(
    ("text", "kind", "source"),
    [
        ("top=0", "opencv", 0),
        ("wrist=/dev/video2", "opencv", "/dev/video2"),
        ("top=synthetic", "synthetic", None),
        (" side = SYNTHETIC ", "synthetic", None),
        ("top=sim", "sim", "top"),
        ("overview=sim:wrist", "sim", "wrist"),
        ("top=clips/table.mp4", "opencv", "clips/table.mp4"),
    ],
)
def test_camera_specs_parse(text, kind, source):
    spec = parse_camera_spec(text)
    assert (spec.kind, spec.source) == (kind, source)
    assert spec.name == text.split("=")[0].strip()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("top", "'top'"),
        ("=0", "'=0'"),
        ("top=", "'top='"),
        ("top=webcam", "'webcam'"),
        ("top=-1", "'-1'"),
        ("top=sim:", "'sim:'"),
        ("top=http://cam/stream", "'http://cam/stream'"),
    ],
)
def test_bad_camera_spec_names_the_spec_and_the_accepted_forms(text, named):
    with pytest.raises(UserError) as info:
        parse_camera_spec(text)
    message = str(info.value)
    assert named in message
    assert "NAME=INDEX" in message and "synthetic" in message and "/dev/videoN" in message


def test_bad_camera_name_is_rejected():
    with pytest.raises(UserError, match="camera name '1st'"):
        parse_camera_spec("1st=0")


def test_duplicate_camera_names_are_rejected():
    with pytest.raises(UserError, match="'top' is given twice"):
        parse_camera_specs(["top=0", "top=synthetic"])


def test_make_cameras_builds_named_cameras_not_yet_open():
    cameras = make_cameras(["top=synthetic", "wrist=/dev/video97"], size=(24, 32), fps=15)
    assert list(cameras) == ["top", "wrist"]
    assert isinstance(cameras["top"], SyntheticCamera) and cameras["top"].shape == (24, 32, 3)
    assert isinstance(cameras["wrist"], OpenCVCamera) and not cameras["wrist"].connected
    with open_cameras({"top": cameras["top"]}):
        assert cameras["top"].read_latest(max_age_s=1.0).image.shape == (24, 32, 3)
    assert not cameras["top"].connected


def test_open_cameras_closes_the_opened_ones_when_one_is_missing():
    cameras = make_cameras(["top=synthetic", "wrist=/dev/video97"], size=(24, 32))
    with pytest.raises(UserError, match="/dev/video97"), open_cameras(cameras):
        pass
    assert not cameras["top"].connected


def test_sim_camera_without_sim_is_an_error():
    with pytest.raises(UserError, match="--sim"):
        make_cameras(["top=sim"])


def test_make_robot_needs_a_host_and_a_known_robot():
    with pytest.raises(UserError, match="--host"):
        make_robot(None, robot="franka", host=None)
    with pytest.raises(UserError, match="unknown robot 'ur5'"):
        make_robot(None, robot="ur5", host="10.0.0.2")
    arm = make_robot(None, robot="franka", host="10.0.0.2", realtime="ignore", relative_dynamics_factor=0.2)
    assert isinstance(arm, FrankaRobot) and not arm.connected  # nothing touched the network yet
    assert arm.realtime == "ignore" and arm.relative_dynamics_factor == 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sim": True, "host": "10.0.0.2"}, "exclude each other"),
        ({}, "--sim for the simulation"),
        ({"host": "10.0.0.2", "realtime": "sometimes"}, "--realtime"),
        ({"host": "10.0.0.2", "robot": "ur5"}, "--robot"),
        ({"host": "10.0.0.2", "camera": ["top=sim"]}, "add --sim"),
        ({"sim": True, "camera": ["top=nonsense"]}, "'nonsense'"),
        ({"host": "10.0.0.2", "dynamics": 1.5}, "--dynamics"),
    ],
)
def test_hardware_options_reject_bad_combinations(kwargs, message):
    with pytest.raises(UserError, match=message):
        HardwareOptions.from_cli(**kwargs)


def test_image_size_option_parses_height_by_width():
    assert parse_image_size("240x320") == (240, 320)
    assert parse_image_size(" 48 X 64 ") == (48, 64)
    for bad in ("big", "240", "240x", "4x4", "-1x20"):
        with pytest.raises(UserError, match="image size"):
            parse_image_size(bad)


def test_hardware_options_build_the_simulation_with_the_cameras_asked_for():
    hw = HardwareOptions.from_cli(sim=True, camera=["top=sim", "extra=synthetic"])
    assert hw.sim_camera_names() == ("top",)
    env = hw.make_sim_env(image_size=(48, 64))
    try:
        assert hw.make_robot(env) is env.robot
        cameras = hw.make_cameras(env, size=(48, 64), fps=30)
        assert list(cameras) == ["top", "extra"]
        assert cameras["top"] is env.cameras["top"]
        assert isinstance(cameras["extra"], SyntheticCamera)
        assert make_cameras([], sim_env=env) == env.cameras  # no specs: every sim camera
        with pytest.raises(UserError, match="no camera 'wrist'.*top"):
            make_cameras([CameraSpec("w", "sim", "wrist", "w=sim:wrist")], sim_env=env)
    finally:
        env.close()


def test_hardware_options_build_a_franka_with_the_dynamics_factor_given():
    hw = HardwareOptions.from_cli(host="10.0.0.2", realtime="ignore", dynamics=0.3)
    arm = hw.make_robot()
    assert isinstance(arm, FrankaRobot) and arm.host == "10.0.0.2" and arm.realtime == "ignore"
    assert arm.relative_dynamics_factor == 0.3
    assert HardwareOptions.from_cli(host="10.0.0.2").make_robot().relative_dynamics_factor == 0.1


def test_hardware_options_default_to_both_sim_cameras():
    assert HardwareOptions.from_cli(sim=True).sim_camera_names() == ("top", "wrist")
    assert HardwareOptions.from_cli(host="10.0.0.2").make_sim_env() is None


def test_devices_command_reports_a_bad_camera_spec_with_exit_code_2():
    out = subprocess.run(
        [sys.executable, "-m", "robokit.cli", "devices", "--camera", "top=webcam"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 2
    assert "'webcam'" in out.stderr and "NAME=INDEX" in out.stderr


def test_devices_command_checks_synthetic_cameras():
    out = subprocess.run(
        [sys.executable, "-m", "robokit.cli", "devices", "--camera", "top=synthetic", "--height", "24",
         "--width", "32", "--seconds", "0.3"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "top=synthetic" in out.stdout and "32x24" in out.stdout
