"""The person at the robot during `robokit deploy`: who may take over, the keys from a pedal, the
success label of each episode and the timed reset between episodes."""

from __future__ import annotations

import time
from typing import Any

from robokit.errors import UserError

__all__ = ["ask_label", "check_takeover_spec", "open_deploy_keys", "reset_countdown", "robot_takeover"]

DEPLOY_KEYS = ("q", "r", "space", "t", "y", "n")  # what a pedal may send to deploy


def check_takeover_spec(spec: str | None, sim: bool) -> tuple[str, str] | None:
    """``--takeover`` checked before anything is opened: (kind, device argument) or None."""
    if spec is None:
        return None
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    allowed = ("keyboard", "spacemouse", "scripted") if sim else ("keyboard", "spacemouse", "hand")
    if kind not in allowed:
        where = "in the simulation" if sim else "on the robot"
        hint = " (hand guiding needs the real arm)" if kind == "hand" else (
            " (the scripted expert exists in the simulation only)" if kind == "scripted" else "")
        raise UserError(f"--takeover {spec!r}: {where} choose {', '.join(allowed)}{hint}")
    return kind, arg


def robot_takeover(kind: str, arg: str, arm: Any, rate: float) -> Any:
    """The takeover of the real arm: keyboard jog, SpaceMouse, or hand guiding (Franka)."""
    from robokit.deploy.takeover import TeleopTakeover
    from robokit.record.teleop import KeyboardJog, Kinesthetic

    if kind == "keyboard":
        return TeleopTakeover(KeyboardJog(fps=rate))
    if kind == "spacemouse":
        from robokit.record.spacemouse_teleop import SpaceMouseTeleop

        return TeleopTakeover(SpaceMouseTeleop.open(arg, fps=rate))
    return TeleopTakeover(Kinesthetic(arm))


def open_deploy_keys(pedal: str | None, pedal_map: str) -> Any:
    """The pedal's keys for deploy (None without ``--pedal``); a wrong map or a missing pedal stops
    here with its message, before anything moves."""
    if pedal_map and not pedal:
        raise UserError("--pedal-map goes with --pedal DEVICE (`robokit devices` lists pedals)")
    if not pedal:
        return None
    if not pedal_map:
        raise UserError("--pedal needs --pedal-map, e.g. --pedal-map KEY_A=t,KEY_B=space,KEY_C=q "
                        "(t takeover, space pause, r reset, q stop, y / n label)")
    from robokit.hardware.inputs import open_pedal

    return open_pedal(pedal, pedal_map, DEPLOY_KEYS)


def ask_label(console: Any, keys: Any) -> bool | None:
    """Wait for ``y`` (success), ``n`` (failure) or Enter (no label) from ``keys``; None at once when
    nobody can answer (not a terminal)."""
    if not getattr(keys, "is_terminal", False):
        console.print("[yellow]no terminal to label the episode from: left unlabelled[/]")
        return None
    console.print("label the episode: [bold]y[/] success, [bold]n[/] failure, Enter: no label")
    while True:
        for key in keys.poll(0.1):
            if key in ("y", "n"):
                console.print(f"labelled {'success' if key == 'y' else 'failure'}")
                return key == "y"
            if key == "enter":
                return None


def reset_countdown(console: Any, seconds: float, keys: Any) -> bool:
    """Count ``seconds`` down while the person resets the scene; False when they pressed q."""
    end = time.monotonic() + seconds
    shown = None
    while (left := end - time.monotonic()) > 0:
        if int(left) + 1 != shown:
            shown = int(left) + 1
            console.print(f"reset the scene: next episode in {shown} s (q stops)", highlight=False)
        if "q" in keys.poll(min(0.1, left)):
            return False
    return True


class KeysWithPedal:
    """The terminal's keys and a pedal's, as one source (a context manager like the terminal's).
    A pedal that goes away is reported once through ``on_notice``; the terminal's keys go on."""

    def __init__(self, terminal: Any, pedal: Any, on_notice: Any = None) -> None:
        self.terminal, self.pedal = terminal, pedal
        self.on_notice = on_notice

    @property
    def is_terminal(self) -> bool:
        return bool(self.terminal.is_terminal) or self.pedal is not None

    def __enter__(self) -> KeysWithPedal:  # noqa: PYI034
        self.terminal.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminal.__exit__(*exc)

    def poll(self, timeout_s: float = 0.0) -> list[str]:
        keys = list(self.terminal.poll(timeout_s)) + list(self.pedal.poll())
        notice = self.pedal.take_notice()
        if notice and self.on_notice is not None:
            self.on_notice(f"[yellow]{notice}[/]")
        return keys
