"""`robokit devices --latency`: measure a rig's delays, print them and save them for `robokit deploy`."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from robokit.commands.hardware_options import HardwareOptions
from robokit.deploy.latency import (
    LatencyReport,
    measure_camera_delay,
    measure_motion_delay,
    measure_policy_delay,
    report_setup,
)

#: The simulation is measured at this control rate: its clock advances one tick per step, so the
#: rate is the resolution of the measured delays.
SIM_MEASURE_HZ = 200.0


def measure_latency(hw: HardwareOptions, *, server: str | None, checkpoint: Path | None, device: str,
                    size: tuple[int, int], fps: float, seconds: float, queries: int) -> LatencyReport:
    """Measure every part the options name: cameras, the policy (server or checkpoint), the robot."""
    report = LatencyReport(setup=report_setup(
        robot=("sim" if hw.sim else hw.robot) if (hw.sim or hw.host) else None, host=hw.host,
        dynamics=hw.dynamics if hw.host else None, server=server,
        checkpoint=str(checkpoint) if checkpoint else None,
        sim_rate_hz=SIM_MEASURE_HZ if hw.sim else None))
    if hw.sim:
        _measure_sim(hw, report, size)
    else:
        if hw.cameras:
            from robokit.hardware.factory import open_cameras

            cameras = hw.make_cameras(None, size=size, fps=fps)
            with open_cameras(cameras):
                report.cameras = measure_camera_delay(cameras, seconds=seconds, fps=fps)
        if hw.host:
            robot = hw.make_robot(None)
            with robot:
                period = 1.0 / 250.0  # read the arm often: the delay is a few control periods
                report.robot = measure_motion_delay(robot, lambda: time.sleep(period))
    if server or checkpoint:
        from robokit.deploy.evaluate import make_runner

        runner = make_runner(str(checkpoint) if checkpoint else None, server, device, timeout_s=10.0)
        try:
            report.policy = measure_policy_delay(runner, queries=queries)
        finally:
            runner.close()
    return report


def _measure_sim(hw: HardwareOptions, report: LatencyReport, size: tuple[int, int]) -> None:
    env = hw.make_sim_env(task="pick_place", seed=0, image_size=size, control_hz=SIM_MEASURE_HZ)
    if env is None:  # only called with --sim
        return
    with contextlib.closing(env):
        env.reset(seed=0)
        cameras = hw.make_cameras(env, size=size)
        report.cameras = measure_camera_delay(cameras, seconds=0.1, fps=SIM_MEASURE_HZ, advance=env.step)
        report.robot = measure_motion_delay(hw.make_robot(env), env.step)


def latency_table(report: LatencyReport) -> Table:
    """The three delays (those measured) as a table."""
    table = Table(title="latency", title_justify="left")
    for column in ("delay", "median ms", "p95 ms", "n", "note"):
        table.add_column(column)
    for name, cam in report.cameras.items():
        table.add_row(f"camera {name}", f"{cam.median_ms:.1f}", f"{cam.p95_ms:.1f}", str(cam.frames),
                      "capture to receive" + (" (simulated time)" if report.setup.get("robot") == "sim" else ""))
    if report.policy is not None:
        p = report.policy
        table.add_row("policy", f"{p.rtt_median_ms:.1f}", f"{p.rtt_p95_ms:.1f}", str(p.queries),
                      f"infer round trip; the model {p.model_median_ms:.1f} ms of it")
    if report.robot is not None:
        r = report.robot
        where = "simulated time" if report.setup.get("robot") == "sim" else f"dynamics {report.setup.get('dynamics')}"
        table.add_row("robot", f"{r.response_ms:.1f}", "-", str(r.trials),
                      f"command to 50 % of a {r.step_rad} rad step of joint {r.joint + 1} (first motion "
                      f"{r.first_motion_ms:.1f} ms; {where})")
    return table


def print_and_save(console: Console, report: LatencyReport, save: Path | None) -> None:
    """Print the table and the delay deploy would use; save the report when ``save`` is given."""
    console.print(latency_table(report))
    if not (report.cameras or report.policy or report.robot):
        console.print("nothing to measure: add --camera, --server/--checkpoint, --host or --sim")
        return
    console.print(f"action delay for deploy (slowest camera + robot response): {report.action_delay_s * 1000:.1f} ms")
    if save is not None:
        path = report.save(save)
        console.print(f"saved to {path}; use it with `robokit deploy ... --latency {path}`")

