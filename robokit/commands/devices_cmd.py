"""`robokit devices`: list the cameras and input devices found, test-open cameras, check the robot connection, measure delays."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from robokit.commands.hardware_options import (
    CameraOpt,
    DynamicsOpt,
    HardwareOptions,
    HostOpt,
    RealtimeOpt,
    RobotOpt,
    SimOpt,
)
from robokit.errors import UserError

console = Console()


def _list_opencv_cameras(max_index: int) -> None:
    import cv2

    from robokit.hardware.opencv_camera import list_video_devices, probe_camera

    if sys.platform.startswith("linux"):
        sources: list[int | str] = list(list_video_devices())
    else:
        sources = list(range(max_index))
    table = Table(title="OpenCV cameras", title_justify="left")
    for column in ("device", "resolution", "fps", "backend", "use as"):
        table.add_column(column)
    # OpenCV logs a warning for every index it cannot open; probing is expected to miss.
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    found = 0
    try:
        for source in sources:
            info = probe_camera(source)
            if info is None:
                if sys.platform.startswith("linux"):
                    table.add_row(str(source), "-", "-", "-", "[dim]no frames (metadata node or busy)[/]")
                continue
            found += 1
            table.add_row(str(info["source"]), f"{info['width']}x{info['height']}", f"{info['fps']:.1f}",
                          info["backend"], f"--camera NAME={info['source']}")
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if found or table.row_count:
        console.print(table)
    if not found:
        console.print("no OpenCV cameras found" + (" (no /dev/video* devices)" if not sources else ""))


def _list_input_devices() -> None:
    """SpaceMice and key-sending devices (pedals, clickers) for `record --teleop spacemouse` / `--pedal`."""
    from robokit.hardware.inputs import list_input_devices, permission_hint

    found = list_input_devices()
    if not found:
        console.print("no SpaceMouse or key input devices found")
        return
    table = Table(title="input devices", title_justify="left")
    for column in ("device", "name", "kind", "use as"):
        table.add_column(column)
    for info in found:
        path = info.stable_path or info.path
        use = f"--teleop spacemouse:{path}" if info.kind == "spacemouse" else f"--pedal {path}"
        if not info.readable:
            use = "[yellow]no permission to read[/]"
        table.add_row(info.path, info.name, info.kind, use)
    console.print(table)
    if not all(info.readable for info in found):
        console.print(f"to read them: {permission_hint()}", highlight=False)


def _check_cameras(hw: HardwareOptions, size: tuple[int, int], fps: float, seconds: float) -> None:
    from robokit.hardware.factory import open_cameras

    cameras = hw.make_cameras(None, size=size, fps=fps)
    table = Table(title="camera check", title_justify="left")
    for column in ("camera", "spec", "delivered", "frames/s measured", "latency ms (receive - capture)"):
        table.add_column(column)
    with open_cameras(cameras):
        start = {name: cam.read_latest(max_age_s=1.0).index for name, cam in cameras.items()}
        time.sleep(seconds)
        for spec in hw.cameras:
            frame = cameras[spec.name].read_latest(max_age_s=1.0)
            rate = (frame.index - start[spec.name]) / seconds
            latency = (frame.t_receive - frame.t_capture) * 1000.0
            h, w = frame.image.shape[:2]
            table.add_row(spec.name, spec.text, f"{w}x{h}", f"{rate:.1f}", f"{latency:.1f}")
    console.print(table)


def _check_robot(hw: HardwareOptions) -> None:
    robot = hw.make_robot(None)
    with robot:
        state = robot.read()
        q_min, q_max = robot.joint_limits
        backend = getattr(robot, "backend", "?")
    table = Table(title=f"Franka at {hw.host}", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    table.add_row("backend", f"{backend} (realtime {hw.realtime})")
    table.add_row("joint positions (rad)", _vector(state.qpos))
    table.add_row("joint velocities (rad/s)", _vector(state.qvel))
    table.add_row("gripper (0 open .. 1 closed)", f"{state.gripper:.3f}")
    table.add_row("joint limits min (rad)", _vector(q_min))
    table.add_row("joint limits max (rad)", _vector(q_max))
    console.print(table)
    console.print(f"[green]robot connection OK[/] ({hw.host})")


def _vector(values: np.ndarray) -> str:
    return np.array2string(np.asarray(values, dtype=float), precision=3, suppress_small=True)


def register(app: typer.Typer) -> None:
    @app.command("devices")
    def devices_command(
        robot: RobotOpt = "franka",
        host: HostOpt = None,
        realtime: RealtimeOpt = "enforce",
        camera: CameraOpt = None,
        max_index: Annotated[
            int, typer.Option("--max-index", help="Camera indices to probe where /dev/video* does not exist.")
        ] = 8,
        fps: Annotated[float, typer.Option("--fps", help="Frame rate requested by --camera checks.")] = 30.0,
        height: Annotated[int, typer.Option("--height", help="Image height requested by --camera checks.")] = 480,
        width: Annotated[int, typer.Option("--width", help="Image width requested by --camera checks.")] = 640,
        seconds: Annotated[float, typer.Option("--seconds", help="How long each --camera check runs.")] = 1.0,
        latency: Annotated[bool, typer.Option(
            "--latency", help="Measure camera capture->receive, the policy round trip (--server or "
                              "--checkpoint) and the robot's command->motion delay; print and save them.")] = False,
        sim: SimOpt = False,
        dynamics: DynamicsOpt = 0.1,
        server: Annotated[str | None, typer.Option(
            "--server", help="--latency: policy server to time, e.g. tcp://gpu-box:5555.")] = None,
        checkpoint: Annotated[Path | None, typer.Option(
            "--checkpoint", help="--latency: checkpoint to time in this process.")] = None,
        device: Annotated[str, typer.Option("--device", help="--checkpoint: auto | cpu | cuda | mps.")] = "auto",
        queries: Annotated[int, typer.Option("--queries", min=1, help="--latency: policy queries timed.")] = 20,
        save: Annotated[Path, typer.Option(
            "--save", help="--latency: where to write the measured delays (for `deploy --latency`).")
        ] = Path("latency.json"),
        snapshot: Annotated[Path | None, typer.Option(
            "--snapshot", help="Save one frame per camera (PNG) and a contact sheet here: the --camera cameras, "
                               "the simulator's with --sim, else every OpenCV camera found.")] = None,
    ) -> None:
        """List the cameras, SpaceMice and pedals found; with --camera, open them and measure; with --host, check the robot.

        Examples: `robokit devices`, `robokit devices --camera top=0 --camera wrist=/dev/video2`,
        `robokit devices --robot franka --host 172.16.0.2` (add `--realtime ignore` for franky-sim),
        `robokit devices --latency --host 172.16.0.2 --camera top=0 --server tcp://gpu-box:5555`.
        """
        hw = HardwareOptions.from_cli(sim=sim, robot=robot, host=host, realtime=realtime, camera=camera,
                                      require_robot=False, dynamics=dynamics)
        if latency:
            from robokit.commands.devices_latency import measure_latency, print_and_save

            report = measure_latency(hw, server=server, checkpoint=checkpoint, device=device,
                                     size=(height, width), fps=fps, seconds=max(seconds, 0.1), queries=queries)
            print_and_save(console, report, save)
            return
        if snapshot is not None:
            from robokit.commands.view_cmd import snapshot_cameras

            snapshot_cameras(console, hw, snapshot, (height, width), fps, max_index)
            return
        if sim or server or checkpoint:
            raise UserError("--sim goes with --latency or --snapshot; --server and --checkpoint with --latency")
        _list_opencv_cameras(max_index)
        _list_input_devices()
        if hw.cameras:
            _check_cameras(hw, (height, width), fps, max(seconds, 0.1))
        if hw.host:
            _check_robot(hw)
