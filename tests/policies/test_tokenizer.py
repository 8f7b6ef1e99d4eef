"""Character tokenizer and the optional local text encoder."""

import numpy as np
import pytest

from robokit.errors import ConfigError, UserError
from robokit.policies.goal.tokenizer import CharTokenizer, LocalTextEncoder, make_text_encoder


def test_encode_pads_masks_and_round_trips():
    tok = CharTokenizer(max_length=40)
    ids, mask = tok.encode("put the red cube in the blue bowl")
    assert ids.shape == (40,) and ids.dtype == np.int64
    assert mask.sum() == len("put the red cube in the blue bowl")
    assert not ids[~mask].any()  # padding id 0
    assert tok.decode(ids) == "put the red cube in the blue bowl"


def test_long_instruction_is_truncated():
    tok = CharTokenizer(max_length=8)
    ids, mask = tok.encode("put the red cube in the blue bowl")
    assert mask.all()
    assert tok.decode(ids) == "put the "


def test_batch_encoding_keeps_order():
    ids, mask = CharTokenizer(max_length=5).encode_batch(["ab", "abcde", ""])
    assert ids.shape == (3, 5)
    assert mask.sum(1).tolist() == [2, 5, 0]


@pytest.mark.parametrize("text, char, pos", [("put the cube in the bowl\u00e9", "\u00e9", 24),
                                             ("pick\tup", "\\t", 4)])
def test_unknown_character_is_named_with_its_position(text, char, pos):
    with pytest.raises(UserError) as err:
        CharTokenizer(max_length=64).encode(text)
    assert char in str(err.value) and f"position {pos}" in str(err.value)


def test_local_encoder_directory_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        make_text_encoder(str(tmp_path / "no_such_t5"), 16, 8)


def test_local_encoder_without_transformers_is_a_clear_error(tmp_path):
    try:
        import transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="transformers"):
            LocalTextEncoder(str(tmp_path), 16, 8)
    else:  # with transformers, an empty directory is not a model
        with pytest.raises(ConfigError, match="cannot load"):
            LocalTextEncoder(str(tmp_path), 16, 8)
