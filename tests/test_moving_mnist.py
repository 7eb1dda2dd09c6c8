"""The shared Moving MNIST generator (SRVP docs/srvp.md §5 / §7.15; PDE docs/srvp.md §5.2 is its deterministic variant).

Digits here are scikit-learn's bundled 8x8 digits upscaled (a stand-in for MNIST; no downloads) or random
arrays written as MNIST IDX files or a keras-layout ``mnist.npz``.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from dynagen.models import moving_mnist as mm

X_MAX = 36  # 64 - 28


def _trajectories(deterministic: bool, n: int = 300, seq_len: int = 25, rounded: bool = True):
    rng = np.random.RandomState(0)
    return [mm.trajectory(rng, seq_len, X_MAX, X_MAX, 4, deterministic, rounded) for _ in range(n)]


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
    assert 300 < bounces  # about 2.6 velocity changes per digit over 25 frames (docs/srvp.md §5)


def test_deterministic_corner_bounce_reflects_exactly():
    # From (0, 34) moving (-3, +4): the move overshoots to (-3, 38); reflected off both walls it ends at (3, 34)
    # moving (+3, -4), and the next move reaches (6, 30).
    rng = np.random.RandomState(0)
    assert mm._bounce(-3, 38, -3, 4, X_MAX, X_MAX, rng, 4, True) == (3, 34, 3, -4)
    assert mm._bounce(6, 30, 3, -4, X_MAX, X_MAX, rng, 4, True) == (6, 30, 3, -4)


def test_a_digit_stands_still_with_probability_one_in_81():
    rng = np.random.RandomState(1)
    still = sum(not mm.trajectory(rng, 1, X_MAX, X_MAX)[0, 2:].any() for _ in range(8100))
    assert 60 <= still <= 140  # expectation 100, std about 10


def test_rendering_sums_and_saturates():
    digit = np.full((28, 28), 200, np.uint8)
    path = np.array([[3, 5, 0, 0], [10, 10, 0, 0]])
    frames = mm.render([digit, digit], [path, path], 64)
    assert frames.dtype == np.uint8 and frames.shape == (2, 64, 64)
    assert (frames[0, 3:31, 5:33] == 255).all() and frames[0].sum() == 255 * 28 * 28
    single = mm.render([digit], [path], 64)
    assert (single[1, 10:38, 10:38] == 200).all() and single[1, :10].sum() == 0


@pytest.mark.parametrize("deterministic", [False, True])
def test_latents_are_the_draws_behind_each_item(deterministic):
    digits, _, _ = mm.digits_for(None, True, 28)
    dataset = mm.MovingMNIST(digits, 64, 12, deterministic=deterministic, seed=5)
    for epoch, index in ((0, 0), (0, 7), (3, 7)):
        dataset.set_epoch(epoch)
        ids, paths = dataset.latents(index)
        assert ids.shape == (2,) and paths.shape == (2, 12, 4)
        assert (mm.render([digits[i] for i in ids], paths, 64) == dataset[index]).all()
        rng = np.random.RandomState([5, epoch, index])  # the same draws, through the generator's own path
        video, again = dataset.generate(rng, rng.randint(len(digits), size=2))
        assert (again == paths).all() and (video == dataset[index]).all()


def test_every_epoch_draws_new_videos_and_the_same_epoch_the_same_ones():
    digits, _, _ = mm.digits_for(None, True, 28)
    dataset = mm.MovingMNIST(digits, 64, 10, seed=2)
    first = [dataset[i] for i in range(8)]
    dataset.set_epoch(1)
    second = [dataset[i] for i in range(8)]
    assert all((a != b).any() for a, b in zip(first, second))  # no video of epoch 0 comes back in epoch 1
    again = mm.MovingMNIST(digits, 64, 10, seed=2)
    again.set_epoch(1)
    assert all((again[i] == second[i]).all() for i in range(8))  # (seed, epoch, index) fixes the video
    dataset.set_epoch(0)
    assert all((dataset[i] == first[i]).all() for i in range(8))


def test_test_set_uses_every_digit_once():
    digits = np.random.RandomState(0).randint(0, 256, (10_000, 28, 28)).astype(np.uint8)
    arrays = mm.make_test_set(digits, np.arange(10_000), seq_len=2)
    assert arrays["sequences"].shape == (2, 5_000, 64, 64) and arrays["sequences"].dtype == np.uint8
    assert arrays["latents"].shape == (2, 5_000, 2, 4)
    assert len(np.unique(arrays["labels"])) == 10_000  # the labels here are digit ids
    again = mm.make_test_set(digits, np.arange(10_000), seq_len=2)
    assert (again["sequences"] == arrays["sequences"]).all()  # fixed seed 42


def test_mnist_idx_files(tmp_path):
    images = np.random.RandomState(0).randint(0, 256, (50, 28, 28)).astype(np.uint8)
    header = bytes([0, 0, 8, 3]) + b"".join(int(v).to_bytes(4, "big") for v in images.shape)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(header + images.tobytes())
    loaded, labels, description = mm.digits_for(tmp_path, False, 28)
    assert (loaded == images).all() and (labels == -1).all() and "MNIST test" in description
    small, _ = mm.mnist_digits(tmp_path, False, 14)
    assert small.shape == (50, 14, 14)
    np.testing.assert_allclose(small[0], images[0].reshape(14, 2, 14, 2).mean((1, 3)), atol=1)  # box filter


def test_mnist_keras_npz(tmp_path):
    rng = np.random.RandomState(0)
    x_train, x_test = (rng.randint(0, 256, (n, 28, 28)).astype(np.uint8) for n in (30, 20))
    np.savez(tmp_path / "mnist.npz", x_train=x_train, x_test=x_test, y_train=np.arange(30) % 10, y_test=np.arange(20) % 10)
    loaded, labels, description = mm.digits_for(tmp_path, True, 28)
    assert (loaded == x_train).all() and (labels == np.arange(30) % 10).all() and "MNIST train" in description
    test, test_labels = mm.mnist_digits(tmp_path, False, 14)
    assert test.shape == (20, 14, 14) and test_labels.dtype == np.int16
    with pytest.raises(FileNotFoundError, match="mnist.npz"):
        mm.mnist_digits(tmp_path / "nowhere", True)


def test_stand_in_digits_are_labelled_as_such():
    train, train_labels, description = mm.digits_for(None, True, 28)
    test, _, _ = mm.digits_for(None, False, 28)
    assert mm.STAND_IN in description and "NOT MNIST" in description
    assert train.shape[1:] == (28, 28) and train.dtype == np.uint8 and len(train) + len(test) == 1797
    assert len(test) == int(mm.SKLEARN_TEST_FRACTION * 1797) and len(train_labels) == len(train)


@pytest.mark.parametrize("deterministic", [False, True])
def test_find_or_build_test_set_writes_the_file_it_then_finds(tmp_path, deterministic):
    """The one find-or-build both evaluations use: without the file, the docs/srvp.md §5 set is built (seed 42) from the MNIST
    test digits and saved; given that file back, the same arrays are read, and the digits in their source order
    are recovered from it (all 20 digits are used: 10 pairs)."""
    images = np.random.RandomState(0).randint(0, 256, (20, 28, 28)).astype(np.uint8)
    x_train = np.zeros((2, 28, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x_train, x_test=images, y_test=np.arange(20))
    kwargs = dict(deterministic=deterministic, ndigits=2, nx=64)
    built, digits, source = mm.find_or_build_test_set(tmp_path, 6, **kwargs, save_dir=tmp_path / "eval")
    name = mm.test_set_filename(deterministic, 2, 64)
    assert (digits == images).all() and "MNIST test digits" in source and str(tmp_path / "eval" / name) in source
    expected = mm.make_test_set(images, np.arange(20), 64, 6, 4, deterministic, 2, seed=42)
    assert all((built[key] == expected[key]).all() for key in expected)
    (tmp_path / name).write_bytes((tmp_path / "eval" / name).read_bytes())  # now the fixed file is in data_dir
    found, recovered, source = mm.find_or_build_test_set(tmp_path, 100, **kwargs)
    assert source == f"fixed test set {tmp_path / name}" and found["sequences"].shape == (6, 10, 64, 64)
    assert all((found[key] == expected[key]).all() for key in expected) and (recovered == images).all()
