"""Hands-free keys: a foot pedal or a presenter clicker (any evdev device that sends keys) mapped to
robokit's key names, and :class:`MergedKeys` to read it beside the terminal.

    pedal = open_pedal("/dev/input/by-id/usb-PCsensor_FootSwitch-event-kbd", "KEY_A=s,KEY_B=d,KEY_C=q")
    keys = MergedKeys(terminal_keys, pedal)
    for key in keys.poll(): ...               # never blocks
    for note in keys.take_notices(): ...       # e.g. "the pedal ... stopped sending (unplugged)"

The pedal is grabbed (read exclusively), so its letters do not also reach the terminal or the desktop.
A key is emitted when it goes down; auto-repeat and release are ignored, so holding a pedal is
one press. A pedal unplugged mid-episode does not stop anything: :meth:`PedalKeys.poll` returns
no more keys and :meth:`PedalKeys.take_notice` gives the message to show, once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection
from typing import Any, Protocol

from robokit.errors import ConfigError
from robokit.hardware.inputs.discovery import find_input_device
from robokit.hardware.inputs.events import EV_KEY, EventReader, import_evdev, open_event_device

__all__ = ["SPECIAL_KEYS", "KeySource", "MergedKeys", "PedalKeys", "open_pedal", "parse_key_map"]

#: The names robokit gives non-character keys (as the terminal key reader returns them).
SPECIAL_KEYS = ("up", "down", "left", "right", "pageup", "pagedown", "space", "enter", "esc", "backspace")
EXAMPLE_MAP = "KEY_A=s,KEY_B=d,KEY_C=q"


class KeySource(Protocol):
    """Anything with a non-blocking ``poll() -> list[str]`` of robokit key names."""

    def poll(self) -> list[str]: ...


def _evdev_key_codes() -> dict[str, int]:
    evdev = import_evdev()
    return {name: code for name, code in evdev.ecodes.ecodes.items() if name.startswith(("KEY_", "BTN_"))}


def _code_names(codes: Collection[int]) -> list[str]:
    """evdev's names of key ``codes`` (the first alias of each)."""
    evdev = import_evdev()
    names = []
    for code in sorted(codes):
        name = evdev.ecodes.KEY.get(code) or evdev.ecodes.BTN.get(code) or f"code {code}"
        names.append(name[0] if isinstance(name, (list, tuple)) else name)
    return names


def parse_key_map(mapping: str, keys: Collection[str] | None = None) -> dict[int, str]:
    """``"KEY_A=s,KEY_B=d"`` -> ``{30: "s", 48: "d"}`` (evdev key code -> robokit key name).

    ``keys``: the robokit keys the consumer answers to; ``None`` accepts any single character and
    :data:`SPECIAL_KEYS`. Raises :class:`~robokit.errors.ConfigError` naming the valid choices.
    """
    pairs = [p.strip() for p in (mapping or "").split(",") if p.strip()]
    if not pairs:
        raise ConfigError(f"--pedal-map is empty: give pedal key = robokit key pairs, e.g. {EXAMPLE_MAP}")
    codes = _evdev_key_codes()
    result: dict[int, str] = {}
    for pair in pairs:
        source, sep, target = (s.strip() for s in pair.partition("="))
        if not sep or not source or not target:
            raise ConfigError(f"--pedal-map entry {pair!r}: write PEDAL_KEY=ROBOKIT_KEY, e.g. {EXAMPLE_MAP}")
        code = codes.get(source.upper())
        if code is None:
            raise ConfigError(f"--pedal-map: {source!r} is not an evdev key name; use names such as KEY_A, "
                              "KEY_PAGEDOWN, KEY_F5 or BTN_LEFT (`robokit devices` lists pedals; "
                              "`python -m evdev.evtest` shows what each pedal sends)")
        target = target if len(target) == 1 else target.lower()
        if keys is not None and target not in keys:
            raise ConfigError(f"--pedal-map: {target!r} is not a key here; valid keys: {', '.join(keys)}")
        if keys is None and not (len(target) == 1 and target.isprintable()) and target not in SPECIAL_KEYS:
            raise ConfigError(f"--pedal-map: {target!r} is not a robokit key; give one character or one of "
                              f"{', '.join(SPECIAL_KEYS)}")
        if code in result:
            raise ConfigError(f"--pedal-map maps {source} twice; give each pedal key once")
        result[code] = target
    return result


class PedalKeys(EventReader):
    """Key presses of a pedal, as robokit key names (``mapping``: evdev code -> name); see the module docs."""

    what = "pedal"

    def __init__(self, mapping: dict[int, str], name: str = "", path: str = "") -> None:
        super().__init__(name, path)
        self.mapping = dict(mapping)
        self._keys: deque[str] = deque(maxlen=256)
        self._ready = threading.Condition(self._lock)
        self._noticed = False

    def _handle(self, event: Any) -> None:
        if event.type == EV_KEY and event.value == 1 and event.code in self.mapping:
            self._keys.append(self.mapping[event.code])
            self._ready.notify_all()

    def poll(self, timeout_s: float = 0.0) -> list[str]:
        """Keys pressed since the last call (waits at most ``timeout_s`` for the first); none once lost."""
        with self._lock:
            if not self._keys and timeout_s > 0 and self.error is None:
                self._ready.wait(timeout_s)
            keys = list(self._keys)
            self._keys.clear()
        return keys

    def take_notice(self) -> str | None:
        """The message that the pedal went away, the first time it is asked for after that; else None."""
        if self.error is None or self._noticed:
            return None
        self._noticed = True
        return f"{self.error}; recording goes on with the terminal keys"

    def __enter__(self) -> PedalKeys:  # noqa: PYI034
        return self


def open_pedal(device: str, mapping: str, keys: Collection[str] | None = None) -> PedalKeys:
    """Open the key device ``device`` (a /dev/input path or part of its name) with ``--pedal-map`` ``mapping``
    and start reading it.

    ``keys``: the robokit keys the caller answers to (see :func:`parse_key_map`). The map is checked
    before the device is opened, then against the keys the device can send. Raises a
    :class:`~robokit.errors.UserError` (or :class:`~robokit.errors.ConfigError`) saying what to do.
    """
    codes = parse_key_map(mapping, keys)
    info = find_input_device(device, "keys", "pedal")
    handle = open_event_device(info, "pedal")
    try:
        can_send = set(handle.capabilities(absinfo=False).get(EV_KEY, []))
        missing = [code for code in codes if code not in can_send]
        if missing and can_send:
            raise ConfigError(f"--pedal-map: the pedal {info.name!r} does not send {', '.join(_code_names(missing))}; "
                              f"it sends {', '.join(_code_names(can_send)[:40])}")
    except BaseException:
        handle.close()
        raise
    pedal = PedalKeys(codes, info.name, info.path)
    pedal.start(handle)
    return pedal


class MergedKeys:
    """Several key sources read as one: :meth:`poll` returns their keys in source order."""

    def __init__(self, *sources: KeySource | None) -> None:
        self.sources = [s for s in sources if s is not None]

    def poll(self, timeout_s: float = 0.0) -> list[str]:
        """Every source's keys since the last call (never blocks; ``timeout_s`` is accepted and ignored)."""
        keys: list[str] = []
        for source in self.sources:
            keys.extend(source.poll())
        return keys

    def take_notices(self) -> list[str]:
        """Messages the sources have for the user (a pedal unplugged), each once."""
        notes = []
        for source in self.sources:
            take = getattr(source, "take_notice", None)
            note = take() if take is not None else None
            if note:
                notes.append(note)
        return notes
