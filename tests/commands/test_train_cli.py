"""`robokit train` end to end: flags over a config file, DDP under torchrun, Ctrl-C, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from robokit.cli import main
from robokit.commands.train_cmd import build_options
from robokit.errors import ConfigError
from robokit.policies.checkpoint import load_checkpoint

TINY_ACT = {"backbone": "small", "hidden_dim": 32, "nheads": 2, "dim_feedforward": 64, "enc_layers": 1,
            "dec_layers": 1, "vae_enc_layers": 1, "latent_dim": 8}
SETS = [arg for k, v in TINY_ACT.items() for arg in ("--set", f"{k}={v}")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, episode_files) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "data"
    for i in range(3):
        episode_files.v1(folder, i, length=12, cams={"top": (32, 32), "wrist": (32, 32)})
    return folder


def run_main(*args: str) -> int:
    """The CLI's entry point in this process; its exit code."""
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def train_steps(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["split"] == "train"]


def test_cli_trains_with_flags_overriding_the_config_file(data: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture):
    config = tmp_path / "run.toml"
    config.write_text(
        'policy = "act"\nsteps = 50\nbatch-size = 4\nchunk_size = 4\ncamera = ["wrist"]\n'
        'val_every = 2\nlog_every = 1\nimage_size = "32x32"\n[policy_config]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY_ACT.items()))
    out = tmp_path / "run"
    assert run_main("train", str(data), "--config", str(config), "--out", str(out), "--steps", "3",
                    "--hidden-dim", "16", "--set", "kl_weight=2.5") == 0
    assert "done at step 3/3" in capsys.readouterr().err
    policy, meta = load_checkpoint(out / "last.pt", expected_type="act")
    cfg = policy.config
    assert cfg.hidden_dim == 16 and cfg.kl_weight == 2.5  # flags beat the file
    assert cfg.nheads == 2 and cfg.chunk_size == 4 and cfg.camera_names == ["wrist"]  # from the file
    assert meta["step"] == 3 and meta["batch_size"] == 4 and meta["camera_names"] == ["wrist"]
    assert train_steps(out) == [1, 2, 3]
    assert {p.name for p in out.glob("*.png")} >= {"train_val_loss.png", "train_val_l1.png"}
    assert (out / "best.pt").exists()


def test_config_file_precedence_and_unknown_keys(tmp_path: Path):
    config = tmp_path / "run.toml"
    config.write_text('data = "d"\nsteps = 7\nbatch_size = 3\n[policy_config]\nhidden_dim = 64\n')
    opts = build_options({"steps": 2, "batch_size": None, "policy_config": {"nheads": 4}}, config, [])
    assert (opts.steps, opts.batch_size, str(opts.data)) == (2, 3, "d")
    assert opts.policy_config == {"hidden_dim": 64, "nheads": 4}
    assert str(opts.out) == str(Path("runs") / "d-act")
    config.write_text('data = "d"\nstepz = 7\n')
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        build_options({}, config, [])
    config.write_text('data = "d"\nresume = true\n')
    with pytest.raises(ConfigError, match="unknown key 'resume'"):
        build_options({}, config, [])
    with pytest.raises(ConfigError, match="has no option 'hiden_dim'"):
        build_options({"data": "d"}, None, ["hiden_dim=3"])
    with pytest.raises(ConfigError, match="expected an integer"):
        build_options({"data": "d"}, None, ["hidden_dim=big"])
    config.write_text("data = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_options({}, config, [])


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "empty").mkdir()
    assert run_main("train", str(tmp_path / "empty"), "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "no episode" in err and "Traceback" not in err
    assert run_main("train", str(tmp_path), "--image-size", "big") == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    assert run_main("train", str(tmp_path), "--init-from", str(tmp_path / "gone.pt")) == 2
    err = capsys.readouterr().err
    assert "gone.pt: no such checkpoint" in err and "Traceback" not in err


def test_torchrun_two_cpu_processes_save_one_checkpoint(data: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "robokit.cli", "train", str(data), "--out", str(out), "--steps", "4", "--batch-size", "2",
           "--chunk-size", "4", "--val-every", "2", "--num-workers", "0", "--camera", "top", *SETS]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.count("done at step 4/4") == 1  # rank 0 alone reports
    # Rank 0 alone saves: one set of files, one record per logged step.
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt",
                                                                           "train_state.pt"]
    _, meta = load_checkpoint(out / "last.pt")
    assert meta["world_size"] == 2 and meta["step"] == 4
    assert train_steps(out) == sorted(set(train_steps(out))) and train_steps(out)[-1] == 4


def test_ctrl_c_saves_last_checkpoint_and_exits_cleanly(data: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture):
    out = tmp_path / "run"

    def press_ctrl_c_once_training() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().strip():
                os.kill(os.getpid(), signal.SIGINT)  # the trainer's handler is installed by now
                return
            time.sleep(0.05)

    presser = threading.Thread(target=press_ctrl_c_once_training, daemon=True)
    presser.start()
    code = run_main("train", str(data), "--out", str(out), "--steps", "100000", "--batch-size", "2",
                    "--chunk-size", "4", "--num-workers", "1", "--val-every", "1000000", *SETS)
    presser.join()
    assert code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--resume" in err and "stopped at step" in err
    _, meta = load_checkpoint(out / "last.pt")
    assert meta["step"] >= 10
    assert torch.load(out / "train_state.pt", weights_only=True)["step"] == meta["step"]


def test_progress_before_the_first_logged_loss_shows_a_dash(data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture):
    # Without a terminal each validation prints a line; the first comes at step 1, before the loss of
    # the first log interval (10 steps) exists.
    assert run_main("train", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2",
                    "--chunk-size", "4", "--val-every", "1", "--num-workers", "0", "--camera", "top", *SETS) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert lines[0].startswith("step 1/2 loss — val ")
    assert "loss ?" not in err and "?" not in lines[1]
    assert float(lines[1].split("loss ")[1].split()[0]) > 0
