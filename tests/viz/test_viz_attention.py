"""The attention tree: hot tokens land in the right file at the right pixels; tree shape; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from robokit.errors import UserError
from robokit.viz.attention import fuse_heads, render_tree
from robokit.viz.figures import colormap_lut
from robokit.viz.layout import TokenLayout, pi0_layout

CAMS = ("base", "left", "right")
GRID = (4, 4)
IMG = 64  # px; one grid cell = 16 px
N_TEXT, N_ACT = 6, 3
SEQ = 3 * 16 + N_TEXT + 1 + N_ACT  # images, text, state, actions
Q = 1 + N_ACT  # queries = [state, actions] = the last Q positions


def small_layout(padded=()) -> TokenLayout:
    return pi0_layout(CAMS, grid=GRID, text_tokens=N_TEXT, state_tokens=1, action_tokens=N_ACT, padded=padded)


def black_images(names=CAMS) -> dict[str, np.ndarray]:
    return {c: np.zeros((IMG, IMG, 3), np.uint8) for c in names}


def base_attention(d=1, layers=2, heads=8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((d, layers, 1, 1, heads, Q, SEQ)) * 1e-3).astype(np.float32)


def decode_heat(path: Path, alpha: float = 0.5) -> np.ndarray:
    """Invert the blend for a black background image: nearest entry of the alpha-scaled colormap."""
    img = cv2.imread(str(path))[:IMG].astype(np.float32)  # drop the caption band
    lut = np.floor(colormap_lut("turbo").reshape(256, 3).astype(np.float32) * alpha)
    dist = ((img[:, :, None, :] - lut[None, None]) ** 2).sum(-1)
    return dist.argmin(-1) / 255.0


def cell_box(r: int, c: int) -> tuple[slice, slice]:
    s = IMG // GRID[0]
    return slice(r * s, (r + 1) * s), slice(c * s, (c + 1) * s)


def assert_hot_at(path: Path, r: int, c: int) -> None:
    heat = decode_heat(path)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    ys, xs = cell_box(r, c)
    assert ys.start <= y < ys.stop and xs.start <= x < xs.stop, f"hottest pixel {(y, x)} not in cell {(r, c)}"
    inside = heat[ys, xs].mean()
    far = np.ones_like(heat, bool)
    far[max(0, ys.start - 16) : ys.stop + 16, max(0, xs.start - 16) : xs.stop + 16] = False
    assert inside > 0.45 and heat[far].mean() < 0.15


def test_hot_tokens_land_in_right_file_and_region(tmp_path):
    att = base_attention()
    # action token i (query 1 + i) looks at a different cell of each camera and a different word.
    spots = {
        0: {"base": (0, 1), "left": (3, 3), "right": (2, 0), "text": 4},
        1: {"base": (3, 0), "left": (1, 2), "right": (0, 3), "text": 0},
        2: {"base": (2, 2), "left": (0, 0), "right": (3, 1), "text": 2},
    }
    for i, spot in spots.items():
        for k, cam in enumerate(CAMS):
            r, c = spot[cam]
            att[:, :, 0, 0, (i + k) % 8, 1 + i, k * 16 + r * 4 + c] = 0.9  # one head only
        att[:, :, 0, 0, 5, 1 + i, 48 + spot["text"]] = 0.4
    words = ["pick", "up", "the", "red", "cube", "now"]
    s = render_tree(att, small_layout(), tmp_path, black_images(), words, overview=False)
    assert s.cameras == list(CAMS) and s.skipped_cameras == [] and s.text_tokens == 6
    root = tmp_path / "inference_timestep_0"
    for i, spot in spots.items():
        for layer in (0, 1):
            folder = root / f"action_token_{i}" / f"layer_{layer}"
            for cam in CAMS:
                assert_hot_at(folder / f"fused_attention_on_{cam}.jpg", *spot[cam])
            strip = cv2.imread(str(folder / "fused_attention_on_text.jpg")).astype(np.float32)
            hot = colormap_lut("turbo").reshape(256, 3)[255].astype(np.float32)
            means = []
            for x0, y0, x1, y1 in s.text_boxes:  # box interior, away from glyphs' edges
                patch = strip[y0 + 1 : y0 + 4, x0 + 1 : x1 - 1].reshape(-1, 3)
                means.append(-np.abs(patch - hot).sum(-1).mean())
            assert int(np.argmax(means)) == spot["text"]


def test_two_real_images_in_a_three_camera_layout(tmp_path):
    att = base_attention()
    att[:, :, 0, 0, 0, 1:, 0 * 16 + 1 * 4 + 1] = 1.0  # base (1, 1)
    att[:, :, 0, 0, 1, 1:, 1 * 16 + 2 * 4 + 3] = 1.0  # left (2, 3)
    att[:, :, 0, 0, 2, 1:, 2 * 16 + 0] = 5.0  # hot padding must change nothing
    s = render_tree(
        att, small_layout(padded=["right"]), tmp_path, black_images(CAMS[:2]), ["a", "b"], overview=False
    )
    assert s.cameras == ["base", "left"] and s.skipped_cameras == ["right"]
    folder = tmp_path / "inference_timestep_0" / "action_token_1" / "layer_0"
    assert sorted(p.name for p in folder.iterdir()) == [
        "fused_attention_on_base.jpg",
        "fused_attention_on_left.jpg",
        "fused_attention_on_text.jpg",
    ]
    assert_hot_at(folder / "fused_attention_on_base.jpg", 1, 1)
    assert_hot_at(folder / "fused_attention_on_left.jpg", 2, 3)
    # the same through render_tree's own `padded` argument
    s2 = render_tree(
        att, small_layout(), tmp_path / "b", black_images(CAMS[:2]), padded=["right"], overview=False
    )
    assert s2.skipped_cameras == ["right"]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.jpg") if "overview" not in p.parts}


def test_folder_tree_with_and_without_diffusion_level(tmp_path):
    names = [f"fused_attention_on_{c}.jpg" for c in CAMS] + ["fused_attention_on_text.jpg"]
    s = render_tree(
        base_attention(d=2, layers=2), small_layout(), tmp_path / "d", black_images(), ["x"], inference_step=7
    )
    expected = {
        f"diffusion_timestep_{j}/action_token_{i}/layer_{l}/{n}"
        for j in range(2)
        for i in range(N_ACT)
        for l in range(2)
        for n in names
    }
    assert _tree(tmp_path / "d" / "inference_timestep_7") == expected
    assert s.files >= len(expected) and (tmp_path / "d" / "inference_timestep_7" / "index.html").exists()
    assert (tmp_path / "d" / "index.html").exists()

    expected = {f"action_token_{i}/layer_{l}/{n}" for i in range(N_ACT) for l in range(2) for n in names}
    render_tree(base_attention(d=1, layers=2), small_layout(), tmp_path / "one", black_images(), ["x"])
    assert _tree(tmp_path / "one" / "inference_timestep_0") == expected
    render_tree(base_attention(d=1, layers=2)[0], small_layout(), tmp_path / "six", black_images(), ["x"])
    assert _tree(tmp_path / "six" / "inference_timestep_0") == expected


def test_text_truncated_and_padded(tmp_path):
    att = base_attention()
    att[:, :, 0, 0, 0, 1:, 48 + 5] = 1.0  # last text slot, padding when only 3 tokens are given
    att[:, :, 0, 0, 0, 1:, 48 + 1] = 0.2
    s = render_tree(att, small_layout(), tmp_path / "pad", black_images(), ["a", "b", "c"], overview=False)
    assert s.text_tokens == 3 and len(s.text_boxes) == 3
    strip = cv2.imread(
        str(tmp_path / "pad/inference_timestep_0/action_token_0/layer_0/fused_attention_on_text.jpg")
    )
    x0, y0, x1, _ = s.text_boxes[1]
    hot = colormap_lut("turbo").reshape(256, 3)[255].astype(np.float32)
    # token "b" is the hottest REAL token, so the figure scale puts it at the top of the colormap
    assert np.abs(strip[y0 + 2, x0 + 1 : x1 - 1].astype(np.float32) - hot).sum(-1).mean() < 60
    s = render_tree(
        att, small_layout(), tmp_path / "trunc", black_images(), [f"w{i}" for i in range(20)], overview=False
    )
    assert s.text_tokens == N_TEXT


def test_head_fusion_max_and_mean():
    att = np.zeros((1, 1, 1, 2, 4, Q, SEQ), np.float32)
    att[0, 0, 0, 1, 3, 2, 10] = 0.8  # one head of eight
    layout = small_layout()
    fmax = fuse_heads(att, layout, fuse="max").weights
    fmean = fuse_heads(att, layout, fuse="mean").weights
    assert fmax.shape == (1, 1, N_ACT, SEQ)  # the state query is dropped
    assert fmax[0, 0, 1, 10] == pytest.approx(0.8) and fmean[0, 0, 1, 10] == pytest.approx(0.1)
    logits = np.zeros((1, 1, 1, 1, 1, Q, SEQ), np.float32)
    logits[..., 7] = 10.0
    w = fuse_heads(logits, layout, logits=True).weights
    assert w[0, 0, 0].sum() == pytest.approx(1.0, abs=1e-5) and w[0, 0, 0].argmax() == 7


def test_cameras_folded_along_width(tmp_path):
    # ACT-style: [latent, proprio, top|wrist grid 2 x (3 + 3)], every query an action query
    layout = TokenLayout.from_dict({"latent": [0, 1], "proprio": [1, 2], "top|wrist": [2, 14, 2, 6]})
    att = np.full((1, 2, 1, 1, 1, 4, 14), 1e-3, np.float32)
    att[..., 2 + 1 * 6 + 4] = 1.0  # row 1, column 4 of the folded grid -> wrist (1, 1)
    # one colour scale shared by all figures of a token/layer: the top camera stays cold
    s = render_tree(
        att, layout, tmp_path, overview=False, caption=False, interpolation="nearest", scale="shared"
    )
    assert s.cameras == ["top", "wrist"] and s.action_tokens == 4
    folder = tmp_path / "inference_timestep_0" / "action_token_3" / "layer_1"
    wrist = cv2.imread(str(folder / "fused_attention_on_wrist.jpg"))
    top = cv2.imread(str(folder / "fused_attention_on_top.jpg"))
    h, w = wrist.shape[:2]
    red = colormap_lut("turbo").reshape(256, 3)[255].astype(int)
    assert np.abs(wrist[h * 3 // 4, w // 2].astype(int) - red).sum() < 40
    assert np.abs(top.astype(int) - red).sum(-1).min() > 100  # nothing hot on the top camera
    # per-figure scale: the top camera's (uniform) attention fills its own [0, max] range
    render_tree(att, layout, tmp_path / "fig", overview=False, caption=False)
    top = cv2.imread(str(tmp_path / "fig" / folder.relative_to(tmp_path) / "fused_attention_on_top.jpg"))
    assert np.abs(top.astype(int) - red).sum(-1).max() < 40


@pytest.mark.parametrize(
    "case, message",
    [
        ("seq_mismatch", "does not match the layout"),
        ("past_sequence", "goes past the attention sequence"),
        ("axes", "must have 7 axes"),
        ("negative", "pre-softmax"),
        ("missing_image", "no image for camera(s) right"),
        ("bad_grid", "has 15 tokens but its grid 4x4"),
        ("queries", "outside the query axis"),
        ("nothing", "nothing to draw"),
    ],
)
def test_bad_input_messages(tmp_path, case, message):
    att = base_attention()
    layout: object = small_layout()
    images = black_images()
    if case == "seq_mismatch":
        att = att[..., :-1]
    elif case == "past_sequence":
        layout = {"cam": [0, 16, 4, 4], "text": [50, 70]}
    elif case == "axes":
        att = att[0, 0]
    elif case == "negative":
        att = att - 1.0
    elif case == "missing_image":
        images = black_images(CAMS[:2])
    elif case == "bad_grid":
        layout = {"cam": [0, 15, 4, 4]}
    elif case == "nothing":
        layout = {"state": [0, 1], "cam": [1, 17, 4, 4], "padded": ["cam"]}
    elif case == "queries":
        layout = {"cam": [0, 16, 4, 4], "action_queries": [2, 9]}
    with pytest.raises(UserError) as info:
        render_tree(att, layout, tmp_path, images, overview=False)
    assert message in str(info.value)


def test_attention_array_cli(tmp_path, capsys):
    from robokit.cli import main

    att = base_attention(d=2)
    att[:, :, 0, 0, 0, 1:, 16 + 5] = 1.0  # left (1, 1)
    images = black_images()
    np.savez(
        tmp_path / "attn.npz",
        attention=att,
        **{"images/base": images["base"]},
        text_tokens=np.array(["pick", "up"]),
    )
    cv2.imwrite(str(tmp_path / "left.png"), images["left"])
    (tmp_path / "layout.json").write_text(json.dumps(small_layout().to_dict()))
    main(
        [
            "viz",
            "attention-array",
            str(tmp_path / "attn.npz"),
            "--layout",
            str(tmp_path / "layout.json"),
            "--images",
            f"left={tmp_path / 'left.png'}",
            "--padded",
            "right",
            "--out",
            str(tmp_path / "viz"),
            "--layers",
            "1",
            "--no-overview",
        ]
    )
    folder = tmp_path / "viz" / "inference_timestep_0" / "diffusion_timestep_1" / "action_token_2"
    assert sorted(p.name for p in folder.iterdir()) == ["layer_1"]
    assert_hot_at(folder / "layer_1" / "fused_attention_on_left.jpg", 1, 1)
    assert "skipped right" in capsys.readouterr().err

    (tmp_path / "bad.json").write_text(json.dumps({"base": [0, 16, 4, 4], "text": [60, 80]}))
    with pytest.raises(SystemExit) as info:
        main(
            [
                "viz",
                "attention-array",
                str(tmp_path / "attn.npz"),
                "--layout",
                str(tmp_path / "bad.json"),
                "--out",
                str(tmp_path / "viz2"),
            ]
        )
    err = capsys.readouterr().err
    assert info.value.code == 2 and "'text' [60, 80) goes past the attention sequence of 58" in err
