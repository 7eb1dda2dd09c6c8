"""SRVP training objective (docs/srvp.md §3) and learning-rate schedule.

    loss = ( nll + beta_y kl_y + beta_z kl_z + l2_res l2 ) / B

nll: full Gaussian NLL of every frame (constant included) with std obs_scale; kl_y against N(0, I);
kl_z between the diagonal posterior and the learned prior, closed form; l2: the non-squared Euclidean norm of
every Euler increment dt*f. Everything is summed over time, pixels, latent dimensions and the batch, then divided
by the batch size only.
"""

from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence

from dynagen.models.srvp.model import SRVPOutput, gaussian_parameters

# Distributions are built with validate_args=False: checking their arguments is a host-device sync per
# distribution and step on a GPU (the scales are softplus + 1e-8 > 0 by construction, docs/srvp.md §1.5).


def gaussian_nll(x: torch.Tensor, x_hat: torch.Tensor, obs_scale: float) -> torch.Tensor:
    """Sum of per-pixel -log N(x; x^, obs_scale^2) = 0.5((x - x^)/s)^2 + log s + 0.5 log 2 pi (docs/srvp.md §3, §7.11)."""
    return -Normal(x_hat, obs_scale, validate_args=False).log_prob(x).sum()


def kl_diagonal(q_params: torch.Tensor, p_params: torch.Tensor | None = None) -> torch.Tensor:
    """Summed KL(q || p) between diagonal Gaussians given as (mean, raw) parameters; p = N(0, I) when omitted."""
    q = Normal(*gaussian_parameters(q_params), validate_args=False)
    if p_params is None:
        p = Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale), validate_args=False)
    else:
        p = Normal(*gaussian_parameters(p_params), validate_args=False)
    return kl_divergence(q, p).sum()


def residual_l2(res: torch.Tensor) -> torch.Tensor:
    """Sum over all (T-1)K sub-steps (and the batch) of ||dt f||_2, the Euclidean norm, NOT squared (docs/srvp.md §7.12)."""
    return res.norm(dim=-1).sum()


def srvp_loss(
    x: torch.Tensor, out: SRVPOutput, obs_scale: float = 1.0, beta_y: float = 1.0, beta_z: float = 1.0, l2_res: float = 1.0
) -> dict[str, torch.Tensor]:
    """docs/srvp.md §3 loss for a batch x (T, B, C, H, W) and the model's output on it; every frame is reconstructed.

    Returns the total ``loss`` and its terms, each already divided by the batch size. Computed in float32
    (the model may run under autocast).
    """
    batch = x.shape[1]
    terms = {
        "nll": gaussian_nll(x.float(), out.x.float(), obs_scale),
        "kl_y": kl_diagonal(out.q_y.float()),
        "kl_z": kl_diagonal(out.q_z.float(), out.p_z[: len(out.q_z)].float()),
        "l2_res": residual_l2(out.res.float()),
    }
    terms = {k: v / batch for k, v in terms.items()}
    terms["loss"] = terms["nll"] + beta_y * terms["kl_y"] + beta_z * terms["kl_z"] + l2_res * terms["l2_res"]
    return terms


def make_optimizer(parameters, lr: float, n_decay: int) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """docs/srvp.md §3: Adam (default betas, eps 1e-8, no weight decay) and LambdaLR with factor max(0, (N - i) / N)."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: max(0.0, (n_decay - i) / n_decay))


def optimizer_step(optimizer, scheduler, iteration: int, burnin: int, scaler: torch.amp.GradScaler | None = None) -> None:
    """Apply the gradients of 1-based ``iteration``, then step the schedule from iteration ``burnin`` on (docs/srvp.md §3).

    The rate is therefore constant for iterations 1..burnin and reaches 0 at burnin + N (docs/srvp.md §7.13).
    """
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if iteration >= burnin:
        scheduler.step()

