"""Run a policy for N episodes in the simulation through the control loop and count its successes.

:func:`evaluate_in_sim` is what ``robokit deploy --sim`` and ``make demo`` call::

    from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim
    results = evaluate_in_sim("runs/act/best.pt", EvalConfig(episodes=50, seed_start=1000))
    results.success_rate, results.per_task(), results.failure_counts(), results.grounding()

Each episode resets the scene to a held-out seed (``seed_start + i``; training data uses other
seeds), runs the same :class:`~robokit.deploy.loop.ControlLoop` as the real robot, and counts a
success when the task's check holds (for ``success_hold_s``) or holds after the episode ends.
With ``task_set="multi"`` the instructions are taken in turn, so each gets the same number of
episodes; ``goal="image"`` gives the policy a goal image instead of the instruction (the final
frame of the scripted expert on the same seed, from the policy's goal camera, as recorded
datasets store it). ``task_text`` gives the policy other words for an instruction (a paraphrase)
while the scene and its success check stay the instruction's.

What each observation carries follows the policy's description (``runner.info``, the same for a
policy in this process and for the ``hello`` reply of a server): the goal image comes from its
``goal_camera``, and a policy that reads object boxes (``info.objects``) gets the boxes of the
scene's objects from ``env.object_box`` in pixels of the rendered images (:func:`scene_objects`),
as the sim recorder stores them.

Every episode is also reviewed (:mod:`robokit.deploy.rollout_review`): a failure gets a category
(wrong object lifted, grasp missed, wrong target, not released, time out) and each episode the
object the gripper went to first, which gives the grounding accuracy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robokit.deploy.loop import ControlLoop, EpisodeResult, StepRecord, StopReason
from robokit.deploy.loop_config import LoopConfig, WatchdogConfig
from robokit.deploy.protocol import PolicyInfo
from robokit.deploy.recording import RolloutRecorder, VideoRecorder
from robokit.deploy.rollout_review import EpisodeReview, GraspAttempt, Grounding, count_failures, named_object
from robokit.deploy.runner import LocalRunner, PolicyRunner, RemoteRunner
from robokit.deploy.takeover import ScriptedTakeover, Takeover, TeleopTakeover
from robokit.errors import UserError
from robokit.hardware.workspace import SIM_TABLE, Workspace
from robokit.record.scene import SimScene

log = logging.getLogger(__name__)

GOALS = ("text", "image")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of a simulation evaluation (``robokit deploy --sim`` fills them from its options).

    ``mode`` defaults to ``async`` when ``realtime`` (wall-clock pacing) and ``ensemble`` otherwise;
    ``fps`` to the policy's rate; ``max_steps`` to ``max_seconds`` at that rate. ``server`` runs
    the policy on that policy server instead of in this process (on ``device``); ``timeout_s``
    bounds each query to it (default 0.5 s when ``realtime``, else 5 s for slow CPU policies).
    """

    episodes: int = 50
    seed_start: int = 1000
    #: the scenes' seeds in turn, instead of ``seed_start`` on (``episodes`` becomes their number)
    seeds: tuple[int, ...] = ()
    task_set: str = "pick_place"
    goal: str = "text"  # text: the instruction; image: the expert's final frame
    # instruction -> the words given to the policy instead (paraphrases); the scene, its success
    # check and the failure review stay the instruction's
    task_text: dict[str, str] | None = None
    tasks: tuple[str, ...] = ()  # only these instructions of the task set, in turn; () = all of them
    mode: str | None = None
    realtime: bool = False
    max_steps: int | None = None
    max_seconds: float = 10.0
    fps: float | None = None
    k: float = 0.01
    query_every: int | None = None
    done_threshold: float = 0.9
    velocity_scale: float = 1.0
    rt_priority: int | None = None
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    workspace: Workspace | None = SIM_TABLE  # the box the hand stays in (None: joint limits only)
    action_delay_s: float = 0.0  # image age + arm response: the chunk rows skipped (devices --latency)
    success_hold_s: float = 0.3  # the task check must hold this long to end an episode early
    record_dir: str | Path | None = None  # save each rollout as an episode file here
    video_dir: str | Path | None = None  # save each rollout as an MP4 here
    server: str | None = None
    device: str = "cpu"
    timeout_s: float | None = None
    #: Who may take over from the policy: "scripted" (the expert, whenever the policy strays),
    #: "keyboard" / "spacemouse[:DEVICE]" (a person, with the takeover key); None: nobody.
    takeover: str | None = None

    def __post_init__(self) -> None:
        if self.seeds:  # (frozen: set through object.__setattr__, as dataclasses do)
            object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
            object.__setattr__(self, "episodes", len(self.seeds))
        if self.episodes <= 0:
            raise UserError(f"--episodes must be positive, got {self.episodes}")
        if self.goal not in GOALS:
            raise UserError(f"--goal must be one of {', '.join(GOALS)}, got {self.goal!r}")
        if self.takeover is not None and self.takeover.split(":")[0] not in ("scripted", "keyboard", "spacemouse"):
            raise UserError(f"--takeover in the simulation is scripted, keyboard or spacemouse, not {self.takeover!r}")

    def seed(self, episode: int) -> int:
        """The scene seed of episode ``episode`` (from 0)."""
        return self.seeds[episode] if self.seeds else self.seed_start + episode

    @property
    def loop_mode(self) -> str:
        return self.mode or ("async" if self.realtime else "ensemble")

    @property
    def query_timeout_s(self) -> float:
        return self.timeout_s if self.timeout_s is not None else (0.5 if self.realtime else 5.0)

    def loop_config(self, rate: float) -> LoopConfig:
        """The control loop's settings at ``rate`` (Hz)."""
        steps = int(math.ceil(self.max_seconds * rate) if self.max_steps is None else self.max_steps)
        return LoopConfig(fps=rate, mode=self.loop_mode, k=self.k, query_every=self.query_every,
                          realtime=self.realtime, max_steps=steps, done_threshold=self.done_threshold,
                          velocity_scale=self.velocity_scale, rt_priority=self.rt_priority,
                          watchdog=self.watchdog, workspace=self.workspace, action_delay_s=self.action_delay_s)


