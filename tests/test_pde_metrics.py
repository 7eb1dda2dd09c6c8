"""Metrics (spec §4, §7.14) against independent computations, and the PDE Moving MNIST data set (§5.2).

The generator itself (trajectories, rendering) is tested in tests/test_moving_mnist.py. Moving MNIST here uses
scikit-learn's bundled 8 × 8 digits, upscaled (a stand-in, not MNIST; no download)."""

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from dynagen.models.pde import metrics
from dynagen.models.moving_mnist import digits_for
from dynagen.models.pde.data import MovingMNISTWindows, make_dataset


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Valid-window SSIM of two (H, W) images, written out with scipy (Gaussian 11×11, σ 1.5)."""
    d = np.arange(11) - 5
    g = np.exp(-(d[:, None] ** 2 + d[None] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    f = lambda a: convolve2d(a, g, mode="valid")
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim_map.shape == (x.shape[0] - 10, x.shape[1] - 10)  # 64² → 54²
    return float(ssim_map.mean())


def test_ssim_uses_the_valid_window_and_is_one_on_identical_frames():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 2, 64, 64, dtype=torch.float64)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    ours = metrics.ssim_per_frame(y, x)
    assert ours.shape == (2, 3)
    expected = np.mean([reference_ssim(y[0, 1, c].numpy(), x[0, 1, c].numpy()) for c in range(2)])
    assert ours[0, 1].item() == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(metrics.ssim_per_frame(x, x), torch.ones(2, 3, dtype=torch.float64))


def test_psnr_averages_per_frame_and_channel_values():
    target = torch.zeros(1, 2, 2, 4, 4)
    pred = target.clone()
    pred[0, 0, 0] += 0.1  # MSE 1e-2 → 20 dB
    pred[0, 0, 1] += 0.01  # MSE 1e-4 → 40 dB
    pred[0, 1] += 0.1
    psnr = metrics.psnr_per_frame(pred, target)
    torch.testing.assert_close(psnr, torch.tensor([[30.0, 20.0]]), rtol=0, atol=1e-4)
    from_mean_mse = 10 * torch.log10(1 / metrics.mse_per_frame(pred, target)[0, 0])
    assert abs(from_mean_mse.item() - 30.0) > 2  # not the same as PSNR of the mean MSE


def test_baselines_and_best_permutation():
    cond = torch.arange(5.0).view(1, 5, 1, 1, 1)
    assert torch.equal(metrics.copy_last(cond, 3).flatten(), torch.tensor([4.0, 4.0, 4.0]))
    assert torch.equal(metrics.mean_frame(cond, 2).flatten(), torch.tensor([2.0, 2.0]))
    pred = torch.zeros(2, 3, 1, 4, 4)
    good, bad = torch.zeros_like(pred), torch.ones_like(pred)
    scores = metrics.best_of_permutations(pred, [torch.stack([good[0], bad[1]]), torch.stack([bad[0], good[1]])], image_metrics=False)
    assert torch.equal(scores["mse"], torch.zeros(2))


def test_moving_mnist_items_are_deterministic_in_range_and_sum_digits():
    digits, _, _ = digits_for(None, True, 28)
    dataset = MovingMNISTWindows(digits, 10, 5, 10, seed=3)
    assert len(dataset) == 10
    cond, target = dataset[4]
    assert cond.shape == (5, 1, 64, 64) and target.shape == (10, 1, 64, 64)
    assert cond.dtype == target.dtype == torch.float32
    assert 0 <= min(cond.min(), target.min()) and max(cond.max(), target.max()) <= 1
    # Regenerated from (seed, index) alone: a fresh data set gives the same item, another seed or index does not.
    again = MovingMNISTWindows(digits, 10, 5, 10, seed=3)[4]
    assert torch.equal(again[0], cond) and torch.equal(again[1], target)
    assert not torch.equal(MovingMNISTWindows(digits, 10, 5, 10, seed=4)[4][0], cond)
    assert not torch.equal(dataset[5][0], cond)
    # The frames are the digits of latents(4) rendered on its trajectories, divided by 255.
    ids, paths = dataset.latents(4)
    frames = torch.cat([cond, target])
    torch.testing.assert_close(dataset.frames([digits[i] for i in ids], paths), frames, rtol=0, atol=0)
    row, col = paths[0, 0, :2]
    assert frames[0, 0, row : row + 28, col : col + 28].max() > 0


def test_moving_mnist_is_the_deterministic_variant():
    digits, _, _ = digits_for(None, True, 28)
    dataset = MovingMNISTWindows(digits, 50, 5, 95, seed=0)
    for index in range(50):
        _, paths = dataset.latents(index)
        assert paths.shape == (2, 100, 4) and paths[..., :2].min() >= 0 and paths[..., :2].max() <= 36
        speed = np.abs(paths[..., 2:])
        assert (speed == speed[:, :1]).all() and speed.max() <= 4  # reflections keep |dx|, |dy|


def test_moving_mnist_digits_are_summed_and_clipped():
    dataset = MovingMNISTWindows(np.full((2, 28, 28), 200, dtype=np.uint8), 1, 1, 1, seed=0)
    path = np.array([[[0, 0, 0, 0]], [[0, 0, 0, 0]]])
    overlap = dataset.frames(list(dataset.digits), path)
    assert overlap.shape == (1, 1, 64, 64) and overlap.max() == 1.0  # 400 clipped at 255
    single = dataset.frames(list(dataset.digits[:1]), path[:1])
    assert single.max() == pytest.approx(200 / 255)


def test_make_dataset_mnist_sizes_and_seeds():
    from dynagen.models.pde.experiment import PRESETS, PDEConfig

    config = PDEConfig(**PRESETS["mnist"])
    train, test = make_dataset(config, train=True), make_dataset(config, train=False)
    assert isinstance(train, MovingMNISTWindows) and len(train) == 200_000 and len(test) == 5000
    assert train.generator.seed == config.data_seed and test.generator.seed == config.data_seed + 1
    assert train.generator.deterministic and train.generator.ndigits == 2
    assert test[0][1].shape == (config.nt_pred, 1, 64, 64)


def test_mnist_evaluation_scores_psnr_ssim_and_the_permutation_swap(tmp_path):
    """The §4 disentanglement protocol runs end to end (untrained tiny model, 6 test videos)."""
    from dynagen.models.pde.experiment import EXPERIMENT, PRESETS, PDEConfig
    from dynagen.models.pde.model import build_model

    config = PDEConfig(**{**PRESETS["mnist"], "enc_hidden_size": 8, "dec_hidden_size": 8, "test_horizon": 6})
    state = {"model": build_model(config).state_dict()}
    results = EXPERIMENT.evaluate(config, state, tmp_path, samples=6)
    for key in ("psnr/model", "ssim/model", "psnr/copy_last", "ssim/mean_frame", "swap/mse", "swap/psnr", "swap/ssim"):
        assert np.isfinite(results[key]), key
    assert -1 <= results["swap/ssim"] <= 1 and results["psnr/copy_last"] > 0
    # PSNR of a baseline is the mean of per-frame values, so it is at least the PSNR of its mean MSE.
    assert results["psnr/copy_last"] >= 10 * np.log10(1 / results["mse/copy_last"]) - 1e-6
