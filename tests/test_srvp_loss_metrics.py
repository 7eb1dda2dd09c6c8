"""SRVP objective, schedule and metrics against closed forms (docs/srvp.md §7.9, 7.11-7.13, 7.16, 7.17)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

from dynagen.models.srvp.loss import gaussian_nll, kl_diagonal, make_optimizer, optimizer_step, residual_l2, srvp_loss
from dynagen.models.srvp.metrics import best_of_n, frame_psnr, frame_ssim, frechet_distance, mean_and_interval, ssim_map
from dynagen.models.srvp.model import SRVPOutput


def test_kl_zero_cases_and_nonnegativity():  # docs/srvp.md §7.9
    params = torch.randn(7, 4, 10)
    assert kl_diagonal(params, params).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_diagonal(params, torch.randn(7, 4, 10)).item() > 0
    assert kl_diagonal(params).item() > 0
    unit_raw = math.log(math.expm1(1 - 1e-8))  # softplus(raw) + 1e-8 = 1
    standard = torch.cat([torch.zeros(3, 5), torch.full((3, 5), unit_raw)], -1)
    assert kl_diagonal(standard).item() == pytest.approx(0.0, abs=1e-6)
    # closed form for one dimension: log(sp/sq) + (sq^2 + (mq - mp)^2) / (2 sp^2) - 1/2
    q, p = torch.tensor([[0.5, 0.3]]), torch.tensor([[-0.2, 1.1]])
    sq, sp = F.softplus(torch.tensor(0.3)) + 1e-8, F.softplus(torch.tensor(1.1)) + 1e-8
    expected = torch.log(sp / sq) + (sq**2 + 0.7**2) / (2 * sp**2) - 0.5
    assert kl_diagonal(q, p).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("sigma,constant", [(1.0, 0.9189), (0.2, -0.6905)])
def test_nll_constants(sigma, constant):  # docs/srvp.md §7.11
    x = torch.rand(3, 2, 1, 8, 8)
    assert (gaussian_nll(x, x, sigma) / x.numel()).item() == pytest.approx(constant, abs=1e-4)
    shifted = (gaussian_nll(x, x + 0.1, sigma) / x.numel()).item()
    assert shifted - constant == pytest.approx(0.5 * (0.1 / sigma) ** 2, abs=1e-4)  # weight 1/(2 sigma^2)


def test_residual_norm_is_not_squared():  # docs/srvp.md §7.12
    res = torch.zeros(2, 3, 2)
    res[..., 0], res[..., 1] = 3.0, 4.0
    assert residual_l2(res).item() == pytest.approx(6 * 5.0)


def _output(x, q_y, q_z, p_z, res) -> SRVPOutput:
    return SRVPOutput(x, None, None, None, q_y, q_z, p_z, res)


def test_loss_sums_over_time_and_divides_only_by_batch():  # docs/srvp.md §3, §7.11
    torch.manual_seed(0)
    t, ny, nz = 4, 3, 2
    x, x_hat = torch.rand(t, 1, 1, 8, 8), torch.rand(t, 1, 1, 8, 8)
    q_y, q_z, p_z, res = torch.randn(1, 2 * ny), torch.randn(t - 1, 1, 2 * nz), torch.randn(t - 1, 1, 2 * nz), torch.randn(t - 1, 1, ny)
    one = srvp_loss(x, _output(x_hat, q_y, q_z, p_z, res), 1.0, 1.0, 2.0, 1.0)
    expected = gaussian_nll(x, x_hat, 1.0) + kl_diagonal(q_y) + 2 * kl_diagonal(q_z, p_z) + residual_l2(res)
    assert one["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    # the same sequence three times: every term (divided by B only) is unchanged
    rep = lambda v, dim: torch.cat([v] * 3, dim)  # noqa: E731
    three = srvp_loss(rep(x, 1), _output(rep(x_hat, 1), rep(q_y, 0), rep(q_z, 1), rep(p_z, 1), rep(res, 1)), 1.0, 1.0, 2.0, 1.0)
    for key in one:
        assert three[key].item() == pytest.approx(one[key].item(), rel=1e-5)
    # twice the frames: the NLL doubles (a sum over time, not a mean)
    longer = srvp_loss(rep(x, 0)[: 2 * t], _output(rep(x_hat, 0)[: 2 * t], q_y, q_z[:0], p_z[:0], res[:0]), 1.0)
    assert longer["nll"].item() == pytest.approx(2 * one["nll"].item(), rel=1e-5)


def test_learning_rate_schedule_scaled_down():  # docs/srvp.md §7.13 with 1,000,000 + 100,000 scaled by 1/1000
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer, scheduler = make_optimizer([weight], lr=3e-4, n_decay=100)
    used = {}
    for iteration in range(1, 1101):
        used[iteration] = optimizer.param_groups[0]["lr"]  # the rate this iteration's step applies
        weight.grad = torch.ones(1)
        optimizer_step(optimizer, scheduler, iteration, burnin=1000)
    assert used[1] == used[500] == used[1000] == pytest.approx(3e-4)
    assert used[1050] == pytest.approx(1.5e-4)
    assert used[1001] == pytest.approx(3e-4 * 99 / 100)
    assert optimizer.param_groups[0]["lr"] == 0.0  # after iteration 1,100


def test_psnr_is_a_mean_of_per_frame_per_channel_psnrs():  # docs/srvp.md §7.16
    target = torch.full((2, 1, 3, 16, 16), 0.5)
    pred = target.clone()
    pred[:, :, 0] += 0.1  # MSE 1e-2 -> 20 dB
    pred[:, :, 1] += 0.01  # MSE 1e-4 -> 40 dB
    pred[:, :, 2] += 0.001  # MSE 1e-6 -> 60 dB
    torch.testing.assert_close(frame_psnr(pred, target), torch.full((2, 1), 40.0), atol=1e-3, rtol=0)
    assert frame_psnr(target, target).isinf().all()  # PSNR(x, x) = inf (docs/srvp.md §7.17)


def test_best_of_n_is_monotone_and_n1_is_the_sample():  # docs/srvp.md §7.16
    scores = torch.randn(20, 5, 7)
    previous = None
    for n in range(1, 21):
        best, curve, index = best_of_n(scores[:n])
        torch.testing.assert_close(curve.mean(0), best)
        if previous is not None:
            assert (best >= previous).all()
        previous = best
    torch.testing.assert_close(best_of_n(scores[:1])[0], scores[0].mean(0))
    lowest, _, _ = best_of_n(scores, higher_is_better=False)
    torch.testing.assert_close(lowest, scores.mean(1).min(0).values)


def test_ssim_valid_window_map():  # docs/srvp.md §7.17
    torch.manual_seed(0)
    x = torch.rand(3, 2, 64, 64, dtype=torch.float64)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    ours = ssim_map(x, y)
    assert ours.shape == (3, 2, 54, 54)
    assert ssim_map(x, x).sub(1).abs().max() < 1e-12
    # torchmetrics reflect-pads; its map agrees with ours on the interior (valid) region
    _, theirs = structural_similarity_index_measure(x, y, data_range=1.0, kernel_size=11, sigma=1.5,
                                                    reduction="none", return_full_image=True)
    torch.testing.assert_close(ours, theirs[..., 5:-5, 5:-5])
    frames = frame_ssim(x.float()[None], y.float()[None])
    torch.testing.assert_close(frames, ours.mean((-2, -1)).mean(-1)[None].float(), atol=1e-5, rtol=0)


def test_confidence_interval_and_frechet_distance():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    mean, half = mean_and_interval(values)
    assert mean == 2.5 and half == pytest.approx(1.96 * np.sqrt(1.25) / 2)
    rng = np.random.RandomState(0)
    a = rng.randn(4000, 3)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # two isotropic Gaussians, unit variance, means 2 apart on one axis: distance ||mu||^2 = 4 (+ sampling noise)
    assert frechet_distance(a, rng.randn(4000, 3) + [2.0, 0, 0]) == pytest.approx(4.0, abs=0.25)


def test_baselines_on_a_static_clip_are_exact():
    from dynagen.models.srvp.evaluate import baselines

    frame = torch.randint(0, 256, (1, 3, 1, 16, 16)).float() / 255  # 8-bit data, as every loader yields
    predictions = baselines(frame.expand(5, -1, -1, -1, -1), n_pred=4)
    future = frame.expand(4, -1, -1, -1, -1)
    assert frame_psnr(predictions["copy_last"], future).isinf().all()
    assert frame_psnr(predictions["mean_frame"], future).isinf().all()  # no float32 round-off: inf, not ~160 dB
    expected = 10 * torch.log10(1 / (future**2).mean((-2, -1)).mean(-1))
    torch.testing.assert_close(frame_psnr(predictions["all_black"], future), expected)
