"""FVD's Fréchet distance on the covariances where a general matrix square root goes wrong, against closed forms.

For commuting covariances S_a = Q diag(a) Q^T, S_b = Q diag(b) Q^T, tr (S_a S_b)^(1/2) = sum_i sqrt(a_i b_i), so
d = ||mu_a - mu_b||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 exactly. Tolerances are relative to the traces (float64
eigendecompositions of D x D matrices are accurate to ~D eps of the largest eigenvalue).
"""

from __future__ import annotations

import numpy as np
import pytest

from dynagen.models.srvp.metrics import FrechetError, frechet_distance, gaussian_frechet_distance


def closed_form(mu_a, a, mu_b, b) -> float:
    return float(((mu_a - mu_b) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())


def rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.RandomState(seed).randn(d, d))
    return q


CASES = {
    # eigenvalues from 1 down to 1e-12: condition number 1e12
    "ill_conditioned": (np.logspace(0, -12, 64), np.logspace(-12, 0, 64)),
    # half the directions carry no variance in a, others none in b (FVD with fewer videos than dimensions)
    "rank_deficient": (np.r_[np.linspace(1, 2, 32), np.zeros(32)], np.r_[np.zeros(16), np.linspace(0.5, 3, 48)]),
    "both_rank_one": (np.r_[4.0, np.zeros(63)], np.r_[9.0, np.zeros(63)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("rotated", [False, True])
def test_commuting_covariances_match_the_closed_form(case, rotated):
    a, b = CASES[case]
    q = rotation(len(a), 0) if rotated else np.eye(len(a))
    mu_a, mu_b = np.zeros(len(a)), np.r_[0.5, np.zeros(len(a) - 1)]
    got = gaussian_frechet_distance(mu_a, q @ np.diag(a) @ q.T, mu_b, q @ np.diag(b) @ q.T)
    expected = closed_form(mu_a, a, mu_b, b)
    assert got == pytest.approx(expected, abs=1e-9 * (a.sum() + b.sum()))
    assert isinstance(got, float) and got >= -1e-9


def test_identical_rank_deficient_fits_are_at_distance_zero_and_the_distance_is_symmetric():
    rng = np.random.RandomState(1)
    few = rng.randn(20, 50) @ rng.randn(50, 50)  # 20 videos, 50 dimensions: covariance of rank 19
    other = rng.randn(20, 50) * 2 + 1
    assert abs(frechet_distance(few, few)) < 1e-8 * np.trace(np.cov(few, rowvar=False))
    assert frechet_distance(few, other) == pytest.approx(frechet_distance(other, few), rel=1e-9)


def test_not_positive_semidefinite_or_non_finite_covariances_are_errors_not_numbers():
    mu = np.zeros(3)
    indefinite = np.diag([1.0, 1.0, -0.5])
    with pytest.raises(FrechetError, match="not positive semi-definite"):
        gaussian_frechet_distance(mu, indefinite, mu, np.eye(3))
    with pytest.raises(FrechetError, match="non-finite"):
        frechet_distance(np.full((4, 3), np.nan), np.ones((4, 3)))


def test_one_dimensional_embeddings():
    a, b = np.arange(10.0)[:, None], 2 * np.arange(10.0)[:, None] + 1
    var_a, var_b = np.var(a, ddof=1), np.var(b, ddof=1)
    expected = (a.mean() - b.mean()) ** 2 + (np.sqrt(var_a) - np.sqrt(var_b)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)