@dataclass(frozen=True)
class EpisodeOutcome:
    """One evaluation episode."""

    index: int
    seed: int
    task: str  # the instruction
    success: bool
    steps: int
    reason: str  # a StopReason value
    message: str
    wall_s: float
    episode_file: str | None = None
    video_file: str | None = None
    failure: str | None = None  # why it failed (robokit.deploy.rollout_review.FAILURES); None on success
    first_object: str | None = None  # the object the gripper went to first; None if none
    grasp: GraspAttempt | None = None  # the hand against the named object when it first closed
    safety: dict[str, float] = field(default_factory=dict)  # the episode's safety record (EpisodeResult.safety)
    intervention_steps: int = 0  # steps someone other than the policy commanded (takeover)


@dataclass
class EvalResults:
    """All episodes of one evaluation, with the settings that produced them."""

    outcomes: list[EpisodeOutcome] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def episodes(self) -> int:
        return len(self.outcomes)

    @property
    def successes(self) -> int:
        return sum(o.success for o in self.outcomes)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.outcomes else float("nan")

    def per_task(self) -> dict[str, tuple[int, int]]:
        """instruction -> (successes, episodes), in the order first seen."""
        table: dict[str, tuple[int, int]] = {}
        for o in self.outcomes:
            s, n = table.get(o.task, (0, 0))
            table[o.task] = (s + int(o.success), n + 1)
        return table

    def safety_totals(self) -> dict[str, float]:
        """The safety records summed over the episodes (the command gap: its largest)."""
        totals: dict[str, float] = {}
        for o in self.outcomes:
            for key, value in o.safety.items():
                totals[key] = max(totals.get(key, 0), value) if key.startswith("max_") else totals.get(key, 0) + value
        return totals

    def failure_counts(self, task: str | None = None) -> dict[str, int]:
        """Failed episodes per category (every category of ``FAILURES``), of all episodes or of one
        instruction."""
        return count_failures(o.failure for o in self.outcomes if task is None or o.task == task)

    def failures_per_task(self) -> dict[str, dict[str, int]]:
        """instruction -> failed episodes per category, in the order first seen."""
        return {task: self.failure_counts(task) for task in self.per_task()}

    def grounding(self, task: str | None = None) -> Grounding:
        """How often the gripper went to the named object first (all episodes or one instruction)."""
        mine = [o for o in self.outcomes if task is None or o.task == task]
        named = {o.task: named_object(o.task) for o in mine}
        firsts = [o for o in mine if o.first_object is not None]
        return Grounding(correct=sum(o.first_object == named[o.task] for o in firsts), counted=len(firsts),
                         without=len(mine) - len(firsts))

    def to_dict(self) -> dict[str, Any]:
        grounding = self.grounding()
        return {"success_rate": self.success_rate, "successes": self.successes, "episodes": self.episodes,
                "per_task": {k: {"successes": s, "episodes": n} for k, (s, n) in self.per_task().items()},
                "failures": self.failures_per_task(), "failure_counts": self.failure_counts(),
                "grounding_accuracy": grounding.accuracy, "grounding": asdict(grounding),
                "policy": self.policy, "settings": self.settings,
                "outcomes": [asdict(o) for o in self.outcomes]}


