"""CPU inference engines: the exported policy answers as torch does, and anything it cannot do
falls back to torch with one warning while the server keeps serving."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from robokit.deploy import engines
from robokit.deploy.client import PolicyClient
from robokit.deploy.engines import EnginePolicy, accelerate, check_engine
from robokit.deploy.server import PolicyServer
from robokit.errors import UserError

AVAILABLE = []
for _engine in ("onnx", "openvino", "ncnn"):
    try:
        check_engine(_engine)
        AVAILABLE.append(_engine)
    except UserError:
        pass
needs_engine = pytest.mark.skipif(not AVAILABLE, reason="no CPU inference engine installed (robokit[cpu-infer])")


def observation(policy, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    h, w, _ = policy.config.image_shape
    return {"qpos": rng.normal(size=policy.config.state_dim).astype(np.float32),
            "images": {c: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for c in policy.config.camera_names}}


def with_stats(policy):
    """Non-identity statistics, so that normalising and de-normalising are exercised."""
    rng = np.random.default_rng(1)
    s, a = policy.config.state_dim, policy.config.action_dim
    policy.set_norm_stats({"qpos_mean": rng.normal(size=s), "qpos_std": rng.uniform(0.2, 2, s),
                           "qpos_min": -np.ones(s), "qpos_max": np.ones(s),
                           "action_mean": rng.normal(size=a), "action_std": rng.uniform(0.2, 2, a),
                           "action_min": -np.ones(a), "action_max": np.ones(a)})
    return policy.eval()


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture(scope="module", params=AVAILABLE)
def act_pair(request, make_tiny_policy):
    """(torch ACT with two cameras and real statistics, the same through the engine, warnings logged)."""
    policy = with_stats(make_tiny_policy("act", camera_names=["top", "wrist"]))
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warned.append(record.getMessage())  # type: ignore[method-assign]
    warned: list[str] = []
    logging.getLogger().addHandler(handler)
    try:
        fast = accelerate(policy, request.param)
    finally:
        logging.getLogger().removeHandler(handler)
    return policy, fast, warned


@needs_engine
def test_act_chunk_and_extras_match_torch(act_pair):
    policy, fast, warned = act_pair
    assert isinstance(fast, EnginePolicy) and fast.engine in AVAILABLE
    assert not warned
    assert fast.max_error <= 1e-4
    for seed in range(3):
        obs = observation(policy, seed)
        want, want_extras = policy.predict_chunk(obs)
        got, got_extras = fast.predict_chunk(obs)
        assert got.dtype == np.float32 and got.shape == want.shape == (10, 8)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        assert set(got_extras) == set(want_extras) == {"done", "done_chunk"}
        assert abs(got_extras["done"] - want_extras["done"]) < 1e-4
        np.testing.assert_allclose(got_extras["done_chunk"], want_extras["done_chunk"], atol=1e-4)
    # Whatever else the server or the runner reads is the policy's.
    assert fast.config is policy.config and fast.name == "act"
    # Attention maps are not in the exported graph: torch answers that request.
    maps = fast.predict_chunk(observation(policy), capture_attention=True)[1]["attention"]["maps"]
    np.testing.assert_array_equal(maps, policy.predict_chunk(observation(policy), capture_attention=True)[1]
                                  ["attention"]["maps"])
    fast.reset()


@needs_engine
def test_cnnmlp_matches_torch(make_tiny_policy):
    policy = with_stats(make_tiny_policy("cnnmlp"))
    fast = accelerate(policy, AVAILABLE[0])
    assert isinstance(fast, EnginePolicy)
    obs = observation(policy)
    np.testing.assert_allclose(fast.predict_chunk(obs)[0], policy.predict_chunk(obs)[0], atol=1e-4, rtol=0)


@needs_engine
def test_engine_policy_serves_the_same_actions(act_pair):
    policy, fast, _ = act_pair
    obs = observation(policy)
    want = policy.predict_chunk(obs)[0]
    server = PolicyServer(fast, "tcp://127.0.0.1:0").start()
    try:
        with PolicyClient(server.address, timeout_s=10) as client:
            assert client.hello().type == "act"
            got = client.infer(obs["qpos"], obs["images"]).actions
            client.reset()
    finally:
        server.close()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@needs_engine
def test_unsupported_policy_falls_back_with_one_warning_and_still_serves(make_tiny_policy, caplog):
    policy = make_tiny_policy("grp").eval()  # follows instructions: no exporter
    caplog.set_level(logging.INFO)
    served = accelerate(policy, AVAILABLE[0])
    assert served is policy
    lines = warnings_of(caplog)
    assert len(lines) == 1 and "serving with torch" in lines[0] and "grp" in lines[0]
    server = PolicyServer(served, "tcp://127.0.0.1:0").start()
    try:
        with PolicyClient(server.address, timeout_s=10) as client:
            obs = observation(policy)
            result = client.infer(obs["qpos"], obs["images"], task="put the red cube on the plate")
    finally:
        server.close()
    assert result.actions.shape == (policy.config.chunk_size, policy.config.action_dim)


@needs_engine
def test_failing_export_falls_back_with_one_warning(make_tiny_policy, monkeypatch, caplog):
    policy = make_tiny_policy("act").eval()

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::frobnicate\nlong traceback text")

    monkeypatch.setattr(engines, "export_onnx", broken)
    assert accelerate(policy, AVAILABLE[0]) is policy
    lines = warnings_of(caplog)
    assert len(lines) == 1
    assert "export failed" in lines[0] and "aten::frobnicate" in lines[0] and "traceback" not in lines[0]
    obs = observation(policy)
    assert policy.predict_chunk(obs)[0].shape == (10, 8)


@needs_engine
def test_engine_that_differs_from_torch_is_refused(make_tiny_policy, monkeypatch, caplog):
    policy = make_tiny_policy("act").eval()
    spec = engines.export_spec(policy)

    def off_by_a_little(images, qpos):  # an engine whose kernels round differently from torch's
        import torch

        with torch.inference_mode():
            return [t.numpy() + 3e-3 for t in spec.module(torch.from_numpy(images), torch.from_numpy(qpos))]

    monkeypatch.setattr(engines, "build_runner", lambda *args, **kwargs: off_by_a_little)
    assert accelerate(policy, AVAILABLE[0]) is policy
    lines = warnings_of(caplog)
    assert len(lines) == 1 and "differ from torch" in lines[0]


needs_ncnn = pytest.mark.skipif("ncnn" not in AVAILABLE, reason="ncnn/pnnx not installed (robokit[ncnn])")


@needs_ncnn
def test_ncnn_runs_act_only_and_falls_back_for_cnnmlp_with_one_warning(make_tiny_policy, caplog):
    policy = with_stats(make_tiny_policy("cnnmlp"))
    assert accelerate(policy, "ncnn") is policy
    lines = warnings_of(caplog)
    assert len(lines) == 1 and "ACT only" in lines[0] and "serving with torch" in lines[0]


@needs_ncnn
def test_ncnn_backbone_conversion_failure_falls_back_with_one_warning(make_tiny_policy, monkeypatch, caplog):
    import pnnx

    policy = with_stats(make_tiny_policy("act"))
    monkeypatch.setattr(pnnx, "EXEC_PATH", "/bin/false")  # a converter that fails without a word
    assert accelerate(policy, "ncnn") is policy
    lines = warnings_of(caplog)
    assert len(lines) == 1 and "pnnx could not convert the backbone" in lines[0] and "serving with torch" in lines[0]
    assert policy.predict_chunk(observation(policy))[0].shape == (10, 8)


def test_torch_engine_is_the_policy_itself(make_tiny_policy):
    policy = make_tiny_policy("act")
    assert accelerate(policy, "torch") is policy
    assert accelerate(policy, "Torch") is policy


def test_unknown_engine_is_a_clear_error(make_tiny_policy):
    with pytest.raises(UserError, match=r"unknown inference engine 'tensorrt'.*torch, onnx, openvino"):
        accelerate(make_tiny_policy("act"), "tensorrt")


@pytest.mark.parametrize(("engine", "module"), [("onnx", "onnxruntime"), ("openvino", "openvino"), ("onnx", "onnx"),
                                                ("ncnn", "ncnn"), ("ncnn", "pnnx")])
def test_missing_engine_package_names_the_extra(make_tiny_policy, monkeypatch, engine, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    extra = "ncnn" if engine == "ncnn" else "cpu-infer"
    with pytest.raises(UserError, match=rf"pip install 'robokit\[{extra}\]'") as info:
        accelerate(make_tiny_policy("act"), engine)
    assert module in str(info.value)


def test_serve_rejects_an_unknown_engine(make_tiny_checkpoint):
    from typer.testing import CliRunner

    from robokit.cli import app

    result = CliRunner().invoke(app, ["serve", str(make_tiny_checkpoint("act")), "--bind", "tcp://127.0.0.1:0",
                                      "--engine", "tensorrt"])
    assert result.exit_code != 0  # the CLI's entry point turns the UserError into one line and exit code 2
    assert isinstance(result.exception, UserError) and "tensorrt" in str(result.exception)
