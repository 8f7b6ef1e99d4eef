"""`robokit viz attention` for robokit's own policies: a tiny GRP run over a recorded episode."""

from __future__ import annotations

import numpy as np
import pytest

from robokit.errors import UserError
from robokit.policies.goal.grp import GRPPolicy
from robokit.viz.policy_attention import capture_to_tree_input, parse_steps, render_policy_attention


@pytest.fixture
def tiny_grp(make_tiny_policy):
    def make(cams=("top",), goal_mode="text") -> GRPPolicy:
        return make_tiny_policy("grp", camera_names=list(cams), goal_mode=goal_mode).eval()
    return make


def test_grp_attention_tree_over_episode_steps(tmp_path, record_episode, tiny_grp):
    ep = record_episode(tmp_path / "data", cams=("top", "wrist"), task="put the red cube in the blue bowl")
    policy = tiny_grp(("top", "wrist"))
    summaries = render_policy_attention(policy, ep, "0:5:2", tmp_path / "viz", overview=False)
    assert [s.root.name for s in summaries] == [f"inference_timestep_{t}" for t in (0, 2, 4)]
    s = summaries[0]
    # the goal image is masked while GRP follows text: skipped, not drawn as an all-cold map
    assert s.cameras == ["top", "wrist"] and s.skipped_cameras == ["goal_image"]
    assert s.text_tokens == 8 and s.layers == 2
    assert s.action_tokens == policy.config.chunk_size
    folder = s.root / "action_token_0" / "layer_1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "fused_attention_on_text.jpg",
        "fused_attention_on_top.jpg",
        "fused_attention_on_wrist.jpg",
    ]
    assert s.figure_sizes["top"] == (48, 64)  # drawn on the episode's frame, not the policy's 32x32


def test_episode_without_the_policys_cameras(tmp_path, record_episode, tiny_grp):
    ep = record_episode(tmp_path / "data", cams=("top",))
    with pytest.raises(
        UserError, match=r"has camera\(s\) top but the policy needs top, wrist \(missing: wrist\)"
    ):
        render_policy_attention(tiny_grp(("top", "wrist")), ep, "0", tmp_path / "viz")


def test_parse_steps():
    assert parse_steps("0:50:10", 24) == [0, 10, 20]
    assert parse_steps("3,1,3", 24) == [1, 3]
    with pytest.raises(UserError, match="outside the episode"):
        parse_steps("30", 24)
    with pytest.raises(UserError, match="not start:stop:step"):
        parse_steps("a:b", 24)


def test_prompt_objects_join_the_text_strip():
    # VIMA-style capture: [prompt token, 6 text slots, 2 object tokens]; 2 real characters
    maps = np.zeros((1, 2, 1, 9), np.float32)
    maps[..., 8] = 1.0
    att, layout, tokens, _padded = capture_to_tree_input(
        {
            "maps": maps,
            "layout": {"prompt": [0, 1], "text": [1, 7], "object/red cube": [7, 8], "object/bowl": [8, 9]},
        },
        ["h", "i"],
    )
    assert tokens == ["h", "i", "<red cube>", "<bowl>"] and layout == {"text": [0, 4]}
    assert att.shape == (1, 1, 1, 1, 2, 1, 4) and att[..., 3].min() == 1.0


def test_act_attention_tree_matches_the_spec(tmp_path, record_episode, make_tiny_policy):
    ep = record_episode(tmp_path / "data", cams=("top", "wrist"))
    policy = make_tiny_policy("act", camera_names=["top", "wrist"], image_shape=(32, 48, 3), chunk_size=4)
    (s,) = render_policy_attention(policy.eval(), ep, "7", tmp_path / "viz", history=False)
    root = tmp_path / "viz" / "inference_timestep_7"
    files = {str(p.relative_to(root)) for p in root.rglob("*.jpg") if "overview" not in p.parts}
    # ACT: every action query of the chunk, its one decoder layer, one figure per camera, no text
    assert files == {f"action_token_{i}/layer_0/fused_attention_on_{c}.jpg" for i in range(4)
                     for c in ("top", "wrist")}
    assert s.cameras == ["top", "wrist"] and s.text_tokens == 0 and (root / "index.html").exists()
