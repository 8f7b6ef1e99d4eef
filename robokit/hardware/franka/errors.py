"""franky / frankx / libfranka exceptions as robokit errors that say how to recover."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from robokit.errors import ConfigError, HardwareFault, ReflexStop, RobokitError

__all__ = ["REALTIME_HINT", "guard", "is_preemption", "translate_error"]

#: What to do when libfranka finds no real-time kernel.
REALTIME_HINT = (
    "this machine has no real-time kernel (or may not use real-time scheduling), which libfranka needs "
    "to drive a real robot safely. Install a PREEMPT_RT kernel and give your user rtprio (see "
    "docs/hardware.md), or pass `--realtime ignore` (`--realtime-kernel ignore` for `robokit deploy`, "
    "whose `--realtime` means wall-clock pacing) for franky-sim and non-RT test machines "
    "(control may jitter and trigger reflexes on real hardware)"
)


def translate_error(exc: BaseException, host: str, action: str) -> RobokitError:
    """Map a franky/frankx/libfranka exception to a robokit error with the recovery step.

    ``action`` says what robokit was doing ("streaming a joint target"); it goes into the message.
    """
    name = type(exc).__name__
    text = " ".join(str(exc).split()) or name  # libfranka's messages span lines; the CLI prints one
    where = f"the Franka at {host}"
    if name == "RealtimeException":
        return ConfigError(f"{where}: {text}: {REALTIME_HINT}")
    if name == "NetworkException":
        return HardwareFault(
            f"lost the connection to {where} while {action} ({text}). Check the network cable and "
            "that FCI is still active in Desk, then restart the command."
        )
    if name == "IncompatibleVersionException":
        return HardwareFault(
            f"{where} runs a system version this libfranka does not speak ({text}). The PyPI franky "
            "wheel targets recent firmware (FR3); a Panda needs franky built for its libfranka version "
            "(see docs/hardware.md)."
        )
    if name in ("ControlException", "TorqueSignalTimeoutException"):
        kind = ReflexStop if "reflex" in text.lower() else HardwareFault
        return kind(
            f"{where} stopped with a reflex/control error while {action} ({text}). Move the arm clear of "
            "whatever it touched (guide it by hand if needed), release the user stop, then reconnect: "
            "robokit runs the automatic error recovery on open (or call FrankaRobot.recover())."
        )
    if name in ("CommandException", "InvalidOperationException", "GripperException"):
        return HardwareFault(
            f"{where} rejected a command while {action} ({text}). Check in Desk that the joints are "
            "unlocked, FCI is active and the user stop is released, then retry."
        )
    if name == "InvalidMotionTypeException":
        return HardwareFault(
            f"{where}: another kind of motion is still running while {action} ({text}); call stop() "
            "first (kinesthetic mode must be switched off before streaming targets)."
        )
    return HardwareFault(f"{where} failed while {action}: {name}: {text}. Check Desk for errors and reconnect.")


@contextmanager
def guard(host: str, action: str) -> Iterator[None]:
    """Re-raise anything franky raises inside the block as :func:`translate_error` gives it."""
    try:
        yield
    except RobokitError:
        raise
    except Exception as exc:  # franky raises its own exception classes (not RobokitError)
        raise translate_error(exc, host, action) from exc


def is_preemption(exc: BaseException) -> bool:
    """franky reports a motion replaced by stop() or by a new motion as an error; it is not one."""
    return "preempted" in str(exc).lower()
