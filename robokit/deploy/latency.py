"""Measured delays of a rig: camera capture -> receive, the policy round trip, robot command -> motion.

`robokit devices --latency` measures them and saves a :class:`LatencyReport` as JSON; `robokit
deploy --latency FILE` reads it back. The deploy loop uses :attr:`LatencyReport.action_delay_s`
(the age of the image a policy saw when its observation was taken, plus the time the arm takes to
respond to a command) to skip the rows of an arriving chunk that are already in the past: the
steps the loop counts between an observation and its reply are then only the policy's part.

Robot delays are measured with a small step of one wrist joint: the command is sent, then the
arm is read every ``advance()`` until the joint has covered 10 % (first motion) and 50 %
(response) of the step. ``advance`` is whatever lets time pass for that robot: stepping the
simulation for the sim arm, a short sleep for a real or franky-sim arm; the delays are taken on
the robot's own clock (:attr:`RobotState.t`), so the simulation reports simulated time. Imports no
torch.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robokit.deploy.observation import Observation
from robokit.deploy.protocol import PolicyInfo
from robokit.errors import ConfigError, HardwareFault, UserError
from robokit.hardware.base import Camera, Robot

__all__ = ["CameraDelay", "LatencyReport", "MotionDelay", "PolicyDelay", "load_latency",
           "measure_camera_delay", "measure_motion_delay", "measure_policy_delay"]

LATENCY_FORMAT = 1


@dataclass(frozen=True)
class CameraDelay:
    """Capture -> receive delay of one camera over ``frames`` distinct frames."""

    median_ms: float
    p95_ms: float
    frames: int


@dataclass(frozen=True)
class PolicyDelay:
    """Round trip of ``infer`` (send -> reply) and the policy's own forward pass, over ``queries``."""

    rtt_median_ms: float
    rtt_p95_ms: float
    model_median_ms: float
    queries: int


@dataclass(frozen=True)
class MotionDelay:
    """Command -> motion delay of the arm, medians over ``trials`` steps of ``step_rad`` on ``joint``."""

    first_motion_ms: float  # until the joint has moved 10 % of the step
    response_ms: float  # until it has moved 50 % of the step: the lag with which it follows a plan
    trials: int
    joint: int
    step_rad: float


