"""VIMA-style policy: bins and offsets, Cartesian coding through fk/ik, prompt, task conditioning,
history, masks, checkpoint versions, overfit."""

import lzma
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robokit.errors import CheckpointError, ConfigError, UserError
from robokit.hardware.base import PANDA_Q_MAX, PANDA_Q_MIN, PANDA_READY_POSE
from robokit.hardware.kinematics import fk
from robokit.policies.checkpoint import load_checkpoint, save_checkpoint
from robokit.policies.goal.actions import (
    CartesianCoder,
    UniformBins,
    euler_xyz_from_matrix,
    matrix_from_euler_xyz,
)
from robokit.policies.goal.vima import VIMAConfig, VIMAPolicy, interleave_positions
from robokit.policies.goal.vima_layers import batch_objects, interleave_word_positions
from robokit.policies.nn.task_conditioning import build_vocabulary
from robokit.policies.registry import get_policy_class

TASK = "put the red cube in the blue bowl"
LONG_TASK = TASK + " and then go back to where you started"
VOCABULARY = build_vocabulary([LONG_TASK, "put the green cube on the yellow plate"])
# A checkpoint of the first VIMA version (character prompt, thin stem, argmax bins, no config version).
V1_CHECKPOINT = Path(__file__).parent / "artifacts" / "vima_v1.pt.xz"

STATS = {"qpos_mean": np.zeros(8), "qpos_std": np.ones(8), "qpos_min": -np.ones(8), "qpos_max": np.ones(8),
         "action_mean": np.zeros(8), "action_std": np.ones(8),
         "action_min": np.r_[PANDA_READY_POSE - 0.5, 0.0], "action_max": np.r_[PANDA_READY_POSE + 0.5, 1.0]}


def tiny(objects_trained=True, **kw) -> VIMAPolicy:
    base = {"camera_names": ["top"], "image_shape": (16, 24, 3), "n_embd": 32, "n_head": 2, "xattn_n_heads": 2,
            "n_layer": 1, "prompt_layers": 1, "chunk_size": 3, "text_max_length": 12, "obj_crop": 8,
            "obj_patch": 4, "obs_grid": (1, 2), "dropout": 0.0, "bins_xyz": (20, 20, 20), "bins_rot": 10,
            "vocabulary": VOCABULARY, "task_dim": 16, "stem_channels": (8, 16, 16)}
    base.update(kw)
    torch.manual_seed(0)
    policy = VIMAPolicy(VIMAConfig(**base))
    policy.set_norm_stats(STATS)
    policy.objects_trained.fill_(objects_trained)
    return policy.eval()


def ready_qpos(rng=None, scale=0.05):
    rng = rng or np.random.default_rng(0)
    return np.r_[PANDA_READY_POSE + rng.normal(scale=scale, size=7), 0.0].astype(np.float32)


def obs(cams, seed=0, **extra):
    rng = np.random.default_rng(seed)
    out = {"qpos": ready_qpos(rng), "task": TASK,
           "images": {c: rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for c in cams}}
    out.update(extra)
    return out


def batch(b=4, k=1, chunk=3, seed=0, objects=False, history=0):
    rng = np.random.default_rng(seed)
    q = np.stack([ready_qpos(rng) for _ in range(b)])
    act = np.stack([[ready_qpos(rng) for _ in range(chunk)] for _ in range(b)])
    out = {"images": torch.from_numpy(rng.integers(0, 256, (b, k, 3, 16, 24), dtype=np.uint8)),
           "qpos": torch.from_numpy(q), "action": torch.from_numpy(act),
           "is_pad": torch.zeros(b, chunk, dtype=torch.bool), "done": torch.zeros(b, chunk), "task": [TASK] * b}
    if objects:
        lo = rng.uniform(0, 0.5, (b, 2, 2))
        out.update(object_boxes=torch.from_numpy(np.concatenate([lo, lo + 0.3], -1)).float(),
                   object_camera=torch.zeros(b, 2, dtype=torch.long),
                   object_valid=torch.ones(b, 2, dtype=torch.bool),
                   object_names=[["red_cube", "blue_bowl"]] * b)
    if history:
        out.update(history_images=torch.from_numpy(rng.integers(0, 256, (b, history, k, 3, 16, 24), dtype=np.uint8)),
                   history_qpos=torch.from_numpy(np.stack([[ready_qpos(rng) for _ in range(history)] for _ in range(b)])),
                   history_action=torch.from_numpy(np.stack([[ready_qpos(rng) for _ in range(history)]
                                                             for _ in range(b)])),
                   history_valid=torch.ones(b, history, dtype=torch.bool))
    return out


