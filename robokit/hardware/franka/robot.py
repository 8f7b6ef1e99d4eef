"""Franka Panda / FR3 backend on `franky` (PyPI ``franky-control``); ``frankx`` as a fallback import.

How it drives the arm:

* :meth:`FrankaRobot.command` streams joint targets as asynchronous franky ``JointMotion``\\ s that
  replace each other (franky hands over to the new target mid-motion, limiting velocity,
  acceleration and jerk by ``relative_dynamics_factor``, default 0.1: conservative). It never blocks.
* Targets outside the joint limits (those the robot reports in its URDF, else the Panda limits of
  DESIGN §7, shrunk by ``limit_margin_rad``) are clamped before sending, never sent as they are;
  each clamp is counted in :attr:`FrankaRobot.clamped_commands` and logged (rate-limited).
* The gripper gets asynchronous commands only when its target changes: with ``gripper_mode="binary"``
  (default) values above 0.6 grasp (with ``gripper_force_n``), below 0.4 open, in between keep the
  last command; with ``"continuous"`` the fingers move to ``0.08 * (1 - g)`` metres.
  :meth:`~FrankaRobot.read` reports the measured width normalised (0 open .. 1 closed).
* :meth:`FrankaRobot.set_kinesthetic` switches to a zero-stiffness joint impedance controller (gravity
  and Coriolis compensated, soft repulsion near joint limits) so a person can guide the arm.
* franky errors become robokit errors that say what to do: reflexes and control errors ->
  :class:`~robokit.errors.HardwareFault`; an unreachable host -> :class:`~robokit.errors.DeviceNotFound`
  (checked with a short TCP connect first, because libfranka blocks for a long time on a host that
  does not answer); no real-time kernel -> :class:`~robokit.errors.ConfigError` naming
  ``--realtime ignore``.

The PyPI franky wheel is built against a recent libfranka (FR3); a Panda on older system firmware
needs franky built for its libfranka version (see docs/hardware.md). ``frankx`` (no wheels for
current Pythons) is used only when franky is not installed, with reduced features: see
:class:`_FrankxLink`.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from robokit.errors import ConfigError, DeviceNotFound, HardwareFault, RobokitError, UserError
from robokit.hardware.base import (
    GRIPPER_MAX_WIDTH_M,
    NUM_JOINTS,
    PANDA_DQ_MAX,
    PANDA_Q_MAX,
    PANDA_Q_MIN,
    PANDA_READY_POSE,
    JointLimits,
    Robot,
    RobotState,
)

log = logging.getLogger(__name__)

#: TCP port of libfranka's command connection (the FCI).
FCI_COMMAND_PORT = 1337
REALTIME_CHOICES = ("enforce", "ignore")
GRIPPER_MODES = ("binary", "continuous")
# Joint targets closer than this to the one being held are not re-sent (rad).
_SAME_TARGET_RAD = 1e-4

_RT_HINT = (
    "this machine has no real-time kernel (or may not use real-time scheduling), which libfranka needs "
    "to drive a real robot safely. Install a PREEMPT_RT kernel and give your user rtprio (see "
    "docs/hardware.md), or pass `--realtime ignore` (`--realtime-kernel ignore` for `robokit deploy`, "
    "whose `--realtime` means wall-clock pacing) for franky-sim and non-RT test machines "
    "(control may jitter and trigger reflexes on real hardware)"
)


# ---------------------------------------------------------------------------------------------- errors
def _translate(exc: BaseException, host: str, action: str) -> RobokitError:
    """Map a franky/frankx/libfranka exception to a robokit error with the recovery step."""
    name = type(exc).__name__
    text = str(exc) or name
    where = f"the Franka at {host}"
    if name == "RealtimeException":
        return ConfigError(f"{where}: {text}: {_RT_HINT}")
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
        return HardwareFault(
            f"{where} stopped with a reflex/control error while {action} ({text}). Move the arm clear of "
            "whatever it touched (guide it by hand if needed), release the user stop, then reconnect: "
            "robokit runs the automatic error recovery on connect (or call FrankaRobot.recover())."
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


def _is_preemption(exc: BaseException) -> bool:
    """franky reports a motion replaced by stop() or by a new motion as an error; it is not one."""
    return "preempted" in str(exc).lower()


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
            f"the Franka at {host} refused the connection on port {port}: unlock the joints in Desk and "
            "activate FCI, and check that no other program is connected to the robot"
        ) from None
    except OSError as exc:
        raise DeviceNotFound(
            f"cannot reach the Franka at {host} ({exc.strerror or exc}); check the network cable and "
            f"`ping {host}`"
        ) from None


def _limits_from_urdf(urdf: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(q_min, q_max, dq_max) of the first 7 revolute joints of the robot's URDF, or None."""
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
            rows.append((float(limit.get("lower")), float(limit.get("upper")), float(limit.get("velocity"))))
        except (TypeError, ValueError):
            return None
        if len(rows) == NUM_JOINTS:
            break
    if len(rows) != NUM_JOINTS:
        return None
    table = np.array(rows)
    if not np.all(table[:, 0] < table[:, 1]):
        return None
    return table[:, 0], table[:, 1], table[:, 2]


