"""`robokit view EPISODE_OR_FOLDER`: recorded episodes in rerun, scrubbable on a step/time timeline.

    robokit view data/pick/episode_3.hdf5                 # a local viewer
    robokit view data/pick --save pick_rrd/               # one .rrd per episode, open with `rerun FILE`
    robokit view rollouts/ --web                          # the web viewer, for a machine without a display
    robokit view data/pick --connect laptop.local         # a viewer running on another machine

Also defines ``--view`` (:data:`ViewOpt`), the live view option of record, deploy and replay, and
``robokit devices --snapshot DIR`` (:func:`snapshot_cameras`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from robokit.errors import UserError

ViewOpt = Annotated[
    str | None,
    typer.Option("--view", help="Live view in rerun (pip install 'robokit[view]'): spawn | connect[:HOST[:PORT]] | "
                                "web[:WEB_PORT[:GRPC_PORT]] | save:FILE.rrd. Never slows the loop: what it cannot "
                                "keep up with is dropped."),
]


def register(app: typer.Typer) -> None:
    @app.command("view")
    def view_command(
        episodes: Annotated[Path, typer.Argument(help="An episode .hdf5 file or a dataset folder of them.")],
        save: Annotated[Path | None, typer.Option(
            "--save", help="Write .rrd files instead of showing them: FILE.rrd for one episode, a folder "
                           "(one .rrd per episode) for several.")] = None,
        web: Annotated[bool, typer.Option(
            "--web", help="Serve the web viewer (port 9090, data on 9876) until Ctrl-C.")] = False,
        connect: Annotated[str | None, typer.Option(
            "--connect", help="Send to a rerun viewer at HOST[:PORT] (port 9876).")] = None,
        limit: Annotated[int | None, typer.Option(
            "--limit", min=1, help="At most this many episodes of a folder (the first ones).")] = None,
    ) -> None:
        """Open recorded episodes (and rollouts with their predicted chunks and interventions) in rerun."""
        from rich.console import Console

        from robokit.episodes.reader import list_episodes
        from robokit.viz.episode_view import log_episode
        from robokit.viz.rerun_sink import ViewerUnreachable, ViewTarget, import_rerun, open_sink

        if sum((save is not None, web, connect is not None)) > 1:
            raise UserError("give one of --save, --web and --connect (none: a local viewer)")
        rr = import_rerun()  # first: a missing extra is said before anything is read
        files = [episodes] if episodes.is_file() else list_episodes(episodes)
        if limit is not None:
            files = files[:limit]
        if save is not None and len(files) == 1 and save.suffix != ".rrd":
            save = save / f"{files[0].stem}.rrd"
        if save is not None and len(files) > 1 and save.suffix == ".rrd":
            raise UserError(f"--save {save}: {len(files)} episodes make one .rrd each; give a folder")
        console = Console()
        target = (ViewTarget.parse(f"connect:{connect}") if connect is not None else ViewTarget("web") if web
                  else ViewTarget("spawn") if save is None else None)
        streams = []
        try:
            for i, path in enumerate(files):
                rec = rr.RecordingStream("robokit", recording_id=f"{path.parent.name}/{path.stem}")
                where = save if len(files) == 1 else (save / f"{path.stem}.rrd" if save is not None else None)
                if where is not None:
                    open_sink(rec, ViewTarget("save", path=where))
                elif i == 0 or target is None or target.mode != "web":
                    open_sink(rec, target)  # type: ignore[arg-type]
                else:  # the web viewer serves one gRPC port: later episodes go to the first one's server
                    rec.connect_grpc(f"rerun+http://127.0.0.1:{target.grpc_port}/proxy")
                rec.send_recording_name(path.stem)
                sent = log_episode(rec, path)
                rec.flush()
                streams.append(rec)
                extras = f", {', '.join(sent['extras'])}" if sent["extras"] else ""
                console.print(f"{path.name}: {sent['steps']} steps, cameras {', '.join(sent['cameras'])}{extras}"
                              + (f" -> {where}" if where is not None else ""), highlight=False)
        except ViewerUnreachable as exc:
            raise UserError(str(exc)) from None
        finally:
            for rec in streams:
                if save is not None:
                    rec.disconnect()  # finishes the file
        if target is not None and target.mode == "web":
            console.print(target.describe() + "; Ctrl-C to stop", highlight=False)
            try:
                while True:
                    time.sleep(1.0)
            except KeyboardInterrupt:
                pass
        elif target is not None:
            console.print(target.describe().replace("streaming the view", "sent the episodes"), highlight=False)


def snapshot_cameras(console: Any, hw: Any, out: Path, size: tuple[int, int], fps: float, max_index: int = 8) -> None:
    """``robokit devices --snapshot DIR``: the cameras of ``--camera``, the simulator's with ``--sim``,
    else every OpenCV camera found; one PNG each and a contact sheet, listed in a table."""
    import contextlib

    from rich.table import Table

    from robokit.hardware.factory import make_cameras
    from robokit.viz.snapshot import CONTACT_SHEET, take_snapshots

    with contextlib.ExitStack() as stack:
        env = hw.make_sim_env(task="pick_place", seed=0, image_size=size) if hw.sim else None
        if env is not None:
            stack.callback(env.close)
        specs = [spec.text for spec in hw.cameras] or ([] if hw.sim else _found_cameras(max_index))
        if not specs and not hw.sim:
            raise UserError("no camera found to snapshot; name one with --camera NAME=SPEC (NAME=synthetic for a "
                            "test pattern) or add --sim")
        cameras = make_cameras(specs, sim_env=env, size=size, fps=fps)
        saved = take_snapshots(cameras, out)
    table = Table(title=f"snapshots in {out}", title_justify="left")
    for column in ("camera", "resolution", "file"):
        table.add_column(column)
    for shot in saved:
        table.add_row(shot.name, f"{shot.width}x{shot.height}", str(shot.path))
    console.print(table)
    console.print(f"contact sheet: {out / CONTACT_SHEET}", highlight=False)


def _found_cameras(max_index: int) -> list[str]:
    """``NAME=SOURCE`` specs of the OpenCV cameras that deliver frames (``video0=/dev/video0``)."""
    import sys

    from robokit.hardware.opencv_camera import list_video_devices, probe_camera

    sources: list[int | str] = (list(list_video_devices()) if sys.platform.startswith("linux")
                                else list(range(max_index)))
    found = [info["source"] for info in (probe_camera(s) for s in sources) if info is not None]
    return [f"{Path(str(s)).name if isinstance(s, str) else f'cam{s}'}={s}" for s in found]