def _chain(*hooks: Callable[[StepRecord], None] | None) -> Callable[[StepRecord], None]:
    active = [h for h in hooks if h is not None]

    def call(record: StepRecord) -> None:
        for hook in active:
            hook(record)

    return call


class InterventionCount:
    """Counts an episode's intervention steps from the loop's step records."""

    def __init__(self) -> None:
        self.steps = 0

    def reset_at_zero(self, record: StepRecord) -> None:
        self.steps = (0 if record.step == 0 else self.steps) + int(record.intervention)


def sim_takeover(kind: str | None, env: Any, rate: float) -> Takeover | None:
    """The takeover ``--takeover`` names in the simulation (None: the policy alone)."""
    if kind is None:
        return None
    if kind == "scripted":
        return ScriptedTakeover(env)
    from robokit.record.teleop import make_teleop

    return TeleopTakeover(make_teleop(kind, env.robot, env, rate))


# -- policy sources ----------------------------------------------------------------------------------
def make_runner(checkpoint_or_policy: Any = None, server: str | None = None, device: str = "cpu",
                timeout_s: float = 2.0, client_keys: Any = None) -> PolicyRunner:
    """A runner for a checkpoint path / policy object (in process) or a server address (remote)."""
    if server:
        from robokit.deploy.client import PolicyClient

        runner = RemoteRunner(PolicyClient(server, timeout_s=timeout_s, keys=client_keys))
        if isinstance(checkpoint_or_policy, (str, Path)):
            from robokit.deploy.server import file_sha256

            if Path(checkpoint_or_policy).is_file() and runner.info.checkpoint_sha256 not in (
                    None, file_sha256(checkpoint_or_policy)):
                log.warning("the server at %s serves another checkpoint than %s", server, checkpoint_or_policy)
        return runner
    if checkpoint_or_policy is None:
        raise UserError("give a checkpoint to run in this process, or --server tcp://HOST:PORT")
    if isinstance(checkpoint_or_policy, (str, Path)):
        from robokit.deploy.server import file_sha256
        from robokit.policies.checkpoint import load_checkpoint
        from robokit.training.runtime import pick_device

        path = Path(checkpoint_or_policy)
        if not path.is_file():
            raise UserError(f"checkpoint {path} not found")
        from robokit.deploy.server import trained_tasks

        policy, meta = load_checkpoint(path, map_location=pick_device(device))
        # A checkpoint's model gets the query timeout: a model that hangs must not hold the loop.
        return LocalRunner(policy, checkpoint_sha256=file_sha256(path), tasks=trained_tasks(meta),
                           timeout_s=timeout_s)
    return LocalRunner(checkpoint_or_policy)


def check_task_set(info: PolicyInfo, task_set: str) -> None:
    """Refuse to evaluate a policy trained on one simulated task set on another.

    Without this a single-task checkpoint run on the ``multi`` scene just fails every episode. A
    policy whose training instructions are unknown (an older checkpoint, a policy object) is run
    as asked; one trained on other instructions (real-robot data) or on only some of the set's
    gets a warning.
    """
    from robokit.hardware.sim.tasks import TASK_SETS, list_tasks

    if not info.tasks:
        return
    list_tasks(task_set)  # a clear error for an unknown task set
    wanted = set(TASK_SETS[task_set].instructions.values())
    trained = set(info.tasks)
    if not wanted & trained:
        fits = [name for name, spec in TASK_SETS.items() if trained <= set(spec.instructions.values())]
        if fits:
            raise UserError(f"the policy was trained on the '{fits[0]}' task set ({_quoted(trained)}), not on "
                            f"'{task_set}' ({_quoted(wanted)}); run it with --task-set {fits[0]}")
        log.warning("the policy was trained on %s, which no simulated task set has; the '%s' results "
                    "say little about it", _quoted(trained), task_set)
        return
    unseen = wanted - trained
    if unseen:
        log.warning("the policy was not trained on %d of the '%s' instructions (%s); expect those to fail",
                    len(unseen), task_set, _quoted(unseen))