# ---------------------------------------------------------------------------------------------- links
class _FrankyLink:
    """The calls robokit makes, on franky."""

    name = "franky"
    supports_streaming = True
    supports_kinesthetic = True

    def __init__(self, franky: Any) -> None:
        self.f = franky
        self.robot: Any = None
        self.gripper: Any = None

    def connect(self, host: str, realtime: str, dynamics: float, gripper: bool) -> None:
        rt = self.f.RealtimeConfig.Enforce if realtime == "enforce" else self.f.RealtimeConfig.Ignore
        self.robot = self.f.Robot(host, relative_dynamics_factor=dynamics, realtime_config=rt)
        if gripper:
            self.gripper = self.f.Gripper(host)

    def close(self) -> None:
        self.robot = None
        self.gripper = None

    def has_errors(self) -> bool:
        return bool(self.robot.has_errors)

    def recover(self) -> bool:
        return bool(self.robot.recover_from_errors())

    def urdf(self) -> str | None:
        try:
            return self.robot.model_urdf
        except Exception:  # noqa: BLE001 - older firmware does not serve a URDF
            return None

    def q_dq(self) -> tuple[np.ndarray, np.ndarray]:
        state = self.robot.current_joint_state
        return np.asarray(state.position, dtype=float), np.asarray(state.velocity, dtype=float)

    def move_async(self, q: np.ndarray) -> None:
        # return_when_finished=False: hold the target until the next one replaces it, so the control
        # loop keeps running between commands instead of restarting every tick.
        self.robot.move(self.f.JointMotion(q, return_when_finished=False), asynchronous=True)

    def move_blocking(self, q: np.ndarray, timeout_s: float) -> bool:
        self.robot.move(self.f.JointMotion(q, return_when_finished=True), asynchronous=True)
        return bool(self.robot.join_motion(timeout=timeout_s))

    def poll(self) -> None:
        try:
            self.robot.poll_motion()
        except Exception as exc:
            if not _is_preemption(exc):  # a stop() from another thread is not a fault
                raise

    def stop(self) -> None:
        self.robot.stop()
        try:
            self.robot.join_motion(timeout=2.0)
        except Exception as exc:
            if not _is_preemption(exc):
                raise

    def start_kinesthetic(self, q: np.ndarray, damping: float, q_min: np.ndarray, q_max: np.ndarray) -> None:
        motion = self.f.JointImpedanceMotion(
            q,
            stiffness=np.zeros(NUM_JOINTS),
            damping=np.full(NUM_JOINTS, float(damping)),
            lower_joint_limits=q_min,
            upper_joint_limits=q_max,
        )
        self.robot.move(motion, asynchronous=True)

    def gripper_width(self) -> float:
        return float(self.gripper.width)

    def gripper_move(self, width: float, speed: float) -> Any:
        return self.gripper.move_async(width, speed)

    def gripper_grasp(self, speed: float, force: float) -> Any:
        # Close onto whatever is there: epsilons span the whole stroke, so any final width "succeeds"
        # and the hand keeps applying `force`.
        return self.gripper.grasp_async(0.0, speed, force, GRIPPER_MAX_WIDTH_M, GRIPPER_MAX_WIDTH_M)

    @staticmethod
    def future_done(future: Any) -> bool:
        return bool(future.wait(0.0))

    @staticmethod
    def future_wait(future: Any, timeout_s: float) -> bool:
        return bool(future.wait(timeout_s))

    @staticmethod
    def future_result(future: Any) -> bool:
        return bool(future.get())


