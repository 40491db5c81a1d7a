"""Cholesky-QR factors from Grams (``qkalign.linalg.cholesky_qr``), against Householder QR."""

import numpy as np

from qkalign.linalg.cholesky_qr import cholesky_qr_factors
from qkalign.stats import reference
from qkalign.stats.reference import householder_rows


def _rows(seed, shape=(3, 4, 6, 40)):
    """Orthonormal rows rounded to float16 (as some tools store eigenvectors), with scaled rows."""
    rng = np.random.default_rng(seed)
    q = householder_rows(rng.standard_normal(shape))
    return q.astype(np.float16).astype(np.float64) * rng.uniform(0.5, 2.0, shape[:-1])[..., None]


def test_factors_give_orthonormal_rows_spanning_the_same_space():
    rows = _rows(1)
    factors, ok = cholesky_qr_factors(rows @ np.swapaxes(rows, -1, -2))
    assert ok.all()
    orthonormal = factors @ rows
    k = rows.shape[-2]
    np.testing.assert_allclose(orthonormal @ np.swapaxes(orthonormal, -1, -2), np.broadcast_to(np.eye(k), factors.shape),
                               rtol=0, atol=4e-15)
    # the same span as Householder QR: the projections onto it agree
    q = reference.orthonormal_bases(rows)
    np.testing.assert_allclose(np.swapaxes(orthonormal, -1, -2) @ orthonormal, q @ np.swapaxes(q, -1, -2), rtol=0, atol=4e-15)
    assert np.array_equal(np.triu(factors, 1), np.zeros_like(factors))  # lower triangular


def test_zero_rows_dependent_rows_and_nan_are_left_to_householder():
    rows = _rows(2, shape=(4, 5, 30))
    rows[0, 2] = 0.0
    rows[1, 3] = rows[1, 1]
    rows[2, 0, 7] = np.nan
    with np.errstate(invalid="ignore"):
        grams = rows @ np.swapaxes(rows, -1, -2)
    factors, ok = cholesky_qr_factors(grams)
    assert ok.tolist() == [False, False, False, True]
    np.testing.assert_array_equal(factors[:3], np.broadcast_to(np.eye(5), (3, 5, 5)))
