"""Segmentation models: they learn the recorded masks, save and load in the checkpoint format, and
`robokit seg train/eval` report what they do; bad input is named."""

from __future__ import annotations

import pytest
import torch

from robokit.errors import CheckpointError, DataError
from robokit.segmentation.data import load_labelled_frames
from robokit.segmentation.models import MaskRCNNSegmenter, SegmenterConfig
from robokit.segmentation.train import (
    evaluate_segmenter,
    load_segmenter,
    save_segmenter,
    to_tensor,
    train_segmenter,
)
from tests.record.test_record import cli

SIZE = (32, 40)


@pytest.fixture(scope="module")
def masked_data(tmp_path_factory):
    """Two scripted multi-task episodes with masks, 32x40, 10 Hz."""
    from robokit.cli import main

    out = tmp_path_factory.mktemp("seg") / "data"
    main(["record", "--sim", "--task-set", "multi", "--teleop", "scripted", "--episodes", "2", "--segmentation",
          "--image-size", "32x40", "--fps", "10", "--out", str(out)])
    return out


def test_the_small_model_learns_the_masks_of_its_frames(masked_data):
    frames = load_labelled_frames(masked_data, SIZE, stride=4)
    assert frames.cameras == ["top", "wrist"] and frames.episodes == 2
    assert frames.images.shape[1:] == (*SIZE, 3) and frames.masks.shape == frames.images.shape[:3]
    config = SegmenterConfig(image_size=SIZE, instances=[list(i) for i in frames.instances], width=16)
    model, history = train_segmenter(frames, config, steps=150, batch_size=8, lr=1e-2)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    # 150 steps on 32x40 frames learn the large instances first (the figures of a full training
    # are in docs/segmentation.md); an untrained model finds none of them
    iou = evaluate_segmenter(model, frames)
    assert iou.kinds["target"] > 0.7 and iou.kinds["robot"] > 0.3, iou.kinds
    untrained, _ = train_segmenter(frames, config, steps=1, batch_size=2)
    assert max(evaluate_segmenter(untrained, frames).kinds.values()) < 0.3


def test_a_segmenter_round_trips_through_its_checkpoint_and_is_not_a_policy(masked_data, tmp_path,
                                                                           make_tiny_checkpoint):
    from robokit.policies.checkpoint import load_checkpoint

    frames = load_labelled_frames(masked_data, SIZE, stride=8)
    config = SegmenterConfig(image_size=SIZE, instances=[list(i) for i in frames.instances], width=8)
    model, _ = train_segmenter(frames, config, steps=3, batch_size=2)
    save_segmenter(tmp_path / "seg.pt", model, {"steps": 3})
    again, meta = load_segmenter(tmp_path / "seg.pt")
    images = to_tensor(frames.images[:4])
    assert torch.equal(again.predict(images), model.predict(images)) and meta["steps"] == 3
    with pytest.raises(CheckpointError, match="segmentation model.*--set segmenter="):
        load_checkpoint(tmp_path / "seg.pt")
    with pytest.raises(CheckpointError, match="not a segmentation model"):
        load_segmenter(make_tiny_checkpoint("act"))


def test_seg_train_and_eval_commands(masked_data, tmp_path, capsys):
    checkpoint = tmp_path / "seg.pt"
    code, out, err = cli(capsys, "seg", "train", masked_data, "--out", checkpoint, "--steps", "5",
                         "--image-size", "32x40", "--width", "8", "--device", "cpu")
    assert code == 0, err
    assert "masked frames of 2 episode(s), 16 instances" in out and checkpoint.is_file()
    code, out, err = cli(capsys, "seg", "eval", checkpoint, masked_data, "--stride", "10", "--device", "cpu")
    assert code == 0, err
    text = " ".join(out.split())
    assert "mask IoU on" in text and "by kind: robot" in text and "red_cube" in text


def test_data_without_masks_and_a_segmenter_of_other_instances_are_named(masked_data, tmp_path, capsys,
                                                                          record_episode):
    plain = tmp_path / "plain"
    record_episode(plain, 0, cams=("top",), steps=4)
    with pytest.raises(DataError, match="no frame under .* has a mask: record with `robokit record --sim --segmentation`"):
        load_labelled_frames(plain, SIZE)
    from robokit.segmentation.models import SmallSegNet

    config = SegmenterConfig(image_size=SIZE, instances=[["link0", "robot"]], width=8)
    save_segmenter(tmp_path / "other.pt", SmallSegNet(config))
    code, _, err = cli(capsys, "seg", "eval", tmp_path / "other.pt", masked_data, "--device", "cpu")
    assert code == 2 and "labels 16 instances but" in err and "trained on 1 others" in err


def test_mask_rcnn_builds_without_downloads_trains_a_step_and_paints_ids(masked_data):
    frames = load_labelled_frames(masked_data, (64, 80), stride=20)
    config = SegmenterConfig(arch="maskrcnn", image_size=(64, 80), instances=[list(i) for i in frames.instances])
    model = MaskRCNNSegmenter(config)
    images = to_tensor(frames.images[:2])
    terms = model.loss(images, torch.from_numpy(frames.masks[:2]).long())
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]) and {"loss_mask", "loss_classifier"} <= set(terms)
    ids = model.predict(images)
    assert ids.shape == (2, 64, 80) and ids.dtype == torch.uint8
    assert int(ids.max()) <= len(frames.instances)


def test_train_vla_without_a_segmenter_trains_one_on_the_datas_masks_first(masked_data, tmp_path, capsys,
                                                                           record_episode):
    from robokit.policies.checkpoint import load_checkpoint

    out = tmp_path / "vla"
    args = ["train", masked_data, "--policy", "vla", "--out", out, "--image-size", "32x40", "--device", "cpu",
            "--batch-size", "4", "--val-fraction", "0", "--set", "d_model=32", "--set", "n_head=2",
            "--set", "enc_layers=1", "--set", "dec_layers=1", "--set", "segmenter_width=8", "--chunk-size", "5"]
    code, _, err = cli(capsys, *args, "--steps", "2", "--set", "segmenter_steps=3")
    assert code == 0, err
    assert "segmenter step 3/3" in err  # its progress, before the policy's
    policy, _ = load_checkpoint(out / "last.pt")
    seg, meta = load_segmenter(out / "segmenter.pt")
    assert meta["steps"] == 3 and policy.config.segmenter_config["width"] == 8
    assert policy.config.segmenter_config["cameras"] == ["top", "wrist"]
    assert all(torch.equal(v, policy.segmenter.state_dict()[k]) for k, v in seg.state_dict().items())
    # a resumed run reuses the run's segmenter rather than training another
    code, _, err = cli(capsys, *args, "--steps", "3", "--resume")
    assert code == 0, err
    assert "segmenter step" not in err
    # data without masks and no segmenter: the message says what to pass
    plain = tmp_path / "plain"
    record_episode(plain, 0, cams=("top",), steps=4)
    code, _, err = cli(capsys, "train", plain, "--policy", "vla", "--out", tmp_path / "bad", "--steps", "1")
    assert code == 2 and "has no masks to train a segmenter on" in err and "--set segmenter=seg.pt" in err
