"""Episode files of every layout robokit reads, written in the test, read through the datasets.

The files come from the ``episode_files`` fixture (tests/conftest.py), which puts known values in
every field, so a sample's contents can be checked exactly against the step it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robokit.training.dataset import EpisodeDataset, build_datasets


def check_sample_matches(ds: EpisodeDataset, index: int, action_full: np.ndarray, t: int, pixel_value,
                         shift: int = 0, tol: int = 0) -> None:
    sample = ds[index]
    chunk = ds.chunk_size
    start = max(0, t - shift)
    expected = np.zeros((chunk, action_full.shape[1]), np.float32)
    n = min(chunk, len(action_full) - start)
    expected[:n] = action_full[start:start + n]
    np.testing.assert_allclose(sample["action"].numpy(), expected, atol=1e-6)
    assert sample["is_pad"].tolist() == [i >= n for i in range(chunk)]
    for k, cam in enumerate(ds.camera_names):
        red = sample["images"][k, 0].numpy().astype(int)
        assert np.abs(red - pixel_value(t, cam)).max() <= tol, (cam, t)


@pytest.mark.parametrize("layout", ["v1", "act", "act-real", "aloha-jpeg", "live-record"])
def test_every_layout_reads_into_samples(tmp_path: Path, layout: str, episode_files):
    folder = tmp_path / layout
    for i in range(2):
        if layout == "v1":
            episode_files.v1(folder, i, length=10 + i, cams={"top": (16, 20), "wrist": (16, 20)})
        elif layout == "act":
            episode_files.act(folder, i, length=10 + i, cams={"top": (16, 20), "wrist": (16, 20)})
        elif layout == "act-real":
            episode_files.act(folder, i, length=10 + i, sim=False)
        elif layout == "aloha-jpeg":
            episode_files.aloha_jpeg(folder, i, length=10 + i, cams={"top": (16, 24), "wrist": (16, 24)})
        else:
            episode_files.live_record(folder, i, length=10 + i)
    train, val, stats, info = build_datasets(folder, chunk_size=4, val_fraction=0.5, seed=0)
    expected_layout = {"v1": "robokit-v1", "act-real": "act"}.get(layout, layout)
    assert info.layouts == [expected_layout]
    assert len(train) + len(val) == 21
    dim = 8 if layout == "v1" else 7 if layout == "live-record" else 14
    assert info.action_dim == dim and stats["action_mean"].shape == (dim,)
    tol = 3 if layout == "aloha-jpeg" else 0
    shift = 1 if layout in ("act-real", "aloha-jpeg") else 0  # ACT's real-robot alignment
    for ds in (train, val):
        for index in (0, 3, len(ds) - 1):
            e, t = ds.locate(index)
            length = ds.records[e].length
            check_sample_matches(ds, index, episode_files.lowdim(length, dim), t, episode_files.pixel_value,
                                 shift=shift, tol=tol)
    if layout == "live-record":
        # The 8th state column is its end marker: it becomes `done`, not state.
        sample = train[len(train) - 1]
        assert sample["done"][0] == 1.0 and sample["qpos"].shape == (7,)
