"""``lower_cholesky`` against ``numpy.linalg.cholesky``: the same factor to float64 rounding, failures per item."""

import numpy as np

from qkalign.linalg.cholesky import lower_cholesky

EPS = np.finfo(np.float64).eps


def test_lower_cholesky_matches_numpy_and_flags_each_failure():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 12, 40))
    g = a @ np.swapaxes(a, -1, -2)
    g[2] = -np.eye(12)  # not positive definite
    g[4, 0, 0] = np.nan
    original = g.copy()
    c, ok = lower_cholesky(g)
    np.testing.assert_array_equal(g, original)  # the input is left alone
    np.testing.assert_array_equal(ok, [True, True, False, True, False])
    assert not c[~ok].any()
    for i in np.flatnonzero(ok):
        expected = np.linalg.cholesky(g[i])
        np.testing.assert_allclose(c[i], expected, rtol=0, atol=20 * 12 * EPS * np.sqrt(np.abs(g[i]).max()))
        assert not np.triu(c[i], 1).any()
