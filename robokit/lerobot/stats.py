"""LeRobot's normalisation statistics: min, max, mean, std, count and the q01..q99 quantiles.

Vectors get one value per dimension; images one per channel, scaled to [0, 1] and shaped (3, 1, 1)
as LeRobot stores them. Image statistics are exact and cheap: a uint8 channel is a 256-bin
histogram, from which every statistic follows, and histograms of episodes add up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(q * 100):02d}" for q in QUANTILES)


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of (N, D) or (N,) values over N (NaN rows are left out)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    x = x[np.all(np.isfinite(x), axis=1)]
    if not len(x):
        zero = np.zeros(x.shape[1])
        return {"min": zero, "max": zero, "mean": zero, "std": zero, "count": np.array([0]),
                **{k: zero for k in QUANTILE_KEYS}}
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for key, q in zip(QUANTILE_KEYS, np.quantile(x, QUANTILES, axis=0), strict=True):
        out[key] = q
    return out


def image_histogram(frames: np.ndarray) -> np.ndarray:
    """(3, 256) pixel counts per channel of uint8 frames (N, H, W, 3)."""
    flat = np.asarray(frames, dtype=np.uint8).reshape(-1, 3)
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(3)]).astype(np.int64)


def histogram_stats(hist: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Image statistics (values in [0, 1], shape (3, 1, 1)) from a (3, 256) histogram of ``frames``
    frames; ``count`` is the number of frames, as LeRobot counts them."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    total = np.maximum(hist.sum(axis=1), 1)
    mean = (hist * levels).sum(axis=1) / total
    std = np.sqrt(np.maximum((hist * levels**2).sum(axis=1) / total - mean**2, 0.0))
    nonzero = [np.flatnonzero(h) for h in hist]
    lo = np.array([levels[n[0]] if len(n) else 0.0 for n in nonzero])
    hi = np.array([levels[n[-1]] if len(n) else 0.0 for n in nonzero])
    cumulative = np.cumsum(hist, axis=1)

    def column(values: np.ndarray) -> np.ndarray:
        return values.reshape(3, 1, 1)

    out = {"min": column(lo), "max": column(hi), "mean": column(mean), "std": column(std),
           "count": np.array([int(frames)])}
    for key, q in zip(QUANTILE_KEYS, QUANTILES, strict=True):
        idx = np.array([np.searchsorted(cumulative[c], q * total[c]) for c in range(3)])
        out[key] = column(levels[np.minimum(idx, 255)])
    return out


class VectorAccumulator:
    """Collects the rows of one vector feature over episodes for :func:`vector_stats` over all."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        """Add (N, D) or (N,) rows."""
        self._parts.append(np.asarray(values, dtype=np.float64).reshape(len(values), -1))

    def stats(self) -> dict[str, np.ndarray]:
        """Statistics over every row added."""
        return vector_stats(np.concatenate(self._parts) if self._parts else np.zeros((0, 1)))


def to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """Nested lists for ``meta/stats.json``."""
    return {name: {key: np.asarray(value).tolist() for key, value in entry.items()}
            for name, entry in stats.items()}


def flat_columns(stats: dict[str, dict[str, np.ndarray]]) -> Iterable[tuple[str, Any]]:
    """``("stats/<feature>/<stat>", value as nested lists)`` for an episodes-table row."""
    for name, entry in stats.items():
        for key, value in entry.items():
            yield f"stats/{name}/{key}", np.asarray(value, dtype=np.int64 if key == "count" else np.float64).tolist()
