"""3Dconnexion SpaceMouse through python-evdev: the latest 6-DoF twist and the button presses.

Why evdev: the kernel's HID driver already turns every 3Dconnexion model into an evdev node with
six axes and ``BTN_0``/``BTN_1`` (more buttons on the Pro models), so python-evdev — a maintained
binding to the kernel's own interface, shipped by the distributions — reads all of them with no
daemon and no vendor tables. pyspacemouse needs hidapi + easyhid and a per-model table of
HID report layouts; libspnav (``spnav``) needs the spacenavd daemon running, which then grabs the
device for itself.

Axes, as the driver reports them (device frame, right-handed): ``x`` right, ``y`` toward you,
``z`` down, and the rotations about them (``roll`` = tilt about x, ``pitch`` = tilt about y,
``yaw`` = twist about z). Older kernels send ``EV_REL`` events, newer ones ``EV_ABS``; both carry
the cap's current displacement (about ±350 at full deflection). The kernel drops ``EV_REL``
events of value 0, so a released cap in relative mode sends nothing: an axis with no relative
event for ``rel_timeout_s`` reads 0 (the device repeats its report every few milliseconds while
the cap is held).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robokit.errors import ConfigError
from robokit.hardware.inputs.discovery import find_input_device
from robokit.hardware.inputs.events import (
    EV_ABS,
    EV_KEY,
    EV_REL,
    EV_SYN,
    SYN_DROPPED,
    EventReader,
    open_event_device,
)

__all__ = ["AXES", "SpaceMouseConfig", "SpaceMouseReader", "open_spacemouse"]

AXES = ("x", "y", "z", "roll", "pitch", "yaw")
BTN_0 = 0x100
#: What the two buttons of the common models are called in robokit.
BUTTON_NAMES = {BTN_0: "left", BTN_0 + 1: "right"}


@dataclass(frozen=True)
class SpaceMouseConfig:
    """How raw displacements become a normalised twist.

    ``full_scale``: the raw value of full deflection (used where the device does not report its
    range); ``deadzone``: the fraction of full scale below which an axis reads 0 (the cap never
    rests exactly at 0); ``signs`` and ``scales``: per axis, in :data:`AXES` order, applied after
    the deadzone (the result is clipped to -1..1).
    """

    deadzone: float = 0.1
    full_scale: float = 350.0
    signs: tuple[float, ...] = (1.0,) * 6
    scales: tuple[float, ...] = (1.0,) * 6
    rel_timeout_s: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.deadzone < 1.0:
            raise ConfigError(f"SpaceMouse deadzone {self.deadzone}: give a fraction in [0, 1)")
        if not self.full_scale > 0:
            raise ConfigError(f"SpaceMouse full scale {self.full_scale}: give a positive raw value")
        if len(self.signs) != 6 or any(s not in (1, -1) for s in self.signs):
            raise ConfigError(f"SpaceMouse signs {self.signs}: give six values of 1 or -1 ({', '.join(AXES)})")
        if len(self.scales) != 6 or any(not (s >= 0 and np.isfinite(s)) for s in self.scales):
            raise ConfigError(f"SpaceMouse scales {self.scales}: give six finite values >= 0 ({', '.join(AXES)})")
        if not self.rel_timeout_s > 0:
            raise ConfigError(f"SpaceMouse rel_timeout_s {self.rel_timeout_s}: give a positive time")


class SpaceMouseReader(EventReader):
    """The latest twist and the button edges of one SpaceMouse (see the module docs).

    Feed it events with :meth:`consume` (recorded streams) or :meth:`start` (the device, on a
    thread); read :meth:`twist` and :meth:`take_edges` from the control loop; :meth:`check`
    raises :class:`~robokit.hardware.inputs.events.InputDeviceLost` once the device is gone.
    ``full_scale`` (per axis) overrides the config's where the device reports its range.
    """

    what = "SpaceMouse"

    def __init__(self, name: str = "", path: str = "", config: SpaceMouseConfig | None = None,
                 full_scale: tuple[float, ...] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name, path)
        self.config = config or SpaceMouseConfig()
        scale = full_scale if full_scale is not None else (self.config.full_scale,) * 6
        self._full_scale = np.array([s if s > 0 else self.config.full_scale for s in scale], dtype=float)
        self._clock = clock
        self._raw = np.zeros(6)
        self._rel_time = np.full(6, -np.inf)  # last relative event per axis (absolute axes: never)
        self._held: set[str] = set()
        self._edges: deque[tuple[str, bool]] = deque(maxlen=64)

    def _handle(self, event: Any) -> None:
        kind, code, value = event.type, event.code, event.value
        if kind in (EV_ABS, EV_REL) and 0 <= code < 6:
            self._raw[code] = value
            self._rel_time[code] = self._clock() if kind == EV_REL else -np.inf
        elif kind == EV_KEY:
            name = BUTTON_NAMES.get(code, f"button {code - BTN_0}" if code >= BTN_0 else f"key {code}")
            if value == 1 and name not in self._held:
                self._held.add(name)
                self._edges.append((name, True))
            elif value == 0 and name in self._held:
                self._held.discard(name)
                self._edges.append((name, False))
        elif kind == EV_SYN and code == SYN_DROPPED:
            self._resync()

    def _resync(self) -> None:
        """After the kernel dropped events, read the absolute axes' current values from the device."""
        if self._device is None:
            return
        for code in range(6):
            if self._rel_time[code] == -np.inf:
                try:
                    self._raw[code] = self._device.absinfo(code).value
                except (OSError, KeyError, TypeError):
                    pass  # a relative axis: its next report restates it

    def _on_lost(self) -> None:
        self._raw[:] = 0.0  # a vanished device commands no motion
        self._held.clear()

    def raw(self) -> np.ndarray:
        """The latest raw displacements (:data:`AXES` order), stale relative axes as 0."""
        with self._lock:
            raw = self._raw.copy()
            stale = self._clock() - self._rel_time > self.config.rel_timeout_s
            raw[stale & np.isfinite(self._rel_time)] = 0.0
        return raw

    def twist(self) -> np.ndarray:
        """The latest twist (6,), each axis in -1..1 after deadzone, sign and scale (:data:`AXES` order)."""
        cfg = self.config
        value = np.clip(self.raw() / self._full_scale, -1.0, 1.0)
        magnitude = np.maximum(np.abs(value) - cfg.deadzone, 0.0) / (1.0 - cfg.deadzone)
        value = np.sign(value) * magnitude * np.asarray(cfg.signs) * np.asarray(cfg.scales)
        return np.clip(value, -1.0, 1.0)

    def take_edges(self) -> list[tuple[str, bool]]:
        """Button changes since the last call, oldest first: ``(button, pressed)``."""
        with self._lock:
            edges = list(self._edges)
            self._edges.clear()
        return edges

    @property
    def held(self) -> set[str]:
        """The buttons held down now."""
        with self._lock:
            return set(self._held)


def open_spacemouse(spec: str = "", config: SpaceMouseConfig | None = None) -> SpaceMouseReader:
    """Open the SpaceMouse ``spec`` names (a /dev/input path or part of its name; empty: the first found)
    and start reading it. Raises a :class:`~robokit.errors.UserError` saying what to do when it is
    missing, unreadable or held by another program."""
    info = find_input_device(spec, "spacemouse", "SpaceMouse")
    device = open_event_device(info, "SpaceMouse")
    ranges: list[float] = [0.0] * 6
    try:
        for code, absinfo in device.capabilities(absinfo=True).get(EV_ABS, []):
            if 0 <= code < 6:
                ranges[code] = float(max(abs(absinfo.min), abs(absinfo.max)))
    except (OSError, TypeError, ValueError):
        pass  # no range reported: the config's full scale applies
    reader = SpaceMouseReader(info.name, info.path, config, full_scale=tuple(ranges))
    reader.start(device)
    return reader
