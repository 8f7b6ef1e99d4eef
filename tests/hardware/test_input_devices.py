"""SpaceMouse and pedal readers on recorded event streams, device discovery, and a virtual uinput device
where the kernel allows one."""

from __future__ import annotations

import errno
import os
import sys
import time

import numpy as np
import pytest

from robokit.errors import ConfigError, DeviceNotFound, HardwareFault, UserError
from robokit.hardware.inputs import (
    InputDeviceLost,
    MergedKeys,
    PedalKeys,
    SpaceMouseConfig,
    SpaceMouseReader,
    discovery,
    list_input_devices,
    open_pedal,
    parse_key_map,
)

evdev = pytest.importorskip("evdev")
ecodes = evdev.ecodes

SPACEMOUSE_ABS = """I: Bus=0003 Vendor=256f Product=c635 Version=0110
N: Name="3Dconnexion SpaceMouse Compact"
P: Phys=usb-0000:00:14.0-1/input0
H: Handlers=event5
B: PROP=0
B: EV=1b
B: KEY=3 0 0 0 0
B: ABS=3f
B: MSC=10
"""
SPACENAVIGATOR_REL = """I: Bus=0003 Vendor=046d Product=c626 Version=0111
N: Name="3Dconnexion SpaceNavigator"
H: Handlers=event9
B: EV=17
B: KEY=3 0 0 0 0
B: REL=3f
"""
FOOT_SWITCH = """I: Bus=0003 Vendor=3553 Product=b001 Version=0110
N: Name="PCsensor FootSwitch Keyboard"
H: Handlers=sysrq kbd leds event6
B: EV=120013
B: KEY=1400040000000
"""
MOUSE = """I: Bus=0003 Vendor=046d Product=c077 Version=0111
N: Name="Logitech USB Optical Mouse"
H: Handlers=mouse0 event3
B: EV=17
B: KEY=1f0000 0 0 0 0
B: REL=903
"""


def ev(kind: int, code: int, value: int, t: float = 0.0):
    """One event as the device yields it."""
    return evdev.InputEvent(int(t), int((t % 1) * 1e6), kind, code, value)


def syn():
    return ev(ecodes.EV_SYN, ecodes.SYN_REPORT, 0)


def push(axes: dict[int, int], kind: int = ecodes.EV_ABS) -> list:
    return [ev(kind, code, value) for code, value in axes.items()] + [syn()]


def unplugged(events):
    """A device stream that ends as a pulled cable does."""
    yield from events
    raise OSError(errno.ENODEV, "No such device")


# -- SpaceMouse ---------------------------------------------------------------------------------------
def test_deadzone_and_normalisation():
    reader = SpaceMouseReader("3Dconnexion SpaceMouse Compact", "/dev/input/event5",
                              SpaceMouseConfig(deadzone=0.1, full_scale=350))
    reader.consume(push({ecodes.ABS_X: 20, ecodes.ABS_Y: -30, ecodes.ABS_RZ: 10}))  # a resting cap's noise
    assert np.all(reader.twist() == 0.0)
    reader.consume(push({ecodes.ABS_X: 350, ecodes.ABS_Y: -175, ecodes.ABS_Z: 900, ecodes.ABS_RZ: -35}))
    twist = reader.twist()
    assert twist[0] == pytest.approx(1.0)
    assert twist[1] == pytest.approx(-(0.5 - 0.1) / 0.9)  # continuous at the deadzone's edge
    assert twist[2] == 1.0  # beyond full scale: clipped
    assert twist[5] == 0.0 and twist.shape == (6,)
    reader.consume(push({ecodes.ABS_X: 0, ecodes.ABS_Y: 0, ecodes.ABS_Z: 0}))  # released
    assert np.all(reader.twist() == 0.0)


def test_per_axis_sign_scale_and_the_device_range():
    config = SpaceMouseConfig(deadzone=0.0, signs=(1, -1, 1, 1, 1, -1), scales=(0.5, 1, 1, 1, 1, 2))
    reader = SpaceMouseReader(config=config, full_scale=(500, 500, 0, 500, 500, 500))  # 0: config's 350
    reader.consume(push({ecodes.ABS_X: 500, ecodes.ABS_Y: 250, ecodes.ABS_Z: 175, ecodes.ABS_RZ: 200}))
    assert reader.twist() == pytest.approx([0.5, -0.5, 0.5, 0.0, 0.0, -0.8])
    for bad in ({"deadzone": 1.0}, {"signs": (1, 2, 1, 1, 1, 1)}, {"scales": (1, 1)}, {"full_scale": 0}):
        with pytest.raises(ConfigError):
            SpaceMouseConfig(**bad)


def test_relative_axes_fall_back_to_zero_when_the_reports_stop():
    now = [100.0]
    reader = SpaceMouseReader(config=SpaceMouseConfig(deadzone=0.0, rel_timeout_s=0.1), clock=lambda: now[0])
    reader.consume(push({ecodes.REL_X: 175, ecodes.REL_RZ: -350}, kind=ecodes.EV_REL))
    assert reader.twist()[[0, 5]] == pytest.approx([0.5, -1.0])
    now[0] += 0.05
    assert reader.twist()[0] == pytest.approx(0.5)  # still held: the device repeats within the timeout
    now[0] += 0.1  # released: the kernel drops zero-valued relative events, nothing more arrives
    assert np.all(reader.twist() == 0.0)


