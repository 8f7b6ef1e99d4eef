"""Panda kinematics: known poses, IK round trips, Jacobian, limits."""

import numpy as np
import pytest

from robokit.errors import UserError
from robokit.hardware.base import PANDA_Q_MAX, PANDA_Q_MIN, PANDA_READY_POSE
from robokit.hardware.kinematics import fk, ik, jacobian


def test_fk_of_ready_pose_matches_published_tcp_pose():
    # The Panda's ready pose puts the TCP 0.307 m ahead and 0.487 m up, pointing straight down.
    pos, rot = fk(PANDA_READY_POSE)
    np.testing.assert_allclose(pos, [0.3069, 0.0, 0.4869], atol=2e-4)
    np.testing.assert_allclose(rot, np.diag([1.0, -1.0, -1.0]), atol=1e-9)


def test_fk_of_zero_pose_is_straight_up():
    pos, rot = fk(np.zeros(7))
    # Arm stretched upward: x = a4 - a5 + a7 = 0.088, z = 0.333 + 0.316 + 0.384 - 0.107 - 0.1034.
    np.testing.assert_allclose(pos, [0.088, 0.0, 0.333 + 0.316 + 0.384 - 0.107 - 0.1034], atol=1e-9)
    assert rot[2, 2] == pytest.approx(-1.0)


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(0)
    q = PANDA_READY_POSE + rng.uniform(-0.4, 0.4, 7)
    jac = jacobian(q)
    p0, r0 = fk(q)
    eps = 1e-6
    for i in range(7):
        dq = np.zeros(7)
        dq[i] = eps
        p1, r1 = fk(q + dq)
        np.testing.assert_allclose((p1 - p0) / eps, jac[:3, i], atol=1e-5)
        # Angular velocity from the rotation change: (R1 R0^T - I) / eps ≈ skew(w).
        w_skew = (r1 @ r0.T - np.eye(3)) / eps
        np.testing.assert_allclose([w_skew[2, 1], w_skew[0, 2], w_skew[1, 0]], jac[3:, i], atol=1e-5)


def test_ik_round_trip_recovers_the_pose():
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = np.clip(PANDA_READY_POSE + rng.uniform(-0.6, 0.6, 7), PANDA_Q_MIN, PANDA_Q_MAX)
        pos, rot = fk(q)
        q_sol = ik(pos, rot, PANDA_READY_POSE)
        pos_sol, rot_sol = fk(q_sol)
        np.testing.assert_allclose(pos_sol, pos, atol=1e-3)
        np.testing.assert_allclose(rot_sol, rot, atol=1e-2)
        assert np.all(q_sol >= PANDA_Q_MIN) and np.all(q_sol <= PANDA_Q_MAX)


def test_ik_stays_within_joint_limits_near_them():
    # Joint 4 close to its upper limit (-0.0698): a nearly stretched arm.
    q = PANDA_READY_POSE.copy()
    q[3] = -0.2
    pos, rot = fk(q)
    q_sol = ik(pos, rot, PANDA_READY_POSE)
    assert np.all(q_sol >= PANDA_Q_MIN) and np.all(q_sol <= PANDA_Q_MAX)
    np.testing.assert_allclose(fk(q_sol)[0], pos, atol=1e-3)


def test_unreachable_target_raises_user_error():
    with pytest.raises(UserError, match="unreachable"):
        ik(np.array([1.5, 0.0, 0.3]), np.diag([1.0, -1.0, -1.0]), PANDA_READY_POSE)


def test_bad_joint_vector_is_rejected():
    with pytest.raises(UserError, match="7 finite"):
        fk(np.zeros(6))
    with pytest.raises(UserError, match="7 finite"):
        jacobian(np.full(7, np.nan))
