"""SST evaluation in temperature space (docs/pde.md §4 "SST", §5.5) on small ``data_{zone}.nc`` files written here.

The files hold a synthetic field (not downloaded data). Only the test zones 17–20 are written: the test set
reads nothing else. Every expected number is recomputed from ``thetao`` with numpy."""

import h5py
import numpy as np
import pytest
import torch

from dynagen.models.pde.data import SST
from dynagen.models.pde.evaluate import temperature_scores
from dynagen.models.pde.experiment import EXPERIMENT, PRESETS, PDEConfig
from dynagen.models.pde.model import build_model
from tests.test_pde_metrics import reference_ssim

DAYS, ZONES, TAU, HORIZON = 70, range(17, 21), 4, 10  # 14 test days: one window per zone
FIRST_TEST_DAY = int(0.8 * DAYS)  # docs/pde.md §5.5: the last 20 % of the days are the test split
WINDOWS_PER_ZONE = DAYS - FIRST_TEST_DAY - (TAU + HORIZON) + 1


@pytest.fixture(scope="module")
def sst_files(tmp_path_factory):
    """thetao, daily_mean, daily_std per zone; zone 18 has a per-pixel climatology (days, 64, 64)."""
    directory = tmp_path_factory.mktemp("sst")
    rng = np.random.default_rng(0)
    rows, cols = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    fields = {}
    for zone in ZONES:
        day = np.arange(DAYS)[:, None, None]
        theta = 15 + 0.05 * day + (1 + 0.1 * (day % 7)) * np.sin(rows / 5 + 0.3 * day + zone) * np.cos(cols / 7)
        theta = (theta + 0.2 * rng.standard_normal(theta.shape)).astype(np.float32)
        mean = 15 + 0.05 * np.arange(DAYS)
        std = 1.5 + 0.1 * np.cos(np.arange(DAYS))
        if zone == 18:
            mean, std = mean[:, None, None] + 0.01 * rows, std[:, None, None] + 0.001 * cols
        with h5py.File(directory / f"data_{zone}.nc", "w") as f:
            f["thetao"], f["daily_mean"], f["daily_std"] = theta, mean, std
        per_day = lambda a: np.broadcast_to(a.reshape(DAYS, 1, 1) if a.ndim == 1 else a, (DAYS, 64, 64))  # noqa: E731
        fields[zone] = (theta.astype(np.float64), per_day(mean), per_day(std))
    return directory, fields


def window(j: int) -> tuple[int, int]:
    """(zone, first day) of test window j: zones 17–20 in order, days from the first test day on."""
    return ZONES[j // WINDOWS_PER_ZONE], FIRST_TEST_DAY + j % WINDOWS_PER_ZONE


def standardised(theta, mean, std):
    """docs/pde.md §5.5 in numpy: climatology, then per-frame spatial standardisation (population std)."""
    x = (theta - mean) / std
    return (x - x.mean((-2, -1), keepdims=True)) / x.std((-2, -1), keepdims=True)


def test_denormalised_targets_are_thetao_and_a_perfect_forecast_scores_mse_0_ssim_1(sst_files):
    directory, fields = sst_files
    test = SST(str(directory), False, TAU, HORIZON)
    assert len(test) == len(ZONES) * WINDOWS_PER_ZONE
    indices = list(range(len(test)))
    targets = torch.stack([test[j][1] for j in indices])
    temperature = test.to_temperature(indices, targets)
    for j in indices:
        zone, start = window(j)
        expected = fields[zone][0][start + TAU : start + TAU + HORIZON]
        np.testing.assert_allclose(temperature[j, :, 0].numpy(), expected, rtol=0, atol=2e-5)  # float32 storage
    scores = temperature_scores(test, indices, targets, targets)
    assert torch.equal(scores["mse_temperature"], torch.zeros(len(test), HORIZON, dtype=torch.float64))
    for name in ("ssim_temperature", "ssim_temperature_clean"):
        torch.testing.assert_close(scores[name], torch.ones_like(scores[name]), rtol=0, atol=1e-10)
    shifted = temperature_scores(test, indices[:2], targets[:2] + 0.1, targets[:2])
    assert (shifted["mse_temperature"] > 0).all() and (shifted["ssim_temperature_clean"] < 1).all()


def test_evaluate_reports_temperature_metrics_and_copy_last_matches_numpy(sst_files, tmp_path):
    """The evaluate path on an (untrained) SST model; copy-last recomputed from thetao alone. The metric does
    not depend on the networks, so the SST preset gets small DCGAN ones instead of its fixed (slow) encoderSST."""
    directory, fields = sst_files
    small = dict(encoder="dcgan", decoder="dcgan", enc_hidden_size=8, dec_hidden_size=8, code_size_s=8, code_size_t=8,
                 n_blocks=1)
    config = PDEConfig(**{**PRESETS["sst"], **small, "data_dir": str(directory)})
    assert config.test_horizon == HORIZON  # docs/pde.md §4: SST is tested on 10 days whatever the training horizon
    results = EXPERIMENT.evaluate(config, {"model": build_model(config).state_dict()}, tmp_path, device="cpu")
    for score in ("mse_temperature", "ssim_temperature", "ssim_temperature_clean"):
        for method in ("model", "copy_last", "mean_frame"):
            for span in ("1-10", "1-6"):
                assert np.isfinite(results[f"{score}/{method}/{span}"]), (score, method, span)

    # The spec's protocol in numpy: standardise the last input day, de-normalise it with each target day's own
    # spatial statistics and climatology, compare with thetao. SSIM after the original's scaling by the zone's
    # min/max of the *normalised* array (all days), and after the clean scaling by the zone's thetao range.
    mse, ssim, clean = (np.zeros(HORIZON) for _ in range(3))
    n_windows = len(ZONES) * WINDOWS_PER_ZONE
    for j in range(n_windows):
        zone, start = window(j)
        theta, mean, std = fields[zone]
        normalised = standardised(theta, mean, std)
        for k in range(HORIZON):
            day = start + TAU + k
            x = (theta[day] - mean[day]) / std[day]
            prediction = (normalised[start + TAU - 1] * x.std() + x.mean()) * std[day] + mean[day]
            mse[k] += np.mean((prediction - theta[day]) ** 2) / n_windows
            low, high = normalised.min(), normalised.max()
            ssim[k] += reference_ssim((prediction - low) / (high - low), (theta[day] - low) / (high - low)) / n_windows
            low, high = theta.min(), theta.max()
            clean[k] += reference_ssim((prediction - low) / (high - low), (theta[day] - low) / (high - low)) / n_windows
    for span in (10, 6):
        assert results[f"mse_temperature/copy_last/1-{span}"] == pytest.approx(mse[:span].mean(), rel=1e-5)
        assert results[f"ssim_temperature/copy_last/1-{span}"] == pytest.approx(ssim[:span].mean(), abs=1e-5)
        assert results[f"ssim_temperature_clean/copy_last/1-{span}"] == pytest.approx(clean[:span].mean(), abs=1e-5)
    assert abs(results["ssim_temperature/copy_last/1-10"] - results["ssim_temperature_clean/copy_last/1-10"]) > 1e-3