def test_registered_as_vima():
    assert get_policy_class("vima") is VIMAPolicy


def test_bins_round_trip_within_half_a_bin():
    bins = UniformBins([0.2, -0.5, 0.0, -math.pi], [0.8, 0.5, 0.6, math.pi], [50, 100, 50, 50])
    values = np.random.default_rng(0).uniform(bins.low, bins.high, size=(1000, 4))
    err = np.abs(bins.decode(bins.encode(values)) - values)
    assert np.all(err <= bins.step / 2 + 1e-12)
    np.testing.assert_allclose(bins.decode([[0, 0, 0, 0], [49, 99, 49, 49]]), [bins.low, bins.high])
    # Out of range values clamp to the end bins; torch tensors encode the same as numpy.
    assert bins.encode(np.array([[5.0, -5.0, 0.3, 0.0]]))[0, :2].tolist() == [49, 0]
    assert torch.equal(bins.encode(torch.from_numpy(values)), torch.from_numpy(bins.encode(values)))


def test_bin_and_offset_round_trip_below_a_tenth_of_a_bin():
    bins = UniformBins([0.2, -0.5, 0.0, -math.pi, 0.0], [0.8, 0.5, 0.6, math.pi, 1.0], [50, 100, 50, 50, 2])
    values = np.random.default_rng(3).uniform(bins.low, bins.high, size=(2000, 5))
    index, offset = bins.encode_with_offset(values)
    assert np.all(np.abs(offset) <= 0.5) and np.array_equal(index, bins.encode(values))
    assert np.all(np.abs(bins.decode(index, offset) - values) < 0.1 * bins.step)
    # the same through the heads' outputs: one-hot bin logits and the offsets of those bins
    logits = torch.full((2000, bins.total), -30.0)
    offsets = torch.zeros(2000, bins.total)
    for d in range(5):
        columns = torch.from_numpy(index[:, d] + bins.offsets[d])
        logits[torch.arange(2000), columns] = 30.0
        offsets[torch.arange(2000), columns] = torch.from_numpy(offset[:, d])
    for mode in ("argmax", "expectation"):
        decoded = bins.decode_logits(logits, mode, offsets)
        assert np.all(np.abs(decoded - values)[:, :4] < 0.1 * bins.step[:4])
        on_off = np.isclose(decoded[:, 4], 0.0, atol=1e-9) | np.isclose(decoded[:, 4], 1.0, atol=1e-9)
        assert np.all(on_off)  # two bins are on/off: no offset
    # the loss reads the offset of the true bin only
    valid = torch.ones(2000, dtype=torch.bool)
    assert float(bins.offset_loss(offsets, torch.from_numpy(index), torch.from_numpy(offset), valid)) < 1e-6


def test_bins_decode_logits_argmax_and_expectation():
    bins = UniformBins([0.0], [1.0], [11])
    logits = torch.full((1, 11), -30.0)
    logits[0, 3] = 30.0
    assert bins.decode_logits(logits)[0, 0] == pytest.approx(0.3)
    assert bins.decode_logits(logits, "expectation")[0, 0] == pytest.approx(0.3, abs=1e-6)


def test_soft_targets_make_the_loss_grow_with_the_distance():
    bins = UniformBins([0.0, 0.0], [1.0, 1.0], [41, 2])
    positions = torch.tensor([[20.3, 1.0]])
    soft = bins.gaussian_targets(positions, 1.0)
    assert all(float(t.sum()) == pytest.approx(1.0) for t in soft)
    assert float((soft[0] * torch.arange(41)).sum()) == pytest.approx(20.3, abs=1e-3)
    assert soft[1].tolist() == [[0.0, 1.0]]  # on/off stays one-hot
    valid = torch.ones(1, dtype=torch.bool)
    target = torch.tensor([[20, 1]])

    def loss(peak: int, sigma: float) -> float:
        logits = torch.full((1, 43), -8.0)
        logits[0, peak] = 8.0
        logits[0, 42] = 8.0
        return float(bins.cross_entropy(logits, target, valid, 0.0, positions, sigma))

    assert loss(20, 1.0) < loss(21, 1.0) < loss(30, 1.0) - 2  # soft: ten bins off costs more than one
    assert loss(21, 0.0) == pytest.approx(loss(30, 0.0))  # one-hot: every wrong bin costs the same


