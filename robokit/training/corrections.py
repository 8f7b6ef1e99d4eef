"""Training on corrections (HG-DAgger): deploy rollouts in which a person took over, next to
demonstrations.

A rollout recorded with takeover (``robokit deploy --takeover ... --record DIR``) stores per step
whether a person commanded it (``/intervention``) and its success label. What a policy learns from:

- demonstrations: every step, as always;
- intervention steps: the person's actions, drawn ``intervention_weight`` times as often as a
  demonstration step (the corrections are few and are exactly where the policy goes wrong);
- the policy's own steps: kept in successful rollouts (they did the task), left out of failed or
  unlabelled ones by default, since those actions led to the failure; in every rollout the policy's
  steps that led up to a takeover (from the start, or from the last handback) are left out too: they
  took the arm where a person had to step in, and learning them again teaches the slip that was
  corrected (measured in the simulation: keeping all but their last second made the retrained
  policy worse than the one before).

Left-out steps are never drawn as a sample's start, and where a sample's action chunk runs into
them those rows count as padding, so no loss is taken on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robokit.errors import ConfigError, DataError
from robokit.training.episode_records import EpisodeRecord

__all__ = ["CorrectionSummary", "sample_weights", "scan_training_episodes", "weigh_episodes"]


@dataclass(frozen=True)
class CorrectionSummary:
    """What the training set holds, by kind of step."""

    demonstrations: int = 0  # episodes without takeover
    rollouts: int = 0  # episodes with takeover
    intervention_steps: int = 0
    policy_steps_kept: int = 0
    policy_steps_left_out: int = 0

    def describe(self) -> str:
        if not self.rollouts:
            return f"{self.demonstrations} demonstration(s)"
        return (f"{self.demonstrations} demonstration(s) + {self.rollouts} rollout(s) with takeover: "
                f"{self.intervention_steps} intervention steps, {self.policy_steps_kept} policy steps kept, "
                f"{self.policy_steps_left_out} left out (failed or unlabelled rollouts, and leading to takeovers)")


def weigh_episodes(records: Sequence[EpisodeRecord], intervention_weight: float = 1.0,
                   keep_failed_policy_steps: bool = False) -> CorrectionSummary:
    """Set ``trainable`` and ``weights`` of each rollout with takeover (demonstrations stay None)."""
    if intervention_weight <= 0:
        raise ConfigError(f"intervention-weight must be positive, got {intervention_weight}")
    counts = {"demonstrations": 0, "rollouts": 0, "intervention_steps": 0, "policy_steps_kept": 0,
              "policy_steps_left_out": 0}
    for rec in records:
        if rec.intervention is None:
            counts["demonstrations"] += 1
            rec.trainable = rec.weights = None
            continue
        counts["rollouts"] += 1
        human = np.asarray(rec.intervention, dtype=bool)
        keep_policy = np.full(rec.length, bool(rec.success) or keep_failed_policy_steps)
        # Each takeover's onset, and where the policy's run that led to it began: the episode's start or
        # the previous handback.
        onsets = np.flatnonzero(human & ~np.concatenate([[False], human[:-1]]))
        handbacks = np.flatnonzero(~human & np.concatenate([[False], human[:-1]]))
        for onset in onsets:
            earlier = handbacks[handbacks < onset]
            keep_policy[(earlier[-1] if len(earlier) else 0):onset] = False
        rec.trainable = human | keep_policy
        rec.weights = np.where(human, float(intervention_weight), keep_policy.astype(float))
        n_human, n_kept = int(human.sum()), int((keep_policy & ~human).sum())
        counts["intervention_steps"] += n_human
        counts["policy_steps_kept"] += n_kept
        counts["policy_steps_left_out"] += rec.length - n_human - n_kept
    return CorrectionSummary(**counts)


def scan_training_episodes(data: str | Path, rollouts: Sequence[str | Path] = (),
                           intervention_weight: float = 1.0,
                           keep_failed_policy_steps: bool = False) -> tuple[list[EpisodeRecord], CorrectionSummary]:
    """The episodes of ``data`` and of every rollout folder, weighed for training."""
    from robokit.training.dataset import scan_episodes

    records = list(scan_episodes(data))
    for folder in rollouts:
        found = scan_episodes(folder)
        if not any(r.intervention is not None for r in found):
            raise DataError(f"{folder}: no rollout in it records interventions; record rollouts with "
                            "`robokit deploy --takeover ... --record DIR`, or pass demonstrations as DATA")
        records.extend(found)
    summary = weigh_episodes(records, intervention_weight, keep_failed_policy_steps)
    if summary.rollouts and not any(r.weights is None or r.weights.any() for r in records):
        raise DataError("every step of these rollouts is left out (failed rollouts without interventions); "
                        "add demonstrations or pass --keep-failed-policy-steps")
    return records, summary


def sample_weights(records: Sequence[EpisodeRecord]) -> np.ndarray | None:
    """Per start step (the dataset's index order), the relative chance of being drawn; None when
    every step counts once (no rollout with takeover)."""
    if all(r.weights is None for r in records):
        return None
    return np.concatenate([r.weights if r.weights is not None else np.ones(r.length) for r in records])
