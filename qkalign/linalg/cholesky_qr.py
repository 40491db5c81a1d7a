"""Cholesky-QR factors of blocks of rows, from their Grams (numpy, batched).

Rows ``A`` (k x n) become orthonormal rows ``P A`` with ``P`` (k x k, lower triangular)
from the k x k Gram alone: with ``D`` scaling the rows to unit length and
``D A A^T D = L L^T`` (Cholesky), ``P = L^{-1} D``. Cholesky-QR loses orthogonality
like ``eps cond(A)^2``, so a block is trusted (``ok``) only where Gershgorin bounds the
unit-diagonal Gram's eigenvalues to ``[1 - r, 1 + r]`` with ``r <= 1/2`` (cond <= 3:
stored eigenvectors, whose rows are orthonormal up to rounding, have ``r ~ 1e-8``);
other blocks (nearly dependent rows, a zero row, nan) are left to Householder QR
(:func:`qkalign.stats.reference.householder_rows`).

Head matching and the all-pairs principal angles take their factors from here; the
fused Numba pass of the to-anchor angles computes the same factor, one block at a time,
with ``qkalign.kernels.small_linalg.cholesky_qr_factor``.
"""

import numpy as np

from .blas_threads import one_blas_thread

#: Largest Gershgorin radius of the unit-diagonal Gram for which Cholesky-QR is trusted.
GERSHGORIN_RADIUS_LIMIT = 0.5


def cholesky_qr_factors(grams):
    """Cholesky-QR factors per block: grams ``A A^T`` (..., k, k) -> ``P`` (..., k, k), ``ok`` (...,) bool.

    ``P A`` has orthonormal rows where ``ok``; elsewhere ``P`` is the identity and the
    block needs Householder QR. Non-finite or zero-diagonal Grams are not ``ok``.
    """
    k = grams.shape[-1]
    norms = np.sqrt(np.einsum("...ii->...i", grams))
    with np.errstate(divide="ignore", invalid="ignore"):  # zero rows, nan: not ok
        unit = grams / norms[..., :, None] / norms[..., None, :]
        ok = np.abs(unit - np.eye(k)).sum(axis=-1).max(axis=-1) <= GERSHGORIN_RADIUS_LIMIT
    factors = np.broadcast_to(np.eye(k), grams.shape).copy()
    with one_blas_thread():  # thousands of k x k factorisations: one BLAS thread each is fastest
        factors[ok] = np.linalg.inv(np.linalg.cholesky(unit[ok])) / norms[ok][..., None, :]
    return factors, ok

