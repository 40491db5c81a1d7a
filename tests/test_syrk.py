"""``syrk_lower`` and ``stacked_gram_lower`` against ``X X^T`` in float64, within the rounding of n products."""

import numpy as np
import pytest

from qkalign.linalg.syrk import syrk_lower
from qkalign.weights.factored_operator import stacked_gram_lower


def rounding_bound(x):
    """Bound on the error of each entry of ``X X^T`` summed in ``x``'s precision: ``1.01 n eps |x_i| |x_j|``
    (a dot product of n terms, Cauchy-Schwarz)."""
    norms = np.linalg.norm(x.astype(np.float64), axis=-1)
    return 1.01 * x.shape[-1] * np.finfo(x.dtype).eps * np.outer(norms, norms)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_syrk_lower_is_the_lower_triangle(dtype):
    x = np.random.default_rng(0).standard_normal((37, 53)).astype(dtype)
    out = syrk_lower(x)
    assert out.dtype == dtype and out.shape == (37, 37) and out.flags.c_contiguous
    exact = x.astype(np.float64) @ x.astype(np.float64).T
    lower = np.tril_indices(37)
    assert np.all(np.abs(out - exact)[lower] <= rounding_bound(x)[lower])
    assert np.all(out[np.triu_indices(37, 1)] == 0)
    np.testing.assert_array_equal(syrk_lower(np.asfortranarray(x)), out)  # any layout: the same call


def test_syrk_lower_edges():
    assert syrk_lower(np.ones((0, 4), dtype=np.float32)).shape == (0, 0)
    np.testing.assert_array_equal(syrk_lower(np.ones((3, 0))), np.zeros((3, 3)))
    with pytest.raises(TypeError, match="float32 or float64"):
        syrk_lower(np.ones((3, 3), dtype=np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacked_gram_lower_fills_the_lower_triangle_and_diagonal_blocks(dtype):
    num_layers, d, n = 4, 6, 29
    blocks = np.random.default_rng(1).standard_normal((num_layers, d, n)).astype(dtype)
    gram = stacked_gram_lower(blocks)
    x = blocks.reshape(num_layers * d, n)
    error = np.abs(gram - x.astype(np.float64) @ x.astype(np.float64).T)
    read = np.tril(np.ones(gram.shape, dtype=bool))
    for layer in range(num_layers):
        read[layer * d:(layer + 1) * d, layer * d:(layer + 1) * d] = True
    assert np.all(error[read] <= rounding_bound(x)[read])
    assert np.all(gram[~read] == 0)