class _FrankxLink:
    """The same calls on the older ``frankx`` (used only when franky is not installed).

    frankx cannot replace a running motion nor run a torque controller, so streaming targets and
    kinesthetic mode raise :class:`ConfigError` asking for franky; reading state, ``home()``,
    ``stop()`` and the gripper work. frankx always enforces a real-time kernel.
    """

    name = "frankx"
    supports_streaming = False
    supports_kinesthetic = False

    def __init__(self, frankx: Any) -> None:
        self.f = frankx
        self.robot: Any = None
        self.gripper: Any = None

    def connect(self, host: str, realtime: str, dynamics: float, gripper: bool) -> None:
        if realtime != "enforce":
            raise ConfigError("frankx always needs a real-time kernel; install franky-control to use "
                              "`--realtime ignore`")
        self.robot = self.f.Robot(host)
        self.robot.set_default_behavior()
        self.robot.set_dynamic_rel(dynamics)
        if gripper:
            self.gripper = self.robot.get_gripper()

    def close(self) -> None:
        self.robot = None
        self.gripper = None

    def has_errors(self) -> bool:
        return False  # frankx does not expose it; recover() is harmless when there is nothing to recover

    def recover(self) -> bool:
        return bool(self.robot.recover_from_errors())

    def urdf(self) -> str | None:
        return None

    def q_dq(self) -> tuple[np.ndarray, np.ndarray]:
        state = self.robot.read_once()
        return np.asarray(state.q, dtype=float), np.asarray(state.dq, dtype=float)

    def move_async(self, q: np.ndarray) -> None:
        raise ConfigError("streaming joint targets needs franky (frankx cannot replace a running motion): "
                          "pip install franky-control")

    def move_blocking(self, q: np.ndarray, timeout_s: float) -> bool:
        return bool(self.robot.move(self.f.JointMotion(list(map(float, q)))))

    def poll(self) -> None:
        pass

    def stop(self) -> None:
        pass  # frankx motions are blocking: nothing runs between calls

    def start_kinesthetic(self, q: np.ndarray, damping: float, q_min: np.ndarray, q_max: np.ndarray) -> None:
        raise ConfigError("kinesthetic mode needs franky's joint impedance control: pip install franky-control")

    def gripper_width(self) -> float:
        return float(self.gripper.width())

    def gripper_move(self, width: float, speed: float) -> Any:
        return _ThreadFuture(lambda: self.gripper.move(width))

    def gripper_grasp(self, speed: float, force: float) -> Any:
        return _ThreadFuture(lambda: self.gripper.clamp())

    @staticmethod
    def future_done(future: Any) -> bool:
        return future.wait(0.0)

    @staticmethod
    def future_wait(future: Any, timeout_s: float) -> bool:
        return future.wait(timeout_s)

    @staticmethod
    def future_result(future: Any) -> bool:
        return future.get()


class _ThreadFuture:
    """A blocking call run in a thread, with franky's BoolFuture interface (for the frankx link)."""

    def __init__(self, fn: Any) -> None:
        self._done = threading.Event()
        self._result = False
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._result = bool(fn())
            except BaseException as exc:  # noqa: BLE001 - re-raised by get()
                self._error = exc
            finally:
                self._done.set()

        threading.Thread(target=run, daemon=True).start()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._done.wait(timeout_s)

    def get(self) -> bool:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


def _make_link() -> _FrankyLink | _FrankxLink:
    try:
        import franky
    except ImportError:
        try:
            import frankx
        except ImportError:
            raise ConfigError(
                "the Franka backend needs franky: pip install 'robokit[franka]' (PyPI franky-control); "
                "a Panda on older firmware needs franky built for its libfranka version (docs/hardware.md)"
            ) from None
        log.warning("franky is not installed; using frankx (no streaming, no kinesthetic mode)")
        return _FrankxLink(frankx)
    return _FrankyLink(franky)


