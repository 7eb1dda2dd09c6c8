"""The WaveEq simulator (docs/pde.md §5.1), vectorised over sequences.

    w_tt = c² Δ_h w + s(t) 1_D(p),   s(t) = f0 exp(-20 t),   w = w_t = 0 at t = 0,

on a 64 × 64 grid (dx = 1), written as the first-order system (w, w_t)' = (w_t, c² Δ_h w + s 1_D) and
integrated with torchdiffeq's fixed-grid ``rk4`` solver, which is the RK4 "3/8 rule" the original
generator used, with one solver step per output frame (dt = 1e-3, 300 frames at t = 0 … 0.299).

Δ_h is the 4th-order 5-point stencil (-1/12, 4/3, -5/2, 4/3, -1/12) / dx². Along the column axis it
is computed for columns 2..61 of every row, along the row axis for rows 2..61 of every column, and is
zero elsewhere; the outer 2-pixel ring therefore only ever sees its own (zero) values and stays exactly
0, a homogeneous Dirichlet border. The source acts on the acceleration inside the disk
D = {(col-32)² + (row-32)² < 25} (69 pixels). Per sequence, f0 ~ U(1, 30) then c ~ U(300, 400) are
drawn from ``numpy.random.RandomState(seed)`` in that order, so seed 42 reproduces the original data
(first sequence: f0 = 11.86, c = 395.07). The CFL number c·dt/dx is 0.3–0.4.

Preprocessing as in the loader: per-sequence min-max over all 300 frames to [0, 1] (which makes the
data independent of f0, since w is linear in f0), temporal downsampling by 2 (150 frames, Δt = 0.002)
and, for the small CPU version (docs/pde.md §8), 2 × 2 average pooling to 32 × 32. WaveEq-100 (§5.1) keeps 100
fixed pixels of the 64 × 64 field, drawn with ``RandomState(42)``.

Run ``python -m dynagen.models.pde.wave OUT_DIR`` to write sequences in the original file format
(``homogenous_wave{i}.pt`` holding ``{'simul': (300, 64, 64), 'c': float}``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchdiffeq import odeint

from dynagen.models.artifacts import save_torch

GRID = 64
BORDER = 2
STENCIL = (-1 / 12, 4 / 3, -5 / 2, 4 / 3, -1 / 12)
SOURCE_CENTRE, SOURCE_RADIUS = 32, 5
SOURCE_DECAY = 20.0
AMPLITUDE_RANGE = (1.0, 30.0)
SPEED_RANGE = (300.0, 400.0)
DT = 1e-3
N_FRAMES = 300
DOWNSAMPLE = 2
N_POINTS = 100


def laplacian(w: torch.Tensor, dx: float = 1.0) -> torch.Tensor:
    """Δ_h w for w of shape (..., 64, 64), zero on the columns/rows the stencil does not reach."""
    n = w.shape[-1]
    lap = torch.zeros_like(w)
    interior = n - 2 * BORDER
    for offset, coefficient in enumerate(STENCIL):
        lap[..., :, BORDER:-BORDER] += coefficient * w[..., :, offset : offset + interior]
        lap[..., BORDER:-BORDER, :] += coefficient * w[..., offset : offset + interior, :]
    return lap / dx**2


def source_mask(n: int = GRID) -> torch.Tensor:
    """1_D: the disk of radius 5 around pixel (32, 32), 69 pixels (hard-coded for 64², as the original)."""
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return ((cols - SOURCE_CENTRE) ** 2 + (rows - SOURCE_CENTRE) ** 2 < SOURCE_RADIUS**2).float()


class WaveSystem(nn.Module):
    """The right-hand side (w, w_t)' = (w_t, c² Δ_h w + f0 e^{-20t} 1_D) for a batch of sequences."""

    def __init__(self, speed: torch.Tensor, amplitude: torch.Tensor, dx: float = 1.0):
        super().__init__()
        self.register_buffer("speed_sq", (speed**2).view(-1, 1, 1))
        self.register_buffer("amplitude", amplitude.view(-1, 1, 1))
        self.register_buffer("mask", source_mask().to(speed.dtype))
        self.dx = dx

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        w, w_t = state.unbind(1)
        source = self.amplitude * torch.exp(-SOURCE_DECAY * t) * self.mask
        return torch.stack([w_t, self.speed_sq * laplacian(w, self.dx) + source], dim=1)