def _quoted(texts: set[str]) -> str:
    return ", ".join(f"'{t}'" for t in sorted(texts))


def goal_camera(info: PolicyInfo) -> str:
    """The camera whose final frame is the goal image: the policy's ``goal_camera`` (from its data
    needs, in this process or in the server's ``hello``), else its first camera."""
    return info.goal_camera or info.camera_names[0]


def expert_goal_image(env: Any, seed: int, task: str, camera: str, settle_steps: int = 5) -> np.ndarray:
    """Final frame of ``camera`` after the scripted expert solves ``task`` on ``seed`` (env is reset after)."""
    env.reset(seed=seed, task=task)
    expert = env.task.expert()
    while (action := expert.next_action(env.robot.read())) is not None:
        env.robot.send_action(action)
        env.step()
    for _ in range(settle_steps):
        env.step()
    image = env.render(camera).copy()
    env.reset(seed=seed, task=task)
    return image


def scene_objects(env: Any, camera_names: Sequence[str]) -> list[dict[str, Any]]:
    """Boxes of the task's objects as the policy is trained on them: per object (sorted by name, the
    order of a dataset's object slots) the box of the camera that sees it best (the largest box; the
    first of ``camera_names`` on a tie), in pixels of the rendered image (every camera renders at
    the same size); objects no camera sees are left out."""
    found = []
    for name in sorted(env.task.object_names):
        best: dict[str, Any] | None = None
        for cam in camera_names:
            box = env.object_box(cam, name)
            if box is None:
                continue
            area = (box[2] - box[0]) * (box[3] - box[1])
            if best is None or area > best["area"]:
                best = {"name": name, "box": [int(v) for v in box], "camera": cam, "area": area}
        if best is not None:
            found.append({k: best[k] for k in ("name", "box", "camera")})
    return found