@dataclass
class LatencyReport:
    """What `robokit devices --latency` measured on one rig (each part only if it was measured)."""

    cameras: dict[str, CameraDelay] = field(default_factory=dict)
    policy: PolicyDelay | None = None
    robot: MotionDelay | None = None
    #: Where it was measured: robot kind and host, server address, dynamics factor, time.
    setup: dict[str, Any] = field(default_factory=dict)

    @property
    def action_delay_s(self) -> float:
        """Seconds from the moment an observation's image was taken to the arm following a command
        given then: the slowest camera's median delay plus the arm's response delay."""
        camera_ms = max((c.median_ms for c in self.cameras.values()), default=0.0)
        robot_ms = self.robot.response_ms if self.robot is not None else 0.0
        return (camera_ms + robot_ms) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        return {"format": LATENCY_FORMAT, "setup": dict(self.setup),
                "cameras": {name: asdict(c) for name, c in self.cameras.items()},
                "policy": asdict(self.policy) if self.policy is not None else None,
                "robot": asdict(self.robot) if self.robot is not None else None,
                "action_delay_s": self.action_delay_s}

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON (the folder is created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyReport:
        try:
            if data.get("format") != LATENCY_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {LATENCY_FORMAT}")
            cameras = {str(name): CameraDelay(**c) for name, c in dict(data.get("cameras") or {}).items()}
            policy = PolicyDelay(**data["policy"]) if data.get("policy") else None
            robot = MotionDelay(**data["robot"]) if data.get("robot") else None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ValueError(str(exc)) from exc
        return cls(cameras=cameras, policy=policy, robot=robot, setup=dict(data.get("setup") or {}))


def load_latency(path: str | Path) -> LatencyReport:
    """Read a report saved by `robokit devices --latency`; a clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latency file {path} not found; measure one with `robokit devices --latency --save {path}`")
    try:
        return LatencyReport.from_dict(json.loads(path.read_text()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a latency file of `robokit devices --latency` ({exc}); "
                        "measure it again") from exc


# -- measurements ------------------------------------------------------------------------------------
def measure_camera_delay(cameras: Mapping[str, Camera], seconds: float = 1.0, fps: float = 30.0,
                         advance: Callable[[], None] | None = None) -> dict[str, CameraDelay]:
    """Sample every camera's newest frame at ``fps`` for ``seconds``; delays of the distinct frames.

    ``advance`` lets time pass between samples (default: sleep one period).
    """
    period = 1.0 / fps
    wait = advance or (lambda: time.sleep(period))
    delays: dict[str, dict[int, float]] = {name: {} for name in cameras}
    for _ in range(max(1, round(seconds * fps))):
        for name, cam in cameras.items():
            frame = cam.read_latest(max_age_s=max(1.0, 3 * period))
            delays[name][frame.index] = (frame.t_receive - frame.t_capture) * 1000.0
        wait()
    return {name: _camera_delay(list(d.values())) for name, d in delays.items()}


def _camera_delay(values: list[float]) -> CameraDelay:
    arr = np.asarray(values, dtype=float)
    return CameraDelay(median_ms=float(np.median(arr)), p95_ms=float(np.percentile(arr, 95)), frames=len(values))


def measure_policy_delay(runner: Any, queries: int = 20, warmup: int = 2, seed: int = 0) -> PolicyDelay:
    """Time ``queries`` inferences of a runner (after ``warmup``) on random inputs of its policy's shapes."""
    obs = dummy_observation(runner.info, seed)
    for _ in range(warmup):
        runner.infer(obs)
    rtt, model = [], []
    for _ in range(max(1, queries)):
        result = runner.infer(obs)
        rtt.append(result.rtt_ms)
        model.append(result.model_ms)
    runner.reset()
    return PolicyDelay(rtt_median_ms=float(np.median(rtt)), rtt_p95_ms=float(np.percentile(rtt, 95)),
                       model_median_ms=float(np.median(model)), queries=len(rtt))


def dummy_observation(info: PolicyInfo, seed: int = 0) -> Observation:
    """An observation of the shapes ``info`` asks for, with random images (what a latency probe sends)."""
    rng = np.random.default_rng(seed)
    images = {cam: rng.integers(0, 256, info.image_shape, dtype=np.uint8) for cam in info.camera_names}
    goal = rng.integers(0, 256, info.image_shape, dtype=np.uint8) if info.goal_camera else None
    task = (info.tasks[0] if info.tasks else "pick up the cube") if info.instruction else None
    objects: list[dict[str, Any]] | None = [] if info.objects else None
    return Observation(qpos=np.zeros(info.state_dim, np.float32), images=images, task=task, goal_image=goal,
                       objects=objects)


def measure_motion_delay(robot: Robot, advance: Callable[[], None], *, joint: int = 6, step_rad: float = 0.05,
                         trials: int = 4, timeout_s: float = 3.0) -> MotionDelay:
    """Step one joint by ``step_rad`` (alternating direction, so the arm ends where it began).

    The wrist joint is the default: the smallest motion that shows the arm's response. Each trial
    waits for the arm to settle before the next. Raises :class:`HardwareFault` if the joint does not
    move half-way within ``timeout_s``.
    """
    q_min, q_max = robot.joint_limits
    if not 0 <= joint < robot.num_joints:
        raise ConfigError(f"joint must be between 0 and {robot.num_joints - 1}, got {joint}")
    firsts, responses = [], []
    for trial in range(trials):
        start = robot.read()
        sign = 1.0 if trial % 2 == 0 else -1.0
        if not q_min[joint] + step_rad < start.qpos[joint] + sign * step_rad < q_max[joint] - step_rad:
            sign = -sign  # near a limit: step away from it
        target = start.qpos.copy()
        target[joint] += sign * step_rad
        first, response = _time_step(robot, advance, start, target, joint, sign * step_rad, timeout_s)
        firsts.append(first)
        responses.append(response)
    return MotionDelay(first_motion_ms=float(np.median(firsts)) * 1000.0,
                       response_ms=float(np.median(responses)) * 1000.0, trials=trials, joint=joint,
                       step_rad=step_rad)


def _time_step(robot: Robot, advance: Callable[[], None], start: Any, target: np.ndarray, joint: int,
               step: float, timeout_s: float) -> tuple[float, float]:
    first: float | None = None
    response: float | None = None
    # A clock that does not advance (a simulation nobody steps) must not hang the measurement.
    wall_deadline = time.monotonic() + timeout_s + 10.0
    robot.command(target, start.gripper)
    while True:
        advance()
        state = robot.read()
        elapsed = state.t - start.t
        moved = (state.qpos[joint] - start.qpos[joint]) / step
        if first is None and moved >= 0.1:
            first = elapsed
        if response is None and moved >= 0.5:
            response = elapsed
        if response is not None and moved >= 0.9 and abs(state.qvel[joint]) < 0.02:
            return (first if first is not None else response), response
        if elapsed > timeout_s or time.monotonic() > wall_deadline:
            if response is None:
                raise HardwareFault(f"joint {joint + 1} did not follow a {abs(step):.3f} rad step within "
                                    f"{timeout_s:.0f} s; is the arm blocked, in guiding mode or stopped?")
            return first or response, response
        robot.command(target, start.gripper)  # keep streaming the target, as the control loop does


def report_setup(**fields: Any) -> dict[str, Any]:
    """The ``setup`` of a report: the given fields (None dropped) and the time of the measurement."""
    setup = {k: v for k, v in fields.items() if v is not None}
    setup["measured_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return setup