def test_expectation_loss_measures_the_decoded_value_in_bin_steps():
    bins = UniformBins([0.0, 0.0], [1.0, 1.0], [11, 2])
    valid = torch.ones(1, dtype=torch.bool)
    logits = torch.full((1, 13), -30.0)
    logits[0, 3] = 30.0
    offsets = torch.zeros(1, 13)
    offsets[0, 3] = 0.25
    assert float(bins.expectation_loss(logits, offsets, torch.tensor([[3.25, 0.0]]), valid)) < 1e-6
    assert float(bins.expectation_loss(logits, None, torch.tensor([[5.0, 0.0]]), valid)) == pytest.approx(2.0)
    # decode="expectation" returns the same value the loss measured
    assert bins.decode_logits(logits, "expectation", offsets)[0, 0] == pytest.approx(0.325, abs=1e-6)


def test_euler_round_trip():
    angles = np.random.default_rng(1).uniform(-1.2, 1.2, size=(50, 3))
    np.testing.assert_allclose(euler_xyz_from_matrix(matrix_from_euler_xyz(angles)), angles, atol=1e-9)


def test_cartesian_targets_go_through_ik_back_to_the_pose():
    bins = UniformBins([0.2, -0.5, 0.0, -math.pi, -math.pi, -math.pi, 0.0],
                       [0.8, 0.5, 0.6, math.pi, math.pi, math.pi, 1.0], [50, 100, 50, 50, 50, 50, 2])
    coder = CartesianCoder(bins, PANDA_READY_POSE)
    rng = np.random.default_rng(2)
    actions = np.stack([ready_qpos(rng, 0.1) for _ in range(5)])
    actions[:, 7] = [0, 1, 1, 0, 1]
    cart = bins.decode(bins.encode(coder.to_cartesian(actions)))
    joints = coder.to_joints(cart, actions[0])
    assert joints.shape == (5, 8)
    np.testing.assert_array_equal(joints[:, 7], actions[:, 7])
    for a, j in zip(actions, joints):
        pos_a, R_a = fk(a[:7])
        pos_j, R_j = fk(j[:7])
        assert np.all(np.abs(pos_a - pos_j) <= bins.step[:3] / 2 + 1e-3)
        angle = np.arccos(np.clip((np.trace(R_a.T @ R_j) - 1) / 2, -1, 1))
        assert angle < np.linalg.norm(bins.step[3:6] / 2) + 1e-3


def test_interleave_puts_objects_after_their_mention():
    text = "put the red cube in the blue bowl"
    tp, op = interleave_positions(text, len(text), ["blue_bowl", "red_cube", "green_cube"])
    end_red = text.index("red cube") + len("red cube")
    # red cube sits right after "red cube"; blue bowl after the text; green cube (not named) last.
    assert op[1] == 1 + end_red and tp[end_red] == op[1] + 1
    assert op[0] == 1 + len(text) + 1 and op[2] == op[0] + 1
    assert sorted(tp + op) == list(range(1, 1 + len(text) + 3))


def test_word_interleave_puts_objects_after_their_words():
    # put the red cube <red_cube> in the blue bowl <blue_bowl> <green_cube>
    tp, op = interleave_word_positions("Put the RED cube in the blue bowl", 8, ["blue_bowl", "red_cube", "green_cube"])
    assert op[1] == 1 + 4 and tp[4] == op[1] + 1
    assert op[0] == 1 + 8 + 1 and op[2] == op[0] + 1  # objects not named follow the text
    assert sorted(tp + op) == list(range(1, 1 + 8 + 3))


@pytest.mark.parametrize("cams", [["top"], ["top", "wrist", "side"]])
def test_chunk_shape_for_cameras_objects_and_long_instruction(cams):
    # with and without FiLM conditioning and keypoints
    policy = tiny(camera_names=cams, film=len(cams) == 1, keypoints=4 if len(cams) == 1 else 0)
    objects = [{"name": "red_cube", "box": [2, 3, 12, 14], "camera": cams[-1]},
               {"name": "blue_bowl", "box": [20, 10, 39, 29], "camera": cams[0]}]
    for o in (obs(cams), obs(cams, task=LONG_TASK, objects=objects)):
        chunk, extras = policy.predict_chunk(o)
        assert chunk.shape == (3, 8) and chunk.dtype == np.float32 and np.isfinite(chunk).all()
        assert 0.0 <= extras["done"] <= 1.0
    loss = policy.train().compute_loss(batch(k=len(cams), objects=True))
    assert torch.isfinite(loss["loss"])


