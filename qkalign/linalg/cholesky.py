"""Lower Cholesky factors of a batch of small symmetric matrices (LAPACK dpotrf, the GIL released).

``numpy.linalg.cholesky`` copies each matrix in and out by strided copies and raises for the
whole batch when one item is not positive definite; this calls scipy's ``dpotrf`` on each
item in place (:mod:`~qkalign.linalg.scipy_routines`): 0.42 against 0.67 ms at 256 x 256.
"""

import ctypes

import numpy as np

from .scipy_routines import integer, routine


def lower_cholesky(g):
    """Factors ``L`` (lower triangular, zeros above) with ``g = L L^T``: (b, m, m) float64 -> (b, m, m), (b,) bool.

    The bool is False where the item is not positive definite (a pivot <= 0) or not finite;
    that item's factor is all zeros.
    """
    out = np.array(g, dtype=np.float64, order="C")
    b, m = out.shape[0], out.shape[-1]
    ok = np.ones(b, dtype=bool)
    info = ctypes.c_int(0)
    for i in range(b):
        # A symmetric matrix is its own transpose: Fortran's upper factor U (g = U^T U) of the
        # C-ordered item is L^T, so the C-ordered item holds L on and below the diagonal.
        routine("dpotrf")(b"U", integer(m), out[i].ctypes.data, integer(m), ctypes.byref(info))
        # OpenBLAS's dpotrf does not stop at a nan; one in the triangle read reaches a later pivot.
        if info.value or not np.isfinite(np.diagonal(out[i])).all():
            out[i] = 0.0
            ok[i] = False
    upper = np.triu_indices(m, 1)
    out[:, upper[0], upper[1]] = 0.0  # dpotrf leaves the other triangle as it was
    return out, ok
