"""Settings of the control loop: its rate, chunk mode, pacing and watchdog (the CLI fills them from its options)."""

from __future__ import annotations

from dataclasses import dataclass, field

from robokit.errors import ConfigError
from robokit.hardware.workspace import Workspace


@dataclass
class WatchdogConfig:
    """What the loop does when a tick has no fresh action (policy late, link down, stale camera)."""

    hold_after_ticks: int = 2  # ticks without a fresh action before the arm holds its position
    stop_after_s: float = 0.5  # time without a fresh action before the robot is stopped


@dataclass
class LoopConfig:
    """Settings of a :class:`~robokit.deploy.loop.ControlLoop`."""

    fps: float
    mode: str = "ensemble"  # ensemble | chunk | async
    k: float = 0.01  # ensembling coefficient
    query_every: int | None = None  # default: 1 (ensemble, async), chunk_size (chunk)
    realtime: bool = True  # pace on the wall clock; False: as fast as possible (simulation)
    max_steps: int = 600
    done_threshold: float = 0.9  # stop when the policy's done probability reaches this (>1: never)
    velocity_scale: float = 1.0  # fraction of the joint velocity limits a command may use
    camera_max_age_s: float | None = None  # default: 3 periods (at least 0.1 s)
    tick_budget: float = 0.8  # realtime blocking modes: fraction of a period to wait for a reply
    spin_s: float = 0.001  # realtime: busy-wait this long before each tick instead of sleeping
    stats_window: int = 1000  # ticks kept for the jitter / loop-rate statistics
    rt_priority: int | None = None  # realtime: run the loop thread SCHED_FIFO at this priority (1..99)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    workspace: Workspace | None = None  # the box the hand must stay in (None: joint limits only)
    #: Seconds from the moment an observation's image was taken to the arm following a command sent
    #: then (camera delay + robot response, as `robokit devices --latency` measures them): the rows
    #: of a chunk for that span are skipped, on top of the ticks its query took.
    action_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ConfigError(f"--fps must be positive, got {self.fps}")
        if self.max_steps <= 0:
            raise ConfigError(f"--max-steps must be positive, got {self.max_steps}")
        if not 0 < self.tick_budget <= 1:
            raise ConfigError(f"tick_budget must be in (0, 1], got {self.tick_budget}")
        if not 0.0 <= self.action_delay_s < 10.0:
            raise ConfigError(f"the action delay must be between 0 and 10 s, got {self.action_delay_s}")
        if self.rt_priority is not None and not 1 <= self.rt_priority <= 99:
            raise ConfigError(f"--rt-priority must be between 1 and 99, got {self.rt_priority}")

    @property
    def delay_steps(self) -> int:
        """The action delay in control steps (rounded to the nearest)."""
        return round(self.action_delay_s * self.fps)