# ---------------------------------------------------------------------------------------------- robot
class FrankaRobot(Robot):
    """A Franka Panda / FR3 arm with its hand, driven through franky. See the module docstring.

    Args:
        host: the robot's FCI address (the IP you open Desk with).
        realtime: ``"enforce"`` (default, required on real hardware) or ``"ignore"`` (franky-sim and
            non-RT test machines).
        relative_dynamics_factor: fraction (0, 1] of the maximum joint velocity/acceleration/jerk.
        gripper: whether a Franka Hand is attached.
        gripper_mode: ``"binary"`` (grasp / open with hysteresis) or ``"continuous"`` (move to width).
        gripper_speed_mps / gripper_force_n: finger speed and grasp force.
        limit_margin_rad: joint targets are kept this far inside the hard limits.
        connect_timeout_s: how long the reachability check (TCP connect) waits for the host.
        session_timeout_s: how long libfranka may take to open the session (it downloads the robot
            model on connect) before the host counts as "not a Franka".
        home_timeout_s: how long :meth:`home` may take before it is a fault.
        kinesthetic_damping: joint damping (Nm s/rad) while guided by hand (0: free).
    """

    kind = "franka"

    def __init__(
        self,
        host: str,
        *,
        realtime: str = "enforce",
        relative_dynamics_factor: float = 0.1,
        gripper: bool = True,
        gripper_mode: str = "binary",
        gripper_speed_mps: float = 0.1,
        gripper_force_n: float = 20.0,
        limit_margin_rad: float = 0.01,
        connect_timeout_s: float = 3.0,
        session_timeout_s: float = 30.0,
        home_timeout_s: float = 60.0,
        kinesthetic_damping: float = 0.0,
    ) -> None:
        if not host or not isinstance(host, str):
            raise ConfigError("the Franka backend needs --host with the robot's IP address")
        if realtime not in REALTIME_CHOICES:
            raise ConfigError(f"--realtime must be one of {', '.join(REALTIME_CHOICES)}, got {realtime!r}")
        if not 0.0 < relative_dynamics_factor <= 1.0:
            raise ConfigError(f"relative_dynamics_factor must be in (0, 1], got {relative_dynamics_factor}")
        if gripper_mode not in GRIPPER_MODES:
            raise ConfigError(f"gripper_mode must be one of {', '.join(GRIPPER_MODES)}, got {gripper_mode!r}")
        if not 0.0 < gripper_speed_mps <= 0.2:
            raise ConfigError(f"gripper_speed_mps must be in (0, 0.2], got {gripper_speed_mps}")
        if not 0.0 <= limit_margin_rad < 0.2:
            raise ConfigError(f"limit_margin_rad must be in [0, 0.2), got {limit_margin_rad}")
        self.host = host
        self.realtime = realtime
        self.relative_dynamics_factor = float(relative_dynamics_factor)
        self.has_gripper = bool(gripper)
        self.gripper_mode = gripper_mode
        self.gripper_speed_mps = float(gripper_speed_mps)
        self.gripper_force_n = float(gripper_force_n)
        self.limit_margin_rad = float(limit_margin_rad)
        self.connect_timeout_s = float(connect_timeout_s)
        self.session_timeout_s = float(session_timeout_s)
        self.home_timeout_s = float(home_timeout_s)
        self.kinesthetic_damping = float(kinesthetic_damping)

        self._link: _FrankyLink | _FrankxLink | None = None
        # _motion_lock serialises arm commands (home() holds it while it blocks); _gripper_lock only
        # guards the gripper bookkeeping, so read() never waits for a motion.
        self._motion_lock = threading.RLock()
        self._gripper_lock = threading.RLock()
        self._limits = self._margin_limits(PANDA_Q_MIN, PANDA_Q_MAX, PANDA_DQ_MAX)
        self._kinesthetic = False
        self._last_target: np.ndarray | None = None  # target of the motion now running, if any
        #: Number of commands whose joint target was outside the limits (and was clamped).
        self.clamped_commands = 0
        #: The last clamp: {"requested": (7,), "sent": (7,), "joints": [indices]} or None.
        self.last_clamp: dict | None = None
        self._last_clamp_log = -math.inf
        self._clamps_since_log = 0
        # Gripper: one command in flight at a time; newer targets wait in `_gripper_pending`.
        self._gripper_future: Any = None
        self._gripper_inflight: float | None = None
        self._gripper_pending: float | None = None
        self._gripper_last: float | None = None
        self._gripper_width = GRIPPER_MAX_WIDTH_M
        #: Number of commands sent to the hand (repeated identical targets send nothing).
        self.gripper_commands = 0
        self._gripper_error: RobokitError | None = None
        self._poller: threading.Thread | None = None
        self._poller_stop = threading.Event()

    # ------------------------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def backend(self) -> str:
        """``"franky"`` or ``"frankx"`` once connected."""
        return self._link.name if self._link is not None else "none"

    def connect(self) -> None:
        """Check the host answers, connect arm (and hand), recover from old errors, read the limits."""
        if self._link is not None:
            return
        if self.realtime == "enforce" and sys.platform.startswith("linux") and not has_realtime_kernel():
            # Checked before touching the network, so the robot never sees a half-open session.
            raise ConfigError(f"cannot drive the Franka at {self.host} with --realtime enforce: {_RT_HINT}")
        check_fci_reachable(self.host, self.connect_timeout_s)
        link = _make_link()
        with self._guard("connecting"):
            self._open_session(link)
            if link.has_errors():
                log.warning("Franka at %s reports errors from before; running automatic recovery", self.host)
                link.recover()
            reported = _limits_from_urdf(link.urdf() or "")
            if self.has_gripper:
                self._gripper_width = link.gripper_width()
        if reported is not None:
            self._limits = self._margin_limits(*reported)
            log.debug("joint limits from the robot's URDF: %s .. %s", reported[0], reported[1])
        else:
            log.info("the robot did not report its joint limits; using the Panda limits")
        self._link = link
        if self.has_gripper:
            self._poller_stop.clear()
            self._poller = threading.Thread(target=self._poll_gripper, name="franka-gripper", daemon=True)
            self._poller.start()
        log.info("connected to the Franka at %s via %s (dynamics factor %.2f, realtime %s)",
                 self.host, link.name, self.relative_dynamics_factor, self.realtime)

    def _open_session(self, link: _FrankyLink | _FrankxLink) -> None:
        """Run libfranka's connect in a thread, bounded by ``session_timeout_s``.

        A host that accepts TCP but never answers (a wrong IP with port 1337 open, a proxy) would
        otherwise block libfranka for a minute. A session that completes after we gave up is closed.
        """
        lock = threading.Lock()
        state: dict[str, Any] = {"finished": False, "abandoned": False, "error": None}

        def run() -> None:
            try:
                link.connect(self.host, self.realtime, self.relative_dynamics_factor, self.has_gripper)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                state["error"] = exc
            with lock:
                state["finished"] = True
                if state["abandoned"]:
                    link.close()

        worker = threading.Thread(target=run, name="franka-connect", daemon=True)
        worker.start()
        worker.join(self.session_timeout_s)
        with lock:
            if not state["finished"]:
                state["abandoned"] = True
                raise DeviceNotFound(
                    f"{self.host} accepts connections on port {FCI_COMMAND_PORT} but did not answer as a "
                    f"Franka within {self.session_timeout_s:.0f} s; check that --host is the robot's FCI "
                    "address (the one you open Desk with) and that FCI is active in Desk"
                )
        if state["error"] is not None:
            raise state["error"]

    def close(self) -> None:
        """Stop motion, stop the gripper poller and drop the connection. Idempotent."""
        if self._link is None:
            return
        try:
            self.stop()
        except RobokitError as exc:
            log.warning("while closing: %s", exc)
        self._poller_stop.set()
        if self._poller is not None:
            self._poller.join(timeout=2.0)
            self._poller = None
        if self._gripper_future is not None:
            self._link.future_wait(self._gripper_future, 2.0)
        self._link.close()
        self._link = None
        self._kinesthetic = False

    def recover(self) -> None:
        """Run libfranka's automatic error recovery (after a reflex, once the cause is cleared)."""
        link = self._require()
        with self._guard("recovering from errors"):
            if not link.recover():
                raise HardwareFault(
                    f"the Franka at {self.host} could not recover automatically; release the user stop, "
                    "clear the error in Desk and reconnect"
                )

    # ------------------------------------------------------------------------------ limits
    def _margin_limits(self, q_min: np.ndarray, q_max: np.ndarray, dq_max: np.ndarray) -> JointLimits:
        m = self.limit_margin_rad
        return JointLimits(q_min=np.asarray(q_min, float) + m, q_max=np.asarray(q_max, float) - m,
                           dq_max=np.asarray(dq_max, float).copy())

    @property
    def limits(self) -> JointLimits:
        """The limits targets are clamped to: the robot's (after connect) less ``limit_margin_rad``."""
        return self._limits

    # ------------------------------------------------------------------------------ Robot API
    def read(self) -> RobotState:
        """Joint positions/velocities now and the gripper width (normalised, 0 open .. 1 closed)."""
        link = self._require()
        with self._guard("reading the state"):
            q, dq = link.q_dq()
        t = time.monotonic()
        self._raise_gripper_error()
        self._service_gripper()
        closed = 1.0 - self._gripper_width / GRIPPER_MAX_WIDTH_M if self.has_gripper else 0.0
        return RobotState(t=t, qpos=q, qvel=dq, gripper=float(np.clip(closed, 0.0, 1.0)))

    def command(self, qpos_target: np.ndarray, gripper: float) -> None:
        """Send a joint target (replacing the previous one) and a gripper target; returns at once.

        A target outside the limits is clamped (counted in :attr:`clamped_commands`, logged); NaN or
        a wrong shape raises :class:`UserError` and nothing is sent. While kinesthetic mode is on,
        joint targets are ignored (the person moves the arm) and only the gripper follows.
        """
        link = self._require()
        q = np.asarray(qpos_target, dtype=float).reshape(-1)
        if q.shape != (NUM_JOINTS,):
            raise UserError(f"Franka joint target must have {NUM_JOINTS} values, got shape {np.shape(qpos_target)}")
        if not np.all(np.isfinite(q)) or not math.isfinite(float(gripper)):
            raise UserError(f"refusing to send a non-finite target to the Franka: q={q}, gripper={gripper}")
        safe = self._clamp(q)
        with self._motion_lock:
            if not self._kinesthetic:
                with self._guard("streaming a joint target"):
                    link.poll()  # surfaces a reflex of the previous motion
                    # The running motion already holds an unchanged target; replanning it every tick
                    # from the reported state only adds jitter (and overshoots in franky-sim).
                    last = self._last_target
                    if last is None or np.max(np.abs(safe - last)) > _SAME_TARGET_RAD:
                        link.move_async(safe)
                        self._last_target = safe
        self._command_gripper(float(gripper))

    def home(self) -> None:
        """Leave kinesthetic mode, move to the ready pose (DESIGN §7), open the gripper; blocks."""
        link = self._require()
        if self._kinesthetic:
            self.set_kinesthetic(False)
        ready = self._clamp(PANDA_READY_POSE.copy(), report=False)
        with self._motion_lock, self._guard("moving home"):
            self._last_target = None
            link.poll()
            if not link.move_blocking(ready, self.home_timeout_s):
                link.stop()
                raise HardwareFault(
                    f"the Franka at {self.host} did not reach the ready pose within {self.home_timeout_s:.0f} s; "
                    "check for obstacles and raise home_timeout_s for a low relative_dynamics_factor"
                )
        if self.has_gripper:
            self._wait_gripper(5.0)
            self._gripper_last = None
            self._command_gripper(0.0)
            self._wait_gripper(5.0)

    def stop(self) -> None:
        """Stop the arm's motion now; it holds its position. The hand keeps its grasp."""
        link = self._require()
        with self._motion_lock, self._guard("stopping"):
            self._last_target = None
            link.stop()
        self._kinesthetic = False

    # ------------------------------------------------------------------------------ kinesthetic
    @property
    def kinesthetic(self) -> bool:
        """Whether the arm is in zero-stiffness guiding mode."""
        return self._kinesthetic

    def set_kinesthetic(self, enabled: bool) -> None:
        """Switch zero-stiffness joint impedance (guiding by hand, for recording) on or off.

        Switching on stops any streamed motion first; switching off stops the impedance controller so
        the arm holds where it was left and :meth:`command` moves it again.
        """
        link = self._require()
        with self._motion_lock:
            if bool(enabled) == self._kinesthetic:
                return
            with self._guard("switching kinesthetic mode"):
                self._last_target = None
                link.stop()
                if enabled:
                    q, _ = link.q_dq()
                    link.start_kinesthetic(q, self.kinesthetic_damping, self._limits.q_min, self._limits.q_max)
            self._kinesthetic = bool(enabled)
        log.info("kinesthetic mode %s", "on: guide the arm by hand" if enabled else "off")

    # ------------------------------------------------------------------------------ internals
    def _require(self) -> _FrankyLink | _FrankxLink:
        if self._link is None:
            raise HardwareFault(f"the Franka at {self.host} is not connected; call connect() or use `with robot:`")
        return self._link

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except RobokitError:
            raise
        except Exception as exc:  # franky raises its own exception classes (not RobokitError)
            raise _translate(exc, self.host, action) from exc

    def _clamp(self, q: np.ndarray, report: bool = True) -> np.ndarray:
        lo, hi = self._limits.q_min, self._limits.q_max
        safe = np.clip(q, lo, hi)
        outside = np.flatnonzero(safe != q)
        if outside.size and report:
            self.clamped_commands += 1
            self.last_clamp = {"requested": q.copy(), "sent": safe.copy(), "joints": outside.tolist()}
            self._clamps_since_log += 1
            now = time.monotonic()
            if now - self._last_clamp_log >= 1.0:  # a policy pushing into a limit must not flood the log
                details = ", ".join(
                    f"j{j + 1} {q[j]:+.3f} -> {safe[j]:+.3f} (limits {lo[j]:+.3f}..{hi[j]:+.3f})" for j in outside
                )
                log.warning("joint target outside the limits, clamped (%d clamped since last report): %s",
                            self._clamps_since_log, details)
                self._last_clamp_log = now
                self._clamps_since_log = 0
        return safe

    def _raise_gripper_error(self) -> None:
        if self._gripper_error is not None:
            error, self._gripper_error = self._gripper_error, None
            raise error

    def _gripper_wanted(self, g: float) -> float | None:
        """The normalised target to send for input ``g``, or None to keep the current command."""
        g = float(np.clip(g, 0.0, 1.0))
        last = self._gripper_pending if self._gripper_pending is not None else (
            self._gripper_inflight if self._gripper_inflight is not None else self._gripper_last)
        if self.gripper_mode == "binary":
            if g >= 0.6:
                want = 1.0
            elif g <= 0.4:
                want = 0.0
            else:
                return None  # hysteresis band: keep the last command
            return None if last == want else want
        if last is not None and abs(g - last) < 0.05:  # 4 mm: below what the hand resolves usefully
            return None
        return g

    def _command_gripper(self, g: float) -> None:
        if not self.has_gripper:
            return
        self._raise_gripper_error()
        with self._gripper_lock:
            want = self._gripper_wanted(g)
            if want is None:
                self._service_gripper()
                return
            self._gripper_pending = want
            self._service_gripper()

    def _service_gripper(self) -> None:
        """Collect a finished gripper command and send the pending target, never blocking."""
        if not self.has_gripper or self._link is None:
            return
        link = self._link
        with self._gripper_lock:
            if self._gripper_future is not None:
                if not link.future_done(self._gripper_future):
                    return
                try:
                    ok = link.future_result(self._gripper_future)
                    if not ok:
                        log.warning("gripper command to %.2f did not succeed", self._gripper_inflight)
                except Exception as exc:  # noqa: BLE001 - a failed grasp/move is reported, not fatal
                    log.warning("gripper command to %.2f failed: %s", self._gripper_inflight, exc)
                self._gripper_last = self._gripper_inflight
                self._gripper_future = None
                self._gripper_inflight = None
            if self._gripper_pending is None:
                return
            target, self._gripper_pending = self._gripper_pending, None
            with self._guard("commanding the gripper"):
                if self.gripper_mode == "binary" and target >= 0.5:
                    future = link.gripper_grasp(self.gripper_speed_mps, self.gripper_force_n)
                else:
                    future = link.gripper_move(GRIPPER_MAX_WIDTH_M * (1.0 - target), self.gripper_speed_mps)
            self._gripper_future = future
            self._gripper_inflight = target
            self.gripper_commands += 1

    def _wait_gripper(self, timeout_s: float) -> None:
        """Block until the in-flight and pending gripper commands have finished (for home/tests)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._service_gripper()
            with self._gripper_lock:
                future = self._gripper_future
                idle = future is None and self._gripper_pending is None
            if idle:
                return
            if future is not None:
                self._link.future_wait(future, min(0.05, max(0.0, deadline - time.monotonic())))
        raise HardwareFault(f"the Franka Hand at {self.host} did not finish its command within {timeout_s:.0f} s")

    def wait_gripper(self, timeout_s: float = 5.0) -> None:
        """Block until the gripper has finished the commands sent so far."""
        self._require()
        if self.has_gripper:
            self._wait_gripper(timeout_s)

    def _poll_gripper(self) -> None:
        # franky's Gripper.width waits for the hand's next state message; reading it here keeps read()
        # from blocking on the hand.
        link = self._link
        while not self._poller_stop.is_set() and link is not None:
            try:
                self._gripper_width = link.gripper_width()
            except Exception as exc:  # noqa: BLE001
                if not self._poller_stop.is_set():
                    self._gripper_error = _translate(exc, self.host, "reading the gripper")
                    log.warning("%s", self._gripper_error)
                    self._poller_stop.wait(1.0)
            self._poller_stop.wait(0.02)
