"""The recording session: a fixed-rate capture loop driven by keys.

Each control step: read the robot and one frame per camera -> ask the teleop source for the
action -> command the robot -> append the step to the streaming episode writer -> advance the
simulation (sim) or wait for the next tick of the ``fps`` grid (real robot), which is
phase-locked to the first camera's frames (:meth:`robokit.record.capture.RateLoop.follow`).

States: ``idle`` (the arm can be jogged, nothing is written), ``recording``, ``ending`` (the
``end_frames`` extra real steps stored with ``done=True`` after "stop"), ``saving``. Keys
(:data:`~robokit.record.status.SESSION_KEYS`): ``s`` start / stop and save, ``d`` discard the
episode in progress, ``r`` discard and re-record, ``h`` home the robot or reset the sim scene (when
idle), ``q`` quit (an episode in progress is saved first); the teleop source's jog keys after them.
A key that does nothing is answered with a message that lists the keys.

The instruction stored with each episode starts as ``RecordConfig.task`` and can be changed between
episodes with :meth:`RecordingSession.set_task` (the CLI asks for it when the person presses ``t``).

In the simulation every step also stores each object's pixel box per simulator camera
(``/objects/<name>/box_<cam>``) and, with ``RecordConfig.segmentation``, each camera's instance mask.

Autonomous sources (scripted expert, replay) record unattended: each episode starts on a fresh
randomised scene, ends when the source finishes, and is saved with ``success`` from the simulator
(failed scripted episodes are discarded unless ``keep_failed``).

Faults never lose what was recorded: a camera that stops delivering, a robot fault or low disk
space saves the episode up to that point, then raises with a message naming the cause and the file.
The session prints nothing; the CLI renders :meth:`RecordingSession.status` as a live panel
(:mod:`robokit.record.status`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from robokit.deploy.safety import SafetyFilter, SafetyLimits
from robokit.episodes.files import (
    LowDiskSpace,
    check_free_space,
    next_episode_index,
    prepare_folder,
    saved_episodes,
)
from robokit.episodes.recovery import recover_partial_episodes
from robokit.episodes.writer import EmptyEpisode, EpisodeStep, EpisodeWriter
from robokit.errors import HardwareFault, UserError
from robokit.hardware.base import Camera, Frame, Robot, RobotState
from robokit.record.capture import CameraGrabber, RateLoop
from robokit.record.config import RecordConfig
from robokit.record.scene import SimScene, episode_seeds
from robokit.record.status import SessionStatus, StatusBoard
from robokit.record.teleop import Observation, TeleopSource

if TYPE_CHECKING:
    from robokit.hardware.sim import PandaSimEnv

__all__ = ["RecordConfig", "RecordingSession"]

log = logging.getLogger(__name__)

IDLE, RECORDING, ENDING, SAVING = "idle", "recording", "ending", "saving"


class RecordingSession:
    """Runs the capture loop for one ``robokit record`` invocation. See the module docs.

    ``robot`` and ``cameras`` must already be open. ``sim_env`` (when simulating) is
    stepped once per control step; without it the loop keeps its own ``fps`` grid.
    """

    def __init__(self, robot: Robot, cameras: Mapping[str, Camera], teleop: TeleopSource,
                 config: RecordConfig, sim_env: PandaSimEnv | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not cameras:
            raise UserError("recording needs at least one camera (--camera NAME=SPEC)")
        self.robot, self.cameras, self.teleop, self.config = robot, dict(cameras), teleop, config
        self.sim_env = sim_env
        self.scene = SimScene(sim_env, self.cameras, config.segmentation) if sim_env is not None else None
        self._clock = clock
        self.grabber = CameraGrabber(self.cameras, config.fps)
        self._rate = RateLoop(config.fps) if sim_env is None else None
        self.state = IDLE
        self.saved: list[Path] = []
        self.discarded = 0
        self.failed = 0
        #: After Ctrl-C / SIGTERM: what became of the episode in progress ("" if there was none).
        self.interrupt_note = ""
        self._critical = 0  # > 0 while an episode file is being finished (saved or discarded)
        self._interrupt_pending = False
        #: Messages, loop rate, free disk and key help for the live panel.
        self.board = StatusBoard(config.out, clock, teleop.key_help)
        self._writer: EpisodeWriter | None = None
        self._index = 0
        #: Episodes this session saves before it stops (None: until quit).
        self.target = config.episodes
        self._episode_start = 0.0
        self._end_left = 0
        self._pending: EpisodeStep | None = None
        self._hold: np.ndarray | None = None
        # Every teleop command goes through deploy's safety filter, restarted from the measured joints
        # after a scene reset; built at the first command (a Franka's limits are known once connected).
        self.safety: SafetyFilter | None = None
        self._restart_safety = True  # restart from the next measured joints
        self._last_images: dict[str, np.ndarray] = {}
        self._task_text = config.task  # real robot: the instruction stored with the next episode
        self._quit = self._quit_after_save = False
        self.autonomous = bool(getattr(teleop, "autonomous", False))

    # -- setup -----------------------------------------------------------------------------------
    def prepare(self) -> list[str]:
        """Check the output folder, recover what a crash left there; returns messages to show."""
        out = prepare_folder(self.config.out)
        messages = recover_partial_episodes(out)
        check_free_space(out, self.config.min_free_bytes)
        self._index = next_episode_index(out)
        existing = saved_episodes(out)
        if self.scene is not None:
            self.scene.avoid_seeds(episode_seeds(existing))
        # A scripted run makes a dataset of `episodes` demonstrations: run again on the same
        # folder (after a crash, say) it completes that number instead of adding as many again.
        if self.teleop.name == "scripted" and self.config.episodes is not None and existing:
            self.target = max(self.config.episodes - len(existing), 0)
            messages.append(f"{out} holds {len(existing)} episodes: " + (
                f"recording {self.target} more to reach --episodes {self.config.episodes}" if self.target else
                f"nothing to record for --episodes {self.config.episodes} (give a larger number to add more)"))
            self._quit = self.target == 0
        for message in messages:
            self.board.say(message)
        return messages

    # -- public control --------------------------------------------------------------------------
    @property
    def task(self) -> str:
        """The instruction the next (or current) episode is stored with."""
        return self.scene.instruction if self.scene is not None else self._task_text

    @property
    def done(self) -> bool:
        return self._quit

    @property
    def messages(self) -> list[str]:
        """The latest messages, oldest first (the live panel shows the last ones)."""
        return list(self.board.messages)

    @property
    def last_images(self) -> dict[str, np.ndarray]:
        """The camera images of the latest step (RGB), e.g. for a preview window."""
        return self._last_images

    def notify(self, message: str) -> None:
        """Show ``message`` among the session's messages (the live panel's last lines)."""
        self.board.say(message)

    def set_task(self, text: str) -> str:
        """Set the instruction of the next episode (only between episodes); returns it.

        On a real robot any text is stored as it is. In the simulation the text must name a task of
        the scene's task set (its instruction, or its number from 1 in the order of
        :func:`~robokit.hardware.sim.list_tasks`): the scene is reset to that task with the same
        layout, and later resets keep it. Raises :class:`UserError` saying what to type instead.
        """
        text = " ".join(str(text).split())
        if self.state != IDLE:
            raise UserError("stop (s) or discard (d) the episode in progress before changing the task")
        if not text:
            raise UserError("the task is empty: type the instruction for the next episode")
        if self.scene is None:
            self._task_text = text
        else:
            self.scene.pin_task(text)
            self._after_reset()
        self.board.say(f"task of the next episode: {self.task}")
        return self.task

    def handle_key(self, key: str) -> None:
        """Apply one key (session keys first, then the teleop source's jog keys)."""
        if key in ("q", "ctrl-c"):
            self.request_quit()
        elif key == "s":
            if self.state == IDLE:
                self.start_episode()
            elif self.state == RECORDING:
                self.stop_episode()
        elif key == "d":
            self.discard_episode()
        elif key == "r":
            self.discard_episode(quiet=True)
            self._reset_scene(same=True)
            self.start_episode()
            self.board.say("re-recording")
        elif key == "h":
            if self.state == IDLE:
                self._reset_scene(same=False)
            else:
                self.board.say("stop (s) or discard (d) the episode before homing")
        elif not self.teleop.handle_key(key):
            self.board.unknown_key(key)

    def start_episode(self) -> None:
        """Open a new episode file and start recording at the next step."""
        if self.state != IDLE:
            return
        self.board.disk_free = check_free_space(self.config.out, self.config.min_free_bytes)
        self._index = max(self._index, next_episode_index(self.config.out))
        attrs = {"task": self.task, "fps": float(self.config.fps), "robot": self.robot.kind,
                 "sim": self.sim_env is not None, "source": self.teleop.name, **self.config.extra_attrs}
        if self.scene is not None:
            attrs.update(self.scene.episode_attrs())
        self._writer = EpisodeWriter(
            self.config.out, self._index, {name: tuple(cam.shape) for name, cam in self.cameras.items()},
            state_dim=self.robot.action_dim, action_dim=self.robot.action_dim, attrs=attrs,
            compress=self.config.compress,
            jpeg_quality=self.config.jpeg_quality, min_free_bytes=self.config.min_free_bytes,
            box_objects=self.scene.box_objects() if self.scene is not None else None,
            mask_instances=self.scene.mask_instances() if self.scene is not None else None)
        self.grabber.reset_stats()
        self._pending = None
        self._episode_start = self._clock()
        self.state = RECORDING
        self.board.say(f"recording episode_{self._index}")

    def stop_episode(self) -> None:
        """Record the end frames, then save."""
        if self.state != RECORDING:
            return
        if self.config.end_frames > 0:
            self._end_left = self.config.end_frames
            self.state = ENDING
        else:
            self._finish()

    def discard_episode(self, quiet: bool = False) -> None:
        if self._writer is None:
            return
        with self._uninterruptible():
            self._writer.discard()
            self._writer = None
            self._pending = None
            self.state = IDLE
            self.discarded += 1
        if not quiet:
            self.board.say(f"discarded episode_{self._index}")

    def interrupt(self) -> None:
        """Stop the session as Ctrl-C does; meant for signal handlers (the CLI routes SIGINT/SIGTERM here).

        Raises KeyboardInterrupt at once (:meth:`run` then saves the episode in progress), except
        while an episode file is being saved or discarded: then right after it, so that no file is
        left half finished. A second interrupt meanwhile raises at once (an escape from a stuck disk).
        """
        if self._critical and not self._interrupt_pending:
            self._interrupt_pending = True
            return
        raise KeyboardInterrupt

    def request_quit(self) -> None:
        """Quit after saving an episode in progress (with its end frames)."""
        if self.state == RECORDING:
            self._quit_after_save = True
            self.stop_episode()
        elif self.state == ENDING:
            self._quit_after_save = True
        else:
            self._quit = True

    # -- the loop --------------------------------------------------------------------------------
    def run(self, poll_keys: Callable[[], list[str]] | None = None,
            on_tick: Callable[[RecordingSession], None] | None = None) -> list[Path]:
        """Run until quit (key q, ``episodes`` reached, source exhausted); returns the saved files."""
        if self._rate is not None:  # set-up since construction (connecting, recovery) is not a late tick
            self._rate.restart()
        try:
            while not self._quit:
                if self.autonomous and self.state == IDLE:
                    self._begin_autonomous_episode()
                    if self._quit:
                        break
                for key in poll_keys() if poll_keys is not None else ():
                    self.handle_key(key)
                if self._quit:
                    break
                self.step()
                if on_tick is not None:
                    on_tick(self)
        except (HardwareFault, LowDiskSpace) as exc:
            where = self._save_after_fault(str(exc))
            raise type(exc)(f"{exc}{where}") from exc
        except KeyboardInterrupt:
            self.interrupt_note = self._save_after_fault("interrupted").removeprefix("; ")
            raise
        finally:
            if self._writer is not None:  # an unexpected error: keep the partial file for recovery
                self._writer.close()
                self._writer = None
            self.teleop.close()
        return list(self.saved)

    def step(self) -> None:
        """One control step (see the module docs)."""
        tick = self._rate.wait() if self._rate is not None else None
        now = self._clock()
        self.board.tick(now)
        frames = self.grabber.grab(tick)  # first: it may wait a little for fresh frames
        if self._rate is not None:  # ticks follow the first camera's clock (see record.capture)
            self._rate.follow(frames[next(iter(frames))])
        state = self.robot.read()
        images = {name: f.image for name, f in frames.items()}
        action: np.ndarray | None
        if self.state == ENDING:
            action = self._hold if self._hold is not None else _state_action(state)
            if self.teleop.action_is_next_state:
                action = self.teleop.next_action(Observation(state, images))
        else:
            action = self.teleop.next_action(Observation(state, images))
            if action is None:  # the source has finished
                action = self._hold if self._hold is not None else _state_action(state)
                if self.state == RECORDING:
                    self.stop_episode()
                elif self.autonomous:
                    self._quit = True
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (self.robot.action_dim,) or not np.all(np.isfinite(action)):
            raise UserError(f"the {self.teleop.name} source produced an invalid action {action!r}; "
                            f"expected {self.robot.num_joints} joint targets and a gripper value")
        if not self.teleop.action_is_next_state:  # a hand-guided arm is where the person put it
            if self.safety is None:
                box = self.config.workspace if self.robot.num_joints == 7 else None
                self.safety = SafetyFilter(SafetyLimits.from_robot(self.robot), 1.0 / self.config.fps,
                                           workspace=box)
            if self._restart_safety:
                self.safety.reset(state.qpos)
                self._restart_safety = False
            safe = self.safety.apply(action, measured=state.qpos)
            action = action if safe is None else safe.astype(np.float32)
        self._hold = action
        self.robot.send_action(action)
        if self.state in (RECORDING, ENDING):
            self._record(state, frames, action, done=self.state == ENDING)
            if self.state == ENDING:
                self._end_left -= 1
                if self._end_left <= 0:
                    self._last_images = images
                    self._finish()
        self._last_images = images
        if self.sim_env is not None:
            self.sim_env.step()

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> SessionStatus:
        """A snapshot of the session; safe to call from another thread (a live display)."""
        writer = self._writer  # read once: the loop may finish the episode meanwhile
        now = self._clock()
        recording = self.state in (RECORDING, ENDING, SAVING)
        stats = self.grabber.stats
        return SessionStatus(
            state=self.state, episode_index=self._index,
            elapsed_s=(now - self._episode_start) if recording else 0.0,
            steps=writer.num_steps if writer is not None else 0,
            loop_hz=self.board.loop_hz(), camera_hz={n: s.rate() for n, s in stats.items()},
            dropped={n: s.dropped for n, s in stats.items()},
            repeated={n: s.repeated for n, s in stats.items()},
            overruns=self._rate.overruns if self._rate is not None else 0,
            disk_free_bytes=self.board.free_bytes(), saved=len(self.saved), target=self.target,
            discarded=self.discarded, task=self.task, teleop=self.teleop.status(),
            messages=list(self.board.messages), key_help=list(self.board.keys))

    # -- internals -------------------------------------------------------------------------------
    def _record(self, state: RobotState, frames: dict[str, Frame], action: np.ndarray, done: bool) -> None:
        step = EpisodeStep(qpos=state.as_vector(), qvel=state.velocity_vector(), action=action.copy(),
                           images={n: f.image for n, f in frames.items()}, t_robot=float(state.t),
                           t_images={n: float(f.t_capture) for n, f in frames.items()}, done=done,
                           object_boxes=self.scene.object_boxes() if self.scene is not None else {},
                           masks=self.scene.masks() if self.scene is not None else {})
        if not self.teleop.action_is_next_state:
            self._append(step)
            return
        # Kinesthetic: the action of the previous step is where the arm is now.
        if self._pending is not None:
            n = self.robot.num_joints
            self._pending.action = np.concatenate([step.qpos[:n], self._pending.action[n:]])
            self._append(self._pending)
        self._pending = step

    def _append(self, step: EpisodeStep) -> None:
        cast(EpisodeWriter, self._writer).append(  # only called while an episode's writer is open
            step.qpos, step.qvel, step.action, step.images, t_robot=step.t_robot, t_images=step.t_images,
            done=step.done, object_boxes=step.object_boxes, masks=step.masks)

    def _flush_pending(self) -> None:
        if self._pending is not None and self._writer is not None:
            n = self.robot.num_joints
            self._pending.action = np.concatenate([self._pending.qpos[:n], self._pending.action[n:]])
            self._append(self._pending)
        self._pending = None

    @contextlib.contextmanager
    def _uninterruptible(self) -> Iterator[None]:
        """Defer :meth:`interrupt` to the end of the block (see there)."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if not self._critical and self._interrupt_pending:
            self._interrupt_pending = False
            raise KeyboardInterrupt

    def _finish(self, reason: str | None = None) -> Path | None:
        """Save (or, for a failed scripted run, discard) the episode in progress."""
        with self._uninterruptible():
            return self._finish_now(reason)

    def _finish_now(self, reason: str | None) -> Path | None:
        writer = self._writer
        if writer is None:
            return None
        self.state = SAVING
        self._flush_pending()
        success = self.scene.success() if self.scene is not None else None
        path = None
        try:
            if (self.teleop.name == "scripted" and success is False and not self.config.keep_failed
                    and reason is None):
                writer.discard()
                self.failed += 1
                self.board.say(f"episode_{self._index} discarded: the scripted expert did not complete the task")
            else:
                extra: dict[str, Any] = {"end_frames": int(self.config.end_frames)}
                if reason is not None:
                    extra["interrupted"] = reason
                goal = dict(self._last_images) if self.config.goal_images and self._last_images else None
                path = writer.save(success=success, extra_attrs=extra, goal_images=goal)
                self.saved.append(path)
                seconds = self._clock() - self._episode_start
                checked = f", success {'yes' if success else 'no'}" if success is not None else ""
                self.board.say(f"saved {path.name}: {writer.num_steps} steps, {seconds:.1f} s{checked}")
                self._index += 1
        except EmptyEpisode:
            self.board.say("nothing recorded: no episode saved")
        finally:
            self._writer = None
            self.state = IDLE
        if self.target is not None and len(self.saved) >= self.target:
            self._quit = True
        if self._quit_after_save:
            self._quit = True
        return path

    def _save_after_fault(self, reason: str) -> str:
        """Save what the episode in progress holds; returns text for the error message."""
        if self._writer is None:
            return ""
        steps = self._writer.num_steps
        try:
            path = self._finish(reason=reason)
        except Exception as exc:
            log.exception("saving after a fault failed")
            self._writer = None
            return (f"; the episode in progress could not be saved ({exc}), its .partial file stays in "
                    f"{self.config.out} and the next `robokit record` recovers it")
        if path is None:
            return ""
        return f"; {path.name} was saved with the {steps} steps recorded up to that point"

    def _reset_scene(self, same: bool) -> None:
        """Sim: a new randomised scene (or the same one again); real robot: drive home."""
        if self.scene is not None:
            self.board.say(self.scene.reset(same))
        elif not same:
            self.board.say("homing...")
            self.robot.home()
            if self._rate is not None:  # the loop stood still while the arm moved: not a late tick
                self._rate.restart()
            self.board.say("at home")
        self._after_reset()

    def _after_reset(self) -> None:
        """Forget what the cameras and the source saw before the scene or the arm moved."""
        self.grabber.forget()
        self.teleop.reset()
        self._hold = None
        self._restart_safety = True

    def _begin_autonomous_episode(self) -> None:
        if self.scene is not None:
            self.scene.reset_for(self.teleop.name, getattr(self.teleop, "attrs", {}))
        self._after_reset()
        self.start_episode()


def _state_action(state: RobotState) -> np.ndarray:
    return np.concatenate([state.qpos, [1.0 if state.gripper > 0.5 else 0.0]]).astype(np.float32)
