"""Gram matrices of eigenvector rows: ``A A^T`` and ``A B^T`` for (layer, head) blocks.

The only O(n) work of the principal angles. For the pairs (layer, anchor) a fused
Numba kernel reads each layer's rows once and forms both products from cache (numpy's
batched ``matmul`` calls BLAS once per k x n block and packs its operands every time).
For all layer pairs one BLAS SYRK per head (``X X^T``, X = all layers' rows) runs near
the machine's peak, so that stays with numpy: the heads are shared out to numba's thread
count of worker threads, each calling single-threaded BLAS (faster on few cores than one
multi-threaded SYRK after another; a head's SYRK is the same bits either way). Only the
blocks above the diagonal are copied out, one contiguous (k, k) block per pair, so the
whole (L k, L k) Grams are never held at once.
"""

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange

from ..linalg.blas_threads import one_blas_thread
from ..linalg.cholesky_qr import GERSHGORIN_RADIUS_LIMIT
from . import pair_lists
from .small_linalg import FASTMATH, cholesky_qr_factor, dot
from .thread_count import threads_for


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _dots_2x4(x0, x1, y0, y1, y2, y3):
    """The 8 dot products of rows ``x0, x1`` with ``y0..y3``: one pass, 8 vector accumulators.

    Rows may be float32: each entry is widened, so products (exact) and sums are float64.
    """
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = 0.0
    for m in range(x0.shape[0]):
        a0 = np.float64(x0[m])
        a1 = np.float64(x1[m])
        b0 = np.float64(y0[m])
        b1 = np.float64(y1[m])
        b2 = np.float64(y2[m])
        b3 = np.float64(y3[m])
        s00 += a0 * b0
        s01 += a0 * b1
        s02 += a0 * b2
        s03 += a0 * b3
        s10 += a1 * b0
        s11 += a1 * b1
        s12 += a1 * b2
        s13 += a1 * b3
    return s00, s01, s02, s03, s10, s11, s12, s13


@njit(cache=True, error_model="numpy")
def _tile(x, y, out, i0, j0):
    """``out[i0:i0+2, j0:j0+4] = x[i0:i0+2] @ y[j0:j0+4].T``."""
    s = _dots_2x4(x[i0], x[i0 + 1], y[j0], y[j0 + 1], y[j0 + 2], y[j0 + 3])
    for q in range(4):
        out[i0, j0 + q] = s[q]
        out[i0 + 1, j0 + q] = s[4 + q]


@njit(cache=True, error_model="numpy")
def _block_grams(a, b, self_gram, cross):
    """``self_gram = a a^T`` and ``cross = a b^T`` for rows a, b: (k, n).

    2 x 4 register tiles; for k not a multiple of the tile the last tile is moved
    back to overlap its neighbour (the overlapped entries get identical bits).
    Self tiles run first (only ``a`` in cache), then the cross tiles column block
    by column block, so ``a`` plus four rows of ``b`` stay in L2.
    """
    k = a.shape[0]
    if k < 4:
        for i in range(k):
            for j in range(k):
                self_gram[i, j] = dot(a[i], a[j])
                cross[i, j] = dot(a[i], b[j])
        return
    for i in range(0, k, 2):
        i0 = min(i, k - 2)
        for j in range(0, k, 4):
            j0 = min(j, k - 4)
            if j0 + 3 >= i0:  # a tile reaching the upper triangle; the rest is mirrored below
                _tile(a, a, self_gram, i0, j0)
    for i in range(k):
        for j in range(i):
            self_gram[i, j] = self_gram[j, i]
    for j in range(0, k, 4):
        j0 = min(j, k - 4)
        for i in range(0, k, 2):
            _tile(a, b, cross, min(i, k - 2), j0)


@njit(parallel=True, cache=True, error_model="numpy")
def _grams_to_layer(eig_dirs, anchor, radius_limit, self_grams, cross, p, ok):
    """Per (layer, head): ``self_grams[L, h] = A A^T``, ``cross[L, h] = A B^T`` with
    ``A = eig_dirs[L, h]``, ``B = eig_dirs[anchor, h]``, and the Cholesky-QR factor of
    ``A A^T`` while it is in cache (``p``, ``ok``: see :func:`cholesky_qr_factor`).
    eig_dirs: (L, H, k, n); self_grams, cross, p: (L, H, k, k); ok: (L, H) bool."""
    num_layers, num_heads = eig_dirs.shape[:2]
    for t in prange(num_layers * num_heads):
        # head-major: a thread's consecutive tasks share the anchor's rows B (~10 % faster)
        h = t // num_layers
        layer = t % num_layers
        _block_grams(eig_dirs[layer, h], eig_dirs[anchor, h], self_grams[layer, h], cross[layer, h])
        ok[layer, h] = cholesky_qr_factor(self_grams[layer, h], radius_limit, p[layer, h])


def grams_to_anchor(eig_dirs, anchor):
    """Self Grams, cross Grams with the anchor, Cholesky-QR factors (each (L, H, k, k)) and
    their ``ok`` flags (L, H) of eig_dirs (L, H, k, n)."""
    num_layers, num_heads, k, hidden = eig_dirs.shape
    self_grams, cross, p = (np.empty((num_layers, num_heads, k, k)) for _ in range(3))
    ok = np.empty((num_layers, num_heads), dtype=np.bool_)
    with threads_for(num_layers * num_heads * k * k * hidden):
        _grams_to_layer(eig_dirs, anchor, GERSHGORIN_RADIUS_LIMIT, self_grams, cross, p, ok)
    return self_grams, cross, p, ok


def grams_all_pairs(eig_dirs):
    """Self Grams (L, H, k, k) and the cross Grams of every pair of layers ``i < j``.

    Returns ``(self_grams, blocks)``: ``blocks[h, q] = A_i A_j^T`` (H, Q, k, k) for the pairs
    ``(i, j) = pair_lists.all_unordered(L)[:, q]``, ``A_i = eig_dirs[i, h]``. Per head one SYRK
    ``X_h X_h^T`` (``X_h`` the rows of all layers stacked) gives all of them; each worker
    thread keeps one head's rows and Gram at a time and copies out the blocks above the
    diagonal, so the full (H, L k, L k) Grams are never held at once.
    """
    num_layers, num_heads, k, n = eig_dirs.shape
    first, second = pair_lists.all_unordered(num_layers)
    layers = np.arange(num_layers)
    self_grams = np.empty((num_layers, num_heads, k, k))
    blocks = np.empty((num_heads, first.size, k, k))
    workers = min(numba.get_num_threads(), num_heads)

    def heads_of_worker(worker):
        rows = np.empty((num_layers, k, n))
        gram = np.empty((num_layers * k, num_layers * k))
        by_layer = gram.reshape(num_layers, k, num_layers, k)
        for h in range(worker, num_heads, workers):
            np.copyto(rows, eig_dirs[:, h])
            stacked = rows.reshape(num_layers * k, n)
            np.matmul(stacked, stacked.T, out=gram)  # numpy takes the SYRK path for x @ x.T
            blocks[h] = by_layer[first, :, second, :]
            self_grams[:, h] = by_layer[layers, :, layers, :]

    with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
        list(pool.map(heads_of_worker, range(workers)))  # numpy releases the GIL inside BLAS
    return self_grams, blocks
