"""Input devices for the person at the robot: a 3Dconnexion SpaceMouse and hands-free keys (foot
pedal, presenter clicker), read through python-evdev (the ``teleop`` extra, imported lazily: robokit
works without it), and their discovery.
"""

from robokit.hardware.inputs.discovery import InputDeviceInfo, list_input_devices, permission_hint
from robokit.hardware.inputs.events import InputDeviceLost
from robokit.hardware.inputs.pedal import MergedKeys, PedalKeys, open_pedal, parse_key_map
from robokit.hardware.inputs.spacemouse import SpaceMouseConfig, SpaceMouseReader, open_spacemouse

__all__ = [
    "InputDeviceInfo",
    "InputDeviceLost",
    "MergedKeys",
    "PedalKeys",
    "SpaceMouseConfig",
    "SpaceMouseReader",
    "list_input_devices",
    "open_pedal",
    "open_spacemouse",
    "parse_key_map",
    "permission_hint",
]
