"""WaveEq simulator and loader (docs/pde.md §5.1, §7.11–13). Data here is simulated by the project's own solver."""

import numpy as np
import pytest
import torch

from dynagen.models.pde import wave
from dynagen.models.pde.data import SequenceWindows, make_dataset
from dynagen.models.pde.experiment import PDEConfig


@pytest.fixture(scope="module")
def two_raw_sequences():
    amplitudes, speeds = wave.draw_parameters(2)
    return wave.simulate(speeds, amplitudes), speeds, amplitudes


def test_parameters_follow_the_original_draw_order_and_cfl_range():
    amplitudes, speeds = wave.draw_parameters(300)
    assert amplitudes[0] == pytest.approx(11.86, abs=5e-3) and speeds[0] == pytest.approx(395.07, abs=5e-3)
    assert amplitudes.min() >= 1 and amplitudes.max() <= 30
    cfl = speeds * wave.DT / 1.0
    assert cfl.min() >= 0.3 and cfl.max() <= 0.4


def test_source_disk_has_69_pixels_centred_at_32_32():
    mask = wave.source_mask()
    rows, cols = torch.nonzero(mask, as_tuple=True)
    assert int(mask.sum()) == 69
    assert rows.float().mean() == 32 and cols.float().mean() == 32
    assert rows.min() == 28 and rows.max() == 36 and cols.min() == 28 and cols.max() == 36


def test_border_frozen_first_frame_zero_and_amplitude(two_raw_sequences):
    raw, _, _ = two_raw_sequences
    assert raw.shape == (2, 300, 64, 64)
    assert torch.count_nonzero(raw[:, 0]) == 0
    ring = torch.ones(64, 64, dtype=torch.bool)
    ring[2:-2, 2:-2] = False
    assert torch.count_nonzero(raw[:, :, ring]) == 0  # exactly 0, not just small
    assert torch.count_nonzero(raw[:, -1, 2:-2, 2:-2]) > 3000  # the wave fills the interior
    assert 1e-4 < raw.abs().max() < 1e-2  # raw amplitudes are about ±1e-3


def test_normalisation_is_invariant_to_f0_and_puts_frame0_at_046(two_raw_sequences):
    raw, speeds, _ = two_raw_sequences
    other_amplitude = wave.simulate(speeds[:1], [27.0])
    a, b = wave.normalise(raw[:1]), wave.normalise(other_amplitude)
    assert (a - b).abs().max() < 1e-4  # float32; exact in float64 up to 4e-15
    assert a.min() == 0 and a.max() == 1
    frame0 = a[0, 0]
    assert frame0.max() - frame0.min() == 0 and frame0[0, 0] == pytest.approx(0.46, abs=0.02)


def test_rk4_is_the_three_eighths_rule_one_step_factor():
    """y' = λy: one step multiplies by the 4th-order Taylor polynomial of exp(z), z = λ dt."""
    lam, dt = -3.0, 0.1

    class Linear(torch.nn.Module):
        def forward(self, t, y):
            return lam * y

    from torchdiffeq import odeint

    y = odeint(Linear(), torch.ones(1, dtype=torch.float64), torch.tensor([0.0, dt], dtype=torch.float64), method="rk4")
    z = lam * dt
    assert y[1].item() == pytest.approx(1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24, rel=1e-14)
    assert abs(y[1].item() - np.exp(z)) > 1e-6  # and not the exact exponential


def test_halving_dt_converges_at_fourth_order():
    """On the wave system itself: successive differences shrink by 2⁴ = 16 when dt halves."""
    amplitudes, speeds = wave.draw_parameters(1)
    t_end, dts = 0.02, [1e-3, 5e-4, 2.5e-4]
    finals = [
        wave.simulate(speeds, amplitudes, n_frames=round(t_end / dt) + 1, dt=dt, dtype=torch.float64)[0, -1] for dt in dts
    ]
    ratio = (finals[0] - finals[1]).abs().max() / (finals[1] - finals[2]).abs().max()
    assert 12 < ratio < 20


def test_preprocess_downsamples_and_pools(two_raw_sequences):
    raw, _, _ = two_raw_sequences
    frames = wave.preprocess(raw)
    assert frames.shape == (2, 150, 1, 64, 64)
    pooled = wave.preprocess(raw, resolution=32)
    assert pooled.shape == (2, 150, 1, 32, 32)
    assert torch.allclose(pooled[:, :, 0, 0, 0], frames[:, :, 0, :2, :2].mean((-2, -1)))


def test_wave_points_match_the_original_sampling():
    rand_w, rand_h = wave.point_indices()
    pairs = set(zip(rand_w.tolist(), rand_h.tolist()))
    in_ring = [(r < 2 or r > 61 or c < 2 or c > 61) for r, c in zip(rand_w, rand_h)]
    assert len(pairs) == 99 and sum(in_ring) == 14


def test_window_counts_fixed_and_original():
    """Fixed: 240·126 train / 60·106 test windows; original bug: 9600 from 77 files, 1200 from 12."""
    ids = lambda n: torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1, 1).expand(n, 150, 1, 1, 1)
    assert len(SequenceWindows(ids(240), 5, 20)) == 30_240
    assert len(SequenceWindows(ids(60), 5, 40)) == 6_360
    for n, horizon, count, files in ((240, 20, 9_600, 77), (60, 40, 1_200, 12)):
        windows = SequenceWindows(ids(n), 5, horizon, original_indexing=True)
        assert len(windows) == count
        seen = {int(windows[i][0][0, 0, 0, 0]) for i in range(len(windows))}
        assert seen == set(range(files))
    cond, target = SequenceWindows(ids(3), 5, 20)[126 + 7]  # sequence 1, start 7
    assert cond.shape == (5, 1, 1, 1) and target.shape == (20, 1, 1, 1) and cond[0].item() == 1


def test_loader_split_shapes_and_range():
    config = PDEConfig(n_sequences=10)
    train, test = make_dataset(config, train=True), make_dataset(config, train=False, horizon=40)
    assert len(train) == 8 * 126 and len(test) == 2 * 106
    cond, target = train[0]
    assert cond.shape == (5, 1, 64, 64) and target.shape == (20, 1, 64, 64)
    assert test[0][1].shape == (40, 1, 64, 64)
    assert 0 <= cond.min() and target.max() <= 1
    points = make_dataset(PDEConfig(n_sequences=10, dataset="wave_partial"), train=True)
    assert points[0][0].shape == (5, 1, 100) and points[0][1].shape == (20, 1, 100)
