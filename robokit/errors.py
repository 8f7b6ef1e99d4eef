"""Typed errors. Libraries and drivers raise these; only the CLI prints them.

The CLI maps :class:`UserError` (and subclasses) to exit code 2 with a single line that says what is
wrong and what to do next; :class:`HardwareFault` to exit code 3; anything else is a bug (exit 1).
"""

from __future__ import annotations


class RobokitError(Exception):
    """Base class of every error robokit raises on purpose."""

    exit_code = 1


class UserError(RobokitError):
    """Bad input from the user: a wrong option, a missing file, a malformed episode."""

    exit_code = 2


class ConfigError(UserError):
    """An invalid configuration value (policy config, CLI option, TOML file)."""


class DataError(UserError):
    """A dataset or episode file that cannot be used (corrupt, foreign, inconsistent)."""


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded (truncated, another policy type, newer format)."""


class DeviceNotFound(UserError):
    """A camera or robot that is not there (unknown index/path, unreachable host)."""


class HardwareFault(RobokitError):
    """The hardware refused or failed (reflex, communication loss, unplugged camera).

    The message names the device and the recovery step.
    """

    exit_code = 3


class ReflexStop(HardwareFault):
    """The robot stopped itself with a reflex (a collision, or a limit its controller enforces)."""


class StaleFrame(HardwareFault):
    """A camera has no frame younger than the requested maximum age."""


class ProtocolError(RobokitError):
    """A malformed or unexpected wire-protocol message (see ``robokit.deploy.protocol``)."""

    exit_code = 2

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


class ServerUnavailable(RobokitError):
    """The policy server did not answer within the timeout."""

    exit_code = 3
