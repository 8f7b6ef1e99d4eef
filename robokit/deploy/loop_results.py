"""What the control loop reports: why an episode ended, each tick's record, live statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from robokit.deploy.safety import SafetyCounts
from robokit.hardware.base import Frame, RobotState

__all__ = ["EpisodeResult", "LoopStats", "StepRecord", "StopReason"]


class StopReason(str, Enum):
    """Why an episode of the control loop ended."""

    MAX_STEPS = "max_steps"  # ran out of steps
    DONE = "done"  # the policy said the task is finished
    SUCCESS = "success"  # the caller's goal check (sim: task success) held
    WATCHDOG = "watchdog"  # no fresh action for too long: the robot was stopped
    QUIT = "quit"  # the user pressed q: the robot was stopped
    RESET = "reset"  # the user pressed r


# -- results --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepRecord:
    """What happened at one tick (given to ``on_step``, e.g. to record the rollout)."""

    step: int
    state: RobotState
    frames: dict[str, Frame]
    command: np.ndarray  # what was sent: the joint targets, then the gripper value
    fresh: bool
    #: chunks the policy returned since the previous record: (step of the observation each was
    #: predicted from, its (chunk_size, action_dim) actions as returned, row 0 = that step's action)
    chunks: list[tuple[int, np.ndarray]] = field(default_factory=list)
    #: True when a person (or the scripted expert playing one) commanded this step, not the policy
    intervention: bool = False
    #: what the policy's plan held for this step (sent unless a person took over), None if none
    policy_action: np.ndarray | None = None


@dataclass(frozen=True)
class LoopStats:
    """A snapshot for the live panel."""

    step: int
    state: str  # running | paused | holding | starting
    loop_hz: float
    jitter_p50_ms: float
    jitter_p99_ms: float
    missed_ticks: int
    inference_ms: float  # median model time (server side for a remote policy)
    rtt_ms: float  # median round trip (send to reply)
    queries: int
    query_failures: int
    starved_ticks: int
    safety: SafetyCounts
    last_error: str | None


@dataclass(frozen=True)
class EpisodeResult:
    reason: StopReason
    message: str
    steps: int
    seconds: float  # loop time: simulated seconds, or wall seconds when realtime
    stats: LoopStats
    #: This episode's safety record (see :meth:`ControlLoop.episode_safety`).
    safety: dict[str, float] = field(default_factory=dict)
