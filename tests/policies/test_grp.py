"""GRP: shapes, the block mask, goal errors, done head, attention capture, overfit, old checkpoints."""

import lzma
from pathlib import Path

import numpy as np
import pytest
import torch

from robokit.errors import CheckpointError, ConfigError, UserError
from robokit.policies.goal.grp import GRPConfig, GRPPolicy
from robokit.policies.nn.task_conditioning import build_vocabulary
from robokit.policies.registry import get_policy_class

TASK = "put the red cube in the blue bowl"
OTHER = "put the blue cube on the yellow plate"
GREEN = "put the green cube in the blue bowl"  # TASK with only the colour word changed
VOCAB = build_vocabulary([TASK, OTHER, GREEN])
SIZE = (32, 48)


def tiny(**kw) -> GRPPolicy:
    base = {"camera_names": ["top"], "image_shape": (*SIZE, 3), "n_embd": 32, "n_head": 2, "task_dim": 16,
            "n_blocks": 2, "chunk_size": 4, "dropout": 0.0, "vocabulary": VOCAB}
    base.update(kw)
    torch.manual_seed(0)
    return GRPPolicy(GRPConfig(**base)).eval()


def obs(cams, size=SIZE, seed=0, **extra):
    rng = np.random.default_rng(seed)
    out = {"qpos": rng.normal(size=8).astype(np.float32),
           "images": {c: rng.integers(0, 256, (*size, 3), dtype=np.uint8) for c in cams}}
    out.update(extra)
    return out


def batch(b=4, k=1, chunk=4, size=SIZE, goal=True, task=TASK, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {"images": torch.randint(0, 256, (b, k, 3, *size), dtype=torch.uint8, generator=g),
           "qpos": torch.randn(b, 8, generator=g), "action": torch.randn(b, chunk, 8, generator=g),
           "is_pad": torch.zeros(b, chunk, dtype=torch.bool), "done": torch.zeros(b, chunk)}
    if task is not None:
        out["task"] = [task] * b
    if goal:
        out["goal_image"] = torch.randint(0, 256, (b, 3, *size), dtype=torch.uint8, generator=g)
    return out


def test_registered_as_grp():
    assert get_policy_class("grp") is GRPPolicy


@pytest.mark.parametrize("cams", [["top"], ["top", "wrist", "side"]])
def test_chunk_shape_for_one_or_three_cameras_and_images_of_another_size(cams):
    policy = tiny(camera_names=cams)
    chunk, extras = policy.predict_chunk(obs(cams, size=(64, 96), task=TASK))  # resized to 32x48
    assert chunk.shape == (4, 8) and chunk.dtype == np.float32
    assert 0.0 <= extras["done"] <= 1.0 and extras["goal_mode"] == "text"
    loss = policy.train().compute_loss(batch(k=len(cams)))
    assert torch.isfinite(loss["loss"]) and "l1" in loss


def test_goal_image_without_text_and_text_without_goal_image():
    policy = tiny()
    chunk, extras = policy.predict_chunk(obs(["top"], goal_image=np.zeros((64, 96, 3), np.uint8)))
    assert chunk.shape == (4, 8) and extras["goal_mode"] == "image"
    loss = policy.train().compute_loss(batch(goal=False))  # text only: every sample uses text
    assert float(loss["text_fraction"]) == 1.0


def test_bad_goals_are_clear_errors():
    with pytest.raises(UserError, match="goal_image"):
        tiny(goal_mode="image").predict_chunk(obs(["top"], task=TASK))
    with pytest.raises(UserError, match="give an instruction"):
        tiny().predict_chunk(obs(["top"]))
    with pytest.raises(UserError, match="give an instruction"):
        tiny().predict_chunk(obs(["top"], task="   "))
    with pytest.raises(UserError, match="has no words"):
        tiny().predict_chunk(obs(["top"], task="?!"))
    with pytest.raises(UserError, match="'block' that the policy never saw"):
        tiny().predict_chunk(obs(["top"], task="put the red block in the blue bowl"))
    with pytest.raises(UserError, match="goal_image is 32x32.*same aspect ratio"):
        tiny().predict_chunk(obs(["top"], goal_image=np.zeros((32, 32, 3), np.uint8)))
    with pytest.raises(UserError, match="goal images"):
        tiny(goal_mode="image").train().compute_loss(batch(goal=False))
    with pytest.raises(UserError, match="lacks camera 'wrist'"):
        tiny(camera_names=["top", "wrist"]).predict_chunk(obs(["top"], task=TASK))


def test_unknown_words_can_be_read_as_one_unknown_token():
    chunk, _ = tiny(unknown_words="unk").predict_chunk(obs(["top"], task="place the red block in the dish"))
    assert chunk.shape == (4, 8)


def same(a, b):
    """Equal up to float rounding; a visible token changes the output by far more than this."""
    return torch.allclose(a, b, rtol=0.0, atol=1e-5)


def _out(policy, images, texts, goal, use_text):
    with torch.no_grad():
        out, _, _ = policy.forward_tokens(images, torch.zeros(len(texts), 8), texts, goal, torch.tensor(use_text))
    return out


def test_block_mask_hides_exactly_the_chosen_goal():
    policy = tiny()
    with torch.no_grad():  # a trained-looking model: FiLM starts at zero, so give it weights
        for film in policy.stem.films:
            film.proj.weight.normal_(0, 0.3)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 1, 3, *SIZE, generator=g)
    goal_a, goal_b = torch.randn(2, 2, 3, *SIZE, generator=g)
    texts_a, texts_b = [TASK] * 2, [OTHER] * 2
    text_mode = [True, True]
    image_mode = [False, False]
    # Text mode: the goal image is hidden, so another goal image changes nothing ...
    assert same(_out(policy, images, texts_a, goal_a, text_mode), _out(policy, images, texts_a, goal_b, text_mode))
    # ... while another instruction does.
    assert not same(_out(policy, images, texts_a, goal_a, text_mode), _out(policy, images, texts_b, goal_a, text_mode))
    # Image mode: the text is hidden, the goal image is seen.
    assert same(_out(policy, images, texts_a, goal_a, image_mode), _out(policy, images, texts_b, goal_a, image_mode))
    assert not same(_out(policy, images, texts_a, goal_a, image_mode),
                    _out(policy, images, texts_a, goal_b, image_mode))
    # Per sample: sample 0 follows text, sample 1 the goal image.
    mixed_a = _out(policy, images, texts_a, goal_a, [True, False])
    mixed_b = _out(policy, images, texts_b, goal_a, [True, False])
    assert not same(mixed_a[0], mixed_b[0]) and same(mixed_a[1], mixed_b[1])


