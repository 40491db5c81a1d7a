"""Principal angles between top-k eigenvector spans, in the Gram formulation.

For two layers with eigenvector rows ``A``, ``B`` (k, n) the principal-angle cosines
are the singular values of ``M = Qa^T Qb`` for orthonormal bases ``Qa``, ``Qb``. With
the unit-diagonal Gram ``D A A^T D = R^T R`` (``D`` scales the rows to unit length,
``R`` its Cholesky factor), ``Qa^T = P_A A`` with ``P_A = R^{-T} D`` lower triangular, so

    M = P_A (A B^T) P_B^T,

and everything of size n is in the Grams: the self Grams ``A A^T`` and the cross
Grams ``A B^T`` (``grams``: a fused Numba pass for the pairs (layer, anchor), one
BLAS SYRK per head outside any ``prange`` for all pairs). The rest sees only k x k
matrices: Cholesky + triangular inverse per (layer, head) (in the fused pass for the
pairs with the anchor, by batched LAPACK in :mod:`qkalign.linalg.cholesky_qr` for all
pairs), then ``M`` and its singular values (bidiagonalisation + dqds) per (pair, head); the
same pair kernel serves the pairs (layer, anchor) and all (layer, layer) pairs.

Cholesky-QR loses orthogonality like ``eps * cond(A)^2``, so it is used only when
Gershgorin bounds the unit-diagonal Gram's eigenvalues to ``[1 - r, 1 + r]`` with
``r <= 1/2`` (cond <= 3, true for eigenvectors stored in float16/bfloat16 and above).
Other rows (nearly dependent, or a zero row) are replaced by their Householder QR
basis, as the reference computes it, before the Grams are formed again.

On accuracy for nearly coincident subspaces: the reference (Knyazev & Argentati)
takes the cosines with ``cos^2 >= 1/2`` from the sines to get accurate *angles*.
The reported *cosines* near 1 are determined to a few ulps either way (an error
``e`` in ``M`` moves a singular value by ``e``), so the kernel takes all of them
from ``M``; tests check cos = 1 - 1e-10 and identical layers against the reference.
"""

import numpy as np
from numba import njit, prange

from ..linalg.cholesky_qr import cholesky_qr_factors
from ..stats.reference import householder_rows
from . import pair_lists
from .arguments import eig_dirs_array, layer_index
from .grams import grams_all_pairs, grams_to_anchor
from .small_linalg import lower_times_transpose, singular_values
from .thread_count import threads_for


@njit(parallel=True, cache=True, error_model="numpy")
def _principal_cosines(cross, first, second, p, out):
    """Principal-angle cosines of a list of layer pairs, every head.

    cross: (H, Q, k, k) float64, ``cross[h, q] = C = A B^T`` for pair ``q`` (``A``, ``B`` the
    rows of layers ``first[q]``, ``second[q]``, head h); p: (L, H, k, k) Cholesky-QR factors
    (``P A`` orthonormal rows); out: (Q, H, k) float64, the singular values of
    ``M = p[first[q], h] @ C @ p[second[q], h]^T`` clipped to [0, 1].
    The pair's work is written out here rather than in a helper: every compiled
    function is compiled again inside each caller, and a fresh numba cache pays for each.
    """
    num_heads = cross.shape[0]
    k = p.shape[2]
    for t in prange(first.shape[0] * num_heads):
        q = t // num_heads
        h = t % num_heads
        right = np.empty((k, k))
        lower_times_transpose(p[second[q], h], cross[h, q], right)  # (C @ p_second^T)^T
        m_mat = np.empty((k, k))
        lower_times_transpose(p[first[q], h], right, m_mat)
        cosines = out[q, h]
        singular_values(m_mat, cosines)
        for i in range(k):
            cosines[i] = min(max(cosines[i], 0.0), 1.0)


def _all_pairs_grams(eig_dirs):
    """``(self_grams, cross (H, Q, k, k), p, ok)`` for the pairs ``pair_lists.all_unordered``: BLAS SYRK,
    then the factors by batched LAPACK (a few ms, and no extra kernel to compile on a cold start)."""
    self_grams, cross = grams_all_pairs(eig_dirs)
    p, ok = cholesky_qr_factors(self_grams)
    return self_grams, cross, p, ok


