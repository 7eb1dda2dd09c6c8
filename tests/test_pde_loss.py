"""The §3 objective (docs/pde.md §7.3, 7.8–7.10) on real model outputs and on constructed ones."""

import numpy as np
import pytest
import torch

from dynagen.models.pde.experiment import PRESETS, PDEConfig
from dynagen.models.pde.loss import content_invariance, draw_ae_time, separable_losses, t_regulariser
from dynagen.models.pde.model import Forecast, TrainingOutputs, build_model


def test_ae_time_support_and_one_draw_per_batch():
    rng = np.random.default_rng(0)
    tau_offset = {draw_ae_time(rng, 5, 20, offset=5) for _ in range(3000)}
    zero_offset = {draw_ae_time(rng, 4, 6, offset=0) for _ in range(3000)}
    assert tau_offset == set(range(5, 26))  # τ … L inclusive: AE targets x_0 … x_K
    assert zero_offset == set(range(4, 10))  # τ … L−1: the frame right after the window
    assert isinstance(draw_ae_time(rng, 5, 20, 5), int)


def test_t_regulariser_is_half_the_squared_norm_or_element_mean():
    torch.manual_seed(0)
    y0 = torch.randn(20_000, 32)
    assert t_regulariser(y0, element_mean=False).item() == pytest.approx(16.0, rel=0.02)
    maps = torch.randn(64, 64, 16, 16)
    assert t_regulariser(maps, element_mean=True).item() == pytest.approx(0.5, rel=0.02)


def test_content_invariance_is_zero_for_repeated_frames_and_includes_skips():
    config = PDEConfig(**{**PRESETS["mnist"], "enc_hidden_size": 8, "dec_hidden_size": 8, "skipco": True})
    model = build_model(config).eval()
    cond = torch.rand(3, 5, 1, 64, 64)
    window = torch.cat([cond, torch.rand(3, 5, 1, 64, 64), cond], 1)  # L = 15: last τ frames = first τ
    with torch.no_grad():
        out = model(window, ae_time=7)
        assert content_invariance(out.s_old, out.s_new).item() == 0
        other = model.Es(torch.rand(3, 5, 1, 64, 64))
    (code_a, skips_a), (code_b, skips_b) = out.s_old, other
    flat = lambda code, skips: torch.cat([code.flatten(1)] + [s.flatten(1) for s in skips], 1)
    expected = (flat(code_a, skips_a) - flat(code_b, skips_b)).pow(2).mean()
    torch.testing.assert_close(content_invariance(out.s_old, other), expected)
    assert content_invariance(out.s_old, other) != (code_a - code_b).pow(2).mean()  # feature maps count


def constructed_outputs(window: torch.Tensor, forecasts: torch.Tensor, reconstruction: torch.Tensor) -> TrainingOutputs:
    s = torch.zeros(window.shape[0], 4)
    return TrainingOutputs(Forecast(forecasts, torch.zeros(window.shape[0], forecasts.shape[1], 4), s), s, s, reconstruction)


@pytest.mark.parametrize("offset", [5, 0])
def test_prediction_and_ae_targets_are_aligned(offset):
    """offset τ: forecasts[:, k] ↔ x_k and AE target x_{t′−τ}; offset 0: x_{τ+k} and x_{t′}."""
    tau, window = 5, torch.rand(2, 25, 1, 8, 8)
    ae_time = 9
    first = 0 if offset == tau else tau
    aligned = constructed_outputs(window, window[:, first:], window[:, ae_time - offset])
    losses = separable_losses(aligned, window, ae_time, tau, offset, element_mean_t=False)
    assert losses["pred"].item() == 0 and losses["ae"].item() == 0 and losses["t"].item() == 0
    shifted = constructed_outputs(window, window[:, first:].roll(1, 1), window[:, ae_time - offset + 1])
    losses = separable_losses(shifted, window, ae_time, tau, offset, element_mean_t=False)
    assert losses["pred"].item() > 0 and losses["ae"].item() > 0


def test_training_window_rollout_covers_the_whole_window():
    config = PDEConfig(resolution=32, enc_hidden_size=16, dec_hidden_size=16, res_hidden_size=8, code_size_s=4, code_size_t=4)
    model = build_model(config)
    window = torch.rand(2, 25, 1, 32, 32)
    out = model(window, ae_time=25)  # t′ = L is allowed with offset τ
    assert out.forecast.forecasts.shape == window.shape  # reconstruct τ frames + forecast K
    losses = separable_losses(out, window, 25, 5, 5, element_mean_t=False)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
