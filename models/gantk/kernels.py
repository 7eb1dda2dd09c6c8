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

import jax
import jax.numpy as jnp
from dynagen.models.gantk.nt import stax  # neural_tangents without its TensorFlow part

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


# ---------------------------------------------------------------------------------------------
# Large clouds: kernel products in blocks (memory ∝ block², not N·(N+M))
# ---------------------------------------------------------------------------------------------


def _blocks(points: jnp.ndarray, block: int) -> jnp.ndarray:
    """[n, ...] -> [ceil(n / block), block, ...], padded with copies of the last point (finite kernel values)."""
    pad = -len(points) % block
    padded = jnp.concatenate([points, jnp.repeat(points[-1:], pad, axis=0)]) if pad else points
    return padded.reshape(-1, block, *points.shape[1:])


def kernel_matvec(kernel: Callable, q: jnp.ndarray, z: jnp.ndarray, c: jnp.ndarray, block: int) -> jnp.ndarray:
    """k(q, Z) · c. With more than ``block`` rows or columns, in blocks of ``block`` × ``block`` kernel
    entries: rows of q mapped, columns of Z summed, each block recomputed in the backward pass
    (jax.checkpoint) instead of stored, so neither pass holds the |q| × |Z| matrix. ``block`` = 0: one
    matrix (the exact product of the unbatched path; blocks sum in another order)."""
    if block == 0 or (len(q) <= block and len(z) <= block):
        return kernel(q, z) @ c
    z_blocks = _blocks(z, block)
    c_blocks = jnp.pad(c, (0, -len(c) % block)).reshape(-1, block)  # padded columns weigh 0

    @jax.checkpoint
    def row_block(q_block):
        @jax.checkpoint
        def add_column_block(total, z_and_c):
            return total + kernel(q_block, z_and_c[0]) @ z_and_c[1], None

        return jax.lax.scan(add_column_block, jnp.zeros(block, c.dtype), (z_blocks, c_blocks))[0]

    return jax.lax.map(row_block, _blocks(q, block)).reshape(-1)[: len(q)]


def kernel_matrix(kernel: Callable, a: jnp.ndarray, b: jnp.ndarray, block: int) -> jnp.ndarray:
    """k(a, b) as one [|a|, |b|] matrix computed ``block`` × ``block`` entries at a time (the working
    memory of the kernel's layers stays ∝ block²); ``block`` = 0 or small inputs: in one go."""
    if block == 0 or (len(a) <= block and len(b) <= block):
        return kernel(a, b)
    b_blocks = _blocks(b, block)
    rows = jax.lax.map(lambda a_block: jax.lax.map(lambda b_block: kernel(a_block, b_block), b_blocks), _blocks(a, block))
    # rows: [row blocks, column blocks, block, block] -> [rows, columns], padding cut off
    matrix = rows.transpose(0, 2, 1, 3).reshape(rows.shape[0] * block, rows.shape[1] * block)
    return matrix[: len(a), : len(b)]


def kernel_mean(kernel: Callable, a: jnp.ndarray, b: jnp.ndarray, block: int) -> jnp.ndarray:
    """mean over a × b of k (MMD² terms) without the |a| × |b| matrix past ``block`` points."""
    if block == 0 or (len(a) <= block and len(b) <= block):
        return kernel(a, b).mean()
    return kernel_matvec(kernel, a, b, jnp.full(len(b), 1.0 / len(b), a.dtype), block).mean()
