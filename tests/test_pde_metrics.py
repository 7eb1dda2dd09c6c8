"""Metrics (docs/pde.md §4, §7.14) against independent computations, and the PDE Moving MNIST data set (§5.2).

The generator itself (trajectories, rendering) is tested in tests/test_moving_mnist.py. Moving MNIST here uses
scikit-learn's bundled 8 × 8 digits, upscaled (a stand-in, not MNIST; no download)."""

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from dynagen.models.pde import metrics
from dynagen.models.moving_mnist import digits_for
from dynagen.models.pde.data import MovingMNISTWindows, make_dataset, render_frames


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
    dataset.set_epoch(1)  # the training loop's next epoch: new sequences (docs/pde.md §5.2: generated at every access)
    assert not torch.equal(dataset[4][0], cond)
    dataset.set_epoch(0)
    # The frames are the digits of latents(4) rendered on its trajectories, divided by 255.
    ids, paths = dataset.latents(4)
    frames = torch.cat([cond, target])
    torch.testing.assert_close(render_frames([digits[i] for i in ids], paths), frames, rtol=0, atol=0)
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
    digits, path = np.full((2, 28, 28), 200, dtype=np.uint8), np.zeros((2, 1, 4), dtype=np.int64)
    overlap = render_frames(list(digits), path)
    assert overlap.shape == (1, 1, 64, 64) and overlap.max() == 1.0  # 400 clipped at 255
    assert render_frames(list(digits[:1]), path[:1]).max() == pytest.approx(200 / 255)


def test_make_dataset_mnist_train_is_generated_on_the_fly():
    from dynagen.models.pde.experiment import PRESETS, PDEConfig

    config = PDEConfig(**PRESETS["mnist"])
    train = make_dataset(config, train=True)
    assert isinstance(train, MovingMNISTWindows) and len(train) == 200_000 and train.generator.seed == config.data_seed
    assert train.generator.deterministic and train.generator.ndigits == 2


def stacked_windows(dataset) -> torch.Tensor:
    """All windows of a test set, cond and target joined: (N, L, 1, 64, 64)."""
    return torch.stack([torch.cat(dataset[i]) for i in range(len(dataset))])


def test_mnist_test_set_is_the_fixed_section_5_2_file(tmp_path):
    """The PDE test set equals, frame for frame, the docs/pde.md §5.2 file written by the shared builder and read back,
    whether the file is in data_dir or the set is built in memory (stand-in digits; windows = first 5 + 10 frames)."""
    from dynagen.models.moving_mnist import make_test_set, save_npz_atomically
    from dynagen.models.pde.data import MNIST_TEST_FILE
    from dynagen.models.pde.experiment import PRESETS, PDEConfig

    digits, labels, _ = digits_for(None, False, 28)
    path = save_npz_atomically(tmp_path / MNIST_TEST_FILE, make_test_set(digits, labels, 64, 100, 4, True, 2, seed=42))
    assert path.name == "mmnist_test_2digits_64.npz"
    with np.load(path) as arrays:
        sequences, latents = arrays["sequences"], arrays["latents"]
    assert sequences.shape == (100, len(digits) // 2, 64, 64)
    expected = torch.from_numpy(sequences[:15]).float().div(255).transpose(0, 1)[:, :, None]

    config = PDEConfig(**PRESETS["mnist"])
    in_memory = make_dataset(config, train=False, horizon=10)
    from_file = make_dataset(config.model_copy(update={"data_dir": str(tmp_path)}), train=False, horizon=10)
    assert "NOT MNIST" in in_memory.source and str(path) in from_file.source
    for test in (in_memory, from_file):
        assert len(test) == len(digits) // 2
        assert torch.equal(stacked_windows(test), expected)
        assert np.array_equal(test.latents(7), latents[:15, 7].transpose(1, 0, 2))

    with pytest.raises(ValueError, match="test_horizon"):
        make_dataset(config, train=False, horizon=96)  # 5 + 96 > the 100 frames of the test sequences


def test_mnist_test_file_gives_the_swap_digits_in_source_order(tmp_path):
    """The file stores the digits permuted by RandomState(42); the swap test undoes that (as the original's
    SwapDataset indexes the MNIST test set itself)."""
    from dynagen.models.moving_mnist import make_test_set, save_npz_atomically
    from dynagen.models.pde.data import MNIST_TEST_FILE, mnist_test_set
    from dynagen.models.pde.experiment import PRESETS, PDEConfig

    digits, labels, _ = digits_for(None, False, 28)
    pool = digits[:20]
    save_npz_atomically(tmp_path / MNIST_TEST_FILE, make_test_set(pool, labels[:20], 64, 100, 4, True, 2, seed=42))
    test = mnist_test_set(PDEConfig(**{**PRESETS["mnist"], "data_dir": str(tmp_path)}), 10)
    assert len(test) == 10 and np.array_equal(test.swap_digits, pool)


def direct_render(images, trajectories) -> np.ndarray:
    """Digits summed at their (row, col) positions, clipped at 255, /255: (L, 64, 64)."""
    canvas = np.zeros((len(trajectories[0]), 64, 64))
    for image, path in zip(images, trajectories):
        for t, (row, col, _, _) in enumerate(path):
            canvas[t, row : row + 28, col : col + 28] += image
    return np.minimum(canvas, 255) / 255


def test_mnist_swap_targets_are_new_digits_on_the_own_trajectory():
    """docs/pde.md §4: content from new digits on trajectory N−1−i; targets = the same digits on trajectory i, both assignments."""
    from dynagen.models.moving_mnist import make_test_set
    from dynagen.models.pde.evaluate import swap_batch
    from dynagen.models.pde.experiment import PRESETS, PDEConfig

    config = PDEConfig(**PRESETS["mnist"])
    test = make_dataset(config, train=False, horizon=10)
    digits, labels, _ = digits_for(None, False, 28)
    latents = make_test_set(digits, labels, 64, 15, 4, True, 2, seed=42)["latents"]  # (15, N, 2, 4)
    n, i = len(test), 3
    order = np.random.RandomState(1).permutation(len(digits))  # the original's seed-1 permutation of the test digits
    new = [digits[order[i]], digits[order[i + n]]]
    sources, (first, second) = swap_batch(test, [i], np.random.default_rng(0))
    own, other = latents[:, i].transpose(1, 0, 2), latents[:, n - 1 - i].transpose(1, 0, 2)
    np.testing.assert_allclose(sources[0, :, 0].numpy(), direct_render(new, other)[:5], atol=1e-7)
    np.testing.assert_allclose(first[0, :, 0].numpy(), direct_render(new, own)[5:], atol=1e-7)
    np.testing.assert_allclose(second[0, :, 0].numpy(), direct_render(new[::-1], own)[5:], atol=1e-7)
    assert not torch.equal(first[0], test[i][1])  # new digits, same motion: not the test video itself


def test_mnist_evaluation_scores_psnr_ssim_and_the_permutation_swap(tmp_path):
    """The docs/pde.md §4 disentanglement protocol runs end to end (untrained tiny model, 6 test videos)."""
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
