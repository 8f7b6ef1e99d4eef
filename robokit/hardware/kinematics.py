"""Franka Panda forward/inverse kinematics and Jacobian in pure numpy.

The chain uses the published modified-DH parameters (Craig convention: each row gives ``a`` and
``alpha`` of the previous link and ``d`` of this joint), a flange 0.107 m past joint 7, the hand
rotated -45° about the flange z axis and the tool centre point (TCP, between the fingertips)
0.1034 m past the flange. All poses are in the robot base frame.

No MuJoCo import: the real robot's keyboard jog uses these functions too. The MuJoCo model in
:mod:`robokit.hardware.sim` is generated from the same :data:`DH_PARAMS`, so both agree exactly.
"""

from __future__ import annotations

import numpy as np

from robokit.errors import UserError
from robokit.hardware.base import PANDA_Q_MAX, PANDA_Q_MIN, PANDA_READY_POSE

#: (a, d, alpha) per joint, Craig convention.
DH_PARAMS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -np.pi / 2),
    (0.0, 0.316, np.pi / 2),
    (0.0825, 0.0, np.pi / 2),
    (-0.0825, 0.384, -np.pi / 2),
    (0.0, 0.0, np.pi / 2),
    (0.088, 0.0, np.pi / 2),
)
FLANGE_D = 0.107
HAND_YAW = -np.pi / 4
TCP_OFFSET = 0.1034


