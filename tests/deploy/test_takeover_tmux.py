"""A person takes over a simulated deploy from the keyboard, in a terminal driven through tmux:
`t` hands control over, the jog keys move the arm, `t` hands it back, `y` labels the episode."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from robokit.episodes.format import INTERVENTION
from robokit.episodes.reader import open_episode
from robokit.hardware.kinematics import fk
from tests.record.test_record_tmux import pane_factory  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def test_keys_take_over_jog_hand_back_and_label_a_sim_deploy(pane_factory, make_tiny_checkpoint, tmp_path):  # noqa: F811
    from robokit.deploy.safety import SafetyLimits
    from robokit.hardware.sim import PandaSimEnv

    out = tmp_path / "rollouts"
    pane = pane_factory(["deploy", "--sim", str(make_tiny_checkpoint("act")), "--episodes", "1", "--realtime",
                         "--takeover", "keyboard", "--label", "--record", str(out), "--episode-time", "6"])
    pane.wait_text("running", timeout_s=60)
    pane.keys("t")
    pane.wait_text("takeover")
    for _ in range(6):  # six jog steps up, 1 cm each
        pane.keys("u")
        time.sleep(0.1)
    time.sleep(0.8)  # the hand follows the jog target at its speed limit
    pane.keys("t")
    pane.wait_text("label the episode", timeout_s=30)
    pane.keys("y")
    assert pane.wait_exit() == 0, pane.screen()

    (path,) = sorted(out.glob("episode_*.hdf5"))
    with open_episode(path) as ep:
        human = ep.step_extra(INTERVENTION) > 0.5
        action, qpos, fps = ep.action(), ep.qpos(), ep.fps
        assert ep.success is True and ep.attrs["success_source"] == "operator"
        assert int(ep.attrs["intervention_steps"]) == int(human.sum())
    onsets = np.flatnonzero(human[1:] & ~human[:-1]) + 1
    handbacks = np.flatnonzero(human[:-1] & ~human[1:]) + 1
    assert len(onsets) == 1 and len(handbacks) == 1 and human.sum() > 10
    z = [fk(q[:7])[0][2] for q in qpos]
    assert z[handbacks[0]] - z[onsets[0]] > 0.03
    env = PandaSimEnv(task="pick_place", seed=0, image_size=(24, 32))
    try:
        clamp = SafetyLimits.from_robot(env.robot).dq_max / fps
    finally:
        env.close()
    t = handbacks[0]
    assert np.all(np.abs(action[t, :7] - qpos[t, :7]) <= clamp + 1e-6)
