"""Saved outputs: ACT, GRP and VIMA on fixed weights still compute what they computed when saved.

The checkpoints, inputs and expected outputs are in ``tests/policies/artifacts/``; its
``make_regression_artifacts.py`` says when (only on an intended model change) and how to regenerate
them. A refactor that is not meant to change a model must pass against the files as they are.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.policies.artifacts.make_regression_artifacts import MODELS, load_io, load_policy, run

# Relative to each output's scale (at least 1): float32 sums taken in another order (another CPU's
# SIMD width, another thread count) move these outputs by about 1e-6; a change to a model's maths
# moves them by far more.
TOLERANCE = 1e-4


def assert_close(actual, expected, what: str) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=0,
                               atol=TOLERANCE * scale, err_msg=f"{what} differs from the saved output")


def assert_same_outputs(got: dict, expected: dict, name: str) -> None:
    assert len(got["chunks"]) == len(expected["chunks"])
    for i, (chunk, saved) in enumerate(zip(got["chunks"], expected["chunks"])):
        assert chunk.shape == saved.shape, f"{name} chunk {i}"
        assert_close(chunk.numpy(), saved.numpy(), f"{name} chunk {i}")
    assert_close(got["done"], expected["done"], f"{name} done probabilities")
    assert sorted(got["loss"]) == sorted(expected["loss"]), f"{name} loss terms"
    for term, value in expected["loss"].items():
        assert_close(got["loss"][term], value, f"{name} loss term {term!r}")


@pytest.mark.parametrize("name", MODELS)
def test_saved_model_computes_the_saved_outputs(name: str):
    policy = load_policy(name)
    saved = load_io(name)
    assert_same_outputs(run(policy, saved["inputs"]), saved["expected"], name)


@pytest.mark.parametrize("name", MODELS)
def test_a_change_of_a_tenth_of_a_percent_in_the_weights_is_caught(name: str):
    """The tolerance has teeth: nudging every weight by about 0.1% moves the outputs past it."""
    policy = load_policy(name)
    saved = load_io(name)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(1 + 1e-3 * torch.randn(p.shape, generator=g))
    with pytest.raises(AssertionError, match="differs from the saved output"):
        assert_same_outputs(run(policy, saved["inputs"]), saved["expected"], name)
