"""`robokit record --sim --teleop keyboard` driven like a person would: in a terminal, with keys.

Each test runs the recorder in its own tmux server (a real pseudo-terminal, so the raw-mode key
reader and the live panel run exactly as over ssh) and sends keys with `tmux send-keys`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from robokit.cli import main
from robokit.episodes.reader import open_episode
from robokit.hardware.kinematics import fk
from robokit.hardware.sim import list_tasks

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class Pane:
    """One recorder process in a private tmux server."""

    def __init__(self, args: list[str], status_file: Path) -> None:
        self.server = f"robokit-test-{uuid.uuid4().hex[:8]}"
        self.status_file = status_file
        command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "robokit.cli", *args])
        # The shell records the exit status (tmux's own report of it is unreliable across versions).
        shell = f"{command}; echo $? > {shlex.quote(str(status_file))}"
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        self._tmux("new-session", "-d", "-s", "rec", "-x", "200", "-y", "50", shell, env=env)
        self._tmux("set-option", "-t", "rec", "remain-on-exit", "on")
        self.shell_pid = int(self._tmux("display-message", "-p", "-t", "rec", "#{pane_pid}").strip())

    @property
    def pid(self) -> int:
        """The recorder's process id (the child of the pane's shell)."""
        for _ in range(100):
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    try:
                        stat = (proc / "stat").read_text()
                    except OSError:
                        continue
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.shell_pid:
                        return int(proc.name)
            time.sleep(0.05)
        raise AssertionError("the recorder process was not found")

    def _tmux(self, *args: str, env: dict | None = None) -> str:
        return subprocess.run(["tmux", "-L", self.server, *args], check=True, capture_output=True, text=True,
                              env=env, timeout=20).stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            self._tmux("send-keys", "-t", "rec", key)
            time.sleep(0.05)

    def type(self, text: str) -> None:
        """Type ``text`` literally (no key-name lookup)."""
        self._tmux("send-keys", "-t", "rec", "-l", text)
        time.sleep(0.05)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "rec", "-S", "-60")

    def dead(self) -> bool:
        return self._tmux("display-message", "-p", "-t", "rec", "#{pane_dead}").strip() == "1"

    def exit_status(self) -> int:
        """The exit code of a recorder that exited by itself."""
        for _ in range(100):
            if self.status_file.exists() and self.status_file.read_text().strip():
                return int(self.status_file.read_text())
            time.sleep(0.05)
        raise AssertionError(f"no exit status was recorded; screen:\n{self.screen()}")

    def wait_for(self, predicate, what: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            if self.dead():
                break
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{self.screen()}")

    def wait_text(self, text: str, timeout_s: float = 30.0) -> str:
        return self.wait_for(lambda s: text in s, repr(text), timeout_s)

    def wait_steps(self, n: int) -> int:
        screen = self.wait_for(lambda s: "RECORDING" in s and _steps(s) >= n, f"{n} recorded steps")
        return _steps(screen)

    def wait_dead(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.dead():
            if time.monotonic() > deadline:
                raise AssertionError(f"the recorder did not exit; screen:\n{self.screen()}")
            time.sleep(0.1)

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        self.wait_dead(timeout_s)
        return self.exit_status()

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.server, "kill-server"], check=False, capture_output=True, timeout=20)


def _steps(screen: str) -> int:
    found = re.findall(r"steps (\d+)", screen)
    return int(found[-1]) if found else -1


@pytest.fixture
def pane_factory(tmp_path):
    panes: list[Pane] = []

    def make(args: list[str]) -> Pane:
        pane = Pane(args, tmp_path / f"exit-status-{len(panes)}")
        panes.append(pane)
        return pane

    yield make
    for pane in panes:
        pane.close()


def test_keys_give_exactly_the_episodes_asked_for(tmp_path, pane_factory):
    out = tmp_path / "demos"
    task = list_tasks("multi")[0]
    pane = pane_factory(["record", "--sim", "--teleop", "keyboard", "--task-set", "multi", "--task", task,
                         "--out", str(out), "--image-size", "48x64", "--compress", "jpeg"])
    pane.wait_text("IDLE")

    # Episode 0: start, jog down and forward, close the gripper, stop and save.
    pane.keys("s")
    pane.wait_text("RECORDING")
    pane.keys("o", "o", "o", "o", "o", "Up", "Up", "Space")
    pane.wait_steps(45)
    pane.keys("s")
    pane.wait_text("saved episode_0.hdf5")

    # A take that is discarded.
    pane.keys("s")
    pane.wait_steps(5)
    pane.keys("d")
    pane.wait_text("discarded episode_1")

    # A take that is thrown away and re-recorded at once with r, then saved as episode_1.
    pane.keys("s")
    pane.wait_steps(5)
    pane.keys("r")
    pane.wait_text("re-recording")
    pane.wait_steps(15)
    pane.keys("s")
    pane.wait_text("saved episode_1.hdf5")

    # Quit in the middle of a take: it is saved, with its end frames.
    pane.keys("s")
    pane.wait_steps(10)
    pane.keys("q")
    assert pane.wait_exit() == 0, pane.screen()

    names = sorted(p.name for p in out.iterdir())
    assert names == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"], names
    with open_episode(out / "episode_0.hdf5") as ep:
        assert ep.check() == []
        assert ep.attrs["source"] == "keyboard" and ep.task in (task, ep.attrs.get("task"))
        assert ep.attrs["sim_task"] == task or ep.task == task
        action = ep.action()
        start, end = fk(action[0, :7])[0], fk(action[-1, :7])[0]
        assert end[2] < start[2] - 0.035 and end[0] > start[0] + 0.012  # jogged down and forward
        assert action[0, 7] == 0.0 and action[-1, 7] == 1.0  # gripper closed
        assert ep.done().tolist()[-6:] == [False] + [True] * 5
        assert ep.goal_image("top") is not None  # multi task set: goal-conditioned
    with open_episode(out / "episode_2.hdf5") as ep:
        assert ep.length >= 15 and ep.done()[-5:].all()


def test_sigkill_mid_episode_is_recovered_on_the_next_start(tmp_path, pane_factory, capsys):
    out = tmp_path / "demos"
    pane = pane_factory(["record", "--sim", "--teleop", "keyboard", "--out", str(out),
                         "--image-size", "48x64", "--compress", "lzf"])
    pane.wait_text("IDLE")
    pane.keys("s")
    pane.wait_steps(20)
    pane.keys("s")
    pane.wait_text("saved episode_0.hdf5")
    saved = out / "episode_0.hdf5"
    digest = hashlib.sha256(saved.read_bytes()).hexdigest()

    pane.keys("s")
    pane.keys("u", "u", "u")
    shown = pane.wait_steps(75)
    os.kill(pane.pid, signal.SIGKILL)
    pane.wait_for(lambda _: pane.status_file.exists(), "the recorder to die")
    assert (out / "episode_1.hdf5.partial").exists()

    try:
        # the folder holds two episodes once the partial one is recovered: one more makes three
        main(["record", "--sim", "--teleop", "scripted", "--episodes", "3", "--out", str(out),
              "--image-size", "48x64"])
    except SystemExit as exc:
        assert not exc.code
    printed = capsys.readouterr().out
    assert "recovered episode_1.hdf5 from an interrupted recording" in " ".join(printed.split())
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest  # saved episodes untouched
    with open_episode(out / "episode_1.hdf5") as ep:
        assert ep.check() == [] and ep.attrs["recovered"] is True
        assert ep.length >= shown - 30, (ep.length, shown)  # at most one second (30 steps) lost
        z = np.array([fk(q)[0][2] for q in ep.action()[:, :7]])
        assert z[-1] > z[0] + 0.02  # the jog up was recorded
    assert (out / "episode_2.hdf5").exists()  # numbering continues after the recovered episode
    assert not list(out.glob("*.partial"))


def test_instruction_of_the_next_episode_is_typed_after_t(tmp_path, pane_factory):
    out = tmp_path / "demos"
    tasks = list_tasks("multi")
    pane = pane_factory(["record", "--sim", "--teleop", "keyboard", "--task-set", "multi", "--task", tasks[0],
                         "--out", str(out), "--image-size", "32x40", "--end-frames", "0"])
    pane.wait_text("IDLE")
    # Typed text goes to the prompt: its s, d, r, h, t, q letters must not reach the session.
    pane.keys("t")
    pane.wait_text("new task")
    pane.type(tasks[4])
    pane.keys("Enter")
    pane.wait_text(f"task of the next episode: {tasks[4]}")
    pane.keys("s")
    pane.wait_steps(5)
    pane.keys("s")
    pane.wait_text("saved episode_0.hdf5")

    # A task the scene does not have is named in the panel and changes nothing; a number picks one.
    pane.keys("t")
    pane.type("juggle")
    pane.keys("Enter")
    pane.wait_text("not a task of the multi scene")
    pane.keys("t")
    pane.type("2")
    pane.keys("Enter")
    pane.wait_text(f"task of the next episode: {tasks[1]}")
    pane.keys("s")
    pane.wait_steps(5)
    pane.keys("q")
    assert pane.wait_exit() == 0, pane.screen()

    assert sorted(p.name for p in out.iterdir()) == ["episode_0.hdf5", "episode_1.hdf5"]
    with open_episode(out / "episode_0.hdf5") as ep:
        assert ep.task == tasks[4] and ep.attrs["sim_task"] == tasks[4]
    with open_episode(out / "episode_1.hdf5") as ep:
        assert ep.task == tasks[1] and ep.attrs["sim_task"] == tasks[1]


def test_episode_and_reset_clocks_record_by_themselves_and_n_labels_a_failure(tmp_path, pane_factory):
    out = tmp_path / "timed"
    pane = pane_factory(["record", "--sim", "--teleop", "keyboard", "--out", str(out), "--image-size", "32x40",
                         "--end-frames", "0", "--fps", "20", "--episodes", "2", "--episode-time", "1.5",
                         "--reset-time", "1.5"])
    pane.wait_text("IDLE")
    pane.keys("s")  # the first episode starts from the key; the clocks do the rest
    pane.wait_text("next episode in", timeout_s=30)
    pane.keys("n")
    pane.wait_text("labelled failure")
    assert pane.wait_exit(60) == 0, pane.screen()
    episodes = sorted(out.glob("episode_*.hdf5"))
    assert len(episodes) == 2
    with open_episode(episodes[0]) as ep:
        assert ep.success is False and ep.attrs["success_source"] == "operator"
        assert 1.3 <= ep.length / 20 <= 2.5  # stopped by the episode clock, not by a key
    with open_episode(episodes[1]) as ep:
        assert "success_source" not in ep.attrs and 1.3 <= ep.length / 20 <= 2.5  # the simulator's check only
