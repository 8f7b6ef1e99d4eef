"""SpaceMouse teleop in the simulation, driven by recorded evdev event streams."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from robokit.errors import HardwareFault, UserError
from robokit.hardware.inputs import InputDeviceLost, SpaceMouseReader
from robokit.hardware.kinematics import fk, rotation_error
from robokit.hardware.sim import PandaSimEnv
from robokit.record.session import RecordConfig, RecordingSession
from robokit.record.spacemouse_teleop import SpaceMouseTeleop
from robokit.record.teleop import Observation, check_teleop_spec
from tests.record.test_record import cli

evdev = pytest.importorskip("evdev")
ecodes = evdev.ecodes
BOX = ((0.25, 0.55), (-0.25, 0.25), (0.1, 0.6))


def deflect(reader: SpaceMouseReader, **axes: int) -> None:
    """Hold the cap: ABS values by axis name (x right, y toward you, z down; rx, ry, rz)."""
    codes = {"x": ecodes.ABS_X, "y": ecodes.ABS_Y, "z": ecodes.ABS_Z, "rx": ecodes.ABS_RX,
             "ry": ecodes.ABS_RY, "rz": ecodes.ABS_RZ}
    events = [evdev.InputEvent(0, 0, ecodes.EV_ABS, codes[k], axes.get(k, 0)) for k in codes]
    reader.consume(events + [evdev.InputEvent(0, 0, ecodes.EV_SYN, ecodes.SYN_REPORT, 0)])


def click(reader: SpaceMouseReader, code: int) -> None:
    reader.consume([evdev.InputEvent(0, 0, ecodes.EV_KEY, code, 1), evdev.InputEvent(0, 0, ecodes.EV_KEY, code, 0)])


@pytest.fixture
def sim():
    with PandaSimEnv(task="pick_place", seed=1, image_size=(24, 32), camera_names=("top",)) as env:
        yield env


def run(env: PandaSimEnv, teleop: SpaceMouseTeleop, steps: int) -> np.ndarray:
    action = None
    for _ in range(steps):
        action = teleop.next_action(Observation(env.robot.read(), {}))
        env.robot.send_action(action)
        env.step()
    return action


def tcp(env: PandaSimEnv) -> tuple[np.ndarray, np.ndarray]:
    return fk(env.robot.read().qpos)


def hold(env: PandaSimEnv, teleop: SpaceMouseTeleop, steps: int, **axes: int) -> None:
    """Deflect the cap for ``steps`` control steps, release it and let the arm settle."""
    deflect(teleop.reader, **axes)
    run(env, teleop, steps)
    deflect(teleop.reader)
    run(env, teleop, 15)


def test_the_tcp_moves_the_way_the_cap_is_pushed(sim):
    reader = SpaceMouseReader("virtual SpaceMouse")
    teleop = SpaceMouseTeleop(reader, fps=30, speed=1.0, workspace=BOX)
    run(sim, teleop, 3)  # anchors at the current pose; a resting cap does not move it
    start, rot0 = tcp(sim)
    run(sim, teleop, 10)
    assert np.linalg.norm(tcp(sim)[0] - start) < 2e-3

    hold(sim, teleop, 20, y=-350)  # push away from you: +x of a robot you stand behind
    pos, rot = tcp(sim)
    moved = pos - start
    assert moved[0] > 0.05 and abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01
    assert moved[0] < 0.15 * 20 / 30 + 0.005  # never faster than max_speed, and no catching up after release
    assert np.linalg.norm(rotation_error(rot0, rot)) < 0.05  # translation only: the hand keeps its tilt

    hold(sim, teleop, 15, x=350, z=-350)  # right and lifted: -y and +z
    moved = tcp(sim)[0] - pos
    assert moved[1] < -0.03 and moved[2] > 0.03 and abs(moved[0]) < 0.01
    assert np.linalg.norm(moved) < 0.15 * 15 / 30 + 0.005  # the diagonal is no faster than max_speed

    before_rot = tcp(sim)[1]
    hold(sim, teleop, 15, rz=-350)  # twist counter-clockwise seen from above: yaw +
    turned = rotation_error(before_rot, tcp(sim)[1])
    assert turned[2] > 0.2 and abs(turned[0]) < 0.05 and abs(turned[1]) < 0.05


def test_the_target_stays_in_the_box_and_speed_scales(sim):
    reader = SpaceMouseReader()
    teleop = SpaceMouseTeleop(reader, fps=30, speed=1.0, workspace=BOX)
    run(sim, teleop, 2)
    deflect(reader, y=-350, z=-350)  # away and up, far past the box
    run(sim, teleop, 80)
    pos = tcp(sim)[0]
    low, high = np.array(BOX).T
    assert np.all(pos >= low - 0.005) and np.all(pos <= high + 0.005)
    assert pos[0] > high[0] - 0.01 and pos[2] > high[2] - 0.01  # it went to the edge
    assert "edge of the jog workspace" in teleop.status()

    teleop.handle_key("-")
    teleop.handle_key("-")  # a quarter speed
    assert teleop.speed == 0.25
    deflect(reader)
    run(sim, teleop, 15)
    before = tcp(sim)[0]
    hold(sim, teleop, 10, y=350)  # back toward you
    moved = before[0] - tcp(sim)[0][0]
    assert 0.15 * 0.25 * 10 / 30 * 0.5 < moved < 0.15 * 0.25 * 10 / 30 + 0.003


def test_buttons_toggle_the_gripper_and_send_the_save_key(sim):
    reader = SpaceMouseReader()
    teleop = SpaceMouseTeleop(reader, fps=30)
    assert run(sim, teleop, 1)[-1] == 0.0
    click(reader, ecodes.BTN_0)
    assert run(sim, teleop, 1)[-1] == 1.0
    click(reader, ecodes.BTN_1)
    assert teleop.poll() == ["s"] and teleop.poll() == []
    click(reader, ecodes.BTN_0)
    assert run(sim, teleop, 1)[-1] == 0.0


def test_unplugged_mid_episode_saves_the_episode_and_names_the_device(sim, tmp_path):
    reader = SpaceMouseReader("3Dconnexion SpaceMouse Compact", "/dev/input/event5")
    teleop = SpaceMouseTeleop(reader, fps=30)
    session = RecordingSession(sim.robot, sim.cameras, teleop, RecordConfig(out=tmp_path, end_frames=0),
                               sim_env=sim)
    session.prepare()
    ticks = []

    def on_tick(s: RecordingSession) -> None:
        ticks.append(s.state)
        if len(ticks) == 2:
            deflect(reader, y=-200)
            click(reader, ecodes.BTN_1)  # start recording
        if len(ticks) == 12:
            def gone():
                raise OSError(errno.ENODEV, "No such device")
                yield

            reader.consume(gone())

    with pytest.raises(InputDeviceLost) as info:
        session.run(teleop.poll, on_tick)
    message = str(info.value)
    assert isinstance(info.value, HardwareFault)
    assert "SpaceMouse '3Dconnexion SpaceMouse Compact' (/dev/input/event5)" in message
    assert "episode_0.hdf5 was saved" in message
    assert (tmp_path / "episode_0.hdf5").exists()


def test_spacemouse_is_a_teleop_choice():
    assert check_teleop_spec("spacemouse", sim=True) == ("spacemouse", "")
    assert check_teleop_spec("spacemouse:/dev/input/event5", sim=False) == ("spacemouse", "/dev/input/event5")
    with pytest.raises(UserError, match=r"spacemouse\[:DEVICE\]"):
        check_teleop_spec("joystick", sim=True)


def test_a_missing_spacemouse_is_named_before_anything_moves(monkeypatch, tmp_path):
    from robokit.errors import DeviceNotFound
    from robokit.hardware.inputs import discovery
    from robokit.record.teleop import make_teleop

    monkeypatch.setattr(discovery, "PROC_DEVICES", tmp_path / "none")
    with pytest.raises(DeviceNotFound, match="no SpaceMouse found: plug it in"):
        make_teleop("spacemouse", None, None, 30.0)


# -- the pedal in `robokit record` ---------------------------------------------------------------------


def test_pedal_options_are_checked_before_the_scene_starts(capsys, tmp_path, monkeypatch):
    from robokit.hardware.inputs import discovery

    monkeypatch.setattr(discovery, "PROC_DEVICES", tmp_path / "none")
    base = ("record", "--sim", "--teleop", "scripted", "--out", tmp_path / "out", "--image-size", "24x32")
    code, _, err = cli(capsys, *base, "--pedal-map", "KEY_A=s")
    assert code == 2 and "--pedal-map goes with --pedal DEVICE" in err
    code, _, err = cli(capsys, *base, "--pedal", "FootSwitch")
    assert code == 2 and "--pedal needs --pedal-map" in err and "KEY_A=s" in err
    code, _, err = cli(capsys, *base, "--pedal", "FootSwitch", "--pedal-map", "KEY_A=t")
    assert code == 2 and "'t' is not a key here; valid keys: s, d, r, h, q" in err
    code, _, err = cli(capsys, *base, "--pedal", "FootSwitch", "--pedal-map", "KEY_A=s")
    assert code == 2 and "no pedal named like 'FootSwitch' found" in err
    assert not (tmp_path / "out").exists()


def test_a_pedal_key_reaches_the_session_and_an_unplugged_pedal_is_said_once(capsys, tmp_path, monkeypatch):
    from robokit.hardware import inputs
    from robokit.hardware.inputs import PedalKeys, parse_key_map

    opened = []

    def fake_open_pedal(device: str, mapping: str, keys=None) -> PedalKeys:
        pedal = PedalKeys(parse_key_map(mapping, keys), "PCsensor FootSwitch", "/dev/input/event6")

        def stream():  # the quit pedal, then the cable is pulled
            yield evdev.InputEvent(0, 0, ecodes.EV_KEY, ecodes.KEY_C, 1)
            raise OSError(errno.ENODEV, "No such device")

        pedal.consume(stream())
        opened.append((device, keys))
        return pedal

    monkeypatch.setattr(inputs, "open_pedal", fake_open_pedal)
    code, out, err = cli(capsys, "record", "--sim", "--teleop", "scripted", "--episodes", "3", "--out", tmp_path,
                         "--image-size", "24x32", "--pedal", "FootSwitch", "--pedal-map", "KEY_A=s,KEY_C=q")
    assert code == 0, err
    assert opened == [("FootSwitch", ["s", "d", "r", "h", "q"])]
    assert "no episode saved" in out  # q from the pedal ended the run at once
    assert (out + err).count("pedal 'PCsensor FootSwitch' (/dev/input/event6) stopped sending (unplugged)") == 1
