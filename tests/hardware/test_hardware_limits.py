"""One joint-limit clamp and one clamp report for the robots and the deploy safety filter."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from robokit.deploy.safety import SafetyFilter, SafetyLimits
from robokit.hardware.base import PANDA_Q_MAX, PANDA_Q_MIN, PANDA_READY_POSE
from robokit.hardware.limits import ClampReport, clamp_joints


def test_clamp_inside_the_limits_changes_and_reports_nothing():
    report = ClampReport()
    safe = clamp_joints(PANDA_READY_POSE, PANDA_Q_MIN, PANDA_Q_MAX, report)
    np.testing.assert_array_equal(safe, PANDA_READY_POSE)
    assert report.count == 0 and report.joints == () and report.describe() == "no clamp"


def test_clamp_reports_which_joints_from_what_to_what():
    report = ClampReport()
    bad = PANDA_READY_POSE.copy()
    bad[0], bad[3] = -4.0, 0.5
    safe = clamp_joints(bad, PANDA_Q_MIN, PANDA_Q_MAX, report)
    assert safe[0] == PANDA_Q_MIN[0] and safe[3] == PANDA_Q_MAX[3]
    assert report.count == 1 and report.joints == (0, 3)
    np.testing.assert_array_equal(report.requested, bad)
    np.testing.assert_array_equal(report.sent, safe)
    assert "joint1 -4.0000 -> -2.8973" in report.describe() and "joint4" in report.describe()
    clamp_joints(PANDA_READY_POSE, PANDA_Q_MIN, PANDA_Q_MAX, report)
    assert report.count == 1  # a target inside the limits is not a clamp


def test_clamp_warnings_are_rate_limited_and_count_what_they_skipped(caplog):
    report = ClampReport()
    logger = logging.getLogger("robokit.test.clamps")
    bad = PANDA_READY_POSE.copy()
    bad[3] = 1.0
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for _ in range(5):
            clamp_joints(bad, PANDA_Q_MIN, PANDA_Q_MAX, report)
            report.warn(logger, every_s=3600.0)
    assert report.count == 5
    assert len(caplog.records) == 1 and "joint4" in caplog.records[0].getMessage()


def test_a_report_copy_is_a_snapshot():
    report = ClampReport()
    bad = PANDA_READY_POSE.copy()
    bad[3] = 1.0
    clamp_joints(bad, PANDA_Q_MIN, PANDA_Q_MAX, report)
    snapshot = report.copy()
    bad[5] = 10.0
    clamp_joints(bad, PANDA_Q_MIN, PANDA_Q_MAX, report)
    assert snapshot.count == 1 and snapshot.joints == (3,)
    assert report.count == 2 and report.joints == (3, 5)


def test_safety_filter_reports_joint_clamps_like_the_robots():
    limits = SafetyLimits(PANDA_Q_MIN.copy(), PANDA_Q_MAX.copy(), np.full(7, 10.0))
    safety = SafetyFilter(limits, dt=0.1)
    safety.reset(PANDA_READY_POSE)
    action = np.concatenate([PANDA_READY_POSE, [0.0]])
    action[3] = 1.0
    cmd = safety.apply(action)
    assert cmd is not None and cmd[3] <= PANDA_Q_MAX[3]
    counts = safety.counts
    assert counts.position == 1 and counts.joints.joints == (3,)
    assert counts.joints.requested[3] == pytest.approx(1.0)
    snapshot = counts.copy()
    safety.apply(action)
    assert snapshot.position == 1 and counts.position == 2


def test_safety_filter_takes_its_size_from_the_limits():
    three = SafetyLimits(np.full(3, -1.0), np.full(3, 1.0), np.full(3, 1.0))
    safety = SafetyFilter(three, dt=1.0)
    safety.reset(np.zeros(3))
    cmd = safety.apply(np.array([2.0, 0.5, -0.5, 0.7]))
    np.testing.assert_allclose(cmd, [1.0, 0.5, -0.5, 0.7])
    assert safety.apply(np.zeros(3)) is None  # no gripper value
    assert safety.counts.position == 1 and safety.counts.rejected == 1
