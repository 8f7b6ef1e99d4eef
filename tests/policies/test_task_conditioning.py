"""Instruction words -> one task vector -> FiLM: the tokenizer, batch independence, and a tiny
multi-task ACT that follows the colour word."""

import numpy as np
import pytest
import torch

from robokit.errors import UserError
from robokit.policies.act.model import ACTConfig
from robokit.policies.nn.task_conditioning import (
    TaskEncoder,
    WordTokenizer,
    build_vocabulary,
    instruction_words,
)

RED = "put the red cube in the blue bowl"
BLUE = "put the blue cube in the blue bowl"
PLATE = "put the green cube on the yellow plate"


def test_words_are_lower_cased_runs_of_letters_and_digits():
    assert instruction_words("Put the RED cube, in bowl #2!") == ["put", "the", "red", "cube", "in", "bowl", "2"]
    assert build_vocabulary([RED, PLATE]) == sorted(set(RED.split()) | set(PLATE.split()))


def test_unknown_word_is_an_error_naming_it_unless_the_policy_reads_unknown_words():
    vocab = build_vocabulary([RED, BLUE])
    with pytest.raises(UserError, match="'block'.*never saw in training"):
        WordTokenizer(vocab).ids("put the red block in the blue bowl")
    ids = WordTokenizer(vocab, unknown_words="unk").ids("put the red block in the blue bowl")
    assert ids[3] == 1 and len(ids) == 8  # the unknown token, in its place


@pytest.mark.parametrize("text", ["", "   ", "?!"])
def test_an_instruction_without_words_is_an_error(text):
    with pytest.raises(UserError, match="has no words"):
        WordTokenizer(build_vocabulary([RED])).ids(text)


def test_a_sample_s_task_vector_is_the_same_alone_and_inside_a_batch():
    torch.manual_seed(0)
    encoder = TaskEncoder(build_vocabulary([RED, BLUE, PLATE]), dim=32).eval()
    with torch.no_grad():
        alone = encoder([RED], torch.device("cpu"))
        in_batch = encoder([PLATE, RED, BLUE, RED], torch.device("cpu"))
    torch.testing.assert_close(in_batch[1], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(in_batch[3], alone[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(in_batch[0], in_batch[1])


def test_multi_task_act_output_is_the_same_alone_and_inside_a_batch(make_tiny_policy):
    policy = make_tiny_policy("act", vocabulary=build_vocabulary([RED, BLUE]))
    images = torch.randint(0, 255, (3, 1, 3, 24, 32), dtype=torch.uint8)
    qpos = torch.randn(3, 8)
    batch = policy.infer(images, qpos, tasks=[BLUE, RED, BLUE])["action"]
    alone = policy.infer(images[1:2], qpos[1:2], tasks=[RED])["action"]
    torch.testing.assert_close(batch[1], alone[0], atol=1e-4, rtol=1e-4)


def test_the_colour_word_alone_decides_which_cube_an_overfit_act_goes_for(make_tiny_policy, fit_batch):
    """Same image, same arm pose; only the colour word differs, and so must the chunk."""
    policy = make_tiny_policy("act", vocabulary=build_vocabulary([RED, BLUE]), kl_weight=0.0)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 255, (1, 1, 3, 24, 32), dtype=np.uint8))
    qpos = torch.zeros(1, 8)
    to_red, to_blue = torch.full((10, 8), 0.8), torch.full((10, 8), -0.8)
    batch = {"images": image.repeat(4, 1, 1, 1, 1), "qpos": qpos.repeat(4, 1),
             "action": torch.stack([to_red, to_blue, to_red, to_blue]),
             "is_pad": torch.zeros(4, 10, dtype=torch.bool), "task": [RED, BLUE, RED, BLUE]}
    fit_batch(policy, batch, steps=150, lr=3e-3)
    red = policy.infer(image, qpos, tasks=[RED])["action"][0]
    blue = policy.infer(image, qpos, tasks=[BLUE])["action"][0]
    assert (red - to_red).abs().mean() < 0.25 < (red - to_blue).abs().mean()
    assert (blue - to_blue).abs().mean() < 0.25 < (blue - to_red).abs().mean()


def test_multi_task_act_refuses_an_observation_without_an_instruction(make_tiny_policy):
    policy = make_tiny_policy("act", vocabulary=build_vocabulary([RED, BLUE]))
    obs = {"images": {"top": np.zeros((24, 32, 3), np.uint8)}, "qpos": np.zeros(8, np.float32)}
    with pytest.raises(UserError, match="follows instructions"):
        policy.predict_chunk(obs)
    with pytest.raises(UserError, match="'green' that the policy never saw"):
        policy.predict_chunk({**obs, "task": "put the green cube in the blue bowl"})
    chunk, _ = policy.predict_chunk({**obs, "task": RED})
    assert chunk.shape == (10, 8)


def test_several_instructions_in_the_data_make_act_multi_task_and_one_does_not():
    assert ACTConfig.options_for_tasks({}, [RED, BLUE, RED])["vocabulary"] == build_vocabulary([RED, BLUE])
    assert "vocabulary" not in ACTConfig.options_for_tasks({}, [RED, RED])
    assert ACTConfig.options_for_tasks({"vocabulary": ["x"]}, [RED, BLUE])["vocabulary"] == ["x"]