def test_predicted_joint_targets_are_within_the_limits():
    policy = tiny()
    o = obs(["top"])
    chunk, _ = policy.predict_chunk(o)
    # Even an untrained model's targets are valid joint targets (IK respects the limits).
    assert np.all(chunk[:, :7] >= PANDA_Q_MIN - 1e-6) and np.all(chunk[:, :7] <= PANDA_Q_MAX + 1e-6)
    assert set(np.unique(chunk[:, 7])) <= {0.0, 1.0}


def test_joint_action_space_without_kinematics():
    policy = tiny(action_space="joint", use_ee=False, bins_joint=30)
    chunk, _ = policy.predict_chunk(obs(["top"]))
    assert chunk.shape == (3, 8)
    assert np.all(chunk >= STATS["action_min"] - 1e-5) and np.all(chunk <= STATS["action_max"] + 1e-5)
    assert torch.isfinite(policy.train().compute_loss(batch())["loss"])


def test_invalid_objects_and_padding_do_not_change_the_output():
    policy = tiny()
    b = batch(objects=True)
    images = torch.randn(4, 1, 3, 16, 24)
    objects = batch_objects(b, 4, policy.config.max_objects, policy.device)
    with torch.no_grad():
        ref, _, _ = policy.encode_prompt(images, b["task"], objects)
        objects["valid"][:, 1] = False
        hidden, _, _ = policy.encode_prompt(images, b["task"], objects)
        objects["boxes"][:, 1] = 0.9  # a hidden object's box does not matter
        moved, _, _ = policy.encode_prompt(images, b["task"], objects)
    assert not torch.allclose(ref[:, 0], hidden[:, 0])  # the object was visible before
    assert torch.allclose(hidden[:, 0], moved[:, 0], atol=1e-6, rtol=0)


def test_history_is_causal_and_used():
    policy = tiny(history_len=3)
    mask = policy.causal_mask(3, torch.device("cpu"))
    n = policy.tokens_per_step
    assert not mask[:n, n:].any()  # step 0 never sees steps 1, 2
    assert mask[-1].all()  # the current ACTION query sees everything
    assert not mask[n - 2, n - 1]  # an observation token does not see its own step's action
    b = batch(history=2)
    torch.manual_seed(0)
    assert torch.isfinite(policy.train().compute_loss(b)["loss"])
    policy.eval()
    images = torch.randn(4, 1, 3, 16, 24)
    ee = torch.from_numpy(policy.ee_features(b["qpos"].numpy()))
    prompt, pmask, _ = policy.encode_prompt(images, b["task"], None)
    hist = policy._batch_history(b, (16, 24))
    with torch.no_grad():
        ref, _ = policy.forward_queries(images, ee, hist, prompt, pmask)
        hist["action"] = hist["action"] + 1.0
        changed, _ = policy.forward_queries(images, ee, hist, prompt, pmask)
        hist["valid"][:] = False  # steps before the episode start are hidden entirely
        hidden_a, _ = policy.forward_queries(images, ee, hist, prompt, pmask)
        hist["images"] = torch.randn_like(hist["images"])
        hidden_b, _ = policy.forward_queries(images, ee, hist, prompt, pmask)
    assert not torch.allclose(ref, changed)
    assert torch.allclose(hidden_a, hidden_b, atol=1e-6, rtol=0)
    # At inference the policy keeps its own history; reset() clears it.
    for step in range(4):
        policy.predict_chunk(obs(["top"], seed=step))
    assert len(policy._history) == 2
    policy.reset()
    assert not policy._history
    with pytest.raises(ConfigError, match="history_qpos"):
        policy.train().compute_loss({k: v for k, v in b.items() if k != "history_qpos"})


def test_attention_capture_on_prompt_tokens():
    policy = tiny()
    objects = [{"name": "red_cube", "box": [2, 3, 12, 14], "camera": "top"}]
    _, extras = policy.predict_chunk(obs(["top"], objects=objects))
    assert "attention" not in extras
    _, extras = policy.predict_chunk(obs(["top"], objects=objects), capture_attention=True)
    att = extras["attention"]
    layout = att["layout"]
    assert att["maps"].shape == (1, 2, 1, 1 + 16 + 1) and att["query_kind"] == "action"  # 16 words
    assert layout["text"] == [1, 17] and layout["object/red_cube"] == [17, 18]
    np.testing.assert_allclose(att["maps"].sum(-1), 1.0, atol=1e-5)