def _anchor_grams(eig_dirs, anchor):
    """``(self_grams, cross (H, L, k, k), p, ok)`` for the pairs (layer, anchor), from one fused kernel;
    the cross blocks in the layout of :func:`_principal_cosines`."""
    self_grams, cross, p, ok = grams_to_anchor(eig_dirs, anchor)
    return self_grams, np.ascontiguousarray(cross.transpose(1, 0, 2, 3)), p, ok


def _svd_work(out_shape):
    """Rough flop count of :func:`_principal_cosines` for an output (Q, H, k): per (pair, head)
    two k x k triangular products, the bidiagonalisation (~8/3 k^3) and dqds (~O(k^2))."""
    num_pairs, num_heads, k = out_shape
    return num_pairs * num_heads * 4 * k ** 3


def orthonormalized(eig_dirs, grams_of):
    """Cross Grams and Cholesky-QR factors of ``eig_dirs``, with the Householder fallback where needed.

    grams_of: ``eig_dirs -> (self_grams (L, H, k, k), cross, p (L, H, k, k), ok (L, H))``.
    Returns ``(cross, p, fallback)``: the cross Grams of the rows actually used, their
    factors, and the (L, H) bool mask of blocks that took the Householder path.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # nan/inf rows: found just below
        self_grams, cross, p, ok = grams_of(eig_dirs)
    if not np.isfinite(self_grams).all():
        raise ValueError("eig_dirs holds nan or inf")
    fallback = ~ok
    if fallback.any():  # those blocks' rows replaced by Householder QR's, as the reference's
        patched = eig_dirs.astype(np.float64)  # a whole copy, only for rows far from orthonormal
        patched[fallback] = householder_rows(eig_dirs[fallback])
        _, cross, p, _ = grams_of(patched)
    return cross, p, fallback


def principal_cosines_to_anchor(eig_dirs, anchor):
    """Principal-angle cosines between every layer's top-k span and the anchor's, per head.

    Same as :func:`qkalign.stats.reference.principal_cosines_to_anchor`.
    eig_dirs: (L, H, k, n) -> (L, H, k) float64, descending along the last axis.
    """
    eig_dirs = eig_dirs_array(eig_dirs)
    num_layers, num_heads, k, _ = eig_dirs.shape
    anchor = layer_index(anchor, num_layers)
    cross, p, _ = orthonormalized(eig_dirs, lambda e: _anchor_grams(e, anchor))
    first, second = pair_lists.to_anchor(num_layers, anchor)
    out = np.empty((num_layers, num_heads, k))
    with threads_for(_svd_work(out.shape)):
        _principal_cosines(cross, first, second, p, out)
    out[anchor] = 1.0  # the anchor's span with itself, as the reference
    return out


#: Bytes of cross Grams (one k x k block per layer pair and head) held at once by the all-pairs
#: angles: heads are taken in groups of this size, so memory stays flat at any model size.
CROSS_GRAM_BYTES = 64 * 2**20


def principal_cosines_all_pairs(eig_dirs):
    """Principal-angle cosines between the top-k spans of every pair of layers, per head.

    Same as :func:`qkalign.stats.reference.principal_cosines_all_pairs`; each unordered
    pair is computed once and mirrored, so ``cos[i, j] == cos[j, i]`` exactly, and a
    layer's span with itself has all cosines exactly 1 (as the reference's sines give).
    Heads are computed in groups (:data:`CROSS_GRAM_BYTES`); each is the same bits either way.
    eig_dirs: (L, H, k, n) -> (L, L, H, k) float64.
    """
    eig_dirs = eig_dirs_array(eig_dirs)
    num_layers, num_heads, k, _ = eig_dirs.shape
    first, second = pair_lists.all_unordered(num_layers)
    out = np.ones((num_layers, num_layers, num_heads, k))
    group = max(1, CROSS_GRAM_BYTES // max(first.size * k * k * 8, 1))
    for start in range(0, num_heads, group):
        heads = slice(start, min(start + group, num_heads))
        cross, p, _ = orthonormalized(eig_dirs[:, heads], _all_pairs_grams)
        pair_cos = np.empty((first.size, cross.shape[0], k))
        with threads_for(_svd_work(pair_cos.shape)):
            _principal_cosines(cross, first, second, p, pair_cos)
        out[first, second, heads] = pair_cos
        out[second, first, heads] = pair_cos
    return out
