"""Data: y = sin(x) + noise on x ~ U(-3, 3), generated from a seed (no files)."""

from __future__ import annotations

import torch

NOISE = 0.05


def make_dataset(size: int, seed: int, noise: float = NOISE) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = 6 * torch.rand(size, 1, generator=generator) - 3
    return torch.utils.data.TensorDataset(x, torch.sin(x) + noise * torch.randn(size, 1, generator=generator))
