"""Streaming temporal ensembling equals ACT's formula over its full T x (T+H) x A buffer, in every mode."""

import math

import numpy as np
import pytest

from robokit.deploy.ensemble import ActionQueue, TemporalEnsembler
from robokit.errors import ConfigError


def act_reference(arrivals, steps, chunk_size, action_dim, k):
    """ACT's evaluation-loop ensembling, written out directly.

    ``arrivals``: list of (start_step, arrival_step, chunk). Row ``start`` of the buffer is filled
    when the chunk arrives; at step t the populated rows vote, oldest row first, weights exp(-k i).
    """
    buf = np.zeros((steps, steps + chunk_size, action_dim))
    populated = np.zeros((steps, steps + chunk_size), dtype=bool)
    out = []
    for t in range(steps):
        for start, arrival, chunk in arrivals:
            if arrival == t:
                buf[start, start:start + chunk_size] = chunk
                populated[start, start:start + chunk_size] = True
        votes = buf[populated[:, t], t]
        if len(votes) == 0:
            out.append(None)
            continue
        w = np.exp(-k * np.arange(len(votes)))
        out.append((votes * (w / w.sum())[:, None]).sum(axis=0))
    return out


def run_queue(mode, steps, chunk_size, action_dim, k, latency, query_every=None, seed=0):
    """Drive an ActionQueue like the control loop does; returns its actions and the arrivals."""
    rng = np.random.default_rng(seed)
    queue = ActionQueue(mode, chunk_size, action_dim, k=k, query_every=query_every)
    pending, arrivals, actions = [], [], []
    for t in range(steps):
        for item in [p for p in pending if p[1] == t]:
            pending.remove(item)
            queue.add(item[2], item[0])
            arrivals.append(item)
        if queue.query_due(in_flight=bool(pending)):
            start = queue.on_query()
            chunk = rng.normal(size=(chunk_size, action_dim))
            delay = latency(rng)
            if delay == 0:  # a blocking query: the reply is used at this very step
                queue.add(chunk, start)
                arrivals.append((start, t, chunk))
            else:
                pending.append((start, t + delay, chunk))
        actions.append(queue.pop())
    return actions, arrivals


def assert_same(actions, reference):
    assert len(actions) == len(reference)
    for t, (got, want) in enumerate(zip(actions, reference)):
        if want is None:
            assert got is None, f"step {t}: expected no action"
        else:
            assert got is not None, f"step {t}: expected an action"
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"step {t}")


@pytest.mark.parametrize("k", [0.01, 0.0, 0.5, -0.1])
def test_ensemble_mode_matches_act_formula(k):
    actions, arrivals = run_queue("ensemble", 60, 10, 3, k, latency=lambda rng: 0)
    assert len(arrivals) == 60  # one query per step
    assert_same(actions, act_reference(arrivals, 60, 10, 3, k))


@pytest.mark.parametrize("query_every", [10, 4, 7])
def test_chunk_mode_matches_act_formula(query_every):
    actions, arrivals = run_queue("chunk", 50, 10, 2, 0.01, latency=lambda rng: 0, query_every=query_every)
    assert [a[0] for a in arrivals] == list(range(0, 50, query_every))
    assert_same(actions, act_reference(arrivals, 50, 10, 2, 0.01))


