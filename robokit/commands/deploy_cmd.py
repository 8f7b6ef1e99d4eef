"""`robokit deploy`: run a policy through the real-time control loop, in simulation or on the arm.

    robokit deploy --sim runs/act/best.pt --episodes 50                 # success-rate table
    robokit deploy --sim --server tcp://gpu:5555 --episodes 20 --realtime
    robokit deploy --sim grp.pt --task-set multi --goal image
    robokit deploy --robot franka --host 172.16.0.2 --camera top=0 --camera wrist=2 \\
                   --server tcp://gpu:5555                             # on hardware, same loop
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from robokit.commands.hardware_options import CameraOpt, CollisionOpt, DynamicsOpt, HostOpt, RobotOpt, SimOpt
from robokit.commands.view_cmd import ViewOpt

if TYPE_CHECKING:
    from typing_extensions import Self

PANEL_PERIOD_S = 0.25


def _stats_table(loop: Any, header: str) -> Any:
    from rich.table import Table

    s = loop.stats()
    table = Table(title=header, show_header=False, box=None, padding=(0, 2))
    table.add_row("step", str(s.step), "state", s.state)
    table.add_row("loop", f"{s.loop_hz:6.1f} Hz", "jitter p50/p99", f"{s.jitter_p50_ms:.2f} / {s.jitter_p99_ms:.2f} ms")
    table.add_row("inference", f"{s.inference_ms:6.1f} ms", "round trip", f"{s.rtt_ms:.1f} ms")
    table.add_row("queries", f"{s.queries} ({s.query_failures} failed)", "missed / starved",
                  f"{s.missed_ticks} / {s.starved_ticks}")
    sc = s.safety
    table.add_row("safety", f"pos {sc.position} vel {sc.velocity} grip {sc.gripper}", "last error",
                  (s.last_error or "-")[:60])
    return table


class LivePanel:
    """A rich live panel refreshed from the loop's tick callback, at most every PANEL_PERIOD_S.

    On exit it shows the loop's final state (watchdog, quit, done...) and stays on screen: the
    episode's end happens after the last tick, so a panel left as the last tick drew it would still
    say "running".
    """

    def __init__(self, console: Any, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.header = ""
        self._live: Any = None
        self._last = 0.0
        self._loop: Any = None

    def __enter__(self) -> Self:
        if self.enabled:
            from rich.live import Live

            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            if self._loop is not None:
                self._live.update(_stats_table(self._loop, self.header), refresh=True)
            self._live.__exit__(None, None, None)
            self._live, self._loop = None, None

    def on_tick(self, loop: Any) -> None:
        self._loop = loop
        now = time.perf_counter()
        if self._live is None or now - self._last < PANEL_PERIOD_S:
            return
        self._last = now
        self._live.update(_stats_table(loop, self.header), refresh=True)


def _seeds_text(settings: dict[str, Any]) -> str:
    listed = settings.get("seeds")
    if listed:
        shown = ", ".join(str(s) for s in listed[:8])
        return f"seed{'s' if len(listed) > 1 else ''} {shown}{', ...' if len(listed) > 8 else ''}"
    first, n = settings["seed_start"], settings["episodes"]
    return f"seeds {first}..{first + n - 1}"


def _results_table(results: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"success rate over {results.episodes} episodes ({_seeds_text(results.settings)})")
    table.add_column("instruction")
    table.add_column("success", justify="right")
    table.add_column("rate", justify="right")
    for task, (s, n) in results.per_task().items():
        table.add_row(task, f"{s}/{n}", f"{100 * s / n:.0f}%")
    table.add_section()
    table.add_row("overall", f"{results.successes}/{results.episodes}", f"{100 * results.success_rate:.1f}%",
                  style="bold")
    return table


def _safety_text(record: dict[str, float]) -> str:
    """An episode's (or a run's) safety record in words: what the filter changed, the watchdog's
    holds, and the largest gap between a command and the measured joints."""
    counts = ", ".join(f"{key.replace('_', ' ')} {int(v)}" for key, v in record.items()
                       if not key.startswith("max_") and v)
    gap = record.get("max_command_gap_rad")
    return (counts or "no clamps, no holds") + (f"; largest command gap {gap:.3f} rad" if gap is not None else "")


def _failure_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in counts.items() if n) or "no failures"


def _grounding_text(g: Any) -> str:
    return f"{100 * g.accuracy:.0f}% ({g.correct}/{g.counted})" if g.accuracy is not None else "-"


def _failures_summary(results: Any) -> str:
    """Why episodes failed and whether the gripper went to the named object first: one line for a
    single instruction, else a line per instruction (the variable-length failure list last)."""
    per_task = results.per_task()
    overall = results.grounding()
    none = f" ({overall.without} went to no object)" if overall.without else ""
    if len(per_task) == 1:
        return (f"failures: {_failure_text(results.failure_counts())}; went to the named object first: "
                f"{_grounding_text(overall)}{none}")
    width = max(len(task) for task in [*per_task, "overall"])
    lines = ["failures per instruction (grounded: went to the named object first / went to an object)"]
    for task, (s, n) in per_task.items():
        g = results.grounding(task)
        lines.append(f"  {task:<{width}}  {s:>3}/{n:<3}  grounded {g.correct:>2}/{g.counted:<2}  "
                     f"{_failure_text(results.failure_counts(task))}")
    lines.append(f"  {'overall':<{width}}  {results.successes:>3}/{results.episodes:<3}  grounded "
                 f"{_grounding_text(overall)}{none}  {_failure_text(results.failure_counts())}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("deploy")
    def deploy_command(
        checkpoint: Annotated[Path | None, typer.Argument(
            help="Checkpoint to run in this process (omit with --server).")] = None,
        sim: SimOpt = False,
        robot: RobotOpt = "franka",
        host: HostOpt = None,
        camera: CameraOpt = None,
        dynamics: DynamicsOpt = 0.1,
        collision: CollisionOpt = None,
        realtime_kernel: Annotated[str, typer.Option(
            "--realtime-kernel", help="enforce: require a real-time kernel on hardware; ignore: "
                                      "franky-sim and non-RT machines.")] = "enforce",
        server: Annotated[str | None, typer.Option(
            "--server", help="Policy server address (robokit serve), e.g. tcp://gpu-box:5555.")] = None,
        image_codec: Annotated[str | None, typer.Option(
            "--image-codec", help="With --server: raw | jpeg[:Q] (Q 1..100, default 90); JPEG sends "
                                  "~30x fewer bytes per frame (for a network link).")] = None,
        secure: Annotated[bool, typer.Option("--secure", help="CurveZMQ to the server (keys from --keys).")] = False,
        keys_dir: Annotated[Path | None, typer.Option(
            "--keys", help="Folder with server.key and client.key_secret (robokit keys).")] = None,
        episodes: Annotated[int | None, typer.Option(
            "--episodes", help="Episodes to run (default: 10 in sim, 1 on hardware).")] = None,
        seed_start: Annotated[int, typer.Option(
            "--seed-start", help="Sim: first scene seed; held-out seeds by default.")] = 1000,
        seeds: Annotated[str | None, typer.Option(
            "--seeds", help="Sim: these scene seeds in turn, e.g. 1003,1017 (instead of --seed-start; "
                            "the episodes are their number).")] = None,
        realtime: Annotated[bool, typer.Option(
            "--realtime", help="Sim: run at wall-clock rate (async inference by default).")] = False,
        task_set: Annotated[str, typer.Option("--task-set", help="Sim: pick_place | multi.")] = "pick_place",
        goal: Annotated[str, typer.Option("--goal", help="text (instruction) | image (goal image).")] = "text",
        task: Annotated[str | None, typer.Option(
            "--task", help="Hardware: the instruction given to goal-conditioned policies.")] = None,
        goal_image: Annotated[Path | None, typer.Option(
            "--goal-image", help="Hardware: goal image file for goal-image policies.")] = None,
        mode: Annotated[str | None, typer.Option(
            "--mode", help="ensemble (query every step) | chunk (execute n, re-query) | async.")] = None,
        query_every: Annotated[int | None, typer.Option(
            "--query-every", help="Steps between queries (chunk default: the chunk size).")] = None,
        k: Annotated[float, typer.Option("--k", help="Temporal ensembling coefficient, weights exp(-k i).")] = 0.01,
        fps: Annotated[float | None, typer.Option(
            "--fps", help="Control rate (default: the checkpoint's recording rate).")] = None,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="Steps per episode.")] = None,
        done_threshold: Annotated[float, typer.Option(
            "--done-threshold", help="Stop when the policy's done probability reaches this (>1: never).")] = 0.9,
        velocity_scale: Annotated[float, typer.Option(
            "--velocity-scale", help="Fraction of the joint velocity limits a command may use.")] = 1.0,
        workspace: Annotated[str, typer.Option(
            "--workspace", help="Box the hand never leaves: 'default' (the sim table's), a TOML file with "
                                "[workspace] low/high, or 'none'.")] = "default",
        latency: Annotated[Path | None, typer.Option(
            "--latency", help="Delays measured by `robokit devices --latency --save FILE`: the chunk rows "
                              "for the image's age and the arm's response are skipped.")] = None,
        rt_priority: Annotated[int | None, typer.Option(
            "--rt-priority", help="Run the control loop SCHED_FIFO at this priority (1-99; needs rtprio rights).")] = None,
        timeout: Annotated[float | None, typer.Option(
            "--timeout", help="Seconds a policy query may take (default 0.5 realtime, 5 in fast sim).")] = None,
        device: Annotated[str, typer.Option("--device", help="In-process policy: auto | cpu | cuda | mps.")] = "auto",
        record: Annotated[Path | None, typer.Option("--record", help="Save the rollouts as episodes here.")] = None,
        video: Annotated[Path | None, typer.Option("--video", help="Sim: write an MP4 per episode here.")] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="Sim: write the results as JSON.")] = None,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Hardware: do not ask before each episode.")] = False,
        takeover: Annotated[str | None, typer.Option(
            "--takeover", help="Who may take over from the policy (key t hands over and back): keyboard | "
                               "spacemouse[:DEVICE] | hand (Franka hand guiding) | scripted (sim: the expert, "
                               "whenever the policy strays). With --record the interventions are saved.")] = None,
        pedal: Annotated[str | None, typer.Option(
            "--pedal", help="A foot pedal or clicker that sends keys, read beside the terminal.")] = None,
        pedal_map: Annotated[str, typer.Option(
            "--pedal-map", help="Pedal keys -> deploy keys (t takeover, space, r, q, y, n), e.g. "
                                "KEY_A=t,KEY_B=q.")] = "",
        episode_time: Annotated[float | None, typer.Option(
            "--episode-time", help="Seconds per episode (default: 10 in sim, 60 on hardware).")] = None,
        reset_time: Annotated[float | None, typer.Option(
            "--reset-time", help="Hardware: seconds to reset the scene between episodes, counted down "
                                 "(instead of asking before each episode).")] = None,
        label: Annotated[bool, typer.Option(
            "--label", help="Hardware: after each episode, y / n labels it a success / failure.")] = False,
        view: ViewOpt = None,
    ) -> None:
        """Run a policy in the control loop: `--sim` evaluates on held-out scenes, else drives the robot."""
        from rich.console import Console

        from robokit.commands.deploy_human import KeysWithPedal, check_takeover_spec, open_deploy_keys
        from robokit.commands.hardware_options import HardwareOptions
        from robokit.errors import UserError
        from robokit.hardware.workspace import workspace_from_option
        from robokit.record.keyboard import TerminalKeys

        console = Console(soft_wrap=True)
        hw = HardwareOptions.from_cli(sim=sim, robot=robot, host=host, realtime=realtime_kernel, camera=camera,
                                      dynamics=dynamics, collision=collision)
        if episodes is not None and episodes <= 0:
            raise UserError(f"--episodes must be positive, got {episodes}")
        scene_seeds = _seed_list(seeds, episodes, hw.sim)
        for name, value in (("--episode-time", episode_time), ("--reset-time", reset_time)):
            if value is not None and not value > 0:
                raise UserError(f"{name} must be positive seconds, got {value}")
        if episode_time is not None and max_steps is not None:
            raise UserError("give --episode-time or --max-steps, not both")
        if hw.sim and reset_time is not None:
            raise UserError("--reset-time is for a person at the real robot; the simulation resets itself")
        if label and record is None:
            raise UserError("--label stores each episode's label in its rollout file: add --record DIR")
        takeover_spec = check_takeover_spec(takeover, hw.sim)
        if checkpoint is None and server is None:
            raise UserError("give a CHECKPOINT to run in this process, or --server tcp://HOST:PORT")
        if image_codec is not None:
            if server is None:
                raise UserError("--image-codec applies to --server (a policy in this process reads raw frames)")
            from robokit.deploy.client import set_default_image_codec

            set_default_image_codec(image_codec)
        client_keys = None
        if secure:
            if keys_dir is None:
                raise UserError("--secure needs --keys DIR with server.key and client.key_secret")
            from robokit.deploy.keys import load_client_keys

            client_keys = load_client_keys(keys_dir)
        common = {"mode": mode, "query_every": query_every, "k": k, "fps": fps, "max_steps": max_steps,
                  "done_threshold": done_threshold, "timeout_s": timeout, "device": device,
                  "client_keys": client_keys, "rt_priority": rt_priority,
                  "workspace": workspace_from_option(workspace),
                  "action_delay_s": _action_delay(console, latency, hw), "takeover": takeover_spec,
                  "episode_time": episode_time, "reset_time": reset_time, "label": label}
        pedal_keys = open_deploy_keys(pedal, pedal_map)
        keys_cls = ((lambda: KeysWithPedal(TerminalKeys(), pedal_keys, console.print)) if pedal_keys is not None
                    else TerminalKeys)
        if hw.sim:
            if hw.cameras:
                raise UserError("with --sim the cameras are the policy's own sim cameras; drop --camera")
            n_episodes = len(scene_seeds) or (10 if episodes is None else episodes)
            _deploy_sim(console, checkpoint, server, n_episodes, seed_start, realtime, task_set, goal, record,
                        video, json_out, velocity_scale, common, keys_cls, view=view, seeds=scene_seeds)
        else:
            if realtime or video is not None or json_out is not None or task_set != "pick_place":
                raise UserError("--realtime, --video, --json and --task-set apply to --sim; on hardware the "
                                "loop always runs at wall-clock rate")
            _deploy_robot(console, hw, checkpoint, server, 1 if episodes is None else episodes, task, goal_image, record,
                          velocity_scale, yes, common, keys_cls, view=view)


def _seed_list(text: str | None, episodes: int | None, sim: bool) -> tuple[int, ...]:
    """The scene seeds of ``--seeds`` (empty without it)."""
    from robokit.errors import UserError

    if text is None:
        return ()
    if not sim:
        raise UserError("--seeds picks simulated scenes; it applies to --sim")
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--seeds takes whole numbers separated by commas (e.g. 1003,1017), got {text!r}") from None
    if not seeds:
        raise UserError("--seeds is empty: give at least one scene seed, e.g. --seeds 1003")
    if episodes is not None and episodes != len(seeds):
        raise UserError(f"--episodes {episodes} but --seeds lists {len(seeds)} scenes: give one of them")
    return seeds


def _action_delay(console: Any, latency: Path | None, hw: Any) -> float:
    """The action delay a `--latency` file gives (0 without one), announced; a warning when it was
    measured on the other kind of robot or at another dynamics factor."""
    if latency is None:
        return 0.0
    from robokit.deploy.latency import load_latency

    report = load_latency(latency)
    setup = report.setup
    console.print(f"action delay {report.action_delay_s * 1000:.0f} ms from {latency} "
                  f"(measured {setup.get('measured_at', '?')} on {setup.get('robot', '?')})")
    if (setup.get("robot") == "sim") != bool(hw.sim):
        console.print(f"[yellow]warning:[/] {latency} was measured on {setup.get('robot', '?')}, not on this robot")
    elif not hw.sim and setup.get("dynamics") not in (None, hw.dynamics):
        console.print(f"[yellow]warning:[/] {latency} was measured at --dynamics {setup['dynamics']}, this run "
                      f"uses {hw.dynamics}: the arm's response differs; measure again at this factor")
    return report.action_delay_s


def _deploy_sim(console: Any, checkpoint: Path | None, server: str | None, episodes: int, seed_start: int,
                realtime: bool, task_set: str, goal: str, record: Path | None, video: Path | None,
                json_out: Path | None, velocity_scale: float, common: dict[str, Any], keys_cls: Any,
                view: str | None = None, seeds: tuple[int, ...] = ()) -> None:
    from robokit.commands.deploy_human import ask_label
    from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim
    from robokit.episodes.labels import label_episode
    from robokit.viz.live_view import chain, live_view_for

    panel = LivePanel(console, enabled=console.is_terminal)
    opened: list[Any] = []  # the keys, once open

    def on_episode(o: Any) -> None:
        mark = "[green]success[/]" if o.success else "[red]failure[/]"
        helped = f", {o.intervention_steps} steps taken over" if o.intervention_steps else ""
        console.print(f"episode {o.index + 1}/{episodes} seed {o.seed}: {mark} after {o.steps} steps "
                      f"({o.reason}{helped}) - {o.task}")
        if common["label"] and o.episode_file and opened:
            verdict = ask_label(console, opened[0])
            if verdict is not None:  # the operator's word; the simulator's check stays beside it
                label_episode(o.episode_file, verdict)
        panel.header = f"episode {o.index + 2}/{episodes}"

    panel.header = f"episode 1/{episodes}" + (" - t take over" if common["takeover"] else "")
    with keys_cls() as keys, panel, live_view_for(view, "deploy") as live:
        opened.append(keys)
        human = ("client_keys", "takeover", "episode_time", "reset_time", "label")
        settings = {k: v for k, v in common.items() if k not in human}
        spec = ":".join(p for p in common["takeover"] if p) if common["takeover"] else None
        config = EvalConfig(episodes=episodes, seed_start=seed_start, seeds=seeds, server=server, task_set=task_set,
                            goal=goal, realtime=realtime, record_dir=record, video_dir=video, velocity_scale=velocity_scale,
                            takeover=spec, **settings,
                            **({"max_seconds": common["episode_time"]} if common["episode_time"] else {}))
        results = evaluate_in_sim(str(checkpoint) if checkpoint else None, config,
                                  client_keys=common["client_keys"], keys=keys if keys.is_terminal else None,
                                  on_episode=chain(on_episode, live.on_episode if live else None),
                                  on_tick=chain(panel.on_tick, live.on_tick if live else None),
                                  on_step=live.on_step if live else None)
    console.print(_results_table(results))
    console.print(_failures_summary(results), highlight=False)
    console.print(f"safety: {_safety_text(results.safety_totals())}", highlight=False)
    if record is not None:
        console.print(f"rollouts saved in {record}")
    if video is not None:
        console.print(f"videos in {video}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results.to_dict(), indent=2))
        console.print(f"results written to {json_out}")


def _deploy_robot(console: Any, hw: Any, checkpoint: Path | None, server: str | None, episodes: int,
                  task: str | None, goal_image_path: Path | None, record: Path | None, velocity_scale: float,
                  yes: bool, common: dict[str, Any], keys_cls: Any, view: str | None = None) -> None:
    import contextlib

    from robokit.commands.deploy_human import ask_label, reset_countdown, robot_takeover
    from robokit.deploy.evaluate import make_runner
    from robokit.deploy.loop import ControlLoop, LoopConfig, StopReason
    from robokit.deploy.recording import RolloutRecorder
    from robokit.errors import HardwareFault, ReflexStop, RobokitError, UserError
    from robokit.viz.live_view import chain, open_live_view

    goal_image = None
    if goal_image_path is not None:
        import cv2

        bgr = cv2.imread(str(goal_image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"cannot read goal image {goal_image_path}")
        goal_image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    timeout = common["timeout_s"] if common["timeout_s"] is not None else 0.5
    with contextlib.ExitStack() as stack:  # closes whatever was opened, also when a later step fails
        runner = make_runner(str(checkpoint) if checkpoint else None, server, common["device"], timeout,
                             common["client_keys"])
        stack.callback(runner.close)
        info = runner.info
        rate = float(info.fps if common["fps"] is None else common["fps"])
        config = LoopConfig(fps=rate, mode=common["mode"] or "async", k=common["k"],
                            query_every=common["query_every"], realtime=True,
                            max_steps=int(common["max_steps"] or round((common["episode_time"] or 60.0) * rate)),
                            done_threshold=common["done_threshold"], velocity_scale=velocity_scale,
                            rt_priority=common["rt_priority"], workspace=common["workspace"],
                            action_delay_s=common["action_delay_s"])
        cameras = hw.make_cameras(None, fps=rate)
        arm = hw.make_robot(None)
        # Cameras first: a wrong camera spec fails in a second, before the robot connects.
        for cam in cameras.values():
            stack.enter_context(cam)
        stack.enter_context(arm)
        spec = common["takeover"]  # (kind, device) or None
        takeover = robot_takeover(spec[0], spec[1], arm, rate) if spec is not None else None
        if takeover is not None:
            stack.callback(takeover.close)
        loop = stack.enter_context(ControlLoop(arm, cameras, runner, config, keys=None, takeover=takeover))
        live = open_live_view(view, stack, "deploy")
        recorder = None
        if record is not None:
            shapes = {name: tuple(cameras[name].shape) for name in info.camera_names}
            recorder = RolloutRecorder(record, shapes, rate, arm.kind, sim=False,
                                       chunk_shape=(info.chunk_size, info.action_dim),
                                       takeover=takeover is not None, action_dim=info.action_dim)
        panel = LivePanel(console, enabled=console.is_terminal)
        for i in range(episodes):
            if i > 0 and common["reset_time"] is not None:
                with keys_cls() as keys:
                    if not reset_countdown(console, common["reset_time"], keys):
                        break
            elif not yes and common["reset_time"] is None and not typer.confirm(
                    f"Move the arm to its ready pose and run episode {i + 1}/{episodes}?", default=True):
                break
            arm.home()
            if recorder is not None:
                recorder.start(task)
            panel.header = (f"episode {i + 1}/{episodes} - space pause, r reset, q stop"
                            + (f", t take over ({common['takeover'][0]})" if takeover is not None else ""))
            try:
                with keys_cls() as keys, panel:
                    loop.keys = keys if keys.is_terminal else None
                    if live is not None:
                        live.new_episode(i, f"episode {i + 1}/{episodes}")
                    result = loop.run_episode(task=task, goal_image=goal_image,
                                              on_step=chain(recorder, live.on_step if live else None),
                                              on_tick=chain(panel.on_tick, live.on_tick if live else None))
            except (RobokitError, KeyboardInterrupt) as exc:  # the loop has stopped the arm
                if recorder is not None:  # keep what was recorded (a full disk still has the margin)
                    try:
                        safety = {**loop.episode_safety(), "reflex_stops": int(isinstance(exc, ReflexStop))}
                        saved = recorder.finish(None, {"interrupted": str(exc)[:500] or type(exc).__name__,
                                                       "policy": info.type,
                                                       **{f"safety_{key}": v for key, v in safety.items()}})
                        console.print(f"saved the steps recorded so far: {saved}")
                    except RobokitError as save_error:  # the first error is the one to report
                        console.print(f"could not save the rollout in progress: {save_error}")
                raise
            success = None
            if common["label"]:
                with keys_cls() as keys:
                    success = ask_label(console, keys)
            if recorder is not None:
                safety = {**result.safety, "reflex_stops": 0}
                human = ({"takeover": common["takeover"][0], "intervention_steps": recorder.interventions}
                         if takeover is not None else {})
                path = recorder.finish(success, {"stop_reason": result.reason.value, "policy": info.type,
                                                 **{f"safety_{key}": v for key, v in safety.items()}, **human})
                console.print(f"saved {path}")
            console.print(f"episode {i + 1}: {result.message} after {result.steps} steps; "
                          f"safety: {_safety_text(result.safety)}", highlight=False)
            if result.reason == StopReason.WATCHDOG:
                raise HardwareFault(f"{result.message}. Check the policy server ({server or 'in-process'}) "
                                    "and the network, then run deploy again")
            if result.reason == StopReason.QUIT:
                break
