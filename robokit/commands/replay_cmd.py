"""`robokit replay EPISODE.hdf5`: send a recorded episode's actions to the simulation or the robot.

    robokit replay data/pick/episode_3.hdf5 --sim
    robokit replay data/real/episode_0.hdf5 --robot franka --host 172.16.0.2 --yes
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from robokit.commands.hardware_options import (
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


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_command(
        episode: Annotated[Path, typer.Argument(help="The episode .hdf5 file to replay.")],
        sim: SimOpt = False,
        robot: RobotOpt = "franka",
        host: HostOpt = None,
        realtime: RealtimeOpt = "enforce",
        dynamics: DynamicsOpt = 0.1,
        collision: CollisionOpt = None,
        task_set: Annotated[str, typer.Option(
            "--task-set", help="Sim scene when the episode does not name its own.")] = "pick_place",
        seed: Annotated[int, typer.Option("--seed", help="Sim scene seed when the episode has none.")] = 0,
        speed: Annotated[float, typer.Option(
            "--speed", help="Sim only: playback speed, 1 = as recorded, 2 = twice as fast, "
                            "0 = as fast as possible.")] = 0.0,
        yes: Annotated[bool, typer.Option("--yes", help="Real robot: do not ask before moving.")] = False,
        workspace: Annotated[str, typer.Option(
            "--workspace", help="Box the hand never leaves: 'default' (the sim table's), a TOML file with "
                                "[workspace] low/high, or 'none'.")] = "default",
        view: ViewOpt = None,
    ) -> None:
        """Replay an episode's actions (sim: rebuilds the recorded scene and reports tracking + success)."""
        import numpy as np

        from robokit.hardware.workspace import workspace_from_option
        from robokit.record.replay import check_replay_speed, replay_episode
        from robokit.record.teleop import Replay
        from robokit.viz.live_view import chain, live_view_for

        console = Console()
        hw = HardwareOptions.from_cli(sim=sim, robot=robot, host=host, realtime=realtime, dynamics=dynamics,
                                      collision=collision)
        box = workspace_from_option(workspace)
        source = Replay(episode)  # DataError for corrupt / foreign / unusable files
        fps = source.fps or 30.0
        console.print(f"{episode}: {len(source.actions)} steps at {fps:g} fps ({source.layout})"
                      + (f", task: {source.task}" if source.task else ""), highlight=False)
        env = None
        if hw.sim:
            sim_task = source.attrs.get("sim_task")
            if not isinstance(sim_task, str):
                sim_task = task_set
            # Replay renders only for --view (at its image rate). Pacing is replay_episode's.
            env = hw.make_sim_env(task=sim_task, seed=seed, image_size=(240, 320) if view else (64, 80),
                                  control_hz=fps)
        elif speed:
            raise UserError("--speed is for --sim only: a real robot replays at the recorded rate")
        try:
            arm = hw.make_robot(env)  # not connected yet
            pace = check_replay_speed(source.actions, fps, arm)
            if not pace.keeps_up:  # said before asking to move
                console.print(
                    f"[yellow]warning:[/] {episode.name} moves joint {pace.joint + 1} at up to {pace.needed:.2f} "
                    f"rad/s, and the arm at --dynamics {hw.dynamics:g} reaches {pace.available:.2f} rad/s: it will "
                    f"lag behind the recording; --dynamics {min(1.0, np.ceil(pace.factor_needed * 100) / 100):g} "
                    "keeps up", highlight=False, soft_wrap=True)
            if env is None and not yes:
                import sys

                if not sys.stdin.isatty():
                    raise UserError("replaying on the real robot moves it: add --yes to confirm")
                typer.confirm(f"Move the robot at {host} through {episode.name}?", abort=True)
            with arm, console.status("replaying...") as status, live_view_for(view, "replay") as live:
                result = replay_episode(
                    source, live.tap_robot(arm) if live else arm, sim_env=env, fps=fps, sim_speed=speed,
                    workspace=box, on_step=chain(
                        lambda t, n: status.update(f"replaying step {t}/{n}") if t % 10 == 0 else None,
                        live.replay_callback(fps, source.recorded_qpos, env.cameras if env else None) if live else None))
        finally:
            if env is not None:
                env.close()
        console.print(f"replayed {result.steps} steps in {result.seconds:.1f} s; joint tracking vs the "
                      f"recording: max {result.max_joint_error:.4f} rad, mean {result.mean_joint_error:.4f} rad",
                      highlight=False)
        changed = ", ".join(f"{key.replace('_', ' ')} {n}" for key, n in result.safety.items() if n)
        if changed:
            console.print(f"safety filter: {changed}", highlight=False)
        if env is not None:
            scene = "the recorded scene" if result.scene_restored else "a new scene (the episode has no sim seed)"
            console.print(f"sim task check on {scene}: {'success' if result.success else 'not completed'}",
                          highlight=False)
