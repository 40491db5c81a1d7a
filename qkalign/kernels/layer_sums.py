"""The sums of one layer's whole operator ``W`` (n x n) in one pass: ``||W||^2``, ``<W, W^T>`` and its squared row
and column norms, in float64.

Used by ``qkalign.weights.measure`` with ``layer_symmetry``; the numpy definition is
:func:`qkalign.weights.layer_symmetry.operator_sums`. ``W`` is visited by pairs of square tiles ``(a, b)``, ``b >= a``:
tile ``(b, a)`` is copied transposed into a small float64 scratch while its squares are summed, then tile ``(a, b)``
is read row by row against it, so that every entry of ``W`` is read once (a float32 ``W`` is never widened whole).
Serial and in a fixed order (measure runs one call per core, in its worker threads): the same bits on every run.
"""

import numpy as np
from numba import njit

#: Side of the square tiles: a float64 tile (32 KiB) stays in the L1 cache beside the rows it meets.
TILE = 64


# nogil: measure runs it in worker threads beside BLAS calls; reassoc lets the float64 sums vectorise.
@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _operator_sums(w, tile, scratch, row_sq, col_sq):
    """Fill ``row_sq`` (n,), ``col_sq`` (n,) with the squared row and column norms of ``w`` (n, n) and return
    ``sum_ij w_ij w_ji``, products and sums in float64. scratch: (tile, tile) float64."""
    n = w.shape[0]
    row_sq[:] = 0.0
    col_sq[:] = 0.0
    inner = 0.0
    for a in range(0, n, tile):
        a_end = min(a + tile, n)
        for b in range(a, n, tile):
            b_end = min(b + tile, n)
            if b != a:  # tile (b, a): its squares, and itself transposed into the scratch
                for j in range(b, b_end):
                    row = w[j, a:a_end]
                    partial = 0.0
                    for i in range(a_end - a):
                        x = np.float64(row[i])
                        scratch[i, j - b] = x
                        partial += x * x
                        col_sq[a + i] += x * x
                    row_sq[j] += partial
            else:
                for j in range(b, b_end):
                    row = w[j, a:a_end]
                    for i in range(a_end - a):
                        scratch[i, j - b] = np.float64(row[i])
            pair = 0.0
            for i in range(a, a_end):  # tile (a, b), row by row: squares, and products with W^T
                row = w[i, b:b_end]
                mirrored = scratch[i - a]
                partial = squares = 0.0
                for j in range(b_end - b):
                    x = np.float64(row[j])
                    partial += x * mirrored[j]
                    squares += x * x
                    col_sq[b + j] += x * x
                row_sq[i] += squares
                pair += partial
            inner += pair if b == a else 2.0 * pair
    return inner


def operator_sums(w, tile=TILE):
    """``(sum w^2, sum w * w^T, row_sq, col_sq)`` of a square ``w``: float64 scalars and (n,) float64 squared row and
    column norms, each product formed in float64 from the float32 (or float64) entries.

    w: (n, n) float32 or float64; tile: side of the square tiles it is read by.
    """
    w = np.ascontiguousarray(w)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.dtype not in (np.float32, np.float64):
        raise ValueError(f"w must be square, float32 or float64; got {w.shape} {w.dtype}")
    if int(tile) < 1:
        raise ValueError(f"tile must be a positive integer; got {tile!r}")
    tile = int(tile)
    n = len(w)
    row_sq, col_sq = np.empty(n), np.empty(n)
    inner = _operator_sums(w, tile, np.empty((tile, tile)), row_sq, col_sq)
    return np.float64(row_sq.sum()), np.float64(inner), row_sq, col_sq
