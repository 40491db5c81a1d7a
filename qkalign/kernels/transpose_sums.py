"""``<g_L, g_L'^T>`` of one head from ``X = Q K^T``: block sums of ``X * X^T`` in float64.

Used by ``qkalign.weights.measure`` with ``symmetry_split=True``; the numpy definition (and the derivation) is
:func:`qkalign.weights.symmetry_split.gram_transpose_from_product`.
"""

import numpy as np
from numba import njit


# nogil: measure runs it in worker threads beside BLAS calls; reassoc lets the float64 sums vectorise.
@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _transpose_block_sums(x, head_dim, column, out):
    """``out[a, b] = sum_ij x[a d + i, b d + j] x[b d + j, a d + i]``, products and sums in float64; only the
    pairs ``b <= a`` are visited and mirrored (the sum is symmetric in a, b). column: (d,) float64 scratch."""
    num_layers = out.shape[0]
    for a in range(num_layers):
        for b in range(a + 1):
            total = 0.0
            for i in range(a * head_dim, (a + 1) * head_dim):
                # column i of block (b, a) is strided in x: gathered once, then a contiguous dot with row i of (a, b)
                for j in range(head_dim):
                    column[j] = x[b * head_dim + j, i]
                row = x[i, b * head_dim:(b + 1) * head_dim]
                partial = 0.0
                for j in range(head_dim):
                    partial += np.float64(row[j]) * column[j]
                total += partial
            out[a, b] = total
            out[b, a] = total


def gram_transpose_from_product(x, num_layers, head_dim):
    """``T[L, L'] = sum_ij x[L d + i, L' d + j] x[L' d + j, L d + i]`` summed in float64.

    Each product is formed in float64 from the float32 (or float64) entries, without a float64 copy of ``x``.

    x: (L d, L d) float32 or float64 ``X = Q K^T`` of one head's stacked blocks -> (L, L) float64.
    """
    x = np.ascontiguousarray(x)
    if x.shape != (num_layers * head_dim,) * 2 or x.dtype not in (np.float32, np.float64):
        raise ValueError(f"x must be ({num_layers} * {head_dim}) square, float32 or float64; got {x.shape} {x.dtype}")
    out = np.empty((num_layers, num_layers))
    _transpose_block_sums(x, head_dim, np.empty(head_dim), out)
    return out
