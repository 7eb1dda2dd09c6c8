"""GAN(TK)² discriminator kernels against docs/gantk.md §8 (1, 2, 13, 14, 15) and the §10 reference matrices.

All analytic kernels come from the neural-tangents stax description built by
``dynagen.models.gantk.kernels``; the numbers below are the spec's float64 references.
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from dynagen.models.gantk.experiment import GanNtkConfig
from dynagen.models.gantk.kernels import analytic_kernel


pytestmark = pytest.mark.usefixtures("float64")


P = np.array([(1, 0), (0, 1), (-1, -1), (0.5, 2), (0, 0)], dtype=np.float64)

REFERENCE = {  # docs/gantk.md §10, rows/cols P, L = 3 (rbf: 1 layer, γ = 0.5, NNGP)
    "relu": [[2.5, 2.05904, 1.88213, 2.13802, 2.08853], [2.05904, 2.5, 1.88213, 2.52699, 2.08853],
             [1.88213, 1.88213, 2.75, 1.79586, 2.05355], [2.13802, 2.52699, 1.79586, 3.3125, 2.02895],
             [2.08853, 2.08853, 2.05355, 2.02895, 2.25]],
    "relu_nobias": [[0.25, 0.06627, 0.0599, 0.17084, 0.0], [0.06627, 0.25, 0.0599, 0.44743, 0.0],
                    [0.0599, 0.0599, 0.5, 0.11959, 0.0], [0.17084, 0.44743, 0.11959, 1.0625, 0.0],
                    [0.0, 0.0, 0.0, 0.0, 0.0]],
    "relu_highbias": [[36.25, 34.88892, 34.10164, 34.56504, 35.19685], [34.88892, 36.25, 34.10164, 35.59743, 35.19685],
                      [34.10164, 34.10164, 36.5, 33.15267, 34.89076], [34.56504, 35.59743, 33.15267, 37.0625, 34.44943],
                      [35.19685, 35.19685, 34.89076, 34.44943, 36.0]],
    "sigmoid": [[0.28144, 0.28121, 0.28098, 0.28128, 0.28122], [0.28121, 0.28144, 0.28098, 0.28157, 0.28122],
                [0.28098, 0.28098, 0.2816, 0.28072, 0.28121], [0.28128, 0.28157, 0.28072, 0.28185, 0.2812],
                [0.28122, 0.28122, 0.28121, 0.2812, 0.28124]],
    "gelu": [[2.2109, 1.90075, 1.71025, 1.97973, 1.91703], [1.90075, 2.2109, 1.71025, 2.38563, 1.91703],
             [1.71025, 1.71025, 2.47094, 1.60177, 1.89147], [1.97973, 2.38563, 1.60177, 3.0649, 1.85954],
             [1.91703, 1.91703, 1.89147, 1.85954, 1.9569]],
    "rbf": [[1.0, 0.60653, 0.2865, 0.34559, 0.7788], [0.60653, 1.0, 0.2865, 0.73162, 0.7788],
            [0.2865, 0.2865, 1.0, 0.06005, 0.60653], [0.34559, 0.73162, 0.06005, 1.0, 0.34559],
            [0.7788, 0.7788, 0.60653, 0.34559, 1.0]],
}


@pytest.mark.parametrize("arch", sorted(REFERENCE))
def test_reference_kernel_matrices(arch):
    k = analytic_kernel(GanNtkConfig(arch=arch))
    np.testing.assert_allclose(np.asarray(k(P, P)), REFERENCE[arch], atol=6e-6)


def relu_ntk_recursion(x, depth, sigma_b):
    """docs/gantk.md §1.1 NTK recursion for the ReLU MLP (σ_w = 1, ntk parameterisation) on the Gram matrix of x."""
    sigma = x @ x.T / x.shape[-1] + sigma_b**2
    theta = sigma.copy()
    for layer in range(depth):
        q = np.diag(sigma)
        sine = np.sqrt(np.maximum(np.outer(q, q) - sigma**2, 0))
        angle = np.arctan2(sine, sigma)  # θ = arccos ρ, computed like NT (stable near ρ = 1)
        sigma = (sine + (np.pi - angle) * sigma) / (2 * np.pi)  # the diagonal becomes q/2
        theta = (np.pi - angle) / (2 * np.pi) * theta
        sigma = sigma + (0.0 if layer == depth - 1 else sigma_b**2)  # read-out without bias
        theta = sigma + theta
    return theta


@pytest.mark.parametrize("sigma_b,depth", [(1.0, 3), (0.0, 2), (4.0, 1)])
def test_relu_kernel_is_the_ntk_recursion(sigma_b, depth):
    points = np.random.default_rng(0).normal(size=(12, 3))
    k = analytic_kernel(GanNtkConfig(arch="custom", activation="relu", depth=depth, sigma_b=sigma_b))
    np.testing.assert_allclose(np.asarray(k(points, points)), relu_ntk_recursion(points, depth, sigma_b),
                               rtol=1e-7)  # diagonal: √(qq' − Σ²) of a rounding-level argument ≈ 1e-8


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "abs", "gelu", "erf", "tanh_like", "sigmoid_like",
                                        "sin", "rbf", "arbf", "identity"])
def test_kernels_are_symmetric_psd(activation):
    points = np.random.default_rng(1).normal(size=(30, 2)) * 2
    k = np.asarray(analytic_kernel(GanNtkConfig(arch="custom", activation=activation, depth=2, sigma_b=0.5))(points, points))
    np.testing.assert_allclose(k, k.T, rtol=1e-12, atol=1e-12)
    assert np.linalg.eigvalsh(k).min() > -1e-9 * np.abs(k).max()


def test_relu_without_bias_is_positively_homogeneous():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(7, 2))
    queries = np.concatenate([x, 0.5 * x, 3 * x, np.zeros((1, 2))])
    k = np.asarray(analytic_kernel(GanNtkConfig(arch="relu_nobias"))(queries, y))
    np.testing.assert_allclose(k[6:12], 0.5 * k[:6], rtol=1e-10)
    np.testing.assert_allclose(k[12:18], 3 * k[:6], rtol=1e-10)
    np.testing.assert_array_equal(k[18], 0.0)
    with_bias = np.asarray(analytic_kernel(GanNtkConfig(arch="relu"))(queries, y))  # the bias breaks it
    assert not np.allclose(with_bias[12:18], 3 * with_bias[:6], rtol=1e-2)


@pytest.mark.parametrize("dim", [2, 5])
def test_rbf_arch_is_the_gaussian_kernel(dim):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(8, dim)), rng.normal(size=(9, dim))
    k = analytic_kernel(GanNtkConfig(arch="rbf"))
    squared = ((x[:, None] - y[None]) ** 2).sum(-1)
    np.testing.assert_allclose(np.asarray(k(x, y)), np.exp(-squared / (2 * dim)), rtol=1e-10)


def one_sided_derivatives(kernel, x, direction, h=1e-6):
    """Directional derivatives of k(·, x) at x, from the right and from the left."""
    at = float(kernel(x[None], x[None])[0, 0])
    right = (float(kernel((x + h * direction)[None], x[None])[0, 0]) - at) / h
    left = (at - float(kernel((x - h * direction)[None], x[None])[0, 0])) / h
    return right, left


def test_relu_ntk_has_a_kink_on_the_diagonal_smooth_activations_do_not():
    x, direction = np.array([0.3, -0.7]), np.array([0.6, 0.8])
    right, left = one_sided_derivatives(analytic_kernel(GanNtkConfig(arch="relu")), x, direction)
    assert abs(right - left) > 0.1  # docs/gantk.md §8.15: one-sided derivatives do not match
    for arch in ("gelu", "sigmoid"):
        right, left = one_sided_derivatives(analytic_kernel(GanNtkConfig(arch=arch)), x, direction)
        assert abs(right - left) < 1e-4


def test_self_gradient_convention_is_finite_and_deterministic():
    """∇₁k(x, x) at exact coincidence (docs/gantk.md §8.15): NT's safe sqrt gives a finite value, the same in f32 and f64."""
    k = analytic_kernel(GanNtkConfig(arch="relu"))
    points = np.random.default_rng(4).normal(size=(50, 2))
    grad = jax.grad(lambda a: jnp.trace(k(a, jax.lax.stop_gradient(a))))  # row i: ∇₁k(x_i, x_i)
    g64 = np.asarray(grad(jnp.asarray(points)))
    g32 = np.asarray(grad(jnp.asarray(points, jnp.float32)))
    assert np.all(np.isfinite(g64))
    np.testing.assert_allclose(g32, g64, atol=1e-5)
