"""Live view of a running robot in rerun: ``record``, ``deploy`` and ``replay`` with ``--view``.

What the viewer shows (entity paths)::

    cameras/<name>           camera images (JPEG), at most ``image_hz`` per camera
    robot/qpos               measured joints + gripper, every tick
    robot/target             the command sent: joint targets + gripper, every tick
    robot/recorded           replay: the joints the episode recorded (what the replay should follow)
    policy/predicted_chunk   deploy: each chunk the policy returns (x: step, y: value)
    policy/action, policy/intervention   deploy with takeover: the policy's plan, 1 while a person commands
    safety/<kind>            running counts of commands the safety filter changed
    timing/tick_ms, timing/loop_hz, timing/jitter_p99_ms, ...   tick spacing and the loop's own figures
    episode/index, episode/state (a text log entry at each change), episode/events
    view/dropped             updates the view dropped to keep up

Timelines: ``tick`` (a count over the whole run), ``time`` (seconds since the view started) and,
where the loop numbers its steps (deploy, replay), ``step`` within the episode.

The view never slows the control loop. The loop's callbacks (:meth:`LiveView.on_record_tick`,
:meth:`LiveView.on_step`, :meth:`LiveView.on_tick`, :meth:`LiveView.replay_callback`) only take
references to what the tick already produced and put one item on a bounded queue with
``put_nowait``: when the queue is full the update is dropped and counted (:attr:`LiveView.dropped`),
never waited for. A worker thread does the logging. Python threads share one interpreter lock, so
the worker does its work in the window right after each tick, while the loop sleeps until its next
one, and stops at a budget (``budget_fraction`` of the tick period) so that it is not holding the
lock when the loop wakes; what is left waits for the next tick, and the oldest leftovers are dropped
when they pile up. A viewer that cannot be reached gives one warning and the run goes on without
the view.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from robokit.viz.rerun_sink import (
    ViewerUnreachable,
    ViewTarget,
    chunk_strips,
    encoded_image,
    import_rerun,
    joint_names,
    open_sink,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LiveView", "RobotTap", "chain", "live_view_for", "open_live_view"]

log = logging.getLogger(__name__)

STATUS_PERIOD_S = 0.25  # how often loop/session figures (rates, jitter, clamps) are sampled
MIN_BUDGET_S = 0.001
MAX_PENDING = 256  # leftovers the worker keeps before dropping the oldest
SAFETY_KINDS = ("position", "velocity", "gripper", "rejected", "workspace", "workspace_held")


@dataclass
class _Tick:
    """One tick as the loop handed it over (references, not copies)."""

    index: int
    t: float
    state: Any = None  # RobotState
    target: Any = None  # the command sent
    images: Mapping[str, Any] | None = None  # name -> image or Frame
    step: int | None = None
    chunks: list[tuple[int, np.ndarray]] | None = None
    intervention: bool | None = None
    policy_action: Any = None
    recorded: Any = None
    mode: str | None = None


@dataclass
class _Status:
    t: float
    values: dict[str, float] = field(default_factory=dict)
    episode: int | None = None
    mode: str | None = None


@dataclass
class _Note:
    t: float
    text: str
    episode: int | None = None


_STOP = object()


class RobotTap:
    """A robot that remembers its last reading and its last command (for the view), forwarding
    everything to ``robot``. Hand it to code that drives the robot (a recording session, a replay)
    in place of the robot itself."""

    def __init__(self, robot: Any) -> None:
        self._robot = robot
        self.last_state: Any = None
        self.last_action: Any = None

    def read(self) -> Any:
        state = self._robot.read()
        self.last_state = state
        return state

    def send_action(self, action: np.ndarray) -> None:
        self.last_action = action
        self._robot.send_action(action)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._robot, name)


class LiveView:
    """Streams a running loop to a rerun viewer from a worker thread (see the module docs).

    ``target``: a :class:`ViewTarget` or the ``--view`` text. ``image_hz``: camera images logged per
    second at most (0: none). Call :meth:`start` (raises a :class:`UserError` naming the extra to
    install when the rerun SDK is missing), feed it from the loop's callbacks, then :meth:`close`.
    """

    def __init__(self, target: ViewTarget | str, app_id: str = "robokit", image_hz: float = 10.0,
                 queue_size: int = 64, budget_fraction: float = 0.4, jpeg_quality: int = 85,
                 recording_name: str | None = None) -> None:
        self.target = ViewTarget.parse(target) if isinstance(target, str) else target
        self.app_id = app_id
        self.recording_name = recording_name
        self.image_hz = float(image_hz)
        self.budget_fraction = float(budget_fraction)
        self.jpeg_quality = int(jpeg_quality)
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, int(queue_size)))
        self._dropped_full = 0  # counted by the loop's thread: the queue was full
        self._dropped_late = 0  # counted by the worker: it fell behind
        #: Items the worker logged.
        self.logged = 0
        #: Whether updates are being taken (False before :meth:`start`, after :meth:`close`, or when
        #: the viewer could not be reached).
        self.active = False
        #: Why the view is off, when the viewer could not be reached.
        self.warning: str | None = None
        self.tap: RobotTap | None = None
        self._status_source: Callable[[], _Status | None] | None = None
        self._rec: Any = None
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self._ticks = 0
        self._image_every = 1
        self._rate_known = False
        self._stepped = False
        self._episode = 0
        self._last_status = 0.0

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> LiveView:
        """Open the viewer (or file) and start the worker; a viewer that cannot be reached only warns."""
        rr = import_rerun()
        rec = rr.RecordingStream(self.app_id)
        try:
            open_sink(rec, self.target)
        except ViewerUnreachable as exc:
            self.warning = f"live view off: {exc}; the run goes on without it"
            log.warning("%s", self.warning)
            return self
        if self.recording_name:
            rec.send_recording_name(self.recording_name)
        self._rec = rec
        self._t0 = time.perf_counter()
        self.active = True
        self._thread = threading.Thread(target=self._work, name="robokit-live-view", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """Log what is queued, flush the recording and stop the worker. Idempotent."""
        if self._thread is None:
            return
        self.active = False
        try:
            self.queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.warning("live view: the worker did not take its stop request")
        self._thread.join(timeout_s)
        self._thread = None
        try:
            self._rec.flush()
            if self.target.mode == "save":
                self._rec.disconnect()  # finishes the file
        except (RuntimeError, OSError) as exc:  # the viewer went away meanwhile: nothing left to lose
            log.debug("live view: flushing failed: %s", exc)
        if self.dropped:
            log.info("live view: %d updates dropped to keep the loop on time", self.dropped)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_rate(self, fps: float) -> None:
        """The loop's ticks per second: camera images are logged every ``fps / image_hz`` ticks."""
        self._rate_known = True
        self._image_every = max(1, round(fps / self.image_hz)) if self.image_hz > 0 and fps > 0 else 0

    def new_episode(self, index: int, text: str = "") -> None:
        """An episode starts (hardware deploy; sim evaluations say so through :meth:`on_episode`)."""
        self._episode = int(index)
        if self.active:
            self._put(_Note(time.perf_counter(), text or f"episode {index} starts", self._episode))

    # -- producers (called on the loop's thread: references and one put, nothing else) -----------
    def tap_robot(self, robot: Any) -> Any:
        """``robot`` wrapped in a :class:`RobotTap` whose readings and commands the view shows; hand
        the result to what drives the robot (a recording session, a replay)."""
        self.tap = RobotTap(robot)
        return self.tap

    def watch_session(self, session: Any) -> None:
        """Record: the session whose ticks :meth:`on_record_tick` reports (its robot: :meth:`tap_robot`)."""
        self.set_rate(float(session.config.fps))
        self._status_source = lambda: _session_status(session)

    def on_record_tick(self, session: Any) -> None:
        """``RecordingSession.run``'s tick callback."""
        if not self.active:
            return
        tap = self.tap
        self._put(_Tick(self._ticks, time.perf_counter(), state=tap.last_state if tap else None,
                        target=tap.last_action if tap else None,
                        images=session.last_images if self._images_due() else None, mode=session.state))
        self._ticks += 1

    def on_step(self, record: Any) -> None:
        """``ControlLoop.run_episode(on_step=...)``: a :class:`~robokit.deploy.loop.StepRecord`."""
        if not self.active:
            return
        self._stepped = True
        takeover = record.intervention or record.policy_action is not None
        self._put(_Tick(self._ticks, time.perf_counter(), state=record.state, target=record.command,
                        images=record.frames if self._images_due() else None, step=record.step,
                        chunks=record.chunks or None, intervention=record.intervention if takeover else None,
                        policy_action=record.policy_action))
        self._ticks += 1

    def on_tick(self, loop: Any) -> None:
        """``ControlLoop``'s / ``evaluate_in_sim``'s tick callback: the loop's figures, and the tick
        itself when no :meth:`on_step` reported it (a simulated robot only: reading it and its
        cameras costs nothing there, the frame rendered here is the one the next tick observes)."""
        if not self.active:
            return
        if not self._rate_known:
            self.set_rate(1.0 / loop.dt)
        if not self._stepped and getattr(loop.robot, "kind", "") == "sim":
            images = ({name: cam.read_latest() for name, cam in loop.cameras.items()}
                      if self._images_due() else None)
            joints = loop.safety.previous  # the joints last sent; the gripper target is not known here
            target = None if joints is None else np.append(joints, np.nan)
            self._put(_Tick(self._ticks, time.perf_counter(), state=loop.robot.read(), target=target, images=images))
            self._ticks += 1
        self._stepped = False
        now = time.perf_counter()
        if now - self._last_status >= STATUS_PERIOD_S:
            self._last_status = now
            self._put(_loop_status(loop.stats(), now, self._episode))

    def on_episode(self, outcome: Any) -> None:
        """``evaluate_in_sim(on_episode=...)``: an episode ended; the next one starts."""
        if not self.active:
            return
        verdict = "success" if outcome.success else "failure"
        self._put(_Note(time.perf_counter(), f"episode {outcome.index}: {verdict} after {outcome.steps} steps "
                                             f"({outcome.reason}) - {outcome.task}", self._episode))
        self._episode = outcome.index + 1

    def replay_callback(self, fps: float, recorded: np.ndarray | None = None,
                        cameras: Mapping[str, Any] | None = None) -> Callable[[int, int], None]:
        """``replay_episode``'s ``on_step(t, total)`` for the view: the tap's reading and command, the
        recorded joints of the step and (sim) the cameras at ``image_hz``."""
        self.set_rate(fps)

        def on_step(t: int, total: int) -> None:
            if not self.active:
                return
            tap, row = self.tap, recorded[t - 1] if recorded is not None and 0 < t <= len(recorded) else None
            images = ({name: cam.read_latest() for name, cam in cameras.items()}
                      if cameras and self._images_due() else None)
            self._put(_Tick(self._ticks, time.perf_counter(), state=tap.last_state if tap else None,
                            target=tap.last_action if tap else None, images=images, step=t - 1, recorded=row))
            self._ticks += 1

        return on_step

    @property
    def dropped(self) -> int:
        """Updates dropped because the queue was full or the worker fell behind."""
        return self._dropped_full + self._dropped_late

    def _images_due(self) -> bool:
        return bool(self._image_every) and self._ticks % self._image_every == 0

    def _put(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self._dropped_full += 1

    # -- the worker -------------------------------------------------------------------------------
    def _work(self) -> None:
        rr = import_rerun()
        writer = _Writer(rr, self._rec, self._t0, self.jpeg_quality)
        pending: collections.deque[Any] = collections.deque()
        period, last_tick_t = 0.0, None
        while True:
            try:
                item = self.queue.get(timeout=STATUS_PERIOD_S)
            except queue.Empty:
                item = None
            stop = item is _STOP
            arrived = time.perf_counter() if item is None or stop else item.t
            if item is not None and not stop:
                pending.append(item)
            while not stop:  # take what else is queued
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                stop = more is _STOP
                if not stop:
                    pending.append(more)
            for queued in pending:
                if isinstance(queued, _Tick):
                    if last_tick_t is not None and queued.t > last_tick_t:
                        gap = queued.t - last_tick_t
                        period = gap if period == 0.0 else 0.9 * period + 0.1 * min(gap, 1.0)
                    last_tick_t = max(queued.t, last_tick_t or queued.t)
            while len(pending) > MAX_PENDING:
                pending.popleft()
                self._dropped_late += 1
            deadline = arrived + max(self.budget_fraction * period, MIN_BUDGET_S)
            source = self._status_source
            if source is not None and time.perf_counter() - writer.last_status >= STATUS_PERIOD_S:
                status = source()
                if status is not None:
                    pending.append(status)
            while pending and (stop or time.perf_counter() < deadline):
                try:
                    writer.write(pending.popleft(), self.dropped)
                    self.logged += 1
                except Exception:  # never let one odd update end the view
                    log.debug("live view: an update could not be logged", exc_info=True)
            if stop:
                return


class _Writer:
    """Turns queued items into rerun log calls (on the worker thread only)."""

    def __init__(self, rr: Any, rec: Any, t0: float, jpeg_quality: int) -> None:
        self.rr, self.rec, self.t0, self.jpeg_quality = rr, rec, t0, jpeg_quality
        self.last_status = 0.0
        self._mode: str | None = None
        self._episode: int | None = None
        self._prev_t: float | None = None
        self._named: set[str] = set()
        self._index = 0

    def write(self, item: Any, dropped: int) -> None:
        if isinstance(item, _Tick):
            self._tick(item)
        elif isinstance(item, _Status):
            self.last_status = time.perf_counter()
            self._time(item.t)
            for name, value in item.values.items():
                self.rec.log(name, self.rr.Scalars(float(value)))
            self.rec.log("view/dropped", self.rr.Scalars(float(dropped)))
            self._episode_state(item.episode, item.mode)
        elif isinstance(item, _Note):
            self._time(item.t)
            self.rec.log("episode/events", self.rr.TextLog(item.text))
            self._episode_state(item.episode, None)

    def _time(self, t: float, index: int | None = None, step: int | None = None) -> None:
        rec = self.rec
        if index is not None:
            self._index = index
        rec.set_time("tick", sequence=self._index)
        rec.set_time("time", duration=max(t - self.t0, 0.0))
        if step is not None:
            rec.set_time("step", sequence=int(step))

    def _series(self, path: str, values: np.ndarray, names: list[str]) -> None:
        if path not in self._named:  # the legend once, as static data
            self.rec.log(path, self.rr.SeriesLines(names=names), static=True)
            self._named.add(path)
        self.rec.log(path, self.rr.Scalars(values))

    def _tick(self, tick: _Tick) -> None:
        rr, rec = self.rr, self.rec
        self._time(tick.t, tick.index, tick.step)
        if tick.state is not None:
            qpos = np.asarray(tick.state.as_vector(), dtype=float)
            self._series("robot/qpos", qpos, joint_names(len(qpos)))
        for path, values in (("robot/target", tick.target), ("robot/recorded", tick.recorded),
                             ("policy/action", tick.policy_action)):
            if values is not None:
                vector = np.asarray(values, dtype=float).reshape(-1)
                self._series(path, vector, joint_names(len(vector)))
        if tick.intervention is not None:
            rec.log("policy/intervention", rr.Scalars(1.0 if tick.intervention else 0.0))
        if self._prev_t is not None and tick.t > self._prev_t:
            rec.log("timing/tick_ms", rr.Scalars((tick.t - self._prev_t) * 1e3))
        self._prev_t = tick.t
        for start, chunk in tick.chunks or ():
            rec.log("policy/predicted_chunk", chunk_strips(rr, start, chunk))
        for name, image in (tick.images or {}).items():
            rec.log(f"cameras/{name}", encoded_image(rr, getattr(image, "image", image), self.jpeg_quality))
        if tick.mode is not None:
            self._episode_state(None, tick.mode)

    def _episode_state(self, episode: int | None, mode: str | None) -> None:
        if episode is not None and episode != self._episode:
            self._episode = episode
            self.rec.log("episode/index", self.rr.Scalars(float(episode)))
        if mode is not None and mode != self._mode:
            self._mode = mode
            self.rec.log("episode/state", self.rr.TextLog(mode))


# -- figures -----------------------------------------------------------------------------------------
def _session_status(session: Any) -> _Status:
    """A recording session's figures (its ``status()`` is safe to call from another thread)."""
    st = session.status()
    values = {"timing/loop_hz": st.loop_hz, "timing/late_ticks": st.overruns, "episode/steps": st.steps,
              "episode/saved": st.saved}
    for name, hz in st.camera_hz.items():
        values[f"timing/camera_hz/{name}"] = hz
        values[f"timing/camera_dropped/{name}"] = st.dropped.get(name, 0)
    safety = getattr(session, "safety", None)
    if safety is not None:
        values.update(_safety_values(safety.counts))
    return _Status(time.perf_counter(), values, st.episode_index, st.state)


def _loop_status(stats: Any, now: float, episode: int) -> _Status:
    """The control loop's :class:`~robokit.deploy.loop_results.LoopStats` as view figures."""
    values = {"timing/loop_hz": stats.loop_hz, "timing/jitter_p50_ms": stats.jitter_p50_ms,
              "timing/jitter_p99_ms": stats.jitter_p99_ms, "timing/missed_ticks": stats.missed_ticks,
              "timing/inference_ms": stats.inference_ms, "timing/rtt_ms": stats.rtt_ms,
              "timing/starved_ticks": stats.starved_ticks, **_safety_values(stats.safety)}
    return _Status(now, values, episode, stats.state)


def _safety_values(counts: Any) -> dict[str, float]:
    return {f"safety/{kind}": float(getattr(counts, kind, 0)) for kind in SAFETY_KINDS}


def open_live_view(spec: str | None, stack: Any, kind: str, image_hz: float = 10.0) -> LiveView | None:
    """``--view SPEC`` of a command: a started :class:`LiveView` closed with ``stack`` (an ExitStack),
    or None without ``--view``. A bad SPEC or a missing rerun SDK raises a :class:`UserError`."""
    if not spec:
        return None
    view = LiveView(ViewTarget.parse(spec), recording_name=f"robokit {kind}", image_hz=image_hz)
    stack.callback(view.close)
    view.start()
    if view.active:
        log.info("live view: %s", view.target.describe())
    return view


@contextlib.contextmanager
def live_view_for(spec: str | None, kind: str) -> Iterator[LiveView | None]:
    """:func:`open_live_view` as a context manager (None without ``--view``)."""
    with contextlib.ExitStack() as stack:
        yield open_live_view(spec, stack, kind)


def chain(*callbacks: Callable[..., None] | None) -> Callable[..., None] | None:
    """One callback calling each of ``callbacks`` that is not None, in order (None if all are)."""
    present = [c for c in callbacks if c is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def call(*args: Any) -> None:
        for callback in present:
            callback(*args)

    return call
