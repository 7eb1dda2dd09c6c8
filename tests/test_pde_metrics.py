"""Metrics (spec §4, §7.14) against independent computations, and the Moving MNIST generator (§5.2).

Moving MNIST here uses scikit-learn's bundled 8 × 8 digits, upscaled (no download)."""

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from dynagen.models.pde import metrics
from dynagen.models.pde.data import MovingMNIST, bounce, bouncing_trajectory, mnist_digits, render


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


def test_bouncing_trajectories_stay_on_the_canvas_and_reflect():
    rng = np.random.default_rng(0)
    for _ in range(50):
        trajectory = bouncing_trajectory(rng, 100)
        assert trajectory.min() >= 0 and trajectory.max() <= 36
        assert np.abs(np.diff(trajectory, axis=0)).max() <= 4
    # (0, 34) moving (−3, +4): overshoots to (−3, 38), reflected to (3, 34), then moves (+3, −4).
    path = bounce(np.array([[0, 34]]), np.array([[-3, 4]]), 3)
    assert path[:, 0].tolist() == [[0, 34], [3, 34], [6, 30]]


def test_moving_mnist_frames_are_deterministic_in_range_and_sum_digits():
    digits = mnist_digits(None, train=True)
    assert digits.shape[1:] == (28, 28) and digits.dtype == np.uint8
    dataset = MovingMNIST(digits, 10, 5, 10, seed=3)
    cond, target = dataset[4]
    assert cond.shape == (5, 1, 64, 64) and target.shape == (10, 1, 64, 64)
    assert torch.equal(dataset[4][0], cond) and 0 <= cond.min() and cond.max() <= 1
    full = np.full((2, 28, 28), 200, dtype=np.uint8)
    overlap = render(full, np.zeros((1, 2, 2), dtype=int))
    assert overlap.max() == 1.0  # 400 clipped at 255


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