# -- evaluation --------------------------------------------------------------------------------------
def evaluate_in_sim(
    checkpoint_or_policy: Any = None,
    config: EvalConfig | None = None,
    *,
    client_keys: Any = None,
    keys: Any = None,
    on_episode: Callable[[EpisodeOutcome], None] | None = None,
    on_tick: Callable[[ControlLoop], None] | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> EvalResults:
    """Run ``config.episodes`` evaluation episodes in the MuJoCo simulation and return the outcomes.

    ``checkpoint_or_policy``: a checkpoint path or a policy object run in this process; with
    ``config.server`` the policy runs on that server instead (``client_keys`` for a CurveZMQ
    server; the checkpoint, if given, is only compared with the one served). ``keys``
    (space/r/q) may pause, skip or end the run; ``on_episode`` is called after each episode and
    ``on_tick`` after each tick (a live panel), ``on_step`` with each tick's record (a live view).
    """
    from robokit.hardware.sim import PandaSimEnv, list_tasks

    cfg = config or EvalConfig()
    every_task = list_tasks(cfg.task_set)
    unknown = [t for t in cfg.tasks if t not in every_task]
    if unknown:
        raise UserError(f"{unknown[0]!r} is not a task of the sim task set {cfg.task_set!r}; its tasks: "
                        f"{'; '.join(every_task)}")
    instructions = list(cfg.tasks) or every_task
    runner = make_runner(checkpoint_or_policy, cfg.server, cfg.device, cfg.query_timeout_s, client_keys)
    env: Any = None
    loop: ControlLoop | None = None
    recorder: RolloutRecorder | None = None
    video: VideoRecorder | None = None
    try:  # everything opened from here on is closed in the finally, whatever fails
        info: PolicyInfo = runner.info
        check_task_set(info, cfg.task_set)
        rate = float(info.fps if cfg.fps is None else cfg.fps)
        loop_config = cfg.loop_config(rate)  # (checked before the simulation is built with this rate)
        h, w, _ = info.image_shape
        env = PandaSimEnv(task=cfg.task_set, seed=cfg.seed_start, image_size=(h, w),
                          camera_names=tuple(info.camera_names), control_hz=rate, realtime=False)
        results = EvalResults(policy=info.to_header(), settings={
            "episodes": cfg.episodes, "seed_start": cfg.seed(0), "seeds": list(cfg.seeds) or None,
            "task_set": cfg.task_set, "goal": cfg.goal,
            "mode": loop_config.mode, "realtime": cfg.realtime, "fps": rate, "max_steps": loop_config.max_steps,
            "k": cfg.k, "query_every": cfg.query_every, "server": cfg.server, "task_text": cfg.task_text,
            "tasks": list(instructions),
            "done_threshold": cfg.done_threshold, "objects": info.objects,
            "action_delay_s": cfg.action_delay_s})
        recorder = (RolloutRecorder(cfg.record_dir, {c: (h, w, 3) for c in info.camera_names}, rate, "sim", True,
                                    chunk_shape=(info.chunk_size, info.action_dim),
                                    takeover=cfg.takeover is not None, action_dim=info.action_dim,
                                    scene=SimScene(env, {c: env.cameras[c] for c in info.camera_names}))
                    if cfg.record_dir else None)
        video = VideoRecorder(cfg.video_dir, rate) if cfg.video_dir else None
        goal_cam = goal_camera(info)
        hold_steps = max(1, round(cfg.success_hold_s * rate))
        takeover = sim_takeover(cfg.takeover, env, rate)
        interventions = InterventionCount()
        loop = ControlLoop(env.robot, env.cameras, runner, loop_config, step_fn=env.step, keys=keys,
                           takeover=takeover)
        review = EpisodeReview(env)
        cams = tuple(info.camera_names)
        objects_fn = (lambda: scene_objects(env, cams)) if info.objects else None
        for i in range(cfg.episodes):
            seed = cfg.seed(i)
            task_name = instructions[i % len(instructions)] if len(every_task) > 1 else None
            goal_image = None
            if cfg.goal == "image":
                goal_image = expert_goal_image(env, seed, task_name or cfg.task_set, goal_cam)
            env.reset(seed=seed, task=task_name)
            instruction = env.task.instruction
            review.start()
            streak = [0]

            def goal_reached(streak: list[int] = streak) -> bool:
                streak[0] = streak[0] + 1 if env.task.success() else 0
                return streak[0] >= hold_steps

            if recorder is not None:
                recorder.start(instruction)
            if video is not None:
                video.start(f"episode_{i:03d}_seed{seed}")
            t0 = time.perf_counter()
            result: EpisodeResult = loop.run_episode(
                task=(cfg.task_text or {}).get(instruction, instruction) if cfg.goal == "text" else None,
                goal_image=goal_image,
                on_step=_chain(recorder, video, review, interventions.reset_at_zero, on_step),
                goal_reached=goal_reached, on_tick=on_tick,
                objects=objects_fn)
            success = result.reason == StopReason.SUCCESS
            if not success and result.reason not in (StopReason.WATCHDOG, StopReason.QUIT):
                for _ in range(5):  # let a released object come to rest before judging
                    env.step()
                success = bool(env.task.success())
            verdict = review.finish(success)
            extra = {"seed": seed, "stop_reason": result.reason.value, "policy": info.type,
                     **{f"safety_{key}": value for key, value in result.safety.items()},
                     **({"takeover": cfg.takeover, "intervention_steps": interventions.steps,
                         "takeover_reasons": "; ".join(takeover.reasons())} if takeover else {})}
            episode_file = (recorder.finish(success, extra, {goal_cam: goal_image} if goal_image is not None
                                            else None) if recorder is not None else None)
            video_file = video.finish("success" if success else "fail") if video is not None else None
            outcome = EpisodeOutcome(index=i, seed=seed, task=instruction, success=success, steps=result.steps,
                                     reason=result.reason.value, message=result.message,
                                     wall_s=time.perf_counter() - t0, episode_file=episode_file,
                                     video_file=video_file, failure=verdict.failure,
                                     first_object=verdict.first_object, grasp=verdict.grasp,
                                     safety=result.safety, intervention_steps=interventions.steps)
            results.outcomes.append(outcome)
            log.debug("episode %d (seed %d, %s): %s after %d steps (%s)", i, seed, instruction,
                      "success" if success else "failure", result.steps, result.message)
            if on_episode is not None:
                on_episode(outcome)
            if result.reason == StopReason.QUIT:
                break
    finally:
        if loop is not None:
            loop.close()
            if loop.takeover is not None:
                loop.takeover.close()
        if recorder is not None:
            recorder.finish(None, {"interrupted": "evaluation stopped"})
        if video is not None:
            video.finish("interrupted")
        runner.close()
        if env is not None:
            env.close()
    return results
