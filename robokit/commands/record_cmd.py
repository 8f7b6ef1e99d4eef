"""`robokit record`: capture demonstrations into crash-safe HDF5 episodes.

    robokit record --sim --teleop keyboard --out data/pick              # jog with keys, s/d/r/h/t/q
    robokit record --sim --teleop spacemouse --pedal FootSwitch --pedal-map KEY_A=s,KEY_B=d,KEY_C=q
    robokit record --sim --teleop scripted --episodes 50 --out data/pick
    robokit record --sim --task-set multi --teleop scripted --episodes 60 --out data/multi
    robokit record --sim --task-set multi --teleop scripted --episodes 60 --segmentation --out data/seg
    robokit record --robot franka --host 172.16.0.2 --teleop kinesthetic \\
        --camera top=0 --camera wrist=/dev/video2 --task "put the cube in the bowl" --out data/real
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from robokit.commands.common import log_to_console, on_stop_signals, parse_image_size, shorten
from robokit.commands.hardware_options import (
    CameraOpt,
    CollisionOpt,
    DynamicsOpt,
    HardwareOptions,
    HostOpt,
    RealtimeOpt,
    RobotOpt,
    SimOpt,
)
from robokit.commands.view_cmd import ViewOpt
from robokit.errors import UserError

DEFAULT_EPISODES = {"scripted": 10, "replay": 1}


def register(app: typer.Typer) -> None:
    @app.command("record")
    def record_command(
        sim: SimOpt = False,
        robot: RobotOpt = "franka",
        host: HostOpt = None,
        realtime: RealtimeOpt = "enforce",
        dynamics: DynamicsOpt = 0.1,
        collision: CollisionOpt = None,
        camera: CameraOpt = None,
        out: Annotated[Path | None, typer.Option(
            "--out", help="Dataset folder (default: data/<task-set> with --sim, data/recordings otherwise).")] = None,
        fps: Annotated[float, typer.Option("--fps", help="Control/recording rate in steps per second.")] = 30.0,
        task: Annotated[str, typer.Option(
            "--task", help="Instruction stored with each episode; with --sim it picks the sim task.")] = "",
        task_set: Annotated[str, typer.Option(
            "--task-set", help="Sim scene: pick_place (one cube) or multi (instructions, goal images).")] = "pick_place",
        teleop: Annotated[str, typer.Option(
            "--teleop", help="keyboard | spacemouse[:DEVICE] | kinesthetic | scripted (sim) | "
                             "replay:EPISODE.hdf5")] = "keyboard",
        episodes: Annotated[int | None, typer.Option(
            "--episodes", help="Stop after this many saved episodes (scripted default 10, replay 1); a scripted run "
            "into a folder that already holds episodes records only what is missing.")] = None,
        end_frames: Annotated[int, typer.Option(
            "--end-frames", help="Extra steps recorded with done=True after stop.")] = 5,
        compress: Annotated[str, typer.Option(
            "--compress", help="Image storage: none | lzf (lossless) | jpeg (ALOHA layout) | auto "
                               "(lzf in sim, jpeg for real cameras).")] = "auto",
        jpeg_quality: Annotated[int, typer.Option("--jpeg-quality", help="JPEG quality with --compress jpeg.")] = 90,
        preview: Annotated[bool, typer.Option(
            "--preview", help="Show the cameras in an OpenCV window (needs a display).")] = False,
        seed: Annotated[int, typer.Option("--seed", help="Sim scene seed (episodes draw theirs from it).")] = 0,
        image_size: Annotated[str | None, typer.Option(
            "--image-size", help="HxW of the images (default 240x320 in sim, 480x640 for real cameras).")] = None,
        keep_failed: Annotated[bool, typer.Option(
            "--keep-failed", help="Keep scripted episodes whose task check failed.")] = False,
        min_free_mb: Annotated[float, typer.Option(
            "--min-free-mb", help="Stop recording when the disk has less free space than this.")] = 200.0,
        workspace: Annotated[str, typer.Option(
            "--workspace", help="Box the hand never leaves under teleop: 'default' (the sim table's), a TOML "
                                "file with [workspace] low/high, or 'none'.")] = "default",
        segmentation: Annotated[bool, typer.Option(
            "--segmentation", help="Sim: also store each camera's instance mask per step (robot links, "
                                   "gripper, objects, targets) for segmentation models and the VLA.")] = False,
        pedal: Annotated[str | None, typer.Option(
            "--pedal", help="A foot pedal or clicker that sends keys (its /dev/input path or part of its name; "
                            "`robokit devices` lists them), read beside the terminal.")] = None,
        pedal_map: Annotated[str, typer.Option(
            "--pedal-map", help="Pedal keys -> recorder keys, e.g. KEY_A=s,KEY_B=d,KEY_C=q.")] = "",
        episode_time: Annotated[float | None, typer.Option(
            "--episode-time", help="Stop and save an episode after this many seconds.")] = None,
        reset_time: Annotated[float | None, typer.Option(
            "--reset-time", help="Start the next episode this many seconds after one ends (a countdown in "
                                 "the panel while you reset the scene).")] = None,
        view: ViewOpt = None,
    ) -> None:
        """Record demonstrations (keys: s start/stop+save, d discard, r re-record, h home,
        t task of the next episode, y / n label the last episode success / failure, q quit)."""
        from robokit.hardware.workspace import workspace_from_option
        from robokit.record.session import RecordConfig
        from robokit.record.teleop import check_teleop_spec

        hw = HardwareOptions.from_cli(sim=sim, robot=robot, host=host, realtime=realtime,
                                      dynamics=dynamics, camera=camera, collision=collision)
        teleop_kind, _ = check_teleop_spec(teleop, sim)
        if pedal_map and not pedal:
            raise UserError("--pedal-map goes with --pedal DEVICE (`robokit devices` lists pedals)")
        if pedal and not pedal_map:
            raise UserError("--pedal needs --pedal-map: which pedal key is which recorder key, e.g. "
                            "--pedal-map KEY_A=s,KEY_B=d,KEY_C=q")
        for name, value in (("--episode-time", episode_time), ("--reset-time", reset_time)):
            if value is not None and not value > 0:
                raise UserError(f"{name} must be positive seconds, got {value}")
        if teleop_kind in ("scripted", "replay") and (episode_time or reset_time):
            raise UserError("--episode-time and --reset-time time a person's episodes; a scripted or replayed "
                            "episode ends by itself")
        if task_set not in ("pick_place", "multi"):
            raise UserError(f"unknown --task-set {task_set!r}; choose pick_place or multi")
        size = parse_image_size(image_size or ("240x320" if sim else "480x640"))
        if segmentation and not sim:
            raise UserError("--segmentation renders masks in the simulator: add --sim (for real data, put "
                            "mask PNGs beside the episodes; see docs/record.md)")
        if episodes is None:
            episodes = DEFAULT_EPISODES.get(teleop_kind)
        if compress == "auto":
            # lzf is lossless but costs ~15 ms of one core per 640x480 frame (h5py compresses on one
            # thread): fine for the small sim images, too slow for three real cameras at 30 fps.
            compress = "lzf" if sim else "jpeg"
        if compress not in ("none", "lzf", "jpeg"):
            raise UserError(f"unknown --compress {compress!r}; choose none, lzf, jpeg or auto")
        config = RecordConfig(
            out=out or Path("data") / (task_set if sim else "recordings"), fps=fps, task=task,
            episodes=episodes, end_frames=end_frames, compress=compress, jpeg_quality=jpeg_quality,
            min_free_bytes=int(min_free_mb * 2**20), goal_images=sim and task_set == "multi",
            keep_failed=keep_failed, workspace=workspace_from_option(workspace), segmentation=segmentation)
        run_recording(hw, config, teleop=teleop, task_set=task_set, seed=seed, size=size, preview=preview,
                      pedal=pedal, pedal_map=pedal_map, timing=(episode_time, reset_time), view=view)


def _sim_task(task: str, task_set: str) -> str:
    """The sim task that ``--task`` names: an instruction, a task name or its number from 1 (as the
    `t` key takes them)."""
    from robokit.hardware.sim import list_tasks, resolve_task

    text = task.strip()
    if text.isdigit():
        names = list_tasks(task_set)
        if not 1 <= int(text) <= len(names):
            numbered = "; ".join(f"{i}: {name}" for i, name in enumerate(names, 1))
            raise UserError(f"--task {text}: the {task_set} task set has tasks 1 to {len(names)} ({numbered})")
        return names[int(text) - 1]
    found_set, _ = resolve_task(text)
    if found_set != task_set:
        raise UserError(f"--task {task!r} belongs to the {found_set} task set; add --task-set {found_set}")
    return text


def recorder_keys(teleop_kind: str) -> list[str]:
    """The keys a recording session with ``teleop_kind`` answers to (what a pedal may send)."""
    from robokit.record.episode_timer import LABEL_KEYS
    from robokit.record.status import SESSION_KEYS
    from robokit.record.teleop import KeyboardJog

    keys = [key for key, _ in SESSION_KEYS]
    if teleop_kind in ("keyboard", "spacemouse", "kinesthetic"):
        keys += [TaskPrompt.KEY, "space", "g", *(key for key, _ in LABEL_KEYS)]
    if teleop_kind in ("keyboard", "spacemouse"):
        keys += ["+", "-", *KeyboardJog.MOVES]
    return keys


def run_recording(hw: HardwareOptions, config: Any, teleop: str, task_set: str, seed: int,
                  size: tuple[int, int], preview: bool, pedal: str | None = None, pedal_map: str = "",
                  timing: tuple[float | None, float | None] = (None, None), view: str | None = None) -> list[Path]:
    """Build the hardware and the source, run the session with its UI, print what was saved."""
    from robokit.hardware.inputs import MergedKeys, open_pedal
    from robokit.record.episode_timer import EpisodeTimer
    from robokit.record.keyboard import PreviewWindow, TerminalKeys
    from robokit.record.session import RecordingSession
    from robokit.record.spacemouse_teleop import SpaceMouseTeleop
    from robokit.record.teleop import make_teleop
    from robokit.viz.live_view import open_live_view

    console = Console()
    teleop_kind = teleop.split(":", 1)[0].strip().lower()
    autonomous = teleop_kind in ("scripted", "replay")
    keys = TerminalKeys()
    if not autonomous and not keys.is_terminal:
        raise UserError(f"--teleop {teleop_kind} is driven from the keyboard: run it in a terminal "
                        "(ssh and tmux work)")
    with contextlib.ExitStack() as stack:
        # First: a missing pedal or a wrong --pedal-map is named before the scene or the robot starts.
        pedal_keys = open_pedal(pedal, pedal_map, recorder_keys(teleop_kind)) if pedal else None
        if pedal_keys is not None:
            stack.callback(pedal_keys.close)
        live = open_live_view(view, stack, "record")
        env = None
        if hw.sim:
            sim_task = _sim_task(config.task, task_set) if config.task else task_set
            env = hw.make_sim_env(task=sim_task, seed=seed, image_size=size, control_hz=config.fps,
                                  realtime=not autonomous)
            if env is not None:
                stack.callback(env.close)
        robot = hw.make_robot(env)
        source = make_teleop(teleop, robot, env, config.fps)
        stack.callback(source.close)  # also when the set-up below fails (a SpaceMouse's reader thread)
        cameras = hw.make_cameras(env, size=size, fps=config.fps)
        session = RecordingSession(live.tap_robot(robot) if live else robot, cameras, source, config, sim_env=env)
        if live is not None:
            live.watch_session(session)
        for message in session.prepare():  # recovery of what a crash left behind
            console.print(f"[yellow]{message}[/]", highlight=False)
        # Cameras first: a wrong camera spec fails in a second, before the robot connects and homes.
        for cam in cameras.values():
            stack.enter_context(cam)
        stack.enter_context(robot)
        window = PreviewWindow() if preview else None
        if window is not None:
            stack.callback(window.close)
        stack.enter_context(keys)
        # The session saves the episode in progress before it stops; one that arrives during a save
        # waits for the save to finish.
        stack.enter_context(on_stop_signals(session.interrupt))
        # Keyboard-driven sessions can change the instruction between episodes (key t).
        prompt = None if autonomous else TaskPrompt(session)
        # Labels (y / n) and the episode and reset clocks, for a person's episodes.
        timer = None if autonomous else EpisodeTimer(session, *timing)

        # The terminal, the pedal and the SpaceMouse's save button feed one stream of keys.
        merged = MergedKeys(keys, pedal_keys, source if isinstance(source, SpaceMouseTeleop) else None)

        def poll() -> list[str]:
            pressed = merged.poll()
            for note in merged.take_notices():  # a pedal unplugged: say so once, keep recording
                session.notify(note)
                if prompt is None:  # the progress bar shows no session messages
                    console.print(f"[yellow]{note}[/]", highlight=False)
            pressed = prompt.filter(pressed) if prompt is not None else pressed
            return timer.filter(pressed) if timer is not None else pressed

        def on_tick(s: RecordingSession) -> None:
            if live is not None:
                live.on_record_tick(s)
            if window is not None:
                extra = window.show(s.last_images, caption=f"{s.state}  episode_{s.status().episode_index}")
                for key in prompt.filter(extra) if prompt is not None else extra:
                    s.handle_key(key)

        interrupted = False
        try:
            if prompt is None:
                saved = _run_with_progress(console, session, poll, on_tick)
            else:
                saved = _run_with_panel(console, session, prompt, poll, on_tick)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the session saved the episode in progress
            interrupted, saved = True, list(session.saved)
    if interrupted and session.interrupt_note:
        console.print(f"interrupted: {session.interrupt_note}", highlight=False)
    _summary(console, session, config.out)
    if interrupted:
        raise KeyboardInterrupt
    return saved


# -- UIs --------------------------------------------------------------------------------------------
class TaskPrompt:
    """A one-line prompt in the live panel for the next episode's instruction (key ``t``, when idle).

    While it is open the keys typed go to the prompt, not to the session: Enter sets the task
    (:meth:`RecordingSession.set_task`; a mistake is shown in the panel), Esc cancels. The control
    loop keeps running meanwhile; the session itself never prompts.
    """

    KEY = "t"

    def __init__(self, session: Any) -> None:
        self.session = session
        self.text: str | None = None  # None: closed
        session.board.add_keys([(self.KEY, "task of next episode")])

    def filter(self, keys: list[str]) -> list[str]:
        """Consume the keys that belong to the prompt; return the others, in order, for the session."""
        passed = []
        for key in keys:
            if self.text is None:
                if key == self.KEY:
                    self._open()
                else:
                    passed.append(key)
            elif key == "enter":
                self._submit()
            elif key == "esc":
                self.text = None
                self.session.notify("task unchanged")
            elif key == "backspace":
                self.text = self.text[:-1]
            elif key == "space":
                self.text += " "
            elif key == "ctrl-c":
                passed.append(key)
            elif len(key) == 1 and key.isprintable():
                self.text += key
        return passed

    def _open(self) -> None:
        if self.session.state != "idle":
            self.session.notify("stop (s) or discard (d) the episode before changing the task (t)")
        else:
            self.text = ""

    def _submit(self) -> None:
        text, self.text = self.text or "", None
        if not text.strip():
            self.session.notify("task unchanged")
            return
        try:
            self.session.set_task(text)
        except UserError as exc:
            self.session.notify(str(exc))


def _run_with_panel(console: Console, session: Any, prompt: TaskPrompt, poll: Any, on_tick: Any) -> list[Path]:
    from rich.live import Live

    with Live(get_renderable=lambda: render_panel(session.status(), prompt.text), console=console,
              refresh_per_second=8, transient=False, redirect_stderr=False) as live, log_to_console(live.console):
        return session.run(poll, on_tick)


def _run_with_progress(console: Console, session: Any, poll: Any, on_tick: Any) -> list[Path]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    target = session.target
    with Progress(TextColumn("[bold]recording[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=console, transient=False) as progress, \
            log_to_console(progress.console):
        bar = progress.add_task("episodes", total=target, info="")

        def tick(s: Any) -> None:
            on_tick(s)
            st = s.status()
            progress.update(bar, completed=len(s.saved),
                            info=f"episode_{st.episode_index} step {st.steps} | failed {s.failed} | "
                                 f"{st.loop_hz:.0f} steps/s | {shorten(st.task, 50)}")

        saved = session.run(poll, tick)
        progress.update(bar, completed=len(saved), info=f"done | failed {session.failed}")
        return saved


def render_panel(st: Any, prompt: str | None = None) -> Panel:
    """The live panel of a keyboard/kinesthetic session (``prompt``: the task being typed, if any)."""
    colour = {"idle": "cyan", "recording": "red", "ending": "magenta", "saving": "yellow"}.get(st.state, "white")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    target = f" / {st.target}" if st.target else ""
    grid.add_row("state", Text(st.state.upper(), style=f"bold {colour}"))
    grid.add_row("episode", f"episode_{st.episode_index}   elapsed {st.elapsed_s:5.1f} s   steps {st.steps}"
                            f"   loop {st.loop_hz:4.1f} Hz   late ticks {st.overruns}")
    cams = "   ".join(f"{n} {st.camera_hz.get(n, 0):4.1f} fps (dropped {st.dropped.get(n, 0)})"
                       for n in st.camera_hz)
    grid.add_row("cameras", cams)
    grid.add_row("saved", f"{st.saved}{target}   discarded {st.discarded}   disk {st.disk_free_bytes / 2**30:.1f} GB free")
    if st.task:
        grid.add_row("task", st.task)
    if prompt is not None:
        grid.add_row("new task", Text.assemble((f"{prompt}▌", "bold yellow"),
                                               ("   Enter: set for the next episode, Esc: cancel", "dim")))
    if st.teleop:
        grid.add_row("teleop", st.teleop)
    grid.add_row("keys", "   ".join(f"[bold]{k}[/] {v}" for k, v in st.key_help))
    body: list[RenderableType] = [grid]
    if st.messages:
        body.append(Text("\n".join(st.messages[-3:]), style="dim"))
    return Panel(Group(*body), title="robokit record", border_style=colour)


def _summary(console: Console, session: Any, out: Path) -> None:
    saved = session.saved
    if saved:
        names = ", ".join(p.name for p in saved[:5]) + (" ..." if len(saved) > 5 else "")
        console.print(f"saved {len(saved)} episode(s) to {out}: {names}", highlight=False)
        console.print(f"check them with: robokit inspect {out}", highlight=False)
    else:
        console.print(f"no episode saved to {out}", highlight=False)
    if session.failed:
        console.print(f"{session.failed} scripted episode(s) failed the task check and were not kept "
                      "(--keep-failed keeps them)", highlight=False)

