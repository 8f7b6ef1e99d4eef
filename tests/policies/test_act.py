"""ACT policy: shapes, training signal, inference semantics, attention capture, config checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from robokit.errors import ConfigError, UserError
from robokit.policies.act.model import ACTConfig, ACTPolicy
from robokit.policies.registry import get_policy_class

CAMS = ["top", "wrist"]


def tiny_config(**overrides) -> ACTConfig:
    values = {"camera_names": CAMS, "image_shape": (48, 64, 3), "backbone": "small", "hidden_dim": 32, "nheads": 4,
                  "dim_feedforward": 64, "enc_layers": 1, "dec_layers": 2, "vae_enc_layers": 1, "latent_dim": 8,
                  "chunk_size": 6, "dropout": 0.0}
    values.update(overrides)
    return ACTConfig(**values)


def make_batch(b: int = 4, chunk: int = 6, seed: int = 0, hw=(48, 64)) -> dict:
    g = torch.Generator().manual_seed(seed)
    is_pad = torch.zeros(b, chunk, dtype=torch.bool)
    is_pad[0, chunk - 2:] = True
    done = torch.zeros(b, chunk)
    done[1, -1] = 1.0
    return {"images": torch.randint(0, 256, (b, len(CAMS), 3, *hw), generator=g, dtype=torch.uint8),
            "qpos": torch.randn(b, 8, generator=g), "action": torch.randn(b, chunk, 8, generator=g),
            "is_pad": is_pad, "done": done}


def make_obs(seed: int = 0, hw=(48, 64)) -> dict:
    rng = np.random.default_rng(seed)
    return {"qpos": rng.normal(size=8).astype(np.float32),
            "images": {c: rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for c in CAMS}}


def seeded_policy(cfg: ACTConfig | None = None, seed: int = 0) -> ACTPolicy:
    torch.manual_seed(seed)
    return ACTPolicy(cfg or tiny_config())


def test_defaults_are_the_original_act_hyperparameters():
    cfg = ACTConfig()
    assert (cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.enc_layers, cfg.dec_layers) == (512, 8, 3200, 4, 7)
    assert (cfg.chunk_size, cfg.latent_dim, cfg.kl_weight, cfg.dropout, cfg.pre_norm) == (100, 32, 10.0, 0.1, False)
    assert (cfg.lr, cfg.lr_backbone, cfg.weight_decay, cfg.backbone) == (1e-5, 1e-5, 1e-4, "resnet18")
    assert get_policy_class("act") is ACTPolicy


@pytest.mark.parametrize("bad", [{"hidden_dim": 30, "nheads": 4}, {"hidden_dim": 34, "nheads": 2},
                                 {"backbone": "vgg"}, {"dropout": 1.0}, {"enc_layers": 0},
                                 {"image_shape": (8, 64, 3)}, {"kl_weight": -1.0}])
def test_invalid_configs_are_rejected(bad):
    with pytest.raises(ConfigError):
        tiny_config(**bad)


def test_config_round_trips_through_plain_dict():
    cfg = tiny_config()
    assert ACTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        ACTConfig.from_dict({**cfg.to_dict(), "hiddendim": 3})


def test_loss_terms_and_predict_shapes():
    policy = seeded_policy()
    losses = policy.compute_loss(make_batch())
    assert set(losses) == {"loss", "l1", "kl", "done_bce"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    chunk, extras = policy.predict_chunk(make_obs())
    assert chunk.shape == (6, 8) and chunk.dtype == np.float32
    assert 0.0 <= extras["done"] <= 1.0 and extras["done_chunk"].shape == (6,)
    assert "attention" not in extras


def test_shorter_batch_chunks_are_padded():
    policy = seeded_policy()
    batch = make_batch(chunk=4)
    assert torch.isfinite(policy.compute_loss(batch)["loss"])


def test_loss_decreases_on_a_tiny_batch_and_the_done_head_learns(fit_batch):
    policy = seeded_policy(tiny_config(kl_weight=1.0, image_shape=(32, 32, 3), lr_backbone=0.0))
    batch = make_batch(hw=(32, 32))
    batch["is_pad"][:] = False
    batch["done"][:] = 0.0
    batch["is_pad"][0, 1:] = True  # sample 0 is an episode's last frame
    first = policy.compute_loss(batch)
    fit_batch(policy, batch, steps=40, lr=3e-3,
              param_groups=policy.optimizer_param_groups(lr=3e-3, weight_decay=0.0))
    last = policy.compute_loss(batch)
    assert last["l1"] < 0.85 * first["l1"]
    assert last["loss"] < 0.5 * first["loss"]
    assert last["done_bce"] < 0.25 * first["done_bce"]

    def sample_obs(i):
        return {"qpos": batch["qpos"][i].numpy(),
                "images": {c: batch["images"][i, k].permute(1, 2, 0).numpy() for k, c in enumerate(CAMS)}}

    # sample 0 is finished by the next step, the others are not
    done = [policy.predict_chunk(sample_obs(i))[1]["done"] for i in range(4)]
    assert done[0] > 0.5 > max(done[1:]), done


def test_inference_is_deterministic_with_z_zero_and_restores_mode():
    policy = seeded_policy(tiny_config(dropout=0.3))
    policy.train()
    obs = make_obs()
    a1, _ = policy.predict_chunk(obs)
    a2, _ = policy.predict_chunk(obs)
    np.testing.assert_array_equal(a1, a2)
    assert policy.training  # predict_chunk switched to eval only for the call
    b, _ = policy.predict_chunk(make_obs(seed=1))
    assert np.abs(a1 - b).max() > 1e-4  # the observation matters


def test_decoding_from_backbone_features_matches_decoding_from_images():
    """What an inference engine runs apart from the backbone gives decode's outputs, batch of 2."""
    policy = seeded_policy().eval()
    model, batch = policy.model, make_batch(b=2)
    latent = torch.randn(2, model.cfg.latent_dim)
    with torch.no_grad():
        actions, done_logits, _ = model.decode(batch["images"], batch["qpos"], latent)
        features = model.backbone(model.image_normalizer(batch["images"].flatten(0, 1)))
        from_features = model.decode_features(features, batch["qpos"], latent)
    torch.testing.assert_close(from_features[0], actions, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_features[1], done_logits, atol=1e-5, rtol=0)
    assert actions.shape == (2, 6, 8)