def test_block_mask_layout():
    policy = tiny(camera_names=["top", "wrist"])
    words = policy.config.max_words
    mask = policy.key_mask(torch.tensor([True, False]), torch.tensor([[True] * 3 + [False] * (words - 3)] * 2))
    t0, t1 = policy.layout["text"]
    g0, g1 = policy.layout["goal_token"][0], policy.layout["goal_image"][1]
    assert mask[0, t0:t0 + 3].all() and not mask[0, t0 + 3:t1].any() and not mask[0, g0:g1].any()
    assert not mask[1, t0:t1].any() and mask[1, g0:g1].all()
    assert mask[:, :g0].all() and mask[:, t1:].all()  # state, task, observation, action queries


def test_a_sample_s_chunk_is_the_same_alone_and_inside_a_batch():
    policy = tiny(camera_names=["top", "wrist"])
    b = batch(b=3, k=2)
    images = b["images"].float() / 255.0
    goal = b["goal_image"].float() / 255.0
    tasks, use_text = [OTHER, TASK, TASK], [True, True, False]
    together = _out(policy, images, tasks, goal, use_text)
    for i in range(3):
        alone = _out(policy, images[i:i + 1], tasks[i:i + 1], goal[i:i + 1], use_text[i:i + 1])
        torch.testing.assert_close(together[i], alone[0], atol=1e-5, rtol=1e-4)


def test_training_draws_text_or_image_per_sample():
    policy = tiny(goal_image_prob=0.5).train()
    torch.manual_seed(0)
    fraction = float(policy.compute_loss(batch(b=64))["text_fraction"])
    assert 0.3 < fraction < 0.7


def test_attention_capture_only_when_asked():
    policy = tiny(camera_names=["top", "wrist"])
    _, extras = policy.predict_chunk(obs(["top", "wrist"], task=TASK))
    assert "attention" not in extras
    _, extras = policy.predict_chunk(obs(["top", "wrist"], task=TASK), capture_attention=True)
    att = extras["attention"]
    assert att["maps"].shape == (2, 2, 4, policy.seq_len) and att["query_kind"] == "action"
    np.testing.assert_allclose(att["maps"].sum(-1), 1.0, atol=1e-5)
    s, e, h, w = att["layout"]["wrist"]
    assert (e - s) == h * w == 2 * 3
    # Text mode: nothing attends to the hidden goal image.
    g0, g1 = att["layout"]["goal_token"][0], att["layout"]["goal_image"][1]
    assert not att["maps"][..., g0:g1].any()


