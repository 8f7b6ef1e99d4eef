"""The Franka Panda / FR3 arm with its hand, on franky (PyPI ``franky-control``).

How it drives the arm:

* :meth:`FrankaRobot.command` streams joint targets as asynchronous franky ``JointMotion``\\ s that
  replace each other (franky hands over to the new target mid-motion, limiting velocity,
  acceleration and jerk by ``relative_dynamics_factor``, default 0.1: conservative). It never blocks.
* Targets outside the joint limits (those the robot reports in its URDF, else the Panda's, shrunk by
  ``limit_margin_rad``) are clamped before sending, never sent as they are; each clamp is counted in
  :attr:`FrankaRobot.clamps` and logged (at most once a second).
* The hand gets asynchronous commands only when its target changes
  (:class:`~robokit.hardware.franka.gripper.FrankaGripper`); :meth:`~FrankaRobot.read` reports its
  measured width normalised (0 open .. 1 closed).
* :meth:`FrankaRobot.set_kinesthetic` switches to a zero-stiffness joint impedance controller (gravity
  and Coriolis compensated, soft repulsion near joint limits) so a person can guide the arm.
* franky errors become robokit errors that say what to do
  (:func:`~robokit.hardware.franka.errors.translate_error`); an unreachable host is
  :class:`~robokit.errors.DeviceNotFound` (checked with a short TCP connect first, because libfranka
  blocks for a long time on a host that does not answer); no real-time kernel is
  :class:`~robokit.errors.ConfigError` naming ``--realtime ignore``.

The PyPI franky wheel is built against a recent libfranka (FR3); a Panda on older system firmware
needs franky built for its libfranka version (see docs/hardware.md). ``frankx`` is used only when
franky is not installed, with reduced features (:mod:`robokit.hardware.franka.frankx_compat`).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from typing import Any

import numpy as np

from robokit.errors import ConfigError, DeviceNotFound, HardwareFault, RobokitError, UserError
from robokit.hardware.base import (
    NUM_JOINTS,
    PANDA_DQ_MAX,
    PANDA_Q_MAX,
    PANDA_Q_MIN,
    PANDA_READY_POSE,
    JointLimits,
    Robot,
    RobotState,
)
from robokit.hardware.franka.connection import (
    FCI_COMMAND_PORT,
    check_fci_reachable,
    has_realtime_kernel,
    limits_from_urdf,
)
from robokit.hardware.franka.errors import REALTIME_HINT, guard
from robokit.hardware.franka.gripper import GRIPPER_MODES, FrankaGripper
from robokit.hardware.franka.link import Link, make_link
from robokit.hardware.limits import ClampReport, clamp_joints

__all__ = ["REALTIME_CHOICES", "FrankaRobot"]

log = logging.getLogger(__name__)

REALTIME_CHOICES = ("enforce", "ignore")
# Joint targets closer than this to the one being held are not re-sent (rad).
_SAME_TARGET_RAD = 1e-4


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
    num_joints = NUM_JOINTS

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
        collision_thresholds: tuple[float, float] | None = None,
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
        self.limit_margin_rad = float(limit_margin_rad)
        self.connect_timeout_s = float(connect_timeout_s)
        self.session_timeout_s = float(session_timeout_s)
        self.home_timeout_s = float(home_timeout_s)
        self.kinesthetic_damping = float(kinesthetic_damping)
        # The reflex thresholds set on connect: (joint torque Nm, end-effector force N), the same on
        # every joint / axis; None keeps the robot's own.
        if collision_thresholds is not None and (len(collision_thresholds) != 2 or not all(
                np.isfinite(v) and v > 0 for v in collision_thresholds)):
            raise ConfigError(f"collision thresholds must be two positive numbers (torque Nm, force N), "
                              f"got {collision_thresholds}")
        self.collision_thresholds = collision_thresholds
        self._gripper = FrankaGripper(host, gripper_mode, gripper_speed_mps, gripper_force_n) if gripper else None

        self._link: Link | None = None
        # _motion_lock serialises arm commands (home() holds it while it blocks); the gripper has its
        # own lock, so read() never waits for a motion.
        self._motion_lock = threading.RLock()
        self._limits = self._margin_limits(PANDA_Q_MIN, PANDA_Q_MAX, PANDA_DQ_MAX)
        self._kinesthetic = False
        self._last_target: np.ndarray | None = None  # target of the motion now running, if any
        #: The commands whose joint target was outside the limits (and was clamped).
        self.clamps = ClampReport()

    # ------------------------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def speed_factor(self) -> float:
        """franky scales the arm's velocity, acceleration and jerk by the relative dynamics factor."""
        return self.relative_dynamics_factor

    @property
    def backend(self) -> str:
        """``"franky"`` or ``"frankx"`` once open."""
        return self._link.name if self._link is not None else "none"

    @property
    def gripper_commands(self) -> int:
        """Number of commands sent to the hand (repeated identical targets send nothing)."""
        return self._gripper.commands if self._gripper is not None else 0

    def open(self) -> None:
        """Check the host answers, connect arm (and hand), recover from old errors, read the limits.

        If any step fails, whatever was already opened is released before the error propagates.
        """
        if self._link is not None:
            return
        if self.realtime == "enforce" and sys.platform.startswith("linux") and not has_realtime_kernel():
            # Checked before touching the network, so the robot never sees a half-open session.
            raise ConfigError(f"cannot drive the Franka at {self.host} with --realtime enforce: {REALTIME_HINT}")
        check_fci_reachable(self.host, self.connect_timeout_s)
        link = make_link()
        try:
            with guard(self.host, "connecting"):
                self._open_session(link)
                if link.has_errors():
                    log.warning("Franka at %s reports errors from before; running automatic recovery", self.host)
                    link.recover()
                if self.collision_thresholds is not None:
                    torque, force = self.collision_thresholds
                    link.set_collision_thresholds(np.full(7, float(torque)), np.full(6, float(force)))
                reported = limits_from_urdf(link.urdf() or "", self.num_joints)
            if self._gripper is not None:
                self._gripper.attach(link)
        except BaseException:
            if self._gripper is not None:
                self._gripper.detach()
            link.close()
            raise
        if reported is not None:
            self._limits = self._margin_limits(*reported)
            log.debug("joint limits from the robot's URDF: %s .. %s", reported[0], reported[1])
        else:
            log.info("the robot did not report its joint limits; using the Panda limits")
        self._link = link
        log.info("connected to the Franka at %s via %s (dynamics factor %.2f, realtime %s)",
                 self.host, link.name, self.relative_dynamics_factor, self.realtime)

    def _open_session(self, link: Link) -> None:
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
        """Stop motion, release the hand and drop the connection. Idempotent."""
        if self._link is None:
            return
        try:
            self.stop()
        except RobokitError as exc:
            log.warning("while closing: %s", exc)
        if self._gripper is not None:
            self._gripper.detach()
        self._link.close()
        self._link = None
        self._kinesthetic = False

    def recover(self) -> None:
        """Run libfranka's automatic error recovery (after a reflex, once the cause is cleared)."""
        link = self._require()
        with guard(self.host, "recovering from errors"):
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
        """The limits targets are clamped to: the robot's (once open) less ``limit_margin_rad``."""
        return self._limits

    # ------------------------------------------------------------------------------ Robot API
    def read(self) -> RobotState:
        """Joint positions/velocities now and the gripper width (normalised, 0 open .. 1 closed)."""
        link = self._require()
        with guard(self.host, "reading the state"):
            q, dq = link.q_dq()
        t = time.monotonic()
        closed = 0.0
        if self._gripper is not None:
            self._gripper.raise_error()
            self._gripper.service()
            closed = self._gripper.closed
        return RobotState(t=t, qpos=q, qvel=dq, gripper=closed)

    def command(self, qpos_target: np.ndarray, gripper: float) -> None:
        """Send a joint target (replacing the previous one) and a gripper target; returns at once.

        A target outside the limits is clamped (recorded in :attr:`clamps`, logged); NaN or a wrong
        shape raises :class:`UserError` and nothing is sent. While kinesthetic mode is on, joint
        targets are ignored (the person moves the arm) and only the gripper follows.
        """
        link = self._require()
        q = np.asarray(qpos_target, dtype=float).reshape(-1)
        if q.shape != (self.num_joints,):
            raise UserError(f"Franka joint target must have {self.num_joints} values, "
                            f"got shape {np.shape(qpos_target)}")
        if not np.all(np.isfinite(q)) or not math.isfinite(float(gripper)):
            raise UserError(f"refusing to send a non-finite target to the Franka: q={q}, gripper={gripper}")
        safe = clamp_joints(q, self._limits.q_min, self._limits.q_max, self.clamps)
        self.clamps.warn(log)
        with self._motion_lock:
            if not self._kinesthetic:
                with guard(self.host, "streaming a joint target"):
                    link.poll()  # surfaces a reflex of the previous motion
                    # The running motion already holds an unchanged target; replanning it every tick
                    # from the reported state only adds jitter (and overshoots in franky-sim).
                    last = self._last_target
                    if last is None or np.max(np.abs(safe - last)) > _SAME_TARGET_RAD:
                        link.move_async(safe)
                        self._last_target = safe
        if self._gripper is not None:
            self._gripper.command(float(gripper))

    def home(self) -> None:
        """Leave kinesthetic mode, move to the ready pose, open the gripper; blocks."""
        link = self._require()
        if self._kinesthetic:
            self.set_kinesthetic(False)
        ready = clamp_joints(PANDA_READY_POSE, self._limits.q_min, self._limits.q_max)
        with self._motion_lock, guard(self.host, "moving home"):
            self._last_target = None
            link.poll()
            if not link.move_blocking(ready, self.home_timeout_s):
                link.stop()
                raise HardwareFault(
                    f"the Franka at {self.host} did not reach the ready pose within {self.home_timeout_s:.0f} s; "
                    "check for obstacles and raise home_timeout_s for a low relative_dynamics_factor"
                )
        if self._gripper is not None:
            self._gripper.open_fully(5.0)

    def stop(self) -> None:
        """Stop the arm's motion now; it holds its position. The hand keeps its grasp."""
        link = self._require()
        with self._motion_lock, guard(self.host, "stopping"):
            self._last_target = None
            link.stop()
        self._kinesthetic = False

    def wait_gripper(self, timeout_s: float = 5.0) -> None:
        """Block until the gripper has finished the commands sent so far."""
        self._require()
        if self._gripper is not None:
            self._gripper.wait(timeout_s)

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
            with guard(self.host, "switching kinesthetic mode"):
                self._last_target = None
                link.stop()
                if enabled:
                    q, _ = link.q_dq()
                    link.start_kinesthetic(q, self.kinesthetic_damping, self._limits.q_min, self._limits.q_max)
            self._kinesthetic = bool(enabled)
        log.info("kinesthetic mode %s", "on: guide the arm by hand" if enabled else "off")

    # ------------------------------------------------------------------------------ internals
    def _require(self) -> Link:
        if self._link is None:
            raise HardwareFault(f"the Franka at {self.host} is not open; call open() or use `with robot:`")
        return self._link
