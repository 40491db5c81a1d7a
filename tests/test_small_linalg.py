"""The small dense linear algebra of the kernels against LAPACK (numpy), on hard spectra."""

import numpy as np
import pytest

from qkalign.kernels.small_linalg import singular_values
from qkalign.stats.reference import householder_rows


def _with_singular_values(rng, values):
    """A random square matrix with the given singular values."""
    k = values.size
    u, v = householder_rows(rng.standard_normal((2, k, k)))  # two random orthogonal matrices
    return (u * values) @ v.T


def _spectra(rng, k):
    """Singular values that stress an SVD: generic, clustered near 1, graded over 16 decades
    with exact zeros, repeated, and a single nonzero."""
    graded = 10.0 ** rng.uniform(-16, 0, k)
    graded[rng.random(k) < 0.3] = 0.0
    one = np.zeros(k)
    one[0] = 1.0
    return {
        "generic": rng.random(k),
        "clustered near 1": 1.0 - rng.random(k) * 1e-10,
        "graded with zeros": graded,
        "repeated": np.resize(rng.random(max(1, k // 4)), k),
        "rank one": one,
    }


@pytest.mark.parametrize("k", [1, 2, 3, 5, 16, 24])
def test_singular_values_match_lapack(k):
    rng = np.random.default_rng(k)
    for name, values in _spectra(rng, k).items():
        m = _with_singular_values(rng, values)
        got = np.empty(k)
        singular_values(m.copy(), got)
        want = np.linalg.svd(m, compute_uv=False)
        # both are accurate to a few ulps of the norm (LAPACK itself errs by up to ~8e-15 on
        # the clustered case, measured against 40-digit arithmetic)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-14 * max(want[0], 1e-300), err_msg=name)
        assert np.all(np.diff(got) <= 0), name  # descending


def test_singular_values_of_zero_and_diagonal_matrices():
    got = np.empty(4)
    singular_values(np.zeros((4, 4)), got)
    np.testing.assert_array_equal(got, 0.0)
    singular_values(np.diag([0.5, -2.0, 0.0, 1e-100]), got)
    np.testing.assert_allclose(got, [2.0, 0.5, 1e-100, 0.0], rtol=1e-15, atol=0)
    # scaled before squaring: neither huge nor tiny matrices overflow or underflow
    for scale in (1e200, 1e-200):
        singular_values(np.diag([0.5, -2.0, 0.0, 1e-100]) * scale, got)
        np.testing.assert_allclose(got, np.array([2.0, 0.5, 1e-100, 0.0]) * scale, rtol=1e-15, atol=0)
