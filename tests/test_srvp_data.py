"""Moving MNIST invariants (spec §7.15) and the real-data loaders on generated files in the documented layouts.

Digits here are scikit-learn's bundled 8x8 digits upscaled (a stand-in for MNIST; no downloads) or random
arrays written as MNIST IDX files.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from dynagen.models.srvp import data

X_MAX = 36  # 64 - 28


def _trajectories(deterministic: bool, n: int = 300, seq_len: int = 25, rounded: bool = True):
    rng = np.random.RandomState(0)
    return [data.trajectory(rng, seq_len, X_MAX, X_MAX, 4, deterministic, rounded) for _ in range(n)]


@pytest.mark.parametrize("deterministic", [False, True])
def test_positions_and_velocities(deterministic):
    for path in _trajectories(deterministic):
        assert path.dtype == np.int64 and path[:, :2].min() >= 0 and path[:, :2].max() <= X_MAX
        assert np.abs(path[:, 2:]).max() <= 4
        if deterministic:  # mirror reflections keep |dx| and |dy|
            assert (np.abs(path[:, 2:]) == np.abs(path[0, 2:])).all()


def test_stochastic_motion_is_linear_between_bounces():
    bounces = 0
    for path in _trajectories(False, rounded=False):
        position, velocity = path[:, :2], path[:, 2:]
        for t in range(len(path) - 1):
            ahead = position[t] + velocity[t]
            inside = (ahead >= -1e-8).all() and (ahead <= X_MAX + 1e-8).all()
            if inside:  # no wall on this move: exact linear motion, velocity unchanged
                np.testing.assert_allclose(position[t + 1], ahead, atol=1e-9)
                assert (velocity[t + 1] == velocity[t]).all()
            else:
                bounces += 1
    assert 300 < bounces  # about 2.6 velocity changes per digit over 25 frames (§5)


def test_a_digit_stands_still_with_probability_one_in_81():
    rng = np.random.RandomState(1)
    still = sum(not data.trajectory(rng, 1, X_MAX, X_MAX)[0, 2:].any() for _ in range(8100))
    assert 60 <= still <= 140  # expectation 100, std about 10


def test_rendering_sums_and_saturates():
    digit = np.full((28, 28), 200, np.uint8)
    path = np.array([[3, 5, 0, 0], [10, 10, 0, 0]])
    frames = data.render([digit, digit], [path, path], 64)
    assert frames.dtype == np.uint8 and frames.shape == (2, 64, 64)
    assert (frames[0, 3:31, 5:33] == 255).all() and frames[0].sum() == 255 * 28 * 28
    single = data.render([digit], [path], 64)
    assert (single[1, 10:38, 10:38] == 200).all() and single[1, :10].sum() == 0


def test_on_the_fly_dataset_is_reproducible_per_index():
    digits, _, description = data.digits_for(None, True, 28)
    assert "NOT MNIST" in description and digits.shape[1:] == (28, 28)
    dataset = data.MovingMNIST(digits, 64, 15, seed=3)
    assert (dataset[7] == dataset[7]).all() and not (dataset[7] == dataset[8]).all()
    batch = data.collate([dataset[i] for i in range(4)])
    assert batch.shape == (15, 4, 1, 64, 64) and 0 <= batch.min() and batch.max() <= 1


def test_test_set_uses_every_digit_once():
    digits = np.random.RandomState(0).randint(0, 256, (10_000, 28, 28)).astype(np.uint8)
    arrays = data.make_test_set(digits, np.arange(10_000), seq_len=2)
    assert arrays["sequences"].shape == (2, 5_000, 64, 64) and arrays["sequences"].dtype == np.uint8
    assert arrays["latents"].shape == (2, 5_000, 2, 4)
    assert len(np.unique(arrays["labels"])) == 10_000  # the labels here are digit ids
    again = data.make_test_set(digits, np.arange(10_000), seq_len=2)
    assert (again["sequences"] == arrays["sequences"]).all()  # fixed seed 42


def test_mnist_idx_files_and_split(tmp_path):
    images = np.random.RandomState(0).randint(0, 256, (50, 28, 28)).astype(np.uint8)
    header = bytes([0, 0, 8, 3]) + b"".join(int(v).to_bytes(4, "big") for v in images.shape)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(header + images.tobytes())
    loaded, labels, description = data.digits_for(tmp_path, False, 28)
    assert (loaded == images).all() and (labels == -1).all() and "MNIST test" in description
    small, _ = data.mnist_digits(tmp_path, False, 14)
    assert small.shape == (50, 14, 14)
    np.testing.assert_allclose(small[0], images[0].reshape(14, 2, 14, 2).mean((1, 3)), atol=1)  # box filter
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
