"""Live view (--view): a sim recording saved to .rrd and read back with rerun's own reader, a queue
that drops instead of blocking, an unreachable viewer, the missing extra, the web viewer."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from robokit.cli import app
from robokit.deploy.loop_results import StepRecord
from robokit.errors import UserError
from robokit.hardware.base import Frame, RobotState
from robokit.viz import live_view
from robokit.viz.live_view import LiveView
from robokit.viz.rerun_sink import ViewTarget, connect_url, import_rerun

rerun = pytest.importorskip("rerun")


def entity_rows(path: Path) -> dict[str, int]:
    """Rows per entity of a .rrd file, read with rerun's own reader."""
    from rerun.chunk import RrdReader

    rows: dict[str, int] = {}
    for line in RrdReader(path).store().summary().splitlines():
        entity, count = line.split()[0], int(line.split()[1].split("=")[1])
        rows[entity] = rows.get(entity, 0) + count
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_record(step: int, chunk: bool = False) -> StepRecord:
    state = RobotState(t=step * 0.02, qpos=np.full(7, 0.1 * step), qvel=np.zeros(7), gripper=0.0)
    frame = Frame(image=np.full((24, 32, 3), step % 255, np.uint8), t_capture=0.0, t_receive=0.0, index=step)
    chunks = [(step, np.tile(np.arange(8, dtype=np.float32), (5, 1)))] if chunk else []
    return StepRecord(step, state, {"top": frame}, np.zeros(8, np.float32), True, chunks, intervention=step % 2 == 1,
                      policy_action=np.ones(8, np.float32))


def test_sim_recording_with_view_saves_an_rrd_rerun_reads(tmp_path: Path):
    rrd = tmp_path / "out.rrd"
    result = CliRunner().invoke(app, ["record", "--sim", "--teleop", "scripted", "--episodes", "1", "--fps", "10",
                                      "--image-size", "48x64", "--out", str(tmp_path / "data"),
                                      "--view", f"save:{rrd}"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "episode_0.hdf5").is_file()
    rows = entity_rows(rrd)
    for entity in ("/cameras/top", "/cameras/wrist", "/robot/qpos", "/robot/target", "/timing/tick_ms",
                   "/timing/loop_hz", "/episode/state", "/episode/index", "/safety/position"):
        assert rows.get(entity, 0) > 0, (entity, rows)
    assert rows["/robot/qpos"] >= 20  # about 50 ticks at 10 Hz; a few may be dropped on a loaded machine


def test_unreachable_viewer_warns_once_and_the_recording_goes_on(tmp_path: Path, caplog):
    port = free_port()  # nothing listens there
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(app, ["record", "--sim", "--teleop", "scripted", "--episodes", "1", "--fps", "10",
                                          "--image-size", "48x64", "--out", str(tmp_path / "data"),
                                          "--view", f"connect:127.0.0.1:{port}"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "episode_0.hdf5").is_file()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "live view" in r.getMessage()]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0].getMessage()


def test_a_slow_viewer_makes_the_queue_drop_never_block(tmp_path: Path, monkeypatch):
    def slow_write(self, item, dropped):
        time.sleep(0.05)

    monkeypatch.setattr(live_view._Writer, "write", slow_write)
    view = LiveView(f"save:{tmp_path / 'slow.rrd'}", queue_size=4).start()
    worst = 0.0
    for step in range(200):
        t0 = time.perf_counter()
        view.on_step(step_record(step))
        worst = max(worst, time.perf_counter() - t0)
    assert view.dropped > 150
    assert worst < 0.02  # a put, never a wait for the 50 ms writer
    view.close(timeout_s=5)


