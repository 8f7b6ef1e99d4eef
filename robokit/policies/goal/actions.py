"""Discretised actions for the VIMA-style policy: uniform bins and Cartesian <-> joint conversion.

Bins are a uniform GRID whose first and last centres sit on the range's ends, so ``n`` bins over
``[lo, hi]`` decode to ``lo + i * (hi - lo) / (n - 1)``; encoding rounds to the nearest centre, so a
value inside the range round-trips within half a bin step (values outside are clamped). Two bins
over [0, 1] are exactly open/closed for the gripper. With an offset within the bin (BeT-style:
``encode_with_offset`` gives the bin and where in it the value sits, in bin steps, -0.5..0.5) a
value round-trips exactly, so a head that predicts the offset too is finer than a bin. A dimension
of two bins is on/off (the gripper): the heads' offsets are neither trained nor decoded there.

Cartesian actions: the TCP target of a joint-space action is ``fk(q_target)`` (SIM helper's
``robokit.hardware.kinematics``). Its position is binned per axis; its orientation RELATIVE to the
ready pose's TCP orientation is binned as xyz Euler angles (roll, pitch, yaw), which keeps the
top-down grasps of a table task near zero instead of on the +-pi seam. Decoded targets go back to
joint targets through ``ik`` warm-started from the current joints (one solve per chunk step).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import overload

import numpy as np
import torch

from robokit.errors import ConfigError, UserError

log = logging.getLogger(__name__)


class UniformBins:
    """Per-dimension uniform grids: ``encode`` values -> indices, ``decode`` indices -> values."""

    def __init__(self, low: Sequence[float] | np.ndarray, high: Sequence[float] | np.ndarray,
                 counts: Sequence[int]) -> None:
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        self.counts = [int(c) for c in counts]
        if not (len(self.low) == len(self.high) == len(self.counts)):
            raise ConfigError("bin ranges and counts must have one entry per action dimension")
        if any(c < 2 for c in self.counts):
            raise ConfigError(f"every action dimension needs at least 2 bins, got {self.counts}")
        if np.any(self.high <= self.low):
            raise ConfigError(f"bin range high must exceed low (low {self.low.tolist()}, high {self.high.tolist()})")
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(int)

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    @property
    def step(self) -> np.ndarray:
        return (self.high - self.low) / (np.asarray(self.counts) - 1)

    @overload
    def encode(self, values: np.ndarray) -> np.ndarray: ...

    @overload
    def encode(self, values: torch.Tensor) -> torch.Tensor: ...

    def encode(self, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``(..., D)`` values -> ``(..., D)`` int64 bin indices (clamped into the range)."""
        if isinstance(values, torch.Tensor):
            low = torch.as_tensor(self.low, dtype=values.dtype, device=values.device)
            step = torch.as_tensor(self.step, dtype=values.dtype, device=values.device)
            top = torch.as_tensor(self.counts, device=values.device) - 1
            idx = torch.round((values - low) / step).long()
            return torch.minimum(torch.clamp_min(idx, 0), top)
        idx = np.rint((np.asarray(values, dtype=np.float64) - self.low) / self.step).astype(np.int64)
        return np.clip(idx, 0, np.asarray(self.counts) - 1)

    def decode(self, indices: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
        """``(..., D)`` bin indices -> ``(..., D)`` values at the bin centres, moved by ``offsets``
        (bin steps, as :meth:`encode_with_offset` gives them) when given."""
        position = np.asarray(indices, dtype=np.float64)
        if offsets is not None:
            position = position + np.asarray(offsets, dtype=np.float64)
        return self.low + position * self.step

    def encode_with_offset(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(..., D)`` values -> bin indices ``(..., D)`` int64 and the offset of each value from
        its bin centre in bin steps, float32 in [-0.5, 0.5] (values are clamped into the range)."""
        v = np.clip(np.asarray(values, dtype=np.float64), self.low, self.high)
        idx = self.encode(v)
        offset = (v - self.decode(idx)) / self.step
        return idx, np.clip(offset, -0.5, 0.5).astype(np.float32)

    def argmax(self, logits: torch.Tensor) -> torch.Tensor:
        """``(..., total)`` logits -> ``(..., D)`` int64 index of each dimension's largest logit."""
        o = self.offsets
        return torch.stack([logits[..., o[d]:o[d + 1]].argmax(-1) for d in range(len(self.counts))], -1)

    def decode_logits(self, logits: torch.Tensor, mode: str = "argmax",
                      offsets: torch.Tensor | None = None) -> np.ndarray:
        """``(..., total)`` logits -> ``(..., D)`` values: the argmax bin, or the expectation over
        bins (dimensions of more than two bins; two-bin ones take the argmax either way). ``offsets`` ``(..., total)``: each bin's predicted offset in bin steps (clamped to
        +-0.5), added to its centre, except in two-bin (on/off) dimensions."""
        out = []
        for d, n in enumerate(self.counts):
            lo, hi = self.offsets[d], self.offsets[d + 1]
            part = logits[..., lo:hi].double()
            centres = torch.linspace(float(self.low[d]), float(self.high[d]), n, device=part.device,
                                     dtype=torch.float64)
            if offsets is not None and n > 2:
                centres = centres + offsets[..., lo:hi].double().clamp(-0.5, 0.5) * float(self.step[d])
            else:
                centres = centres.expand_as(part)
            if mode == "expectation" and n > 2:  # an on/off dimension (the gripper) stays on or off
                out.append((part.softmax(-1) * centres).sum(-1))
            else:
                out.append(centres.gather(-1, part.argmax(-1, keepdim=True))[..., 0])
        return torch.stack(out, dim=-1).cpu().numpy()

    def offset_loss(self, predicted: torch.Tensor, targets: torch.Tensor, true_offsets: torch.Tensor,
                    valid: torch.Tensor) -> torch.Tensor:
        """Mean L1 between the offset predicted for each dimension's TRUE bin and the true offset
        (dimensions of more than two bins).

        ``predicted`` (..., total) per-bin offsets, ``targets`` (..., D) bin indices, ``true_offsets``
        (..., D) in bin steps, ``valid`` (...) bool selects the entries that count."""
        flat_valid = valid.reshape(-1)
        if not bool(flat_valid.any()):
            return predicted.sum() * 0.0
        pred = predicted.reshape(-1, predicted.shape[-1])[flat_valid]
        tg = targets.reshape(-1, targets.shape[-1])[flat_valid]
        dims = [d for d, n in enumerate(self.counts) if n > 2]
        if not dims:
            return predicted.sum() * 0.0
        index = tg[:, dims] + torch.as_tensor(self.offsets[dims], device=tg.device)
        chosen = pred.gather(1, index)
        true = true_offsets.reshape(-1, true_offsets.shape[-1])[flat_valid][:, dims].to(chosen.dtype)
        return (chosen - true).abs().mean()

    def gaussian_targets(self, positions: torch.Tensor, sigma: float) -> list[torch.Tensor]:
        """Soft bin targets, one ``(N, n_d)`` tensor per dimension: the mass a normal distribution
        centred on each value's position (in bin steps, ``(N, D)``, as index + offset) puts in every
        bin, the two end bins taking the tails (HL-Gauss, "Stop Regressing", Farebrother et al.
        2024). A two-bin (on/off) dimension keeps its one-hot target."""
        out = []
        normal = torch.distributions.Normal(0.0, 1.0)
        for d, n in enumerate(self.counts):
            mu = positions[:, d:d + 1].double()
            if n <= 2:
                out.append(torch.nn.functional.one_hot(mu[:, 0].round().long().clamp(0, n - 1), n).double())
                continue
            edges = torch.arange(n + 1, device=mu.device, dtype=torch.float64) - 0.5
            cdf = normal.cdf((edges - mu) / sigma)
            cdf[:, 0] = 0.0
            cdf[:, -1] = 1.0
            out.append(cdf[:, 1:] - cdf[:, :-1])
        return out

    def expectation_loss(self, logits: torch.Tensor, offsets: torch.Tensor | None, positions: torch.Tensor,
                         valid: torch.Tensor) -> torch.Tensor:
        """Mean L1, in bin steps, between the expectation decode (softmax-weighted bin centres, each
        moved by its predicted offset) and the true position (index + offset) ``(..., D)``, over
        the dimensions of more than two bins: what ``decode_logits(mode="expectation")`` returns,
        trained directly."""
        flat_valid = valid.reshape(-1)
        dims = [d for d, n in enumerate(self.counts) if n > 2]
        if not bool(flat_valid.any()) or not dims:
            return logits.sum() * 0.0
        lg = logits.reshape(-1, logits.shape[-1])[flat_valid]
        off = None if offsets is None else offsets.reshape(-1, offsets.shape[-1])[flat_valid]
        pos = positions.reshape(-1, positions.shape[-1])[flat_valid]
        losses = []
        for d in dims:
            lo, hi = self.offsets[d], self.offsets[d + 1]
            centres = torch.arange(hi - lo, device=lg.device, dtype=lg.dtype)
            if off is not None:
                centres = centres + off[:, lo:hi].clamp(-0.5, 0.5)
            expected = (lg[:, lo:hi].softmax(-1) * centres).sum(-1)
            losses.append((expected - pos[:, d].to(expected.dtype)).abs().mean())
        return torch.stack(losses).mean()

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                      label_smoothing: float = 0.0, positions: torch.Tensor | None = None,
                      sigma: float = 0.0) -> torch.Tensor:
        """Mean per-dimension cross-entropy; ``logits`` (..., total), ``targets`` (..., D) indices,
        ``valid`` (...) bool selects the entries that count. With ``sigma`` > 0 the targets are
        soft: :meth:`gaussian_targets` around ``positions`` (..., D) (index + offset, bin steps),
        so a prediction one bin off costs little and forty bins off a lot."""
        flat_valid = valid.reshape(-1)
        if not bool(flat_valid.any()):
            return logits.sum() * 0.0
        lg = logits.reshape(-1, logits.shape[-1])[flat_valid]
        tg = targets.reshape(-1, targets.shape[-1])[flat_valid]
        soft = None
        if sigma > 0:
            if positions is None:
                raise ValueError("soft bin targets need the values' positions")
            soft = self.gaussian_targets(positions.reshape(-1, positions.shape[-1])[flat_valid], sigma)
        losses = []
        for d in range(len(self.counts)):
            part = lg[:, self.offsets[d]:self.offsets[d + 1]]
            target = tg[:, d] if soft is None else soft[d].to(part.dtype)
            losses.append(torch.nn.functional.cross_entropy(part, target, label_smoothing=label_smoothing))
        return torch.stack(losses).mean()


# -- rotations ------------------------------------------------------------------------------------
def euler_xyz_from_matrix(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` -> (roll, pitch, yaw) with R = Rz(yaw) Ry(pitch) Rx(roll)."""
    R = np.asarray(R, dtype=np.float64)
    pitch = -np.arcsin(np.clip(R[..., 2, 0], -1.0, 1.0))
    roll = np.arctan2(R[..., 2, 1], R[..., 2, 2])
    yaw = np.arctan2(R[..., 1, 0], R[..., 0, 0])
    return np.stack([roll, pitch, yaw], axis=-1)


def matrix_from_euler_xyz(angles: np.ndarray) -> np.ndarray:
    """(roll, pitch, yaw) ``(..., 3)`` -> rotation matrices ``(..., 3, 3)`` (inverse of the above)."""
    a = np.asarray(angles, dtype=np.float64)
    cr, sr = np.cos(a[..., 0]), np.sin(a[..., 0])
    cp, sp = np.cos(a[..., 1]), np.sin(a[..., 1])
    cy, sy = np.cos(a[..., 2]), np.sin(a[..., 2])
    R = np.empty(a.shape[:-1] + (3, 3))
    R[..., 0, 0] = cy * cp
    R[..., 0, 1] = cy * sp * sr - sy * cr
    R[..., 0, 2] = cy * sp * cr + sy * sr
    R[..., 1, 0] = sy * cp
    R[..., 1, 1] = sy * sp * sr + cy * cr
    R[..., 1, 2] = sy * sp * cr - cy * sr
    R[..., 2, 0] = -sp
    R[..., 2, 1] = cp * sr
    R[..., 2, 2] = cp * cr
    return R


def kinematics():
    """The SIM helper's kinematics module (fk / ik), or a clear error if it is not there."""
    try:
        from robokit.hardware import kinematics as kin
    except ImportError as exc:  # pragma: no cover - only without the kinematics module
        raise ConfigError("Cartesian actions and the end-effector encoder need "
                          "robokit.hardware.kinematics (fk/ik), which cannot be imported: "
                          f"{exc}; use action_space='joint' and use_ee=False") from exc
    return kin


class CartesianCoder:
    """Joint-space Franka actions (7 joints + gripper) <-> binned Cartesian TCP targets.

    Cartesian vector layout: ``[x, y, z, roll, pitch, yaw, gripper]`` with the rotation relative
    to ``reference_R`` (the ready pose's TCP orientation).
    """

    def __init__(self, bins: UniformBins, reference_q: np.ndarray) -> None:
        self.bins = bins
        self.kin = kinematics()
        _, self.reference_R = self.kin.fk(np.asarray(reference_q, dtype=np.float64))

    def pose_features(self, q: np.ndarray) -> np.ndarray:
        """``(..., 7)`` joints -> ``(..., 9)`` TCP position + the first two columns of R_rel."""
        q = np.asarray(q, dtype=np.float64)
        flat = q.reshape(-1, q.shape[-1])
        out = np.empty((flat.shape[0], 9))
        for i, qi in enumerate(flat):
            pos, R = self.kin.fk(qi[:7])
            rel = self.reference_R.T @ R
            out[i, :3] = pos
            out[i, 3:] = rel[:, :2].T.reshape(-1)
        return out.reshape(*q.shape[:-1], 9)

    def to_cartesian(self, actions: np.ndarray) -> np.ndarray:
        """``(..., 8)`` joint actions -> ``(..., 7)`` Cartesian vectors."""
        a = np.asarray(actions, dtype=np.float64)
        flat = a.reshape(-1, a.shape[-1])
        out = np.empty((flat.shape[0], 7))
        for i, ai in enumerate(flat):
            pos, R = self.kin.fk(ai[:7])
            out[i, :3] = pos
            out[i, 3:6] = euler_xyz_from_matrix(self.reference_R.T @ R)
            out[i, 6] = ai[7]
        return out.reshape(*a.shape[:-1], 7)

    def to_joints(self, cartesian: np.ndarray, q_start: np.ndarray) -> np.ndarray:
        """``(H, 7)`` Cartesian targets -> ``(H, 8)`` joint targets + gripper through IK.

        Each step is warm-started from the previous solution (the first from ``q_start``), so the
        arm stays on one branch of its redundancy. A target IK cannot reach holds the last
        reachable joints (logged) rather than failing the control loop.
        """
        q = np.asarray(q_start, dtype=np.float64)[:7].copy()
        out = np.empty((len(cartesian), 8), dtype=np.float32)
        for k, c in enumerate(np.asarray(cartesian, dtype=np.float64)):
            R = self.reference_R @ matrix_from_euler_xyz(c[3:6])
            try:
                q = np.asarray(self.kin.ik(c[:3], R, q), dtype=np.float64)
            except UserError as exc:
                log.debug("IK failed for chunk step %d (%s); holding the previous target", k, exc)
            out[k, :7] = q
            out[k, 7] = c[6]
        return out