def _dh(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    """Homogeneous transform Rx(alpha) Tx(a) Rz(theta) Tz(d)."""
    ca, sa = np.cos(alpha), np.sin(alpha)
    ct, st = np.cos(theta), np.sin(theta)
    return np.array(
        [
            [ct, -st, 0.0, a],
            [st * ca, ct * ca, -sa, -d * sa],
            [st * sa, ct * sa, ca, d * ca],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _tcp_from_joint7() -> np.ndarray:
    c, s = np.cos(HAND_YAW), np.sin(HAND_YAW)
    t = np.eye(4)
    t[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    t[2, 3] = FLANGE_D + TCP_OFFSET
    return t


_T7_TCP = _tcp_from_joint7()


def _check_q(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=float).reshape(-1)
    if q.shape != (7,) or not np.all(np.isfinite(q)):
        raise UserError(f"joint vector must be 7 finite numbers, got {q!r}")
    return q


def joint_frames(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base-frame transforms of the 7 joint frames and of the TCP: ((7, 4, 4), (4, 4))."""
    q = _check_q(q)
    frames = np.empty((7, 4, 4))
    t = np.eye(4)
    for i, (a, d, alpha) in enumerate(DH_PARAMS):
        t = t @ _dh(a, d, alpha, q[i])
        frames[i] = t
    return frames, t @ _T7_TCP


def fk(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TCP pose for joint angles ``q`` (7,): (position (3,), rotation matrix (3, 3))."""
    _, tcp = joint_frames(q)
    return tcp[:3, 3].copy(), tcp[:3, :3].copy()


def jacobian(q: np.ndarray) -> np.ndarray:
    """Geometric Jacobian (6, 7) of the TCP in the base frame: rows = (vx, vy, vz, wx, wy, wz)."""
    frames, tcp = joint_frames(q)
    return _jacobian_from_frames(frames, tcp)


def _jacobian_from_frames(frames: np.ndarray, tcp: np.ndarray) -> np.ndarray:
    p = tcp[:3, 3]
    jac = np.empty((6, 7))
    for i in range(7):
        z = frames[i, :3, 2]
        jac[:3, i] = np.cross(z, p - frames[i, :3, 3])
        jac[3:, i] = z
    return jac


def rotation_error(r_current: np.ndarray, r_target: np.ndarray) -> np.ndarray:
    """Axis-angle vector (3,) in the base frame that rotates ``r_current`` onto ``r_target``."""
    r_err = r_target @ r_current.T
    cos_angle = np.clip((np.trace(r_err) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos_angle)
    axis = np.array([r_err[2, 1] - r_err[1, 2], r_err[0, 2] - r_err[2, 0], r_err[1, 0] - r_err[0, 1]])
    if angle < 1e-6:
        return 0.5 * axis
    if np.pi - angle < 1e-4:
        # Near 180° the antisymmetric part vanishes: take the axis from the symmetric part.
        sym = (r_err + np.eye(3)) / 2.0
        k = int(np.argmax(np.diag(sym)))
        axis = sym[:, k] / np.sqrt(max(sym[k, k], 1e-12))
        return axis * angle
    return axis * (angle / (2.0 * np.sin(angle)))


def ik(
    pos: np.ndarray,
    R: np.ndarray,
    q_init: np.ndarray,
    *,
    q_rest: np.ndarray | None = None,
    max_iters: int = 200,
    pos_tol: float = 1e-4,
    rot_tol: float = 1e-3,
    damping: float = 1e-2,
    nullspace_gain: float = 0.1,
    max_step: float = 0.2,
) -> np.ndarray:
    """Joint angles (7,) that put the TCP at ``pos`` (3,) with orientation ``R`` (3, 3).

    Damped least squares from ``q_init``, clamped to the joint limits after every step. The
    redundant degree of freedom is pulled toward ``q_rest`` (default: the ready pose) in the
    Jacobian's null space, so that the same target gives the same posture whatever the seed.
    Raises :class:`~robokit.errors.UserError` when the target cannot be reached within the limits.
    """
    target_p = np.asarray(pos, dtype=float).reshape(3)
    target_r = np.asarray(R, dtype=float).reshape(3, 3)
    q = np.clip(_check_q(q_init), PANDA_Q_MIN, PANDA_Q_MAX)
    rest = PANDA_READY_POSE if q_rest is None else _check_q(q_rest)
    # A second pass without the posture pull finishes targets where that pull fights the limits.
    for gain in (nullspace_gain, 0.0):
        q, done = _dls(q, target_p, target_r, rest, gain, max_iters, pos_tol, rot_tol, damping, max_step)
        if done:
            return q
    p, r = fk(q)
    pos_err = np.linalg.norm(target_p - p)
    rot_err = np.linalg.norm(rotation_error(r, target_r))
    if pos_err < 10 * pos_tol and rot_err < 10 * rot_tol:
        return q
    raise UserError(
        f"target position {np.round(target_p, 3).tolist()} is unreachable within the joint limits "
        f"(closest: {pos_err * 1000:.1f} mm, {np.degrees(rot_err):.1f}° away); pick a target closer "
        "to the robot's workspace"
    )


def _dls(
    q: np.ndarray,
    target_p: np.ndarray,
    target_r: np.ndarray,
    rest: np.ndarray,
    nullspace_gain: float,
    max_iters: int,
    pos_tol: float,
    rot_tol: float,
    damping: float,
    max_step: float,
) -> tuple[np.ndarray, bool]:
    """Damped-least-squares iterations; returns (q, converged)."""
    eye6, eye7 = np.eye(6), np.eye(7)
    for _ in range(max_iters):
        frames, tcp = joint_frames(q)
        err = np.concatenate([target_p - tcp[:3, 3], rotation_error(tcp[:3, :3], target_r)])
        if np.linalg.norm(err[:3]) < pos_tol and np.linalg.norm(err[3:]) < rot_tol:
            return q, True
        jac = _jacobian_from_frames(frames, tcp)
        j_pinv = jac.T @ np.linalg.solve(jac @ jac.T + (damping**2) * eye6, eye6)
        dq = j_pinv @ err
        if nullspace_gain:
            dq += nullspace_gain * (eye7 - j_pinv @ jac) @ (rest - q)
        norm = np.linalg.norm(dq)
        if norm > max_step:
            dq *= max_step / norm
        q = np.clip(q + dq, PANDA_Q_MIN, PANDA_Q_MAX)
    return q, False