def test_deploy_steps_log_chunks_interventions_and_loop_figures(tmp_path: Path):
    class FakeLoop:
        dt, robot, cameras = 0.02, object(), {}

        def stats(self):
            from robokit.deploy.loop_results import LoopStats
            from robokit.deploy.safety import SafetyCounts

            return LoopStats(step=1, state="running", loop_hz=50.0, jitter_p50_ms=0.1, jitter_p99_ms=0.3,
                             missed_ticks=0, inference_ms=5.0, rtt_ms=6.0, queries=1, query_failures=0,
                             starved_ticks=0, safety=SafetyCounts(velocity=3), last_error=None)

    rrd = tmp_path / "deploy.rrd"
    view = LiveView(f"save:{rrd}").start()
    loop = FakeLoop()
    for step in range(10):
        view.on_step(step_record(step, chunk=step % 5 == 0))
        view.on_tick(loop)
        time.sleep(0.002)
    view.close()
    rows = entity_rows(rrd)
    for entity in ("/policy/predicted_chunk", "/policy/intervention", "/policy/action", "/cameras/top",
                   "/timing/jitter_p99_ms", "/safety/velocity", "/robot/target"):
        assert rows.get(entity, 0) > 0, (entity, rows)


def test_missing_rerun_names_the_extra(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "rerun", None)  # import rerun -> ImportError
    with pytest.raises(UserError, match=r"pip install 'robokit\[view\]'"):
        import_rerun()
    record = ["record", "--sim", "--teleop", "scripted", "--view", f"save:{tmp_path / 'x.rrd'}"]
    for args in (["view", str(tmp_path)], record):
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, UserError), result.output
        assert "pip install 'robokit[view]'" in str(result.exception)


@pytest.mark.parametrize("text", ["spwan", "save:x.txt", "web:0", "web:9090:9090", "connect:host:port"])
def test_bad_view_targets_are_one_clear_error(text: str):
    with pytest.raises(UserError, match="--view"):
        ViewTarget.parse(text)


def test_view_targets_parse():
    assert ViewTarget.parse("connect").address == "rerun+http://127.0.0.1:9876/proxy"
    assert connect_url("laptop.local") == "rerun+http://laptop.local:9876/proxy"
    assert connect_url("10.0.0.5:9000") == "rerun+http://10.0.0.5:9000/proxy"
    web = ViewTarget.parse("web:8123:8124")
    assert (web.web_port, web.grpc_port) == (8123, 8124)


def test_web_view_serves_a_page(tmp_path: Path):
    web_port, grpc_port = free_port(), free_port()
    view = LiveView(ViewTarget.parse(f"web:{web_port}:{grpc_port}")).start()
    try:
        assert view.active, view.warning
        for step in range(5):
            view.on_step(step_record(step))
        page = urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=10).read().decode()
        assert "<html" in page.lower() and "rerun" in page.lower()
        browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
        if browser is not None:  # a headless browser loads it too
            out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                                  view.target.web_url("127.0.0.1")], check=False, capture_output=True, text=True,
                                 timeout=60)
            assert "canvas" in out.stdout.lower() or "rerun" in out.stdout.lower(), out.stderr[-500:]
    finally:
        view.close()


def test_deploy_in_sim_with_view_saves_cameras_joints_and_loop_timing(tmp_path: Path, make_tiny_checkpoint):
    from robokit.cli import main

    rrd = tmp_path / "deploy.rrd"
    checkpoint = make_tiny_checkpoint("act")
    main(["deploy", "--sim", str(checkpoint), "--episodes", "1", "--max-steps", "12", "--device", "cpu",
          "--view", f"save:{rrd}"])
    rows = entity_rows(rrd)
    for entity in ("/cameras/top", "/robot/qpos", "/robot/target", "/timing/loop_hz", "/episode/events"):
        assert rows.get(entity, 0) > 0, (entity, rows)


def test_spawn_without_a_display_warns_and_points_to_web(monkeypatch, caplog):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with caplog.at_level(logging.WARNING):
        view = LiveView("spawn").start()
    assert not view.active and "--view web" in (view.warning or "")
    view.on_step(step_record(0))  # a view that is off takes updates and does nothing
    view.close()
    assert len([r for r in caplog.records if "live view" in r.getMessage()]) == 1
