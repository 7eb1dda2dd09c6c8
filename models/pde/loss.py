"""The training objective (docs/pde.md §3), written for ``SeparableNetwork.forward``'s outputs.

    L = λ_AE·L_AE + λ_S·L_S + λ_pred·L_pred + λ_T·L_T

with X = x_0 … x_{L−1} (L = τ + K) and offset ∈ {τ, 0}:
- L_AE   = mean (X[t′ − offset] − D(S_old, E_T(X[t′−τ : t′])))², one t′ per batch (docs/pde.md §3.3, §7.9)
- L_S    = mean (S_old − S_new)², S_old = E_S(X[0:τ]), S_new = E_S(X[L−τ:L]); with skip connections
           both sides are the flattened [code, skip_1, …] and the mean runs over every element (docs/pde.md §3.4)
- L_pred = mean (x̂ − X[a:])², a = 0 when offset = τ (the τ conditioning frames are reconstructed), τ when 0
- L_T    = ½ mean_b ‖y_0‖² (½ · element mean for SST's feature maps) (docs/pde.md §3.6, §7.10)
"""

from __future__ import annotations

import numpy as np
import torch

from dynagen.models.pde.model import TrainingOutputs, split_content


def draw_ae_time(rng: np.random.Generator, nt_cond: int, nt_pred: int, offset: int) -> int:
    """t′ ~ U{τ … L} (inclusive) when offset = τ, U{τ … L−1} when offset = 0 — one draw per batch."""
    length = nt_cond + nt_pred
    high = length if offset == nt_cond else length - 1
    return int(rng.integers(nt_cond, high + 1))


def flat_content(s) -> torch.Tensor:
    code, skips = split_content(s)
    return torch.cat([t.flatten(1) for t in [code, *(skips or [])]], 1)


def content_invariance(s_old, s_new) -> torch.Tensor:
    return (flat_content(s_old) - flat_content(s_new)).pow(2).mean()


def t_regulariser(y0: torch.Tensor, element_mean: bool) -> torch.Tensor:
    if element_mean:
        return 0.5 * y0.pow(2).mean()
    return 0.5 * y0.pow(2).flatten(1).sum(1).mean()


def separable_losses(out: TrainingOutputs, window: torch.Tensor, ae_time: int, nt_cond: int, offset: int, element_mean_t: bool) -> dict[str, torch.Tensor]:
    first_target = 0 if offset == nt_cond else nt_cond
    return {
        "ae": (window[:, ae_time - offset] - out.reconstruction).pow(2).mean(),
        "s": content_invariance(out.s_old, out.s_new),
        "pred": (out.forecast.forecasts - window[:, first_target:]).pow(2).mean(),
        "t": t_regulariser(out.forecast.t_codes[:, 0], element_mean_t),
    }


def total_loss(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    return sum(weights[name] * value for name, value in losses.items())
