"""The server fuzzer (benchmarks/fuzz_server.py) on a few hundred messages: every one gets a typed
or a valid reply, the server keeps answering, and the fuzzer itself notices a server that misbehaves."""

from __future__ import annotations

import sys

import msgpack
import pytest

from robokit.deploy import protocol as P
from tests.benchmark_scripts import benchmark_script


@pytest.fixture(scope="module")
def fuzz():
    with benchmark_script("fuzz_server") as module:
        yield module


def test_every_mutated_message_gets_a_typed_reply_and_the_server_stays_up(fuzz):
    report = fuzz.run_fuzz(300, seed=0, batch=100)
    assert report.failures == [] and report.timeouts == 0 and report.crashes == 0, fuzz.summary(report)
    assert report.messages == 300 and report.pings == 3
    assert sum(report.errors.values()) + sum(report.valid.values()) == 300
    assert set(report.errors) <= set(P.ERROR_CODES) - {P.INTERNAL}
    # The mutations reach past the header parser: arrays, requests and the policy are exercised.
    assert {P.BAD_MESSAGE, P.BAD_ARRAY, P.TOO_LARGE, P.BAD_REQUEST} <= set(report.errors)
    assert report.valid["infer"] > 0 and report.ok


def test_messages_are_reproducible_from_seed_and_index(fuzz):
    mutations = sys.modules["fuzz_mutations"]
    first, again = mutations.make_message(3, 17), mutations.make_message(3, 17)
    assert first.frames == again.frames and first.applied == again.applied
    assert mutations.make_message(4, 17).frames != first.frames


def test_the_fuzzer_flags_replies_a_correct_server_never_sends(fuzz):
    mutations = sys.modules["fuzz_mutations"]
    draft = mutations.Draft({"type": "hello", "id": 1, "t": msgpack.Timestamp(1, 0)}, [])
    draft.packed = draft.frames = mutations.pack(draft)
    draft.applied = ["ext"]
    accepted = [msgpack.packb({"type": "hello", "id": 1, "protocol": 1, "policy": {}})]
    assert "extension type" in fuzz.check_reply(accepted, draft)[1]
    internal = [msgpack.packb({"type": "error", "code": P.INTERNAL, "message": "bug"})]
    assert "internal" in fuzz.check_reply(internal, draft)[1]
    mislabelled = [msgpack.packb({"type": "error", "code": P.POLICY_ERROR, "message": "ValueError"})]
    assert "never saw" in fuzz.check_reply(mislabelled, draft, policy_called=False)[1]
    unknown = [msgpack.packb({"type": "error", "code": "oops", "message": "?"})]
    assert "known code" in fuzz.check_reply(unknown, draft)[1]