def test_chunk_mode_without_overlap_executes_each_chunk_verbatim():
    actions, arrivals = run_queue("chunk", 30, 10, 2, 0.01, latency=lambda rng: 0)
    for start, _, chunk in arrivals:
        np.testing.assert_allclose(np.stack(actions[start:start + 10]), chunk, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_async_mode_blends_late_chunks_like_act_formula(seed):
    actions, arrivals = run_queue("async", 80, 12, 4, 0.01, latency=lambda rng: int(rng.integers(1, 5)), seed=seed)
    assert all(arrival > start for start, arrival, _ in arrivals)
    reference = act_reference(arrivals, 80, 12, 4, 0.01)
    assert_same(actions, reference)
    # The first chunk has not arrived at step 0; afterwards the plan never runs dry.
    assert actions[0] is None and all(a is not None for a in actions[5:])


def test_async_mode_with_sparse_queries_still_queries_before_the_plan_runs_out():
    actions, arrivals = run_queue("async", 100, 10, 2, 0.01, latency=lambda rng: 3, query_every=10)
    assert all(a is not None for a in actions[3:])
    assert_same(actions, act_reference(arrivals, 100, 10, 2, 0.01))


def test_weights_favour_the_oldest_vote_for_positive_k():
    ens = TemporalEnsembler(chunk_size=4, action_dim=1, k=10.0)
    ens.add(np.zeros((4, 1)), 0)
    ens.pop()
    ens.add(np.ones((4, 1)), 1)
    assert ens.peek()[0] == pytest.approx(0.0, abs=1e-4)  # exp(-10) relative weight for the newer vote
    flat = TemporalEnsembler(chunk_size=4, action_dim=1, k=0.0)
    flat.add(np.zeros((4, 1)), 0)
    flat.pop()
    flat.add(np.ones((4, 1)), 1)
    assert flat.peek()[0] == pytest.approx(0.5)


def test_long_runs_stay_finite_and_coverage_is_reported():
    ens = TemporalEnsembler(chunk_size=5, action_dim=2, k=0.01)
    assert ens.covered_ahead() == 0 and ens.pop() is None
    for _ in range(2_000):
        ens.add(np.ones((5, 2)), ens.step)
        np.testing.assert_allclose(ens.pop(), 1.0)
    assert ens.covered_ahead() == 4
    ens.reset(step=3)
    assert ens.step == 3 and ens.peek() is None


def test_invalid_input_is_refused():
    ens = TemporalEnsembler(chunk_size=5, action_dim=2)
    with pytest.raises(ValueError):
        ens.add(np.zeros((6, 2)), 0)
    with pytest.raises(ValueError):
        ens.add(np.zeros((5, 3)), 0)
    with pytest.raises(ValueError):
        ens.add(np.zeros((5, 2)), 1)  # from the future
    ens.add(np.zeros((5, 2)), 0)
    ens.pop()
    ens.pop()
    ens.add(np.zeros((5, 2)), 2)
    with pytest.raises(ValueError):
        ens.add(np.zeros((5, 2)), 1)  # out of order
    with pytest.raises(ConfigError):
        ActionQueue("teleport", 5, 2)
    with pytest.raises(ConfigError):
        ActionQueue("chunk", 5, 2, query_every=6)


@pytest.mark.parametrize(("k", "expected"), [(math.log(2), (12 + 21 / 2 + 30 / 4) / (1 + 1 / 2 + 1 / 4)),
                                             (-math.log(2), (12 + 21 * 2 + 30 * 4) / (1 + 2 + 4)),
                                             (0.0, (12 + 21 + 30) / 3)])
def test_ensembled_action_matches_a_hand_computation(k, expected):
    # Chunks predicted at steps 0, 1, 2 (row j is the action for step start + j, valued 10*(query+1) + step
    # offset). At step 2 the votes are row 2 of the oldest (12), row 1 of the next (21) and row 0 of the
    # newest (30), weighted 1, e^-k, e^-2k: the oldest weighs most for k > 0, the newest for k < 0.
    queue = ActionQueue("ensemble", chunk_size=3, action_dim=1, k=k)
    got = []
    for t in range(3):
        assert queue.query_due()
        queue.add(np.array([[10.0 * (t + 1) + j] for j in range(3)]), queue.on_query())
        got.append(float(queue.pop()[0]))
    assert got[0] == pytest.approx(10.0)
    w1 = math.exp(-k)
    assert got[1] == pytest.approx((11 + 20 * w1) / (1 + w1))
    assert got[2] == pytest.approx(expected)


def mean_vote_age(mode, k, query_every=None, chunk_size=20, steps=120):
    """Steady-state mean age (steps since the observation) of the predictions an action averages:
    each chunk's rows hold its start step, so the ensembled action at t is t minus that age."""
    queue = ActionQueue(mode, chunk_size, 1, k=k, query_every=query_every)
    ages = []
    for t in range(steps):
        if queue.query_due():
            start = queue.on_query()
            queue.add(np.full((chunk_size, 1), float(start)), start)
        action = queue.pop()
        if t >= 3 * chunk_size:
            ages.append(t - float(action[0]))
    return float(np.mean(ages))


def test_only_a_negative_k_makes_the_blended_plan_fresher():
    # Whole chunks, chunks every 10 steps and ACT's every-step ensembling at k = 0.01 all act on
    # predictions 9.5-10 steps old on average; favouring the newest votes (k < 0) is what lowers it.
    for mode, k, every in [("chunk", 0.01, None), ("chunk", 0.01, 10), ("ensemble", 0.01, None), ("ensemble", 0.0, None)]:
        assert 9.4 < mean_vote_age(mode, k, every) < 10.0
    assert mean_vote_age("ensemble", -0.3) < 3.0
    assert mean_vote_age("ensemble", -1.0) < 1.0
