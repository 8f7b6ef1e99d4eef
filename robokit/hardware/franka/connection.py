"""Checks around opening a Franka session: real-time kernel, FCI reachable, the limits it reports."""

from __future__ import annotations

import os
import socket
import xml.etree.ElementTree as ET

import numpy as np

from robokit.errors import DeviceNotFound

__all__ = ["FCI_COMMAND_PORT", "check_fci_reachable", "has_realtime_kernel", "limits_from_urdf"]

#: TCP port of libfranka's command connection (the FCI).
FCI_COMMAND_PORT = 1337


def has_realtime_kernel() -> bool:
    """Whether libfranka will accept this kernel as real-time (the checks libfranka makes)."""
    try:
        with open("/sys/kernel/realtime") as fh:
            if fh.read().strip() == "1":
                return True
    except OSError:
        pass
    version = os.uname().version if hasattr(os, "uname") else ""
    return "PREEMPT_RT" in version or "PREEMPT RT" in version


def check_fci_reachable(host: str, timeout_s: float = 3.0, port: int = FCI_COMMAND_PORT) -> None:
    """Raise :class:`DeviceNotFound` (naming ``host``) unless something accepts TCP on its FCI port.

    libfranka itself waits a long time for a host that does not answer; this check fails within
    ``timeout_s``.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror:
        raise DeviceNotFound(
            f"Franka host '{host}' is not a known host name or IP address; pass --host with the robot's "
            "IP (the address you open Desk with)"
        ) from None
    except TimeoutError:
        raise DeviceNotFound(
            f"no answer from the Franka at {host} (TCP port {port}) within {timeout_s:.1f} s; check the "
            f"network cable, that this PC has an address on the robot's subnet, and `ping {host}`"
        ) from None
    except ConnectionRefusedError:
        raise DeviceNotFound(
            f"{host} refused the connection on port {port} (nothing listens there): check that --host "
            f"{host} is the robot's FCI address (the IP you open Desk with), not this PC or another machine; "
            "then that FCI is active in Desk and no other program holds the robot (franky-sim: start its "
            "server first)"
        ) from None
    except OSError as exc:
        raise DeviceNotFound(
            f"cannot reach the Franka at {host} ({exc.strerror or exc}); check the network cable and "
            f"`ping {host}`"
        ) from None


def limits_from_urdf(urdf: str, num_joints: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(q_min, q_max, dq_max) of the first ``num_joints`` revolute joints of a URDF, or None."""
    try:
        root = ET.fromstring(urdf)
    except ET.ParseError:
        return None
    rows = []
    for joint in root.iter("joint"):
        limit = joint.find("limit")
        if joint.get("type") != "revolute" or limit is None:
            continue
        try:
            rows.append(tuple(float(limit.get(key, "")) for key in ("lower", "upper", "velocity")))
        except ValueError:
            return None
        if len(rows) == num_joints:
            break
    if len(rows) != num_joints:
        return None
    table = np.array(rows)
    if not np.all(table[:, 0] < table[:, 1]):
        return None
    return table[:, 0], table[:, 1], table[:, 2]
