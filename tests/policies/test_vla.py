"""The VLA policy: segmentation instances + instruction -> encoder, causal action decoder with an END
token; causality, learning, shapes, the END token ending a deploy episode, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robokit.errors import ConfigError, UserError
from robokit.policies.goal.vla import VLAConfig, VLAPolicy
from robokit.segmentation.models import SegmenterConfig, SmallSegNet
from robokit.segmentation.train import save_segmenter

MULTI = ([[f"link{i}", "robot"] for i in range(8)] + [["hand", "gripper"], ["finger_left", "gripper"],
         ["finger_right", "gripper"]] + [[c, "object"] for c in ("red_cube", "green_cube", "blue_cube")]
         + [["blue_bowl", "target"], ["yellow_plate", "target"]])
WORDS = ["blue", "bowl", "cube", "green", "in", "on", "plate", "put", "red", "the", "yellow"]


def segmenter_file(folder, cameras=("top", "wrist"), size=(32, 40), instances=MULTI):
    torch.manual_seed(0)
    path = folder / f"seg_{len(cameras)}_{size[0]}_{len(instances)}.pt"
    save_segmenter(path, SmallSegNet(SegmenterConfig(image_size=size, cameras=list(cameras),
                                                     instances=[list(i) for i in instances], width=8)))
    return str(path)


def tiny_vla(folder, cameras=("top", "wrist"), instances=MULTI, **options) -> VLAPolicy:
    torch.manual_seed(0)
    config = VLAConfig(camera_names=list(cameras), image_shape=(32, 40, 3), chunk_size=5, d_model=32, n_head=2,
                       enc_layers=1, dec_layers=1, vocabulary=WORDS,
                       segmenter=segmenter_file(folder, cameras, instances=instances), **options)
    return VLAPolicy(config)


def batch_of(policy: VLAPolicy, size: int = 4, seed: int = 0) -> dict:
    c = policy.config
    rng = np.random.default_rng(seed)
    action = rng.normal(size=(size, c.chunk_size, c.action_dim)).astype(np.float32)
    return {"images": rng.integers(0, 255, (size, len(c.camera_names), 3, 32, 40), dtype=np.uint8),
            "qpos": rng.normal(size=(size, c.state_dim)).astype(np.float32), "action": action,
            "is_pad": np.zeros((size, c.chunk_size), bool), "done": np.zeros((size, c.chunk_size), np.float32),
            "task": ["put the red cube in the blue bowl", "put the green cube on the yellow plate"] * (size // 2)}


def test_autoregressive_decoding_matches_the_teacher_forced_pass_on_its_own_prefix(tmp_path):
    policy = tiny_vla(tmp_path).eval()
    obs = {"qpos": np.zeros(8, np.float32), "task": "put the red cube in the blue bowl",
           "images": {c: np.full((32, 40, 3), 90, np.uint8) for c in ("top", "wrist")}}
    chunk, extras = policy.predict_chunk(obs)
    assert chunk.shape == (5, 8) and 0.0 <= extras["done"] <= 1.0
    written = policy.normalize_action(torch.from_numpy(chunk))[None]
    images = torch.from_numpy(np.stack([obs["images"][c] for c in ("top", "wrist")])).permute(0, 3, 1, 2)[None]
    memory, valid = policy.encode(images.float() / 255, policy.normalize_qpos(torch.zeros(1, 8)), [obs["task"]])
    with torch.no_grad():
        forced = policy.decode(memory, valid, written[:, :-1])[0]
        changed = written.clone()
        changed[:, 3:] += 5.0  # later steps must not change earlier outputs
        forced_changed = policy.decode(memory, valid, changed[:, :-1])[0]
    torch.testing.assert_close(forced, written, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(forced_changed[:, :4], forced[:, :4], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(forced_changed[:, 4], forced[:, 4])


def test_it_learns_a_batch_and_its_end_token(tmp_path):
    policy = tiny_vla(tmp_path, previous_dropout=0.0, previous_noise=0.0)
    batch = batch_of(policy)
    batch["done"][:, 3:] = 1.0
    optimizer = torch.optim.AdamW(policy.optimizer_param_groups(3e-3, 0.0), lr=3e-3)
    seg_before = {k: v.clone() for k, v in policy.segmenter.state_dict().items()}
    first = None
    for _ in range(120):
        terms = policy.compute_loss(batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        first = first if first is not None else {k: float(v.detach()) for k, v in terms.items()}
    assert float(terms["l1"]) < 0.3 * first["l1"] and float(terms["end_bce"]) < 0.3 * first["end_bce"]
    assert all(torch.equal(v, policy.segmenter.state_dict()[k]) for k, v in seg_before.items())  # frozen


@pytest.mark.parametrize(("cameras", "objects"), [(("top",), 0), (("top", "wrist", "side"), 5)])
def test_shapes_for_one_and_three_cameras_and_zero_and_five_objects(tmp_path, cameras, objects):
    table = MULTI[:11] + [[f"object{i}", "object"] for i in range(objects)]
    policy = tiny_vla(tmp_path, cameras=cameras, instances=table)
    batch = batch_of(policy)
    assert torch.isfinite(policy.compute_loss(batch)["loss"])
    tokens, inputs = policy.instance_tokens(torch.rand(2, len(cameras), 3, 32, 40))
    assert tokens.shape == (2, len(cameras) * len(table), 32) and inputs.shape[:3] == (2, len(cameras), len(table))
    long = "put the red cube in the blue bowl " * 2  # 16 words: the most it reads
    obs = {"qpos": np.zeros(8, np.float32), "task": long.strip(),
           "images": {c: np.zeros((48, 64, 3), np.uint8) for c in cameras}}  # other size: resized
    assert policy.predict_chunk(obs)[0].shape == (5, 8)
    with pytest.raises(UserError, match="at most 16"):
        policy.predict_chunk({**obs, "task": long + "now"})


def test_the_end_token_ends_a_deploy_episode(tmp_path):
    from robokit.deploy.loop import ControlLoop, LoopConfig, StopReason
    from robokit.deploy.runner import LocalRunner
    from robokit.hardware.sim import PandaSimEnv

    policy = tiny_vla(tmp_path)
    with torch.no_grad():
        policy.end_head.bias.fill_(8.0)  # a policy sure that the episode is over
    env = PandaSimEnv(task="multi", seed=1, image_size=(32, 40), control_hz=15.0)
    try:
        env.reset(seed=1)
        with ControlLoop(env.robot, env.cameras, LocalRunner(policy), LoopConfig(fps=15.0, realtime=False,
                                                                                    max_steps=30),
                         step_fn=env.step) as loop:
            result = loop.run_episode(task=env.task.instruction)
    finally:
        env.close()
    assert result.reason == StopReason.DONE and result.steps == 1


def test_bad_segmenters_are_named(tmp_path):
    base = {"camera_names": ["top"], "image_shape": (32, 40, 3), "vocabulary": WORDS}
    with pytest.raises(ConfigError, match="--set segmenter=seg.pt"):
        VLAConfig(**base)
    with pytest.raises(ConfigError, match="trained on 48x64 images but the policy sees 32x40"):
        VLAConfig(**base, segmenter=segmenter_file(tmp_path, ("top",), size=(48, 64)))
    with pytest.raises(ConfigError, match="trained on cameras wrist, not on top"):
        VLAConfig(**base, segmenter=segmenter_file(tmp_path, ("wrist",)))
    with pytest.raises(ConfigError, match="not found"):
        VLAConfig(**base, segmenter=str(tmp_path / "missing.pt"))


def test_training_segments_each_distinct_frame_once(tmp_path, monkeypatch):
    policy = tiny_vla(tmp_path, previous_dropout=0.0, previous_noise=0.0).train()
    calls = []
    segment = policy.segment
    monkeypatch.setattr(policy, "segment", lambda flat: calls.append(len(flat)) or segment(flat))
    batch = batch_of(policy)
    first, again = policy.compute_loss(batch)["loss"], policy.compute_loss(batch)["loss"]
    assert calls == [8]  # 4 samples x 2 cameras, segmented once
    torch.testing.assert_close(first, again)
    policy.eval()
    with torch.no_grad():
        uncached = policy.compute_loss(batch)["loss"]  # evaluation segments every time, in float32
    torch.testing.assert_close(uncached, first, atol=2e-3, rtol=2e-3)
    assert calls == [8, 8]


def test_viz_attention_draws_the_decoder_over_words_and_instances(tmp_path, record_episode):
    from robokit.viz.policy_attention import render_policy_attention

    policy = tiny_vla(tmp_path)
    episode = record_episode(tmp_path / "data", 0, cams=("top", "wrist"), steps=6, task="put the red cube in the blue bowl")
    _, extras = policy.predict_chunk({"qpos": np.zeros(8, np.float32), "task": "put the red cube in the blue bowl",
                                      "images": {c: np.zeros((32, 40, 3), np.uint8) for c in ("top", "wrist")}},
                                     capture_attention=True)
    maps, layout = extras["attention"]["maps"], extras["attention"]["layout"]
    assert maps.shape == (1, 2, 5, layout["pointed"][1]) and layout["object/wrist:red_cube"][1] == layout["sep"][0] - 4
    summaries = render_policy_attention(policy, episode, "2", tmp_path / "viz")
    assert summaries and summaries[0].files > 0
    assert (tmp_path / "viz" / "inference_timestep_2").is_dir()


def test_training_hides_and_noises_the_previous_actions_it_is_given(tmp_path, monkeypatch):
    policy = tiny_vla(tmp_path, previous_dropout=0.5, previous_noise=0.1).train()
    seen = {}
    decode = policy.decode

    def spy(memory, valid, previous, need_weights=False, hidden=None):
        seen["previous"], seen["hidden"] = previous.detach().clone(), hidden
        return decode(memory, valid, previous, need_weights, hidden)

    monkeypatch.setattr(policy, "decode", spy)
    batch = batch_of(policy, size=8)
    policy.compute_loss(batch)
    target = policy.normalize_action(torch.from_numpy(batch["action"]))[:, :-1]
    noise = (seen["previous"] - target).std().item()
    assert 0.05 < noise < 0.2 and 0.3 < seen["hidden"].float().mean().item() < 0.7


def test_the_grounding_queries_learn_which_instances_the_instruction_names(tmp_path):
    policy = tiny_vla(tmp_path)
    tasks = ["put the red cube in the blue bowl", "put the blue cube on the yellow plate"]
    labels = policy.grounding_labels(tasks).tolist()
    names = [name for name, _ in policy.config.instances]
    assert [[names[i] for i in row] for row in labels] == [["red_cube", "blue_bowl"], ["blue_cube", "yellow_plate"]]
    batch = batch_of(policy)
    optimizer = torch.optim.AdamW(policy.optimizer_param_groups(3e-3, 0.0), lr=3e-3)
    for _ in range(60):
        terms = policy.compute_loss(batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    assert float(terms["grounding"]) < 0.1
