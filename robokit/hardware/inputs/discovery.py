"""Finding input devices: 3Dconnexion SpaceMice and devices that send keys (foot pedals, clickers).

Discovery reads the kernel's table ``/proc/bus/input/devices`` rather than opening every
``/dev/input/event*`` node: it needs neither python-evdev nor read permission on the nodes, so
``robokit devices`` can list a SpaceMouse the user is not yet allowed to read and say so.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from robokit.errors import DeviceNotFound, UserError

__all__ = ["InputDeviceInfo", "check_readable", "find_input_device", "list_input_devices", "permission_hint"]

PROC_DEVICES = Path("/proc/bus/input/devices")
DEV_INPUT = Path("/dev/input")

EV_KEY, EV_REL, EV_ABS = 1, 2, 3
#: 3Dconnexion's own USB vendor id; older models were sold under Logitech's (0x046d).
VENDOR_3DCONNEXION = 0x256F
VENDOR_LOGITECH = 0x046D
#: 3Dconnexion products under Logitech's vendor id (Logitech's own mice share that id).
LOGITECH_SPACEMICE = frozenset({0xC603, 0xC605, 0xC606, 0xC621, 0xC623, 0xC625, 0xC626, 0xC627, 0xC628,
                                0xC629, 0xC62B, 0xC640})
_SPACEMOUSE_NAME = re.compile(r"3dconnexion|spacemouse|space ?navigator|space ?explorer|space ?pilot|"
                              r"spaceball|space ?traveler", re.IGNORECASE)
# Keyboard-range key codes (KEY_ESC .. KEY_MICMUTE): a device with any of them sends keys; one with
# only BTN_* codes is a mouse, joystick or touchpad.
_KEYBOARD_CODES = range(1, 0x100)
_WORD_BITS = struct.calcsize("l") * 8  # the kernel prints its bitmaps in words of its `long`

PERMISSION_HINT = ("add yourself to the 'input' group (sudo usermod -aG input $USER, then log in again) or "
                   "install the udev rule in docs/record.md")


def permission_hint() -> str:
    """What to do when an input device node cannot be read."""
    return PERMISSION_HINT


@dataclass(frozen=True)
class InputDeviceInfo:
    """One input device: ``kind`` is ``spacemouse`` or ``keys``; ``path`` its event node."""

    name: str
    path: str
    kind: str
    vendor: int = 0
    product: int = 0
    #: A name that survives re-plugging (``/dev/input/by-id/...``), when udev made one.
    stable_path: str = ""
    #: Whether this process may read the node (see :func:`permission_hint` if not).
    readable: bool = True


def _bitmap(words: str) -> int:
    value = 0
    for word in words.split():
        value = (value << _WORD_BITS) | int(word, 16)
    return value


def _classify(name: str, vendor: int, product: int, bits: dict[str, int]) -> str | None:
    ev = bits.get("EV", 0)
    six_axes = any(ev >> kind & 1 and bits.get(key, 0) & 0x3F == 0x3F
                   for kind, key in ((EV_REL, "REL"), (EV_ABS, "ABS")))
    known = vendor == VENDOR_3DCONNEXION or (vendor == VENDOR_LOGITECH and product in LOGITECH_SPACEMICE)
    if six_axes and (known or _SPACEMOUSE_NAME.search(name)):
        return "spacemouse"
    keys = bits.get("KEY", 0)
    if ev >> EV_KEY & 1 and any(keys >> code & 1 for code in _KEYBOARD_CODES):
        return "keys"
    return None


def _stable_paths(root: Path) -> dict[str, str]:
    """Event node -> its /dev/input/by-id (else by-path) link, for a name that survives re-plugging."""
    found: dict[str, str] = {}
    for folder in ("by-path", "by-id"):  # by-id last: it wins where both exist
        try:
            links = sorted((root / folder).iterdir())
        except OSError:
            continue
        for link in links:
            try:
                found[str(link.resolve())] = str(link)
            except OSError:
                continue
    return found


def list_input_devices(proc: Path | None = None, root: Path | None = None) -> list[InputDeviceInfo]:
    """SpaceMice and key-sending devices the kernel knows; empty where there are none (or no Linux).

    ``proc`` and ``root`` default to the kernel's device table and ``/dev/input``.
    """
    proc = proc if proc is not None else PROC_DEVICES
    root = root if root is not None else DEV_INPUT
    try:
        text = proc.read_text(errors="replace")
    except OSError:
        return []
    stable = _stable_paths(root)
    devices = []
    for block in text.split("\n\n"):
        name, handlers, vendor, product = "", [], 0, 0
        bits: dict[str, int] = {}
        for line in block.splitlines():
            tag, _, rest = line.partition(": ")
            if tag == "I":
                fields = dict(f.split("=", 1) for f in rest.split() if "=" in f)
                vendor, product = int(fields.get("Vendor", "0"), 16), int(fields.get("Product", "0"), 16)
            elif tag == "N":
                name = rest.removeprefix("Name=").strip().strip('"')
            elif tag == "H":
                handlers = rest.removeprefix("Handlers=").split()
            elif tag == "B" and "=" in rest:
                key, _, value = rest.partition("=")
                bits[key] = _bitmap(value)
        event = next((h for h in handlers if re.fullmatch(r"event\d+", h)), None)
        kind = _classify(name, vendor, product, bits) if event else None
        if kind is None:
            continue
        path = str(root / str(event))
        devices.append(InputDeviceInfo(name=name, path=path, kind=kind, vendor=vendor, product=product,
                                       stable_path=stable.get(path, ""),
                                       readable=os.access(path, os.R_OK)))
    # SpaceMice first, then by node number.
    return sorted(devices, key=lambda d: (d.kind != "spacemouse", len(d.path), d.path))


def find_input_device(spec: str, kind: str, what: str) -> InputDeviceInfo:
    """The device ``spec`` names: an event node path, or a part of a device name (case-insensitive).

    ``spec`` empty: the first device of ``kind``. ``what`` names the device in messages ("SpaceMouse",
    "pedal"). Raises :class:`~robokit.errors.DeviceNotFound` with what was found instead.
    """
    spec = spec.strip()
    found = list_input_devices()
    if spec and (spec.startswith("/") or os.sep in spec):
        path = Path(spec)
        if not path.exists():
            raise DeviceNotFound(f"{what} {spec}: no such device; {_found_text(found, kind)}")
        real = str(path.resolve())
        for info in found:
            if info.path == real:
                return InputDeviceInfo(info.name, real, info.kind, info.vendor, info.product, info.stable_path,
                                       info.readable)
        return InputDeviceInfo(name=path.name, path=real, kind=kind, readable=os.access(real, os.R_OK))
    candidates = [d for d in found if d.kind == kind]
    if spec:
        candidates = [d for d in found if spec.lower() in d.name.lower()]
    if not candidates:
        named = f" named like {spec!r}" if spec else ""
        raise DeviceNotFound(f"no {what}{named} found: plug it in (or give its /dev/input/event* path); "
                             f"{_found_text(found, kind)}")
    if spec and len({d.name for d in candidates}) > 1:
        names = ", ".join(f"{d.name!r} ({d.path})" for d in candidates)
        raise UserError(f"{what} {spec!r} matches several devices: {names}; give more of the name or the path")
    return candidates[0]


def _found_text(found: list[InputDeviceInfo], kind: str) -> str:
    if not found:
        where = "" if PROC_DEVICES.exists() else " (this machine has no Linux input devices)"
        return f"no SpaceMouse or key input device is connected{where}"
    listed = ", ".join(f"{d.name!r} ({d.path}, {d.kind})" for d in found)
    return f"connected: {listed} (`robokit devices` lists them)"


def check_readable(info: InputDeviceInfo, what: str) -> None:
    """Raise a :class:`~robokit.errors.UserError` naming the fix when ``info`` cannot be read."""
    if not os.access(info.path, os.R_OK):
        raise UserError(f"no permission to read the {what} {info.name!r} ({info.path}): {PERMISSION_HINT}")