def test_only_first_decoder_layer_runs_and_matches_full_decoder_reference():
    cfg = tiny_config(dec_layers=3)
    policy = seeded_policy(cfg)
    policy.eval()
    decoder = policy.model.transformer.decoder
    calls = [0] * len(decoder.layers)
    for i, layer in enumerate(decoder.layers):
        layer.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1))
    captured = {}
    decoder.register_forward_pre_hook(lambda m, args: captured.update(args=args))

    obs = make_obs()
    chunk, _ = policy.predict_chunk(obs)
    assert calls == [1, 0, 0]
    # the discarded layers cannot learn anything: frozen, so optimizers and DDP skip them
    assert not any(p.requires_grad for p in decoder.layers[1:].parameters())

    # Reference: run EVERY decoder layer as the original does, take the first layer's normed output.
    tgt, memory, pos, query_pos = captured["args"][:4]
    with torch.no_grad():
        intermediate = []
        for layer in decoder.layers:
            tgt, _ = layer(tgt, memory, pos, query_pos)
            intermediate.append(decoder.norm(tgt))
        ref = policy.denormalize_action(policy.model.action_head(intermediate[0]))[0].numpy()
        last = policy.denormalize_action(policy.model.action_head(intermediate[-1]))[0].numpy()
    np.testing.assert_allclose(chunk, ref, atol=1e-5)
    assert np.abs(last - ref).max() > 1e-3  # the later layers would have changed the answer


