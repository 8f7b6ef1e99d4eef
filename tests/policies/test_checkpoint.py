"""Single-file checkpoints: round trip with weights_only=True, and clear errors for bad files."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from robokit.errors import CheckpointError, ConfigError
from robokit.policies.act.model import ACTConfig, ACTPolicy
from robokit.policies.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from robokit.policies.cnnmlp.model import CNNMLPPolicy


@pytest.fixture
def tiny_act(make_tiny_policy):
    """Makes an untrained tiny ACT whose statistics are not 0/1 (so a round trip must keep them)."""
    def make() -> ACTPolicy:
        policy = make_tiny_policy("act", image_shape=(32, 48, 3))
        rng = np.random.default_rng(0)
        stats = {f"{k}_{s}": rng.normal(size=8).astype(np.float32) for k in ("qpos", "action")
                 for s in ("mean", "min", "max")}
        stats.update({f"{k}_std": rng.uniform(0.5, 2, size=8).astype(np.float32) for k in ("qpos", "action")})
        policy.set_norm_stats(stats)
        return policy
    return make


def obs() -> dict:
    rng = np.random.default_rng(3)
    return {"qpos": rng.normal(size=8).astype(np.float32),
            "images": {"top": rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)}}


META = {"dataset": "data/pick", "episodes": ["episode_0.hdf5"], "step": 12, "val_loss": np.float32(0.25),
        "camera_names": ("top",), "fps": 30.0}


def test_round_trip_is_weights_only_and_predicts_the_same(tmp_path, tiny_act):
    policy = tiny_act()
    path = tmp_path / "run" / "best.pt"
    save_checkpoint(path, policy, META)
    assert sorted(os.listdir(path.parent)) == ["best.pt"]  # no temporary file left behind

    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert raw["format"] == "robokit.checkpoint" and raw["version"] == 1 and raw["policy_type"] == "act"
    assert set(raw["norm_stats"]) >= {"qpos_mean", "action_std"}

    loaded, meta = load_checkpoint(path, expected_type="act")
    assert isinstance(loaded, ACTPolicy) and not loaded.training
    assert meta == {"dataset": "data/pick", "episodes": ["episode_0.hdf5"], "step": 12, "val_loss": 0.25,
                    "camera_names": ["top"], "fps": 30.0}
    assert loaded.config == policy.config
    np.testing.assert_array_equal(loaded.predict_chunk(obs())[0], policy.predict_chunk(obs())[0])

    info = read_checkpoint_info(path)
    assert info["policy_type"] == "act" and info["config"]["hidden_dim"] == 32 and info["train_meta"]["step"] == 12
    np.testing.assert_array_equal(info["norm_stats"]["action_mean"], policy.action_mean.numpy())


def test_cnnmlp_round_trip(tmp_path, make_tiny_policy):
    policy = make_tiny_policy("cnnmlp", image_shape=(32, 48, 3))
    save_checkpoint(tmp_path / "c.pt", policy, {})
    loaded, _ = load_checkpoint(tmp_path / "c.pt")
    assert isinstance(loaded, CNNMLPPolicy)
    np.testing.assert_array_equal(loaded.predict_chunk(obs())[0], policy.predict_chunk(obs())[0])


def test_truncated_file_names_the_file(tmp_path, tiny_act):
    path = tmp_path / "best.pt"
    save_checkpoint(path, tiny_act(), {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="best.pt.*truncated"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="best.pt"):
        read_checkpoint_info(path)


def test_other_policy_type_is_rejected(tmp_path, tiny_act):
    path = tmp_path / "act.pt"
    save_checkpoint(path, tiny_act(), {})
    with pytest.raises(CheckpointError, match=r"act\.pt holds a 'act' policy, not the expected 'cnnmlp'"):
        load_checkpoint(path, expected_type="cnnmlp")


def _rewrite(path, **changes):
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    torch.save(payload, path)


def test_newer_format_version_asks_for_an_upgrade(tmp_path, tiny_act):
    path = tmp_path / "new.pt"
    save_checkpoint(path, tiny_act(), {})
    _rewrite(path, version=2)
    with pytest.raises(CheckpointError, match=r"new\.pt has checkpoint format version 2, newer"):
        load_checkpoint(path)


def test_missing_parts_and_mismatched_weights_are_named(tmp_path, tiny_act):
    path = tmp_path / "part.pt"
    save_checkpoint(path, tiny_act(), {})
    _rewrite(path, state_dict=None)
    with pytest.raises(CheckpointError, match=r"part\.pt lacks state_dict"):
        load_checkpoint(path)

    save_checkpoint(path, tiny_act(), {})
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("model.action_head.weight")
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"part\.pt does not match.*model\.action_head\.weight"):
        load_checkpoint(path)

    save_checkpoint(path, tiny_act(), {})
    _rewrite(path, config={**torch.load(path, weights_only=True)["config"], "hidden_dim": 64})
    with pytest.raises(CheckpointError, match=r"part\.pt does not match"):
        load_checkpoint(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused_and_foreign_files_are_explained(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "robokit.checkpoint", "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        load_checkpoint(path)

    orig = tmp_path / "policy_best.ckpt"
    torch.save({"model.transformer.encoder.layers.0.linear1.weight": torch.zeros(2, 2)}, orig)
    with pytest.raises(CheckpointError, match="import-act"):
        load_checkpoint(orig)

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")

    notpt = tmp_path / "notes.pt"
    notpt.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_checkpoint(notpt)

    text = tmp_path / "readme.pt"
    text.write_bytes(b"hello world")  # torch.load's own error here is a bare KeyError
    for read in (load_checkpoint, read_checkpoint_info):
        with pytest.raises(CheckpointError, match=r"readme\.pt: the file is truncated or is not a checkpoint"):
            read(text)


def test_train_meta_must_be_plain(tmp_path, tiny_act):
    with pytest.raises(ConfigError, match="train_meta.bad"):
        save_checkpoint(tmp_path / "x.pt", tiny_act(), {"bad": object()})
    assert not list(tmp_path.iterdir())


def test_pretrained_backbone_comes_only_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None)  # fc.* and num_batches_tracked, like a downloaded file
    weights = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), weights)
    cfg = ACTConfig(camera_names=["top"], image_shape=(32, 32, 3), hidden_dim=32, nheads=2, dim_feedforward=32,
                    enc_layers=1, dec_layers=1, vae_enc_layers=1, chunk_size=3, pretrained_backbone=str(weights))
    policy = ACTPolicy(cfg)
    torch.testing.assert_close(policy.model.backbone.body.conv1.weight, net.conv1.weight)
    torch.testing.assert_close(policy.model.backbone.body.layer4[1].bn2.running_var, net.layer4[1].bn2.running_var)

    save_checkpoint(tmp_path / "p.pt", policy, {})
    weights.unlink()  # the checkpoint carries the weights; the file is not needed to load it
    loaded, _ = load_checkpoint(tmp_path / "p.pt")
    assert loaded.config.pretrained_backbone == str(weights)
    torch.testing.assert_close(loaded.model.backbone.body.conv1.weight, net.conv1.weight)
    with pytest.raises(ConfigError, match="never downloads"):
        ACTPolicy(cfg)