def test_objects_are_ignored_by_a_model_trained_without_them():
    policy = tiny(objects_trained=False)
    objects = [{"name": "red_cube", "box": [2, 3, 12, 14], "camera": "top"}]
    with_objects, extras = policy.predict_chunk(obs(["top"], objects=objects), capture_attention=True)
    assert not any(k.startswith("object/") for k in extras["attention"]["layout"])
    # (the attention-capturing path may round differently: equal up to float noise)
    np.testing.assert_allclose(with_objects, policy.predict_chunk(obs(["top"]))[0], atol=1e-5)
    policy.train().compute_loss(batch(objects=True))
    assert bool(policy.objects_trained)


def test_bad_input_is_a_clear_error():
    policy = tiny()
    with pytest.raises(UserError, match="instruction"):
        policy.predict_chunk(obs(["top"], task=""))
    with pytest.raises(UserError, match="camera 'side'"):
        policy.predict_chunk(obs(["top"], objects=[{"name": "x", "box": [0, 0, 4, 4], "camera": "side"}]))
    with pytest.raises(UserError, match="'drawer' that the policy never saw"):
        policy.predict_chunk(obs(["top"], task="put the drawer"))
    with pytest.raises(UserError, match="U\\+00E9"):
        tiny(tokenizer="char").predict_chunk(obs(["top"], task="put the cube in the caf\u00e9"))
    with pytest.raises(ConfigError, match="vocabulary"):
        tiny(vocabulary=[])
    with pytest.raises(ConfigError, match="action_head"):
        VIMAConfig(action_head="mse")
    with pytest.raises(ConfigError, match="action_space='joint'"):
        VIMAConfig(action_dim=6)
    with pytest.raises(ConfigError, match="bin_sigma"):
        VIMAConfig(bin_sigma=-1.0)
    with pytest.raises(ConfigError, match="regression_weight > 0"):
        VIMAConfig(decode="regression")
    with pytest.raises(ConfigError, match="obj_patch"):
        VIMAConfig(obj_crop=10, obj_patch=4)


@pytest.mark.parametrize("losses", [{}, {"bin_sigma": 1.0, "expectation_weight": 0.1},
                                    {"regression_weight": 10.0, "decode": "regression"}],
                         ids=["one-hot", "soft", "regression"])
def test_tiny_overfit_follows_the_instruction_and_learns_done(fit_batch, losses):
    """Two instructions on the SAME observation with different Cartesian targets."""
    torch.manual_seed(0)
    policy = tiny(n_embd=48, **losses).train()
    rng = np.random.default_rng(5)
    image = torch.from_numpy(rng.integers(0, 256, (1, 1, 3, 16, 24), dtype=np.uint8))
    q0 = ready_qpos(rng, 0.0)
    a_red = np.r_[PANDA_READY_POSE + np.array([0.3, 0.2, 0.0, 0.1, 0.0, 0.1, 0.0]), 1.0]
    a_blue = np.r_[PANDA_READY_POSE + np.array([-0.3, 0.1, 0.0, 0.2, 0.0, -0.1, 0.0]), 0.0]
    actions = torch.from_numpy(np.stack([np.stack([a_red] * 3), np.stack([a_blue] * 3)]).astype(np.float32))
    b = {"images": image.expand(8, -1, -1, -1, -1), "qpos": torch.from_numpy(np.stack([q0] * 8)),
         "action": actions.repeat(4, 1, 1), "is_pad": torch.zeros(8, 3, dtype=torch.bool),
         "done": torch.tensor([[1.0] * 3, [0.0] * 3]).repeat(4, 1), "task": ["red", "blue"] * 4}
    loss = fit_batch(policy, b, steps=120, lr=3e-3)
    if not losses:  # soft targets centre the expectation, not necessarily the argmax, on the value
        assert float(loss["bin_accuracy"]) == 1.0
    policy.eval()
    o = {"qpos": q0, "images": {"top": image[0, 0].permute(1, 2, 0).numpy()}}
    for task, target, done in (("red", a_red, True), ("blue", a_blue, False)):
        chunk, extras = policy.predict_chunk({**o, "task": task})
        pos_t, _ = fk(target[:7])
        pos_p, _ = fk(chunk[0, :7].astype(np.float64))
        assert np.linalg.norm(pos_t - pos_p) < 0.03  # within a bin or so of the demonstrated TCP
        assert chunk[0, 7] == pytest.approx(target[7], abs=0.1)  # the bins' gripper is exactly open/closed
        assert (extras["done"] > 0.8) if done else (extras["done"] < 0.2)


