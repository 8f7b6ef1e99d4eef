"""`robokit demo` (what `make demo` runs), end to end at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
import torch

from robokit.cli import main
from robokit.commands.demo import MARKER, prepare_output
from robokit.errors import UserError
from robokit.policies.checkpoint import read_checkpoint_info


def run_demo_cli(*args: str) -> int:
    """`robokit demo ARGS` in this process; its exit code."""
    try:
        main(["demo", *args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(autouse=True)
def restore_threads():
    # The demo runs with --threads 1 (a tiny model gains nothing from a second thread on a busy
    # 2-core machine); give the other tests their thread count back.
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_tiny_demo_runs_every_stage_and_prints_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "demo"
    code = run_demo_cli("--out", str(out), "--episodes", "2", "--steps", "4", "--batch-size", "8",
                        "--eval-episodes", "1", "--image-size", "32x40", "--expert-seeds", "1", "--videos", "1",
                        "--threads", "1")
    printed = capsys.readouterr().out
    assert code == 0, printed

    for n, stage in enumerate(("scene", "scripted expert", "record", "train ACT", "deploy"), start=1):
        assert f"{n}/5 {stage}" in printed
    assert "success rate: " in printed and "demo finished in" in printed

    assert (out / "scene.png").stat().st_size > 0
    episodes = sorted((out / "data").glob("episode_*.hdf5"))
    assert len(episodes) == 2
    with h5py.File(episodes[0]) as f:
        assert f["observations/images/top"].shape[1:] == (32, 40, 3)
        assert f["observations/images/wrist"].shape[1:] == (32, 40, 3)

    info = read_checkpoint_info(out / "run" / "last.pt")
    assert info["policy_type"] == "act"
    assert info["train_meta"]["step"] == 4
    assert list(info["config"]["camera_names"]) == ["top", "wrist"]
    assert info["config"]["object_pointer"] is True  # learnt from the boxes the recording stored
    assert (out / "run" / "train_val_loss.png").is_file()

    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_episodes"] == 1 and summary["recorded_episodes"] == 2
    assert 0.0 <= summary["success_rate"] <= 1.0
    assert [s["name"] for s in summary["stages"]] == ["scene", "expert", "record", "train", "deploy"]
    assert len(summary["videos"]) == 1 and Path(summary["videos"][0]).stat().st_size > 0
    assert Path(summary["rollout_plots"][0]).is_file()
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["episodes"] == 1
    # The command it suggests next evaluates as the demo did (same mode and query interval).
    hint = next(line for line in printed.splitlines() if line.startswith("next: robokit deploy --sim"))
    assert f"--mode {evaluation['settings']['mode']} --query-every {evaluation['settings']['query_every']}" in hint
    for path in (summary["checkpoint"], summary["scene_png"], summary["videos"][0]):
        assert path in printed


def test_output_folder_is_replaced_only_when_it_is_an_earlier_demo(tmp_path: Path):
    earlier = tmp_path / "demo"
    earlier.mkdir()
    (earlier / MARKER).write_text("{}")
    (earlier / "stale.txt").write_text("from the last run")
    assert "removed" in (prepare_output(earlier) or "")
    assert earlier.is_dir() and not any(earlier.iterdir())

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not written by the demo"):
        prepare_output(foreign)
    assert (foreign / "thesis.tex").read_text() == "precious"

    assert prepare_output(tmp_path / "new") is None


def test_bad_options_are_one_line_errors_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    for args, message in ((["--image-size", "8x8"], "stride"), (["--image-size", "big"], "HEIGHTxWIDTH"),
                          (["--cameras", ","], "at least one camera"), (["--fps", "0"], "--fps")):
        assert run_demo_cli("--out", str(tmp_path / "x"), *args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert run_demo_cli("--out", str(tmp_path / "x"), "--steps", "0") == 2
    assert "--steps" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert run_demo_cli("--out", str(foreign)) == 2
    assert "not written by the demo" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep"


def test_openmp_threads_spin_on_a_quiet_machine_and_sleep_on_a_busy_one():
    import subprocess
    import sys

    from robokit.commands.demo.run import busy_cores_now, openmp_wait_policy

    assert openmp_wait_policy(busy_cores=0.2, cores=2) is None  # OpenMP's default: spin, then sleep
    assert openmp_wait_policy(busy_cores=1.0, cores=2) == "PASSIVE"
    assert openmp_wait_policy(busy_cores=3.0, cores=8) is None
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = busy_cores_now(0.5)
    finally:
        hog.kill()
    assert busy is None or busy >= 0.5  # a busy loop keeps (nearly) a core busy
