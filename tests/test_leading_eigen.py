"""``leading_eigenpairs`` (LAPACK dsytrd + dsterf + dstein + dormtr) against ``numpy.linalg.eigh``.

Tolerances are float64 rounding of a k x k symmetric eigen-problem: ``c k eps ||M||`` with a
stated constant, for the eigenvalues, the residuals ``||M w - lambda w||`` and orthonormality.
"""

import numpy as np
import pytest

from qkalign.linalg.leading_eigen import leading_eigenpairs

EPS = np.finfo(np.float64).eps


def symmetric(rng, batch, k, values=None):
    """(batch, k, k) symmetric matrices, with the eigenvalues ``values`` (k,) when given."""
    if values is None:
        a = rng.standard_normal((batch, k, k))
        return a + np.swapaxes(a, -1, -2)
    q, _ = np.linalg.qr(rng.standard_normal((batch, k, k)))
    m = (q * values) @ np.swapaxes(q, -1, -2)
    return 0.5 * (m + np.swapaxes(m, -1, -2))


def assert_eigenpairs(m, count):
    lam, w = leading_eigenpairs(m, count)
    k = m.shape[-1]
    exact = np.linalg.eigh(m)[0]
    norm = np.abs(exact).max(axis=-1, keepdims=True)
    tol = 10 * k * EPS * norm
    assert lam.shape == exact.shape and w.shape == m.shape[:-1] + (count,)
    assert np.all(np.abs(np.sort(lam, axis=-1) - exact) <= tol)
    magnitudes = np.abs(lam)
    assert np.all(magnitudes[:, :-1] >= magnitudes[:, 1:] - tol)  # by |lambda| descending
    residual = np.linalg.norm(m @ w - w * lam[:, None, :count], axis=-2)
    assert np.all(residual <= tol)
    np.testing.assert_allclose(np.swapaxes(w, -1, -2) @ w, np.broadcast_to(np.eye(count), (len(m), count, count)),
                               atol=10 * k * EPS)


@pytest.mark.parametrize("k, count", [(1, 1), (2, 1), (3, 3), (8, 4), (64, 16), (256, 16)])
def test_random_symmetric(k, count):
    assert_eigenpairs(symmetric(np.random.default_rng(k), 3, k), count)


def test_order_matches_eigh_by_magnitude():
    m = symmetric(np.random.default_rng(1), 4, 12)
    lam, _ = leading_eigenpairs(m, 3)
    values = np.linalg.eigh(m)[0]
    expected = np.take_along_axis(values, np.argsort(-np.abs(values), axis=-1, kind="stable"), axis=-1)
    np.testing.assert_allclose(lam, expected, rtol=0, atol=100 * EPS * np.abs(values).max())


@pytest.mark.parametrize("values", [
    np.r_[np.full(6, 3.0), np.full(6, -3.0), np.linspace(-0.1, 0.1, 20)],  # repeated, +-
    np.r_[3 + 1e-13 * np.arange(8), np.linspace(-1, 1, 24)],  # a tight cluster
    np.r_[5.0, -4.0, 3.0, np.zeros(29)],  # rank 3, zeros among the vectors asked for
], ids=["repeated", "cluster", "rank-3"])
def test_degenerate_spectra(values):
    assert_eigenpairs(symmetric(np.random.default_rng(2), 2, len(values), values), 8)


def test_zero_and_extreme_scales_fall_back_or_scale():
    assert_eigenpairs(np.zeros((2, 6, 6)), 3)  # inverse iteration on T = 0: numpy's eigh instead
    m = symmetric(np.random.default_rng(3), 2, 20)
    for scale in (2.0 ** -900, 2.0 ** 400):
        lam, w = leading_eigenpairs(m * scale, 5)
        assert np.isfinite(w).all()
        np.testing.assert_allclose(lam, leading_eigenpairs(m, 5)[0] * scale, rtol=1e-13)


def test_power_of_two_scale_is_bit_identical():
    m = symmetric(np.random.default_rng(4), 3, 40)
    lam, w = leading_eigenpairs(m, 5)
    for e in (-20, -1, 1, 30):
        scaled_lam, scaled_w = leading_eigenpairs(m * 2.0 ** e, 5)
        np.testing.assert_array_equal(scaled_lam, lam * 2.0 ** e)
        np.testing.assert_array_equal(scaled_w, w)
