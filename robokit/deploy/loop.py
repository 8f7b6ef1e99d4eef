"""ControlLoop: read robot + cameras -> ask for chunks -> ensemble -> safety -> command, at a fixed rate.

One code path for the simulation and the real arm. Each tick:

1. wait for the tick (``realtime``: sleep, then spin the last ~1 ms on the monotonic clock, as
   diffusion_policy's real-world loop does; otherwise the simulation steps as fast as it can and
   time is simulated time);
2. handle keys (space pause/resume, ``r`` reset the episode, ``q`` stop safely);
3. read the robot and the cameras;
4. collect a finished background query, start a new one when :class:`ActionQueue` says so, and in
   the blocking modes wait for it (in ``realtime`` no longer than ``tick_budget`` of a period);
5. take the ensembled action for this step, pass it through :class:`SafetyFilter` (joint limits,
   per-step change <= velocity limit x dt, gripper range) and command the robot;
6. watchdog: a tick without a fresh action repeats the previous command; from the
   ``hold_after_ticks``-th such tick on the arm holds its measured position; after ``stop_after_s``
   without a fresh action the robot is stopped and the episode ends with
   :attr:`StopReason.WATCHDOG` and a message saying why.

A tick has a fresh action when the policy link is healthy (no failed or overdue query since the
last answer; a query is overdue once it has run longer than the runner's ``timeout_s``), the
ensembler covers the step and the action is finite.

Every chunk the policy returns is also handed to ``on_step`` (:attr:`StepRecord.chunks`, by
reference, in the record of the tick it arrived at) together with the step of the observation it
was predicted from: row 0 of a chunk is the action for that step (with an action delay of d steps,
row d is). In ``ensemble`` and ``chunk`` mode that is the tick itself; in ``async`` mode a chunk
arrives some ticks after its observation.
A chunk the loop gave up on (overdue at a pause or at the end of the episode) is not handed over.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

import numpy as np

from robokit.deploy.client import InferResult
from robokit.deploy.ensemble import ActionQueue
from robokit.deploy.loop_config import LoopConfig, WatchdogConfig
from robokit.deploy.loop_results import EpisodeResult, LoopStats, StepRecord, StopReason
from robokit.deploy.observation import Observation
from robokit.deploy.runner import PolicyRunner
from robokit.deploy.safety import SafetyCounts, SafetyFilter, SafetyLimits
from robokit.deploy.takeover import Takeover
from robokit.deploy.timing import RealtimePriority, precise_wait
from robokit.errors import ConfigError, HardwareFault, ProtocolError, ServerUnavailable, StaleFrame, UserError
from robokit.hardware.base import Camera, Frame, Robot, RobotState

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ControlLoop", "EpisodeResult", "LoopConfig", "LoopStats", "SafetyFilter", "SafetyLimits", "StepRecord",
           "StopReason", "WatchdogConfig", "precise_wait"]

log = logging.getLogger(__name__)


def _median(values: collections.deque) -> float:
    return float(np.median(np.fromiter(values, float))) if values else float("nan")


# -- the loop ---------------------------------------------------------------------------------------
class ControlLoop:
    """Drive ``robot`` with chunks from ``runner``; see the module docstring.

    ``cameras`` must include every camera the policy expects. ``step_fn`` advances a simulation by
    one period after each command (``env.step``); on hardware it is None. ``keys`` is anything with
    ``poll() -> list[str]`` (a :class:`~robokit.record.keyboard.TerminalKeys`).
    """

    def __init__(self, robot: Robot, cameras: Mapping[str, Camera], runner: PolicyRunner, config: LoopConfig,
                 step_fn: Callable[[], None] | None = None, keys: Any = None, takeover: Takeover | None = None) -> None:
        info = runner.info
        missing = [c for c in info.camera_names if c not in cameras]
        if missing:
            raise UserError(f"the policy needs camera(s) {', '.join(missing)} but only "
                            f"{', '.join(cameras) or 'none'} are configured; add --camera NAME=SPEC")
        if info.action_dim < robot.action_dim or info.state_dim < robot.action_dim:
            raise UserError(f"the policy has state/action dims {info.state_dim}/{info.action_dim}; "
                            f"the arm needs {robot.action_dim} ({robot.num_joints} joints + gripper)")
        self.robot = robot
        self.cameras = {c: cameras[c] for c in info.camera_names}
        self.runner = runner
        self.config = config
        self.dt = 1.0 / config.fps
        self.step_fn = step_fn
        self.keys = keys
        self.takeover = takeover
        self.queue = ActionQueue(config.mode, info.chunk_size, info.action_dim, k=config.k,
                                 query_every=config.query_every)
        if config.delay_steps >= info.chunk_size:
            raise ConfigError(f"an action delay of {config.action_delay_s * 1000:.0f} ms is the whole chunk of "
                              f"{info.chunk_size} steps at {config.fps:g} Hz; measure the delays again")
        self.safety = SafetyFilter(SafetyLimits.from_robot(robot), self.dt, config.velocity_scale,
                                   workspace=config.workspace)
        self.max_age_s = config.camera_max_age_s or max(3 * self.dt, 0.1)
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: tuple[int, Future, float] | None = None
        self._abandoned: Future | None = None  # a query given up on that may still be running
        window = max(2, int(config.stats_window))
        self._jitter: collections.deque = collections.deque(maxlen=window)
        self._tick_wall: collections.deque = collections.deque(maxlen=window)
        self._model_ms: collections.deque = collections.deque(maxlen=200)
        self._rtt_ms: collections.deque = collections.deque(maxlen=200)
        self._counters: collections.Counter[str] = collections.Counter()
        self._state = "starting"
        self._step = 0
        self._episode_counts = SafetyCounts()  # the filter's counts when the episode began
        self._holds, self._max_deviation = 0, 0.0  # this episode's watchdog holds and command gap
        self._last_error: str | None = None
        self._link_ok = True
        self._done = False
        self._arrived: list[tuple[int, np.ndarray]] = []  # chunks for the next StepRecord
        self._objects_fn: Callable[[], list[dict[str, Any]]] | None = None  # of the running episode

    # -- public -----------------------------------------------------------------------------------
    def stats(self) -> LoopStats:
        jit = np.fromiter(self._jitter, float) if self._jitter else np.zeros(1)
        ticks = self._tick_wall
        hz = (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) > 1 and ticks[-1] > ticks[0] else 0.0
        return LoopStats(step=self._step, state=self._state, loop_hz=hz,
                         jitter_p50_ms=float(np.percentile(jit, 50)), jitter_p99_ms=float(np.percentile(jit, 99)),
                         missed_ticks=self._counters["missed"], inference_ms=_median(self._model_ms),
                         rtt_ms=_median(self._rtt_ms), queries=self._counters["queries"],
                         query_failures=self._counters["failures"], starved_ticks=self._counters["starved"],
                         safety=self.safety.counts.copy(), last_error=self._last_error)

    def jitter_ms(self) -> np.ndarray:
        """Tick start lateness (ms) of the recent realtime ticks (for benchmarks)."""
        return np.fromiter(self._jitter, float)

    def close(self) -> None:
        """Stop the background query thread. The runner and robot belong to the caller."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_episode(self, task: str | None = None, goal_image: np.ndarray | None = None,
                    on_step: Callable[[StepRecord], None] | None = None,
                    goal_reached: Callable[[], bool] | None = None,
                    on_tick: Callable[[ControlLoop], None] | None = None,
                    objects: Callable[[], list[dict[str, Any]]] | None = None) -> EpisodeResult:
        """Run one episode from the robot's current state; the robot is stopped on faults and Ctrl+C.

        ``objects``, if given, is called right after each observation's frames are read and returns
        the objects' boxes in them (``[{"name", "box": [x0, y0, x1, y1] pixels, "camera"}]``; in
        simulation from ``env.object_box``); they travel with that observation to the policy.
        """
        self._objects_fn = objects
        old_interval = sys.getswitchinterval()
        if self.config.realtime:
            # A background thread holding the GIL must not delay a tick by the default 5 ms.
            sys.setswitchinterval(min(old_interval, 0.0005))
        try:
            with RealtimePriority(self.config.rt_priority if self.config.realtime else None):
                return self._run(task, goal_image, on_step, goal_reached, on_tick)
        except BaseException:
            self._safe_stop()
            raise
        finally:
            sys.setswitchinterval(old_interval)
            self._abandon_inflight()

    # -- internals --------------------------------------------------------------------------------
    def _safe_stop(self) -> None:
        try:
            self.robot.stop()
        except Exception:
            log.exception("stopping the robot failed")

    def _abandon_inflight(self) -> None:
        if self._inflight is not None:
            future = self._inflight[1]
            if not future.cancel():  # already running: its answer is dropped, but it still runs
                self._abandoned = future
            self._inflight = None

    def _settle_queries(self) -> None:
        """Give up on the in-flight query and wait until it has stopped running.

        Called before the runner is reset or asked inline for a first chunk: a policy must never
        run two inferences at once, nor be reset mid-inference (it would mix two episodes'
        observation histories). A query ends within the runner's ``timeout_s``.
        """
        self._abandon_inflight()
        future, self._abandoned = self._abandoned, None
        if future is not None:
            deadline = self._deadline_s()
            with contextlib.suppress(Exception):  # its outcome no longer matters
                future.result(timeout=None if math.isinf(deadline) else deadline + 1.0)

    def _observe(self, task: str | None, goal_image: np.ndarray | None
                 ) -> tuple[RobotState, dict[str, Frame], Observation | None]:
        state = self.robot.read()
        try:
            frames = {name: cam.read_latest(self.max_age_s) for name, cam in self.cameras.items()}
        except (StaleFrame, HardwareFault) as exc:  # late or unplugged: hold, the watchdog stops the arm
            self._last_error = str(exc)
            return state, {}, None
        obs = Observation(qpos=state.as_vector(), images={n: f.image for n, f in frames.items()},
                          task=task, goal_image=goal_image,
                          objects=None if self._objects_fn is None else list(self._objects_fn()))
        return state, frames, obs

    def _submit(self, obs: Observation) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploy-query")
        start = self.queue.on_query()
        self._counters["queries"] += 1
        self._inflight = (start, self._executor.submit(self.runner.infer, obs), time.perf_counter())

    def _query_inline(self, obs: Observation) -> None:
        start = self.queue.on_query()
        self._counters["queries"] += 1
        try:
            result = self.runner.infer(obs)
        except (ServerUnavailable, ProtocolError) as exc:
            self._query_failed(exc)
            return
        self._accept(result, start)

    def _query_failed(self, exc: Exception) -> None:
        self._counters["failures"] += 1
        self._link_ok = False
        self._last_error = f"{type(exc).__name__}: {exc}"
        self.queue.on_query_failed()
        log.warning("policy query failed: %s", self._last_error)

    def _accept(self, result: InferResult, start: int) -> None:
        info = self.runner.info
        if result.actions.shape != (info.chunk_size, info.action_dim):
            raise UserError(f"the policy returned a chunk of shape {result.actions.shape}, expected "
                            f"({info.chunk_size}, {info.action_dim})")
        self._link_ok = True
        # Row 0 is for the moment the observation's image was taken; the arm follows a command only
        # after its response delay: the rows for that span are already in the past.
        self.queue.add(result.actions, start - self.config.delay_steps)
        self._arrived.append((start, result.actions))
        self._model_ms.append(result.model_ms)
        self._rtt_ms.append(result.rtt_ms)
        if result.done is not None and result.done >= self.config.done_threshold:
            self._done = True

    def _collect(self, wait_s: float | None = 0.0) -> None:
        """Take the in-flight reply if it is there (waiting up to ``wait_s``; None: until it is)."""
        if self._inflight is None:
            return
        start, future, _ = self._inflight
        try:
            result = future.result(timeout=wait_s)
        except FutureTimeout:
            return
        except (ServerUnavailable, ProtocolError) as exc:
            self._inflight = None
            self._query_failed(exc)
            return
        self._inflight = None
        self._accept(result, start)

    def _first_chunk(self, task: str | None, goal_image: np.ndarray | None) -> None:
        """Block for the first chunk of an episode (or after a pause): the arm is at rest meanwhile."""
        self._settle_queries()
        self.queue.reset(self._step)
        _, _, obs = self._observe(task, goal_image)
        if obs is None:
            raise StaleFrame(f"no fresh camera frame to start from: {self._last_error}")
        start = self.queue.on_query()
        self._counters["queries"] += 1
        self._accept(self.runner.infer(obs), start)  # ServerUnavailable here: nothing moved yet

    def _run(self, task: str | None, goal_image: np.ndarray | None,
             on_step: Callable[[StepRecord], None] | None, goal_reached: Callable[[], bool] | None,
             on_tick: Callable[[ControlLoop], None] | None) -> EpisodeResult:
        cfg, wd = self.config, self.config.watchdog
        self._step = 0
        self._done = False
        self._link_ok = True
        self._last_error = None
        self._settle_queries()
        self._arrived = []
        self.runner.reset()
        self.safety.reset(self.robot.read().qpos)
        self._episode_counts = self.safety.counts.copy()
        self._holds, self._max_deviation = 0, 0.0
        if self.takeover is not None:
            self.takeover.reset()
        self._first_chunk(task, goal_image)
        self._state = "running"
        paused = False
        last_cmd: np.ndarray | None = None
        human: np.ndarray | None = None  # the person's action of the last tick, while they command
        starved = 0
        fresh_step, fresh_wall = 0, time.perf_counter()
        t_grid = time.perf_counter()  # realtime: scheduled time of step 0
        n_grid = 0
        while True:
            step = self._step
            if step >= cfg.max_steps:
                return self._end(StopReason.MAX_STEPS, f"reached the step limit ({cfg.max_steps})")
            # 1. wait for the tick
            if cfg.realtime:
                t_sched = t_grid + (step - n_grid) * self.dt
                precise_wait(t_sched, cfg.spin_s)
                now = time.perf_counter()
                late = now - t_sched
                if late > self.dt:  # a whole period lost: count it and move the grid instead of bursting
                    self._counters["missed"] += int(late / self.dt)
                    t_grid, n_grid = now, step
                    t_sched = now
                self._jitter.append(late * 1e3)
            self._tick_wall.append(time.perf_counter())
            # 2. keys
            for key in self.keys.poll() if self.keys is not None else ():
                if self.takeover is not None and key != "q" and self.takeover.handle_key(key):
                    continue
                if key == "q":
                    self.robot.stop()
                    return self._end(StopReason.QUIT, "stopped from the keyboard (q)")
                if key == "r":
                    return self._end(StopReason.RESET, "episode reset from the keyboard (r)")
                if key in (" ", "space"):
                    paused = not paused
                    if not paused:  # resume with a fresh plan from the current observation
                        self.safety.reset(self.robot.read().qpos)
                        self._first_chunk(task, goal_image)
                        t_grid, n_grid = time.perf_counter(), step
                        fresh_step, fresh_wall, starved = step, time.perf_counter(), 0
            # 3. observe
            state, frames, obs = self._observe(task, goal_image)
            if paused:
                self._state = "paused"
                self._abandon_inflight()
                cmd = self._hold(state, last_cmd)
                self._command(cmd)
                last_cmd = cmd
                self._after_command(on_step, on_tick, StepRecord(step, state, frames, cmd, False,
                                                                 self._take_arrived()))
                continue
            # 4. queries
            self._collect(0.0)
            if self._inflight is not None and time.perf_counter() - self._inflight[2] > self._deadline_s():
                self._link_ok = False  # overdue: the server is slow or gone; the reply may still come
                self._last_error = f"no reply for {time.perf_counter() - self._inflight[2]:.2f} s"
            if obs is not None and self.queue.query_due(in_flight=self._inflight is not None):
                if self.queue.blocking and not cfg.realtime:
                    self._query_inline(obs)
                else:
                    self._submit(obs)
            if self._inflight is not None:
                if self.queue.blocking:
                    budget = None if not cfg.realtime else max(0.0, t_sched + cfg.tick_budget * self.dt
                                                                - time.perf_counter())
                    self._collect(budget)
                elif not cfg.realtime and self.queue.covered_ahead() == 0:
                    self._collect(None)  # simulated time stands still while the policy thinks
            # 5. action, safety, watchdog
            if last_cmd is not None:  # how far the arm is from where it was last sent
                gap = float(np.max(np.abs(last_cmd[: self.robot.num_joints] - state.qpos[: self.robot.num_joints])))
                self._max_deviation = max(self._max_deviation, gap)
            action = self.queue.pop()
            was_human = human is not None
            human = None if self.takeover is None else self.takeover.command(
                state, obs.images if obs is not None else {}, action)
            if human is not None:  # the person commands; the policy's action is kept for the record
                cmd = self._hold(state, last_cmd) if (safe := self.safety.apply(
                    human, measured=state.qpos)) is None else safe
                fresh_step, fresh_wall, starved, self._state = step, time.perf_counter(), 0, "takeover"
                self._command(cmd)
                last_cmd = cmd
                self._after_command(on_step, on_tick, StepRecord(step, state, frames, cmd, True, self._take_arrived(),
                                                                 intervention=True, policy_action=action))
                if goal_reached is not None and goal_reached():
                    return self._end(StopReason.SUCCESS, "goal reached")
                continue
            if was_human:  # handed back: a fresh plan from where the arm is now, so nothing jumps
                self.safety.reset(state.qpos)
                self._first_chunk(task, goal_image)
                self._done = False
                t_grid, n_grid = time.perf_counter(), step
                fresh_step, fresh_wall, starved = step, time.perf_counter(), 0
                action = self.queue.pop()
            safe = (self.safety.apply(action, measured=state.qpos)
                    if (action is not None and obs is not None and self._link_ok) else None)
            if safe is not None:
                cmd = safe
                starved = 0
                fresh_step, fresh_wall = step, time.perf_counter()
                self._state = "running"
            else:
                starved += 1
                self._counters["starved"] += 1
                if action is not None and obs is not None and self._link_ok:
                    self._last_error = "the policy produced a non-finite action"
                waited = max((step - fresh_step) * self.dt, time.perf_counter() - fresh_wall)
                if waited >= wd.stop_after_s:
                    self.robot.stop()
                    why = self._last_error or "the policy gave no action"
                    return self._end(StopReason.WATCHDOG,
                                     f"watchdog: no fresh action for {waited:.2f} s ({why}); the robot was stopped")
                if starved < wd.hold_after_ticks and last_cmd is not None:
                    self._state = "waiting"  # no fresh action: the last command is repeated
                    cmd = last_cmd
                else:
                    self._state = "holding"
                    self._holds += 1
                    cmd = self._hold(state, last_cmd)
            self._command(cmd)
            last_cmd = cmd
            self._after_command(on_step, on_tick, StepRecord(step, state, frames, cmd, starved == 0,
                                                             self._take_arrived(), policy_action=action))
            if goal_reached is not None and goal_reached():
                return self._end(StopReason.SUCCESS, "goal reached")
            if self._done:
                return self._end(StopReason.DONE, "the policy signalled that the task is done")

    def _take_arrived(self) -> list[tuple[int, np.ndarray]]:
        """The chunks accepted since the last record (handed over as they are, not copied)."""
        arrived, self._arrived = self._arrived, []
        return arrived

    def _deadline_s(self) -> float:
        return float(self.runner.timeout_s)

    def _hold(self, state: RobotState, last_cmd: np.ndarray | None) -> np.ndarray:
        """Keep the arm where it is (rate-limited from the last command), gripper unchanged."""
        gripper = float(last_cmd[self.robot.num_joints]) if last_cmd is not None else float(state.gripper)
        cmd = self.safety.apply(np.concatenate([state.qpos, [gripper]]))
        return cmd if cmd is not None else np.concatenate([state.qpos, [gripper]])

    def _command(self, cmd: np.ndarray) -> None:
        self.robot.send_action(cmd)

    def _after_command(self, on_step: Callable[[StepRecord], None] | None,
                       on_tick: Callable[[ControlLoop], None] | None, record: StepRecord) -> None:
        if on_step is not None:
            on_step(record)
        if self.step_fn is not None:
            self.step_fn()
        self._step += 1
        if on_tick is not None:
            on_tick(self)

    def _end(self, reason: StopReason, message: str) -> EpisodeResult:
        self._abandon_inflight()
        self._state = reason.value
        seconds = self._step * self.dt
        log.debug("episode ended after %d steps: %s", self._step, message)  # callers report it
        return EpisodeResult(reason=reason, message=message, steps=self._step, seconds=seconds, stats=self.stats(),
                             safety=self.episode_safety())

    def episode_safety(self) -> dict[str, float]:
        """The running (or last) episode's safety record: what the filter changed, by kind, the
        ticks the watchdog held the arm and the largest gap (rad) between a command and the joints."""
        return {**self.safety.counts.since(self._episode_counts), "watchdog_holds": self._holds,
                "max_command_gap_rad": round(self._max_deviation, 6)}