def test_button_edges_ignore_repeats_and_report_press_and_release():
    reader = SpaceMouseReader()
    reader.consume([ev(ecodes.EV_KEY, ecodes.BTN_0, 1), syn(), ev(ecodes.EV_KEY, ecodes.BTN_0, 2), syn(),
                    ev(ecodes.EV_KEY, ecodes.BTN_1, 1), syn()])
    assert reader.held == {"left", "right"}
    reader.consume([ev(ecodes.EV_KEY, ecodes.BTN_0, 0), syn(), ev(ecodes.EV_KEY, ecodes.BTN_0 + 4, 1)])
    assert reader.take_edges() == [("left", True), ("right", True), ("left", False), ("button 4", True)]
    assert reader.take_edges() == []


def test_a_spacemouse_unplugged_mid_stream_stops_moving_and_names_itself():
    reader = SpaceMouseReader("3Dconnexion SpaceMouse Compact", "/dev/input/event5")
    reader.consume(unplugged(push({ecodes.ABS_X: 300}) + [ev(ecodes.EV_KEY, ecodes.BTN_0, 1)]))
    assert reader.lost and np.all(reader.twist() == 0.0) and reader.held == set()
    with pytest.raises(InputDeviceLost) as info:
        reader.check()
    message = str(info.value)
    assert isinstance(info.value, HardwareFault)
    assert "SpaceMouse '3Dconnexion SpaceMouse Compact' (/dev/input/event5)" in message
    assert "unplugged" in message and "plug it in again" in message and "\n" not in message


# -- pedal ---------------------------------------------------------------------------------------------
def test_pedal_map_parsing_names_what_is_valid():
    assert parse_key_map("KEY_A=s, key_b=d,KEY_PAGEDOWN=Space") == {
        ecodes.KEY_A: "s", ecodes.KEY_B: "d", ecodes.KEY_PAGEDOWN: "space"}
    with pytest.raises(ConfigError, match=r"'KEY_NOPE' is not an evdev key name.*KEY_A"):
        parse_key_map("KEY_NOPE=s")
    with pytest.raises(ConfigError, match=r"'x' is not a key here; valid keys: s, d, q"):
        parse_key_map("KEY_A=x", keys=("s", "d", "q"))
    with pytest.raises(ConfigError, match="not a robokit key.*pagedown"):
        parse_key_map("KEY_A=stop")
    for bad in ("", "KEY_A", "KEY_A=s,KEY_A=d", "=s"):
        with pytest.raises(ConfigError):
            parse_key_map(bad)


def test_pedal_keys_are_presses_only_and_merge_with_other_sources():
    pedal = PedalKeys(parse_key_map("KEY_A=s,KEY_B=d"), "PCsensor FootSwitch", "/dev/input/event6")
    pedal.consume([ev(ecodes.EV_KEY, ecodes.KEY_A, 1), syn(), ev(ecodes.EV_KEY, ecodes.KEY_A, 2), syn(),
                   ev(ecodes.EV_KEY, ecodes.KEY_A, 0), syn(), ev(ecodes.EV_KEY, ecodes.KEY_C, 1), syn(),
                   ev(ecodes.EV_MSC, ecodes.MSC_SCAN, 458756), ev(ecodes.EV_KEY, ecodes.KEY_B, 1), syn()])
    assert pedal.poll() == ["s", "d"] and pedal.poll() == []

    class Terminal:
        def __init__(self) -> None:
            self.keys = ["q"]

        def poll(self) -> list[str]:
            keys, self.keys = self.keys, []
            return keys

    merged = MergedKeys(Terminal(), None, pedal)
    pedal.consume([ev(ecodes.EV_KEY, ecodes.KEY_B, 1)])
    assert merged.poll() == ["q", "d"] and merged.take_notices() == []


def test_a_pedal_unplugged_mid_episode_goes_quiet_with_one_notice():
    pedal = PedalKeys(parse_key_map("KEY_A=s"), "PCsensor FootSwitch", "/dev/input/event6")
    merged = MergedKeys(pedal)
    pedal.consume(unplugged([ev(ecodes.EV_KEY, ecodes.KEY_A, 1)]))
    assert merged.poll() == ["s"]  # what came before the cable was pulled still counts
    assert merged.poll() == [] and pedal.lost
    notes = merged.take_notices()
    assert len(notes) == 1 and "pedal 'PCsensor FootSwitch' (/dev/input/event6)" in notes[0]
    assert "recording goes on" in notes[0]
    assert merged.take_notices() == []  # said once


