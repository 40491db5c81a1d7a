"""The lower triangle of ``X X^T`` by one BLAS SYRK, called with the GIL released.

numpy's ``x @ x.T`` runs the same SYRK and then mirrors the triangle by strided copies (~15 %
more time at (3072, 2048)); scipy's ``blas.ssyrk`` skips the mirror but holds the GIL, so
measure's worker threads would take turns. This calls scipy's BLAS routine through ctypes
(which releases the GIL) at the address ``scipy.linalg.cython_blas`` exports: the library and
the thread limit (:func:`~qkalign.linalg.blas_threads.one_blas_thread`) are scipy's.
"""

import ctypes
import functools

import numpy as np


@functools.cache
def _routine(dtype):
    """``(ctypes function, ctypes real type)`` of scipy's ``ssyrk`` or ``dsyrk``."""
    from scipy.linalg import cython_blas

    capsule = cython_blas.__pyx_capi__["dsyrk" if dtype == np.float64 else "ssyrk"]
    capsule_name = ctypes.pythonapi.PyCapsule_GetName
    capsule_name.restype, capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    pointer = ctypes.pythonapi.PyCapsule_GetPointer
    pointer.restype, pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    real = ctypes.c_double if dtype == np.float64 else ctypes.c_float
    integer = ctypes.POINTER(ctypes.c_int)
    # cython_blas's C signature: ssyrk(uplo, trans, n, k, alpha, a, lda, beta, c, ldc), all by pointer.
    prototype = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, integer, integer, ctypes.POINTER(real),
                                 ctypes.c_void_p, integer, ctypes.POINTER(real), ctypes.c_void_p, integer)
    return prototype(pointer(capsule, capsule_name(capsule))), real


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
    syrk, real = _routine(x.dtype)
    # In BLAS's column-major terms x is the (n, m) matrix X^T and out the (m, m) matrix C:
    # C = (X^T)^T X^T on C's upper triangle, which is the lower triangle of out row-major.
    syrk(b"U", b"T", ctypes.byref(ctypes.c_int(m)), ctypes.byref(ctypes.c_int(n)), ctypes.byref(real(1.0)),
         x.ctypes.data, ctypes.byref(ctypes.c_int(n)), ctypes.byref(real(0.0)), out.ctypes.data,
         ctypes.byref(ctypes.c_int(m)))
    return out