def test_attention_capture_shapes_and_no_capture_by_default():
    policy = seeded_policy()
    cross = policy.model.transformer.decoder.layers[0].multihead_attn
    seen = []
    cross.register_forward_hook(lambda m, a, out: seen.append(out[1]))

    plain, extras = policy.predict_chunk(make_obs())
    assert "attention" not in extras and seen == [None]  # weights never formed

    captured, extras = policy.predict_chunk(make_obs(), capture_attention=True)
    np.testing.assert_allclose(captured, plain, atol=1e-5)
    att = extras["attention"]
    h, w = 3, 4  # 48x64 through a stride-16 backbone
    tokens = 2 + len(CAMS) * h * w
    assert att["maps"].shape == (1, 4, 6, tokens) and att["maps"].dtype == np.float32
    np.testing.assert_allclose(att["maps"].sum(-1), 1.0, atol=1e-5)
    assert att["query_kind"] == "action"
    assert att["layout"] == {"latent": [0, 1], "state": [1, 2], "top": [2, 14, h, w], "wrist": [14, 26, h, w]}


def test_images_of_another_size_are_resized_with_area_interpolation():
    policy = seeded_policy()
    big = make_obs(hw=(96, 128))
    small = {"qpos": big["qpos"],
             "images": {c: cv2.resize(im, (64, 48), interpolation=cv2.INTER_AREA) for c, im in big["images"].items()}}
    np.testing.assert_allclose(policy.predict_chunk(big)[0], policy.predict_chunk(small)[0], atol=1e-6)


def test_bad_observations_get_clear_errors():
    policy = seeded_policy()
    obs = make_obs()
    with pytest.raises(UserError, match="wrist"):
        policy.predict_chunk({"qpos": obs["qpos"], "images": {"top": obs["images"]["top"]}})
    with pytest.raises(UserError, match="qpos"):
        policy.predict_chunk({**obs, "qpos": np.zeros(5, np.float32)})
    with pytest.raises(UserError, match="uint8"):
        policy.predict_chunk({**obs, "images": {c: im.astype(np.float32) for c, im in obs["images"].items()}})


def test_optimizer_groups_give_the_backbone_its_own_lr():
    policy = seeded_policy(tiny_config(lr_backbone=3e-6))
    groups = policy.optimizer_param_groups(lr=1e-4, weight_decay=1e-4)
    backbone_ids = {id(p) for p in policy.model.backbone.parameters()}
    assert {id(p) for p in groups[1]["params"]} == backbone_ids and groups[1]["lr"] == 3e-6
    assert groups[0]["lr"] == 1e-4 and not backbone_ids & {id(p) for p in groups[0]["params"]}
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in policy.parameters() if p.requires_grad)
    frozen = seeded_policy(tiny_config(lr_backbone=0.0))
    assert len(frozen.optimizer_param_groups(1e-4, 0.0)) == 1


def test_resnet_inference_path_matches_training_graph_and_follows_weight_updates():
    cfg = tiny_config(backbone="resnet18", image_shape=(64, 64, 3), done_weight=0.0)
    policy = seeded_policy(cfg)
    # make the frozen batch norms non-trivial so that folding them is really exercised
    g = torch.Generator().manual_seed(1)
    for name, buf in policy.model.backbone.named_buffers():
        if name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
        elif name.endswith(("running_mean", "bias")):
            buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
    obs = make_obs(hw=(64, 64))
    fast, extras = policy.predict_chunk(obs)
    assert "done" not in extras  # done head not trained
    images, qpos = torch.from_numpy(np.stack([obs["images"][c].transpose(2, 0, 1) for c in CAMS]))[None], \
        torch.from_numpy(obs["qpos"])[None]
    policy.eval()
    with torch.no_grad():
        plain, _, _ = policy.model.decode(images, policy.normalize_qpos(qpos), torch.zeros(1, cfg.latent_dim))
    np.testing.assert_allclose(fast, policy.denormalize_action(plain)[0].numpy(), atol=1e-5)

    # after a training step the (cached) inference copy of the backbone must follow the new weights
    policy.train()
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    policy.compute_loss(make_batch(hw=(64, 64)))["loss"].backward()
    opt.step()
    after, _ = policy.predict_chunk(obs)
    fresh = ACTPolicy(cfg)
    fresh.load_state_dict(policy.state_dict())
    np.testing.assert_allclose(after, fresh.predict_chunk(obs)[0], atol=1e-5)
    assert np.abs(after - fast).max() > 1e-4
