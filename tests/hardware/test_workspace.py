"""The workspace box: checked points of the hand, projection back inside, the TOML file."""

from __future__ import annotations

import numpy as np
import pytest

from robokit.deploy.safety import SafetyFilter, SafetyLimits
from robokit.errors import ConfigError, UserError
from robokit.hardware.base import PANDA_DQ_MAX, PANDA_Q_MAX, PANDA_Q_MIN, PANDA_READY_POSE
from robokit.hardware.kinematics import fk, ik
from robokit.hardware.workspace import SIM_TABLE, Workspace, workspace_from_option


def joints_at(position, q=PANDA_READY_POSE):
    """Joints that put the TCP at ``position`` with the ready pose's orientation."""
    _, R = fk(q)
    return ik(np.asarray(position, float), R, q)


def test_the_ready_pose_is_inside_and_the_fingers_are_checked():
    assert SIM_TABLE.contains(PANDA_READY_POSE)
    # the TCP 5 mm above the table is inside for the TCP, but the finger ends (1 cm past it) are below
    low = joints_at([0.5, 0.0, 0.005])
    points = SIM_TABLE.points(low)
    assert points[1, 2] == pytest.approx(0.005, abs=1e-3) and points[2:, 2].max() < 0.0
    assert SIM_TABLE.shift(low)[2] == pytest.approx(0.005, abs=1e-3)


def test_projection_moves_the_hand_back_inside_and_keeps_its_orientation():
    under = joints_at([0.5, 0.1, -0.04])
    projected = SIM_TABLE.project(under)
    assert projected is not None and SIM_TABLE.contains(projected)
    (p0, r0), (p1, r1) = fk(under), fk(projected)
    np.testing.assert_allclose(p1[:2], p0[:2], atol=2e-3)  # slid up, not sideways
    assert p1[2] == pytest.approx(0.01, abs=2e-3)  # the finger ends on the floor
    np.testing.assert_allclose(r1, r0, atol=1e-2)
    inside = joints_at([0.5, 0.1, 0.2])
    np.testing.assert_array_equal(SIM_TABLE.project(inside), inside)


def test_the_safety_filter_projects_or_holds_and_counts():
    limits = SafetyLimits(PANDA_Q_MIN, PANDA_Q_MAX, PANDA_DQ_MAX)
    safety = SafetyFilter(limits, dt=1 / 30, workspace=SIM_TABLE)
    start = joints_at([0.5, 0.1, 0.03])
    safety.reset(start)
    target = np.r_[joints_at([0.5, 0.1, -0.05]), 1.0]
    for _ in range(60):
        cmd = safety.apply(target)
        assert SIM_TABLE.contains(cmd[:7])
    assert safety.counts.workspace > 0
    assert fk(cmd[:7])[0][2] == pytest.approx(0.01, abs=2e-3)  # resting on the floor, fingers at z = 0
    # a box out of the arm's reach: no projection exists, the previous command is held and counted
    away = Workspace(low=(2.0, 2.0, 2.0), high=(2.5, 2.5, 2.5))
    boxed = SafetyFilter(limits, dt=1 / 30, workspace=away)
    boxed.reset(start)
    np.testing.assert_allclose(boxed.apply(np.r_[joints_at([0.5, 0.2, 0.1]), 0.0])[:7], start)
    assert boxed.counts.workspace_held == 1 and boxed.counts.workspace == 0
    with pytest.raises(ConfigError, match="7-joint"):
        SafetyFilter(SafetyLimits(PANDA_Q_MIN[:6], PANDA_Q_MAX[:6], PANDA_DQ_MAX[:6]), 0.1, workspace=SIM_TABLE)


def test_workspace_option_and_file(tmp_path):
    assert workspace_from_option("default") is SIM_TABLE and workspace_from_option("none") is None
    path = tmp_path / "cell.toml"
    path.write_text("[workspace]\nlow = [0.2, -0.4, 0.05]\nhigh = [0.8, 0.4, 0.6]\nfinger_reach = 0.02\n")
    box = workspace_from_option(str(path))
    assert box == Workspace(low=(0.2, -0.4, 0.05), high=(0.8, 0.4, 0.6), finger_reach=0.02)
    path.write_text("[workspace]\nlow = [0.2, -0.4]\nhigh = [0.8, 0.4, 0.6]\n")
    with pytest.raises(ConfigError, match="three finite numbers"):
        workspace_from_option(str(path))
    path.write_text("[workspace]\nlow = [0.2, -0.4, 0.0]\nhigh = [0.8, 0.4, 0.6]\nfloor = 1\n")
    with pytest.raises(UserError, match="unknown .* floor"):
        workspace_from_option(str(path))
    with pytest.raises(UserError, match="cannot read the workspace file"):
        workspace_from_option(str(tmp_path / "missing.toml"))