def test_a_missing_pedal_or_spacemouse_is_named(monkeypatch, tmp_path):
    proc = tmp_path / "devices"
    proc.write_text(MOUSE)
    monkeypatch.setattr(discovery, "PROC_DEVICES", proc)
    with pytest.raises(DeviceNotFound, match="no pedal named like 'footswitch' found.*connected: none|"
                                             "no pedal named like 'footswitch' found"):
        open_pedal("footswitch", "KEY_A=s")
    with pytest.raises(DeviceNotFound, match=r"pedal /dev/input/event99: no such device"):
        open_pedal("/dev/input/event99", "KEY_A=s")
    with pytest.raises(ConfigError):  # the map is checked before any device is looked for
        open_pedal("/dev/input/event99", "KEY_A=nope", keys=("s",))
    from robokit.hardware.inputs import open_spacemouse

    with pytest.raises(DeviceNotFound, match="no SpaceMouse found: plug it in"):
        open_spacemouse()


def test_without_evdev_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "evdev", None)
    with pytest.raises(UserError, match=r"pip install 'robokit\[teleop\]'"):
        parse_key_map("KEY_A=s")


# -- discovery -----------------------------------------------------------------------------------------
def test_discovery_finds_spacemice_and_key_devices_but_not_mice(tmp_path, monkeypatch):
    proc = tmp_path / "devices"
    proc.write_text(f"{MOUSE}\n{FOOT_SWITCH}\n{SPACENAVIGATOR_REL}\n{SPACEMOUSE_ABS}")
    (tmp_path / "by-id").mkdir()
    (tmp_path / "by-id" / "usb-PCsensor_FootSwitch-event-kbd").symlink_to(tmp_path / "event6")
    found = list_input_devices(proc, tmp_path)
    assert [(d.name, d.kind) for d in found] == [
        ("3Dconnexion SpaceMouse Compact", "spacemouse"), ("3Dconnexion SpaceNavigator", "spacemouse"),
        ("PCsensor FootSwitch Keyboard", "keys")]
    assert found[0].path == str(tmp_path / "event5") and (found[0].vendor, found[0].product) == (0x256F, 0xC635)
    assert found[2].stable_path.endswith("usb-PCsensor_FootSwitch-event-kbd")
    assert list_input_devices(tmp_path / "missing", tmp_path) == []
    monkeypatch.setattr(discovery, "PROC_DEVICES", proc)
    assert discovery.find_input_device("", "spacemouse", "SpaceMouse").name == "3Dconnexion SpaceMouse Compact"
    assert discovery.find_input_device("footswitch", "keys", "pedal").kind == "keys"
    with pytest.raises(UserError, match="matches several devices"):
        discovery.find_input_device("3dconnexion", "spacemouse", "SpaceMouse")


def test_devices_command_lists_input_devices_or_says_none(tmp_path, monkeypatch, capsys):
    from robokit.commands import devices_cmd

    monkeypatch.setattr(discovery, "PROC_DEVICES", tmp_path / "missing")
    devices_cmd._list_input_devices()
    assert "no SpaceMouse or key input devices found" in capsys.readouterr().out
    from rich.console import Console

    monkeypatch.setattr(devices_cmd, "console", Console(width=400))
    proc = tmp_path / "devices"
    proc.write_text(f"{FOOT_SWITCH}\n{SPACEMOUSE_ABS}")
    monkeypatch.setattr(discovery, "PROC_DEVICES", proc)
    monkeypatch.setattr(discovery, "DEV_INPUT", tmp_path)
    (tmp_path / "event5").write_text("")
    devices_cmd._list_input_devices()  # the foot switch's node is missing here: not readable
    out = capsys.readouterr().out
    assert "3Dconnexion SpaceMouse Compact" in out and "PCsensor FootSwitch" in out
    assert f"--teleop spacemouse:{tmp_path / 'event5'}" in out and "no permission to read" in out
    assert "input' group" in out and "udev rule" in out


# -- a virtual device through the kernel (where /dev/uinput is writable) -------------------------------
def _uinput_or_skip():
    if not os.path.exists("/dev/uinput"):
        pytest.skip("no /dev/uinput on this machine: the kernel cannot make a virtual input device here")
    if not os.access("/dev/uinput", os.W_OK):
        pytest.skip("/dev/uinput is not writable by this user (needs root or the input group)")


def test_a_virtual_pedal_through_uinput():
    _uinput_or_skip()
    with evdev.UInput({ecodes.EV_KEY: [ecodes.KEY_A, ecodes.KEY_B]}, name="robokit test FootSwitch") as ui:
        time.sleep(0.3)  # udev creates the node
        with pytest.raises(ConfigError, match="does not send KEY_C"):
            open_pedal(ui.device.path, "KEY_C=q")
        with open_pedal(ui.device.path, "KEY_A=s,KEY_B=d") as pedal:
            for code in (ecodes.KEY_A, ecodes.KEY_B):
                ui.write(ecodes.EV_KEY, code, 1)
                ui.write(ecodes.EV_KEY, code, 0)
                ui.syn()
            keys: list[str] = []
            deadline = time.monotonic() + 3.0
            while len(keys) < 2 and time.monotonic() < deadline:
                keys += pedal.poll(timeout_s=0.1)
            assert keys == ["s", "d"]