def test_config_errors():
    with pytest.raises(ConfigError, match="multiple of 16"):
        GRPConfig(image_shape=(20, 24, 3), vocabulary=VOCAB)
    with pytest.raises(ConfigError, match="goal_mode"):
        GRPConfig(image_shape=(16, 16, 3), goal_mode="both")
    with pytest.raises(ConfigError, match="goal_camera"):
        GRPConfig(image_shape=(16, 16, 3), goal_camera="side")
    with pytest.raises(ConfigError, match="loss"):
        GRPConfig(image_shape=(16, 16, 3), loss="huber")
    with pytest.raises(ConfigError, match="vocabulary"):
        GRPPolicy(GRPConfig(image_shape=(16, 16, 3)))


def test_the_vocabulary_comes_from_the_training_instructions():
    assert GRPConfig.options_for_tasks({}, [TASK, OTHER])["vocabulary"] == build_vocabulary([TASK, OTHER])
    assert "vocabulary" not in GRPConfig.options_for_tasks({"tokenizer": "char"}, [TASK])


@pytest.mark.parametrize("tokenizer", ["word", "char"])
def test_tiny_overfit_follows_text_and_goal_image_and_learns_done(fit_batch, tokenizer):
    """Two tasks with opposite actions on the SAME observation, instructions that differ only in the
    colour word: only the goal tells them apart."""
    torch.manual_seed(0)
    policy = tiny(n_embd=48, tokenizer=tokenizer).train()
    g = torch.Generator().manual_seed(3)
    image = torch.randint(0, 256, (1, 1, 3, *SIZE), dtype=torch.uint8, generator=g)
    goals = torch.randint(0, 256, (2, 3, *SIZE), dtype=torch.uint8, generator=g)
    actions = torch.stack([torch.full((4, 8), 0.8), torch.full((4, 8), -0.8)])
    b = {"images": image.expand(8, -1, -1, -1, -1), "qpos": torch.zeros(8, 8),
         "action": actions.repeat(4, 1, 1), "is_pad": torch.zeros(8, 4, dtype=torch.bool),
         "done": torch.tensor([[1.0] * 4, [0.0] * 4]).repeat(4, 1),
         "task": [TASK, GREEN] * 4, "goal_image": goals.repeat(4, 1, 1, 1)}
    fit_batch(policy, b, steps=150, lr=3e-3)
    policy.eval()
    o = {"qpos": np.zeros(8, np.float32), "images": {"top": image[0, 0].permute(1, 2, 0).numpy()}}
    red, red_x = policy.predict_chunk({**o, "task": TASK})
    blue, blue_x = policy.predict_chunk({**o, "task": GREEN})
    assert red.mean() > 0.5 and blue.mean() < -0.5
    assert red_x["done"] > 0.8 and blue_x["done"] < 0.2
    goal_red, _ = policy.predict_chunk({**o, "goal_image": goals[0].permute(1, 2, 0).numpy()})
    goal_blue, _ = policy.predict_chunk({**o, "goal_image": goals[1].permute(1, 2, 0).numpy()})
    assert goal_red.mean() > 0.5 and goal_blue.mean() < -0.5


def test_checkpoint_round_trip(tmp_path):
    from robokit.policies.checkpoint import load_checkpoint, save_checkpoint

    policy = tiny(camera_names=["top", "wrist"], goal_camera="wrist")
    stats = {k: np.full(8, v, np.float32) for k, v in
             (("qpos_mean", 0.1), ("qpos_std", 2.0), ("qpos_min", -1), ("qpos_max", 1),
              ("action_mean", 0.3), ("action_std", 0.5), ("action_min", -1), ("action_max", 1))}
    policy.set_norm_stats(stats)
    save_checkpoint(tmp_path / "grp.pt", policy, {"step": 3})
    loaded, meta = load_checkpoint(tmp_path / "grp.pt", expected_type="grp")
    assert meta["step"] == 3 and loaded.config == policy.config
    o = obs(["top", "wrist"], task=TASK)
    np.testing.assert_array_equal(policy.predict_chunk(o)[0], loaded.predict_chunk(o)[0])


def test_a_version_1_checkpoint_is_refused_with_a_message_naming_the_version(tmp_path):
    from robokit.policies.checkpoint import load_checkpoint

    old = Path(__file__).parent / "artifacts" / "grp_v1.pt.xz"
    (tmp_path / "old.pt").write_bytes(lzma.decompress(old.read_bytes()))
    with pytest.raises(CheckpointError, match="version-1 GRP.*train it again"):
        load_checkpoint(tmp_path / "old.pt", expected_type="grp")
