"""SRVP's data: Moving MNIST as the training loop uses it, the docs/srvp.md §3 fold, and the real-data loaders on generated
files in the documented layouts. The generator's own invariants (docs/srvp.md §7.15) are in tests/test_moving_mnist.py.

Digits here are scikit-learn's bundled 8x8 digits upscaled (a stand-in for MNIST; no downloads).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dynagen.models import moving_mnist
from dynagen.models.srvp import data


def test_on_the_fly_dataset_is_reproducible_per_index():
    digits, _, description = moving_mnist.digits_for(None, True, 28)
    assert "NOT MNIST" in description and digits.shape[1:] == (28, 28)
    dataset = moving_mnist.MovingMNIST(digits, 64, 15, seed=3)
    assert (dataset[7] == dataset[7]).all() and not (dataset[7] == dataset[8]).all()
    batch = data.collate([dataset[i] for i in range(4)])
    assert batch.shape == (15, 4, 1, 64, 64) and 0 <= batch.min() and batch.max() <= 1


def test_train_val_split():
    train, val = data.train_val_split(100, "train"), data.train_val_split(100, "val")
    assert len(train) == 95 and len(val) == 5 and not set(train) & set(val)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_kth_human_bair_layouts(tmp_path):
    rng = np.random.RandomState(0)
    for person in (1, 22):  # person 22 belongs to the test persons and is skipped in training
        for t in range(12):
            _png(tmp_path / "kth/processed_64/boxing" / f"person{person:02d}_boxing_d1" / f"image-{t:03d}.png",
                 rng.randint(0, 256, (64, 64, 3)).astype(np.uint8))
    np.savez(tmp_path / "kth/svg_test_set_40.npz", sequences=rng.randint(0, 256, (3, 40, 64, 64)).astype(np.uint8))
    kth = data.KTH(tmp_path / "kth", 10)
    assert len(kth.videos) == 1 and kth[0].shape == (10, 64, 64)
    assert data.KTH(tmp_path / "kth", 40, train=False)[2].shape == (40, 64, 64)

    (tmp_path / "human/train").mkdir(parents=True)
    (tmp_path / "human/test_set_64_5_8").mkdir(parents=True)
    frames = rng.randint(0, 256, (60, 64, 64, 3)).astype(np.uint8)
    np.savez(tmp_path / "human/train/S1_walking.npz", image=frames)
    np.savez(tmp_path / "human/test_set_64_5_8/000.npz", image=frames[:33])
    human = data.Human36M(tmp_path / "human", 5)
    clip = human[3]
    assert clip.shape == (5, 64, 64, 3)
    start = int(np.argmax([(frames[s] == clip[0]).all() for s in range(60)]))
    assert (clip == frames[start : start + 33 : 8]).all()  # one frame in 8
    assert (data.Human36M(tmp_path / "human", 5, train=False)[0] == frames[:33:8]).all()

    for split in ("train", "test"):
        for t in range(30):
            _png(tmp_path / "bair/processed_data" / split / "traj_0_to_255" / "0" / f"{t}.png",
                 np.full((64, 64, 3), t, np.uint8))
    bair = data.BAIR(tmp_path / "bair", 12)
    first = bair[0][:, 0, 0, 0]
    assert bair[0].shape == (12, 64, 64, 3) and (np.diff(first) == 1).all() and first[0] <= 18
    assert (data.BAIR(tmp_path / "bair", 12, train=False)[0][:, 0, 0, 0] == np.arange(12)).all()
    assert data.collate([bair[0], bair[0]]).shape == (12, 2, 3, 64, 64)
    with pytest.raises(FileNotFoundError, match="data_dir"):
        data.BAIR(tmp_path / "nowhere", 12)
    assert isinstance(data.collate([kth[0]]), torch.Tensor)



def test_training_clips_start_anew_every_epoch(tmp_path):
    """docs/srvp.md §3 / §5: every access draws a random start (BAIR: in [0, 30 - seq_len]), so over a run every start of a
    video is used, not the one start a per-index stream would fix. Frame t of each fake 30-frame video is filled
    with t, so a clip's first pixel is its start."""
    for t in range(30):
        frame = np.full((64, 64, 3), t, np.uint8)
        _png(tmp_path / "bair/processed_data/train/traj_0_to_255/0" / f"{t}.png", frame)
        _png(tmp_path / "kth/processed_64/boxing/person01_boxing_d1" / f"image-{t:03d}.png", frame)
    (tmp_path / "human/train").mkdir(parents=True)
    ramp = np.broadcast_to(np.arange(30, dtype=np.uint8)[:, None, None, None], (30, 64, 64, 3))
    np.savez(tmp_path / "human/train/S1_walking.npz", image=ramp)
    cases = [  # (data set, frame step within a clip, number of possible starts)
        (lambda: data.BAIR(tmp_path / "bair", 12), 1, 30 - 12 + 1),
        (lambda: data.KTH(tmp_path / "kth", 10), 1, 30 - 10 + 1),
        (lambda: data.Human36M(tmp_path / "human", 3, subsampling=8), 8, 30 - (2 * 8 + 1) + 1),
    ]
    for make, step, n_starts in cases:
        dataset, starts = make(), []
        for epoch in range(200):
            dataset.set_epoch(epoch)
            first_pixels = dataset[0].reshape(dataset.seq_len, -1)[:, 0].astype(int)
            assert (np.diff(first_pixels) == step).all()
            starts.append(first_pixels[0])
        assert set(starts) == set(range(n_starts)), type(dataset).__name__
        again = make()
        again.set_epoch(199)
        assert again[0].reshape(dataset.seq_len, -1)[0, 0] == starts[-1]  # (seed, epoch, index) fixes the clip