@pytest.mark.parametrize("space", ["cartesian", "joint"])
def test_checkpoint_round_trip(tmp_path, space):
    from robokit.policies.checkpoint import load_checkpoint, save_checkpoint

    policy = tiny(action_space=space, workspace_low=(0.1, -0.4, 0.0), history_len=2)
    save_checkpoint(tmp_path / "vima.pt", policy, {"step": 7})
    loaded, meta = load_checkpoint(tmp_path / "vima.pt", expected_type="vima")
    assert meta["step"] == 7 and loaded.config == policy.config
    assert bool(loaded.objects_trained)
    np.testing.assert_array_equal(loaded.bins.low, policy.bins.low)  # joint bins follow the stats
    objects = [{"name": "red_cube", "box": [2, 3, 12, 14], "camera": "top"}]
    for step in range(2):  # the second step uses the history
        o = obs(["top"], seed=step, objects=objects)
        np.testing.assert_array_equal(policy.predict_chunk(o)[0], loaded.predict_chunk(o)[0])


def _logits(policy, b):
    """Bin logits and offsets (B, chunk * total) of a batch in eval mode."""
    images = torch.as_tensor(b["images"]).float() / 255.0
    objects = batch_objects(b, len(b["task"]), policy.config.max_objects, policy.device)
    prompt, pmask, _ = policy.encode_prompt(images, b["task"], objects)
    ee = torch.from_numpy(policy.ee_features(np.asarray(b["qpos"])))
    out, _ = policy.forward_queries(images, ee, None, prompt, pmask, policy.task_vector(b["task"], policy.device))
    return torch.cat([policy.action_head(out), policy.offset_head(out)], dim=1)


def test_a_sample_computes_the_same_alone_and_inside_a_batch():
    policy = tiny()
    # FiLM starts at zero: give it weights so the task vector really steers the stem
    with torch.no_grad():
        for film in policy.stem.films:
            film.proj.weight.normal_(0, 0.5)
    b = batch(b=4, objects=True)
    b["task"] = [TASK, "put the green cube on the yellow plate", LONG_TASK, TASK]
    with torch.no_grad():
        together = _logits(policy, b)
        for i in range(4):
            one = {k: (v[i:i + 1] if isinstance(v, (torch.Tensor, list)) else v) for k, v in b.items()}
            torch.testing.assert_close(_logits(policy, one)[0], together[i], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], together[1])  # and the instruction matters


def test_the_first_versions_setup_is_still_available():
    policy = tiny(tokenizer="char", stem="thin", action_head="bins", vocabulary=[])
    assert policy.task_encoder is None and policy.offset_head is None
    chunk, _ = policy.predict_chunk(obs(["top"], task="anything at all"))
    assert chunk.shape == (3, 8)
    terms = policy.train().compute_loss(batch(objects=True))
    assert "offset_l1" not in terms and torch.isfinite(terms["loss"])
    assert "offset_l1" in tiny().train().compute_loss(batch(objects=True))


def test_the_trainer_gives_the_word_tokenizer_the_datasets_vocabulary():
    tasks = ["put the red cube in the blue bowl", "put the blue cube on the yellow plate"]
    values = VIMAConfig.options_for_tasks({"n_embd": 32}, tasks)
    assert values["vocabulary"] == ["blue", "bowl", "cube", "in", "on", "plate", "put", "red", "the", "yellow"]
    assert VIMAConfig.options_for_tasks({"tokenizer": "char"}, tasks) == {"tokenizer": "char"}
    assert VIMAConfig.options_for_tasks({"vocabulary": ["a"]}, tasks) == {"vocabulary": ["a"]}


def test_a_first_version_checkpoint_is_refused_with_a_message(tmp_path):
    path = tmp_path / "old.pt"
    path.write_bytes(lzma.decompress(V1_CHECKPOINT.read_bytes()))
    with pytest.raises(CheckpointError, match="first-version VIMA checkpoint.*retrain"):
        load_checkpoint(path, expected_type="vima")
    # a config of another version (a newer robokit's) names its version too
    policy = tiny()
    policy.config.version = 3
    save_checkpoint(tmp_path / "new.pt", policy, {})
    with pytest.raises(CheckpointError, match="version-3 VIMA config"):
        load_checkpoint(tmp_path / "new.pt", expected_type="vima")
    # options given to the trainer need no version
    assert VIMAConfig.from_dict({"n_embd": 64}).version == 2
