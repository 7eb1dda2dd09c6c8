"""The discriminator architecture (docs/gantk.md §1.1): one ``neural_tangents.stax`` description.

The same description gives the finite network (``init_fn``/``apply_fn``, docs/gantk.md §2) and its analytic
infinite-width kernels (NTK, or NNGP for the ``rbf`` arch), so the finite and infinite discriminators
compared by the experiments are by construction the same model at two widths:

    Flatten → Dense(H, σ_w, σ_b) → [act → Dense(H, σ_w, σ_b)] × (depth − 1) → act → Dense(1, σ_w, no bias)

With ``ntk`` parameterisation the analytic kernel does not depend on H; NT normalises the input Gram
matrix by the input dimension d (Σ⁰ = ⟨x, x'⟩/d, docs/gantk.md §1.1).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import jax.numpy as jnp
from neural_tangents import stax

if TYPE_CHECKING:
    from dynagen.models.gantk.experiment import GanNtkConfig

# Width used to describe the network when only its analytic kernel is needed (config.width == 0).
# Irrelevant for the ``ntk`` parameterisation, which is the only one allowed at infinite width.
NOMINAL_WIDTH = 512

# docs/gantk.md §1.1 (models/utils.py::activations); `tanh_like` is the odd erf closest to tanh
# (tanh(x) ≈ erf(√π/2·x)), the tanh-like activation users ask for (there is no tanh in NT's closed forms).
ACTIVATIONS: dict[str, Callable[["GanNtkConfig"], tuple]] = {
    "relu": lambda c: stax.Relu(),
    "leaky_relu": lambda c: stax.LeakyRelu(alpha=c.act_alpha),
    "abs": lambda c: stax.Abs(),
    "gelu": lambda c: stax.Gelu(approximate=False),
    "erf": lambda c: stax.Erf(a=c.act_a, b=c.act_b, c=c.act_c),
    "tanh_like": lambda c: stax.Erf(a=1.0, b=math.sqrt(math.pi) / 2, c=0.0),
    "sigmoid_like": lambda c: stax.Sigmoid_like(),
    "sin": lambda c: stax.Sin(a=c.act_a, b=c.act_b, c=c.act_c),
    "rbf": lambda c: stax.Rbf(gamma=c.act_gamma),
    "arbf": lambda c: stax.Sin(a=math.sqrt(2) * c.act_a, b=math.sqrt(2 * c.act_gamma), c=math.pi / 4),
    "identity": lambda c: stax.Identity(),
}


def discriminator_stax(config: "GanNtkConfig") -> tuple[Callable, Callable, Callable]:
    """(init_fn, apply_fn, kernel_fn) of the MLP discriminator of docs/gantk.md §1.1."""
    width = config.width or NOMINAL_WIDTH
    b_std = config.sigma_b if config.sigma_b > 0 else None  # σ_b = 0 switches the biases off

    def dense(out_dim: int, bias: float | None):
        return stax.Dense(out_dim, W_std=config.sigma_w, b_std=bias, parameterization=config.parameterization)

    layers = [stax.Flatten(), dense(width, b_std)]
    for _ in range(config.depth - 1):
        layers += [ACTIVATIONS[config.activation](config), dense(width, b_std)]
    layers += [ACTIVATIONS[config.activation](config), dense(1, None)]  # read-out without bias
    return stax.serial(*layers)


def analytic_kernel(config: "GanNtkConfig") -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
    """k(x, x') = the analytic NTK (or NNGP if ``config.kernel == "nngp"``) as an [N, M] matrix.

    Differentiable in both arguments; the particle flow differentiates it in the first only (docs/gantk.md §1.3).
    """
    _, _, kernel_fn = discriminator_stax(config)
    get = config.kernel

    def kernel(x1: jnp.ndarray, x2: jnp.ndarray) -> jnp.ndarray:
        return kernel_fn(x1, x2, get)

    return kernel
