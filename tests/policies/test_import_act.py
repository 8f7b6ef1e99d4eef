"""Importing original-ACT checkpoints: same predictions as the original network, safe stats reading."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from robokit.cli import main
from robokit.errors import CheckpointError
from robokit.policies.act.import_original import build_imported_policy, read_act_stats
from robokit.policies.act.reference import OriginalACT, random_original_state_dict
from robokit.policies.checkpoint import load_checkpoint

HW = (48, 64)


def write_original(tmp_path, cams, pre_norm=False, state_dim=8, action_dim=7):
    """An original-layout ACT checkpoint + stats pickle, as the original training script writes them."""
    torch.manual_seed(0)
    ref = OriginalACT(cams, state_dim=state_dim, action_dim=action_dim, chunk_size=6, hidden_dim=32, nheads=4,
                      dim_feedforward=64, enc_layers=2, dec_layers=3, latent_dim=8, pre_norm=pre_norm)
    sd = random_original_state_dict(ref, seed=1)
    ref.load_state_dict(sd)
    ref.eval()
    rng = np.random.default_rng(0)
    stats = {"qpos_mean": rng.normal(size=state_dim), "qpos_std": rng.uniform(0.2, 1.0, size=state_dim),
             "action_mean": rng.normal(size=action_dim).astype(np.float32),
             "action_std": rng.uniform(0.2, 1.0, size=action_dim).astype(np.float32),
             "example_qpos": rng.normal(size=(10, state_dim))}
    torch.save(sd, tmp_path / "policy_best.ckpt")
    with open(tmp_path / "dataset_stats.pkl", "wb") as f:
        pickle.dump(stats, f)
    return ref, stats


def original_prediction(ref, stats, obs, cams):
    """What the original eval loop computes: pre_process, get_image, policy(qpos, image), post_process."""
    qpos = torch.from_numpy((obs["qpos"] - stats["qpos_mean"]) / stats["qpos_std"]).float()[None]
    image = np.stack([obs["images"][c].transpose(2, 0, 1) for c in cams])
    image = torch.from_numpy(image / 255.0).float()[None]
    with torch.no_grad():
        a_hat = ref(qpos, image)[0].numpy()
    return a_hat * stats["action_std"] + stats["action_mean"]


def make_obs(cams, seed, state_dim=8):
    rng = np.random.default_rng(seed)
    return {"qpos": rng.normal(size=state_dim).astype(np.float32),
            "images": {c: rng.integers(0, 256, (*HW, 3), dtype=np.uint8) for c in cams}}


@pytest.mark.parametrize(("cams", "pre_norm"), [(["top", "wrist"], False), (["top"], True)])
def test_imported_policy_predicts_what_the_original_predicts(tmp_path, cams, pre_norm):
    ref, stats = write_original(tmp_path, cams, pre_norm)
    policy, _ = build_imported_policy(tmp_path / "policy_best.ckpt", tmp_path / "dataset_stats.pkl", cams,
                                      nheads=4, image_shape=(*HW, 3))
    cfg = policy.config
    assert (cfg.hidden_dim, cfg.chunk_size, cfg.enc_layers, cfg.dec_layers, cfg.vae_enc_layers) == (32, 6, 2, 3, 2)
    assert (cfg.state_dim, cfg.action_dim, cfg.latent_dim, cfg.pre_norm, cfg.backbone) == (8, 7, 8, pre_norm,
                                                                                         "resnet18")
    outputs = []
    for seed in (0, 1):
        obs = make_obs(cams, seed)
        expected = original_prediction(ref, stats, obs, cams)
        chunk, extras = policy.predict_chunk(obs)
        np.testing.assert_allclose(chunk, expected, atol=1e-5)
        assert "done" not in extras  # the original never trained its is_pad head
        outputs.append(chunk)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3  # a test that could fail: inputs matter

    # the CVAE encoder (training only) maps the same way
    g = torch.Generator().manual_seed(5)
    qpos = torch.randn(2, 8, generator=g)
    actions = torch.randn(2, 6, 7, generator=g)
    is_pad = torch.zeros(2, 6, dtype=torch.bool)
    is_pad[1, 3:] = True
    images = torch.rand(2, len(cams), 3, *HW, generator=g)
    with torch.no_grad():
        _, _, (mu_ref, logvar_ref) = ref(qpos, images, actions, is_pad)
        mu, logvar = policy.model.encode_latent(qpos, actions, is_pad)
    torch.testing.assert_close(mu, mu_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(logvar, logvar_ref, atol=1e-5, rtol=0)


def test_import_act_command_writes_a_loadable_checkpoint(tmp_path, capsys):
    cams = ["top", "wrist"]
    ref, stats = write_original(tmp_path, cams)
    out = tmp_path / "act.pt"
    main(["import-act", str(tmp_path / "policy_best.ckpt"), str(tmp_path / "dataset_stats.pkl"),
          "--camera", "top", "--camera", "wrist", "--nheads", "4", "--chunk-size", "6",
          "--image-size", "48x64", "--out", str(out)])
    assert "verified" in capsys.readouterr().out
    policy, meta = load_checkpoint(out, expected_type="act")
    assert meta["source"] == "original-act" and meta["import_max_abs_diff"] <= 1e-5
    obs = make_obs(cams, 7)
    np.testing.assert_allclose(policy.predict_chunk(obs)[0], original_prediction(ref, stats, obs, cams), atol=1e-5)

    # a wrong expectation is caught, not silently built into a wrong model
    with pytest.raises(SystemExit) as exc:
        main(["import-act", str(tmp_path / "policy_best.ckpt"), str(tmp_path / "dataset_stats.pkl"),
              "--camera", "top", "--chunk-size", "100", "--out", str(tmp_path / "x.pt")])
    assert exc.value.code == 2
    assert "chunk_size = 6, not 100" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_bad_original_checkpoints_are_named(tmp_path):
    cams = ["top"]
    write_original(tmp_path, cams)
    ckpt = tmp_path / "policy_best.ckpt"
    data = ckpt.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cut.ckpt"):
        build_imported_policy(tmp_path / "cut.ckpt", tmp_path / "dataset_stats.pkl", cams, nheads=4)
    sd = torch.load(ckpt, weights_only=True)
    sd.pop("model.transformer.decoder.norm.weight")
    torch.save(sd, tmp_path / "partial.ckpt")
    with pytest.raises(CheckpointError, match=r"partial\.ckpt.*decoder\.norm\.weight"):
        build_imported_policy(tmp_path / "partial.ckpt", tmp_path / "dataset_stats.pkl", cams, nheads=4)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_stats_unpickler_admits_only_arrays(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"qpos_mean": _Evil(marker)}))
    with pytest.raises(CheckpointError, match="evil.pkl.*refusing"):
        read_act_stats(bad)
    assert not marker.exists()

    tensors = tmp_path / "tensors.pkl"
    tensors.write_bytes(pickle.dumps({"qpos_mean": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match="tensors.pkl"):
        read_act_stats(tensors)

    arrays = {"qpos_mean": np.zeros(3), "qpos_std": np.ones(3, np.float32), "action_mean": np.zeros(2),
              "action_std": np.ones(2), "example_qpos": np.zeros((4, 3))}
    # numpy 1.x wrote "numpy.core.multiarray"; both module paths are accepted
    old_style = pickle.dumps(arrays, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (tmp_path / "old.pkl").write_bytes(old_style)
    read = read_act_stats(tmp_path / "old.pkl")
    np.testing.assert_array_equal(read["qpos_std"], np.ones(3))

    (tmp_path / "nostd.pkl").write_bytes(pickle.dumps({"qpos_mean": np.zeros(3)}))
    with pytest.raises(CheckpointError, match="lacks 'qpos_std'"):
        read_act_stats(tmp_path / "nostd.pkl")