def draw_parameters(n_sequences: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(f0, c) per sequence, drawn in the original's order: f0 then c for each sequence."""
    rng = np.random.RandomState(seed)
    draws = np.array([(rng.uniform(*AMPLITUDE_RANGE), rng.uniform(*SPEED_RANGE)) for _ in range(n_sequences)])
    return draws[:, 0], draws[:, 1]


def simulate(speed, amplitude, n_frames: int = N_FRAMES, dt: float = DT, dtype=torch.float32) -> torch.Tensor:
    """Raw fields w, shape (B, n_frames, 64, 64), one RK4-3/8 step per frame from w = w_t = 0."""
    speed = torch.as_tensor(speed, dtype=dtype)
    amplitude = torch.as_tensor(amplitude, dtype=dtype)
    system = WaveSystem(speed, amplitude)
    state0 = torch.zeros(speed.shape[0], 2, GRID, GRID, dtype=dtype)
    times = torch.arange(n_frames, dtype=dtype) * dt
    with torch.no_grad():
        trajectory = odeint(system, state0, times, method="rk4")  # (T, B, 2, H, W)
    return trajectory[:, :, 0].transpose(0, 1).contiguous()


def normalise(raw: torch.Tensor) -> torch.Tensor:
    """Per-sequence min-max over all frames and pixels, to [0, 1] (raw: (B, T, ...))."""
    flat = raw.flatten(1)
    low = flat.min(1).values.view(-1, *[1] * (raw.dim() - 1))
    high = flat.max(1).values.view(-1, *[1] * (raw.dim() - 1))
    return (raw - low) / (high - low)


def preprocess(raw: torch.Tensor, downsample: int = DOWNSAMPLE, resolution: int = GRID) -> torch.Tensor:
    """Loader preprocessing: normalise, keep every ``downsample``-th frame, average-pool to ``resolution``."""
    frames = normalise(raw)[:, ::downsample]
    if resolution != GRID:
        frames = torch.nn.functional.avg_pool2d(frames, GRID // resolution)
    return frames.unsqueeze(2)  # (B, T, 1, H, W)


def point_indices(seed: int = 42, n_points: int = N_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """WaveEq-100 pixels: rand_w then rand_h = randint(64, size=100) from RandomState(seed)."""
    rng = np.random.RandomState(seed)
    rand_w = rng.randint(GRID, size=N_POINTS)
    rand_h = rng.randint(GRID, size=N_POINTS)
    return rand_w[:n_points], rand_h[:n_points]


def to_points(frames: torch.Tensor, n_points: int = N_POINTS) -> torch.Tensor:
    """(B, T, C, 64, 64) -> (B, T, C, n_points), indexed as x[..., rand_w, rand_h] like the original."""
    rand_w, rand_h = point_indices(n_points=n_points)
    return frames[..., torch.as_tensor(rand_w), torch.as_tensor(rand_h)]


def generate_dataset(
    n_sequences: int, seed: int = 42, resolution: int = GRID, chunk: int = 50, dtype=torch.float32
) -> tuple[torch.Tensor, np.ndarray]:
    """Simulated, preprocessed sequences (n, 150, 1, resolution, resolution) and their wave speeds."""
    amplitudes, speeds = draw_parameters(n_sequences, seed)
    parts = [
        preprocess(simulate(speeds[i : i + chunk], amplitudes[i : i + chunk], dtype=dtype), resolution=resolution)
        for i in range(0, n_sequences, chunk)
    ]
    return torch.cat(parts).float(), speeds


def write_original_format(out_dir: str | Path, n_sequences: int = 300, seed: int = 42) -> None:
    """Write ``homogenous_wave{i}.pt`` = {'simul': raw (300, 64, 64), 'c': speed}, atomically, like gen_wave.py."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    amplitudes, speeds = draw_parameters(n_sequences, seed)
    for i in range(n_sequences):
        raw = simulate(speeds[i : i + 1], amplitudes[i : i + 1])[0]
        save_torch(out_dir / f"homogenous_wave{i}.pt", {"simul": raw, "c": float(speeds[i])})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Simulate WaveEq sequences (docs/pde.md §5.1) in the original file format.")
    parser.add_argument("out_dir")
    parser.add_argument("--sequences", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    write_original_format(args.out_dir, args.sequences, args.seed)
    print(f"wrote {args.sequences} simulated wave sequences to {args.out_dir}")
