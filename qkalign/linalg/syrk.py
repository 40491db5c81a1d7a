"""The lower triangle of ``X X^T`` by one BLAS SYRK, called with the GIL released.

numpy's ``x @ x.T`` runs the same SYRK and then mirrors the triangle by strided copies (~15 %
more time at (3072, 2048)); scipy's ``blas.ssyrk`` skips the mirror but holds the GIL, so
measure's worker threads would take turns. This calls scipy's routine through ctypes
(:mod:`~qkalign.linalg.scipy_routines`).
"""

import numpy as np

from .scipy_routines import integer, real, routine


def syrk_lower(x):
    """``X X^T`` on and below the diagonal, zeros above: (m, n) float32 or float64 -> (m, m), same dtype.

    One SYRK, ``m (m + 1) n / 2`` multiply-adds. The rows of ``x`` are read in place when it is
    C-contiguous.
    """
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"syrk_lower takes float32 or float64 rows, not {x.dtype}")
    m, n = x.shape
    out = np.zeros((m, m), dtype=x.dtype)
    if m == 0 or n == 0:
        return out
    single = x.dtype == np.float32
    # In BLAS's column-major terms x is the (n, m) matrix X^T and out the (m, m) matrix C:
    # C = (X^T)^T X^T on C's upper triangle, which is the lower triangle of out row-major.
    routine("ssyrk" if single else "dsyrk")(b"U", b"T", integer(m), integer(n), real(1.0, single), x.ctypes.data,
                                            integer(n), real(0.0, single), out.ctypes.data, integer(m))
    return out
