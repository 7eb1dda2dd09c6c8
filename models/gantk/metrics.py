"""Distances between the particles and the targets (docs/gantk.md §5), on flattened [n, d] copies.

* ``sinkhorn``: debiased Sinkhorn divergence, geomloss ``SamplesLoss("sinkhorn", p=2, blur=0.001,
  scaling=0.95)`` (cost ½‖x−y‖², ≈ ½W₂² at this blur) — the paper's reported metric (`s` column);
* ``energy``: energy distance E‖x−y‖ − ½E‖x−x'‖ − ½E‖y−y'‖ (geomloss ``"energy"``);
* ``mmd2``: the squared MMD (V-statistic) under the discriminator's analytic kernel, the quantity an
  infinite IPM discriminator descends (docs/gantk.md §8.4–8.5).
geomloss runs on torch copies at log steps only: float32 for Sinkhorn (as the original; hundreds of
log-sum-exp iterations at this blur), float64 for the cheap closed-form energy distance.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _torch(points, dtype=np.float64) -> "torch.Tensor":  # noqa: F821
    import torch

    array = np.asarray(points, dtype=dtype)
    return torch.from_numpy(array.reshape(len(array), -1).copy())


def sinkhorn(x, y, blur: float = 1e-3) -> float:
    from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.95, backend="tensorized")
    return float(loss(_torch(x, np.float32), _torch(y, np.float32)))


def energy(x, y) -> float:
    from geomloss import SamplesLoss

    return float(SamplesLoss("energy", backend="tensorized")(_torch(x), _torch(y)))


def mmd2(kernel: Callable, x, y) -> float:
    """MMD²_k(α̂, β̂) = mean k(X, X) + mean k(Y, Y) − 2·mean k(X, Y)."""
    return float(kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean())
