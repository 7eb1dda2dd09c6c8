"""Discriminators: infinite-width kernel solutions (docs/gantk.md §1.2) and finite networks (docs/gantk.md §2, §3).

Both kinds are trained on Z = [X_b; Y] (the current fake batch stacked on the real batch) with labels
y_Z = (−1, …, −1, +1, …, +1). An infinite-width discriminator trained by kernel gradient flow from
f₀ ≡ 0 is always of the form

    f_t(x) = k(x, Z) · c,

with coefficients c that depend on K_ZZ, y_Z and t only. The coefficients are computed without
gradient, so the particle gradient flows through the query argument x of k alone (docs/gantk.md §1.3).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
from jax.example_libraries import optimizers
from jax.experimental.ode import odeint

from dynagen.models.gantk.kernels import discriminator_stax

if TYPE_CHECKING:
    from dynagen.models.gantk.experiment import GanNtkConfig

# docs/gantk.md §3: discriminator minimises E_fake a(f) + E_real b(f); particles minimise E_fake ℓ(f).
DISCRIMINATOR_LOSSES: dict[str, tuple[Callable, Callable]] = {
    "ipm": (lambda u: u, lambda u: -u),
    "vanilla": (jax.nn.softplus, lambda u: jax.nn.softplus(-u)),
    "lsgan": (lambda u: (u + 1) ** 2, lambda u: (u - 1) ** 2),
    "hinge": (lambda u: jax.nn.relu(1 + u), lambda u: jax.nn.relu(1 - u)),
}
GENERATOR_LOSSES: dict[str, Callable] = {
    "ipm": lambda u: -u,
    "vanilla": lambda u: jax.nn.softplus(-u),  # non-saturating
    "lsgan": lambda u: u**2,
    "hinge": lambda u: -u,
}


def labels(n_fake: int, n_real: int, dtype=jnp.float32) -> jnp.ndarray:
    """y_Z for Z = [X_b; Y]."""
    return jnp.concatenate([-jnp.ones(n_fake, dtype), jnp.ones(n_real, dtype)])


# ---------------------------------------------------------------------------------------------
# Infinite width (docs/gantk.md §1.2): coefficients c of f_t = k(·, Z)·c
# ---------------------------------------------------------------------------------------------


def ipm_coefficients(n_fake: int, n_real: int, t: float, dtype=jnp.float32) -> jnp.ndarray:
    """inf_ipm, closed form: f_t(x) = t·(mean_Y k(x, y) − mean_{X_b} k(x, x'))."""
    return t * jnp.concatenate([-jnp.ones(n_fake, dtype) / n_fake, jnp.ones(n_real, dtype) / n_real])


def lsgan_coefficients(k_zz: jnp.ndarray, y: jnp.ndarray, t: float) -> jnp.ndarray:
    """inf_lsgan: NT's MSE gradient-flow predictor at time 4t with f₀ = 0.

    c = V diag(−expm1(−max(λ,0)·4t/n)/|λ|) Vᵀ y_Z = K⁻¹(I − e^{−4tK/n}) y_Z. The 4t makes it the
    flow of E_fake (f+1)² + E_real (f−1)² for balanced batches (NT normalises by n = |Z|). Eigenvalues
    ≤ 0 (numerical zeros of duplicated points) get coefficient 0 where NT would divide 0/0.
    """
    n = y.size
    lam, v = jnp.linalg.eigh(k_zz)
    positive = lam > 0
    safe_lam = jnp.where(positive, lam, 1.0)
    scale = jnp.where(positive, -jnp.expm1(-safe_lam * 4 * t / n) / safe_lam, 0.0)
    return v @ (scale * (v.T @ y))


def lambertw_exp(z: jnp.ndarray, max_iter: int = 100) -> jnp.ndarray:
    """W₀(e^z) by the iteration of docs/gantk.md §1.2 (gantk2 utils/math.py), stable for large z."""
    eps = jnp.finfo(z.dtype).resolution

    def body(carry):
        w, _, i = carry
        w_next = w / (1 + w) * (1 + z - jnp.log(w))
        return w_next, jnp.all(jnp.abs(w_next - w) <= 2 * eps * jnp.abs(w_next)), i + 1

    w0 = jax.nn.softplus(z / jnp.log(1 + jax.nn.softplus(z) / 2))
    w, _, _ = jax.lax.while_loop(lambda c: ~c[1] & (c[2] < max_iter), body, (w0, jnp.array(False), 0))
    return w


def vanilla_scalar_solution(z: jnp.ndarray, t: float) -> jnp.ndarray:
    """u(z, t) = 1 + tz − W₀(e^{1+tz}): the solution of u' = z·σ(−u), u(0) = 0 (docs/gantk.md §8.10)."""
    return 1 + t * z - lambertw_exp(1 + t * z)


def vanilla_coefficients(k_zz: jnp.ndarray, y: jnp.ndarray, t: float) -> jnp.ndarray:
    """inf_vanilla: logistic-loss flow solved per eigen-direction of K/n (exact only for diagonal K)."""
    n = y.size
    lam, v = jnp.linalg.eigh(k_zz / n)
    positive = lam > 0
    safe_lam = jnp.where(positive, lam, 1.0)
    ratio = jnp.where(positive, vanilla_scalar_solution(safe_lam, t) / safe_lam, t / 2)  # u/λ → t/2 as λ → 0
    return v @ (ratio * (v.T @ y)) / n


def vanilla_ode_coefficients(k_zz: jnp.ndarray, y: jnp.ndarray, t: float) -> jnp.ndarray:
    """inf_vanilla_ode: the exact flow of L(f) = (1/n)Σ softplus(−y_i f_i) by an adaptive ODE solver.

    dc/dt = −∂L/∂f(Z) and df_Z/dt = K dc/dt, so f_t(x) = k(x, Z)·c(t) (same solver as the original:
    jax.experimental.ode.odeint, Dormand–Prince, rtol = atol = 1.4e-8).
    """
    n = y.size

    def dynamics(state, _):
        f_train, _ = state
        dc = y * jax.nn.sigmoid(-y * f_train) / n
        return k_zz @ dc, dc

    zero = jnp.zeros_like(y)
    _, c = odeint(dynamics, (zero, zero), jnp.array([0.0, t], dtype=y.dtype))
    return c[-1]


class InfiniteDiscriminator:
    """f_t of docs/gantk.md §1.2, recomputed from scratch at every generator step (no state)."""

    def __init__(self, kernel: Callable, loss: str, t: float, vanilla_solver: str = "lambert_w"):
        self.kernel, self.loss, self.t, self.vanilla_solver = kernel, loss, t, vanilla_solver

    def fit(self, x_fake: jnp.ndarray, y_real: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(Z, c) with c computed without gradient."""
        x_fake, y_real = jax.lax.stop_gradient(x_fake), jax.lax.stop_gradient(y_real)
        z = jnp.concatenate([x_fake, y_real])
        n_fake, n_real = x_fake.shape[0], y_real.shape[0]
        if self.loss == "ipm":
            return z, ipm_coefficients(n_fake, n_real, self.t, z.dtype)
        k_zz, y_z = self.kernel(z, z), labels(n_fake, n_real, z.dtype)
        if self.loss == "lsgan":
            return z, lsgan_coefficients(k_zz, y_z, self.t)
        if self.loss == "vanilla" and self.vanilla_solver == "lambert_w":
            return z, vanilla_coefficients(k_zz, y_z, self.t)
        if self.loss == "vanilla":
            return z, vanilla_ode_coefficients(k_zz, y_z, self.t)
        raise ValueError(f"loss: {self.loss!r} has no infinite-width discriminator; allowed: ipm, lsgan, vanilla")

    def __call__(self, query: jnp.ndarray, fitted: tuple[jnp.ndarray, jnp.ndarray]) -> jnp.ndarray:
        z, c = fitted
        return self.kernel(query, z) @ c


# ---------------------------------------------------------------------------------------------
# Finite width (docs/gantk.md §2)
# ---------------------------------------------------------------------------------------------


class FiniteDiscriminator:
    """The stax MLP at finite width, trained by SGD/Adam on E_fake a(f) + E_real b(f).

    Parameters are (frozen, trainable) tuples with one entry per copy: two copies θ₁ = θ₂ when
    antisymmetric (f = (g_θ₁ − g_θ₂)/√2, so f₀ ≡ 0 and the empirical NTK of f is that of g), else one.
    With ``kernel == "nngp"`` only the read-out layer is trainable, the finite counterpart of the NNGP
    kernel (the NTK of the read-out alone); otherwise nothing is frozen.
    """

    def __init__(self, config: "GanNtkConfig", input_shape: tuple[int, ...]):
        self.init_fn, self.apply_fn, _ = discriminator_stax(config)
        self.input_shape = tuple(input_shape)
        self.antisymmetric = config.antisymmetric
        self.readout_only = config.kernel == "nngp"
        self.nb_steps = config.nb_d_steps
        self.fake_loss, self.real_loss = DISCRIMINATOR_LOSSES[config.loss]
        if config.d_optimizer == "sgd":
            self.opt_init, self.opt_update, self.get_params = optimizers.sgd(config.lr_d)
        else:
            self.opt_init, self.opt_update, self.get_params = optimizers.adam(config.lr_d, b1=0.9, b2=0.999)

    def init(self, key: jax.Array) -> tuple[tuple, tuple]:
        _, theta = self.init_fn(key, (-1, *self.input_shape))
        copies = (theta, theta) if self.antisymmetric else (theta,)
        n_frozen = len(theta) - 1 if self.readout_only else 0
        return tuple(c[:n_frozen] for c in copies), tuple(c[n_frozen:] for c in copies)

    def apply(self, frozen: tuple, trainable: tuple, x: jnp.ndarray) -> jnp.ndarray:
        outputs = [self.apply_fn(fr + tr, x)[:, 0] for fr, tr in zip(frozen, trainable)]
        return (outputs[0] - outputs[1]) / math.sqrt(2) if self.antisymmetric else outputs[0]

    def loss(self, frozen: tuple, trainable: tuple, x_fake: jnp.ndarray, y_real: jnp.ndarray) -> jnp.ndarray:
        return self.fake_loss(self.apply(frozen, trainable, x_fake)).mean() + self.real_loss(
            self.apply(frozen, trainable, y_real)
        ).mean()

    def train(self, frozen: tuple, opt_state: Any, count: jnp.ndarray, x_fake, y_real) -> tuple[Any, jnp.ndarray]:
        """``nb_d_steps`` optimiser steps on (X_b, Y); returns (opt_state, step counter)."""
        grad = jax.grad(self.loss, argnums=1)

        def body(_, carry):
            state, i = carry
            return self.opt_update(i, grad(frozen, self.get_params(state), x_fake, y_real), state), i + 1

        return jax.lax.fori_loop(0, self.nb_steps, body, (opt_state, count))

    def empirical_kernel(self, frozen: tuple, trainable: tuple, x1: jnp.ndarray, x2: jnp.ndarray) -> jnp.ndarray:
        """Θ̂(x1, x2): the empirical NTK of f w.r.t. its trainable parameters (docs/gantk.md §8.12)."""
        import neural_tangents as nt

        ntk = nt.empirical_ntk_fn(lambda params, x: self.apply(frozen, params, x)[:, None], trace_axes=(-1,))
        return jax.jit(ntk)(x1, x2, trainable)  # one compilation instead of hundreds of eager ones
