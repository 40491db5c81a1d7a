"""Spectral cosines: cosines between the |lambda|-sorted eigenvalue vectors of every two layers."""

import numpy as np

from ..linalg.binary_scaling import normalized_rows
from ..stats.reference import exact_self_comparisons
from .arguments import float_array


def spectral_cos_all_pairs(sym_eigs, absolute=False):
    """Cosine between the eigenvalue vectors (or, ``absolute``, their magnitudes) of every two layers, per head.

    Same as :func:`qkalign.stats.reference.spectral_cos_all_pairs`. sym_eigs: (L, H, m) -> (L, L, H).
    All pairs of a head are one (L x m) @ (m x L) product of the unit vectors, so BLAS takes it
    (one batched call over heads, no kernel): like the all-pairs top-1 overlap, the work is a GEMM.
    """
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs", check_finite=False)  # nan/inf propagate as in numpy
    sym_eigs = normalized_rows(sym_eigs)  # as the reference: squared norms in range at any scale
    with np.errstate(invalid="ignore", divide="ignore"):  # an all-zero spectrum: nan, as the reference
        unit = sym_eigs / np.linalg.norm(sym_eigs, axis=-1, keepdims=True)
    if absolute:
        np.abs(unit, out=unit)  # | lambda | / || lambda ||: no second array (fresh pages are slow here)
    unit = np.swapaxes(unit, 0, 1)  # (H, L, m)
    cos = np.matmul(unit, np.swapaxes(unit, 1, 2))  # (H, L, L)
    return exact_self_comparisons(np.ascontiguousarray(cos.transpose(1, 2, 0)))
