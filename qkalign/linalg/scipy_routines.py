"""scipy's BLAS and LAPACK routines called through ctypes, which releases the GIL during each call.

scipy's own wrappers (``scipy.linalg.blas``, ``scipy.linalg.lapack``) hold the GIL, so threads
calling them take turns. ``scipy.linalg.cython_blas`` and ``cython_lapack`` export the same
routines as C function pointers; ctypes calls those with the GIL released. Every argument is
passed by address (Fortran's convention): :func:`integer` and :func:`real` box scalars, an
array is passed as ``array.ctypes.data``, a character option as ``b"L"``. The library, and so
the thread limit (:func:`~qkalign.linalg.blas_threads.one_blas_thread`), are scipy's.
"""

import ctypes
import functools


@functools.cache
def routine(name):
    """The ctypes function of scipy's BLAS or LAPACK routine ``name`` (``"dsyrk"``, ``"dsytrd"``, ...)."""
    from scipy.linalg import cython_blas, cython_lapack

    capi = cython_blas.__pyx_capi__ if name in cython_blas.__pyx_capi__ else cython_lapack.__pyx_capi__
    capsule = capi[name]
    capsule_name = ctypes.pythonapi.PyCapsule_GetName
    capsule_name.restype, capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    pointer = ctypes.pythonapi.PyCapsule_GetPointer
    pointer.restype, pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    signature = capsule_name(capsule)  # b"void (char *, int *, ...)": every argument a pointer
    arguments = signature.count(b",") + 1
    prototype = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * arguments))
    return prototype(pointer(capsule, signature))


def integer(value):
    """A Fortran ``INTEGER`` argument (scipy's LAPACK: 32 bits)."""
    return ctypes.byref(ctypes.c_int(value))


def real(value, single=False):
    """A Fortran ``DOUBLE PRECISION`` argument (``REAL`` with ``single``)."""
    return ctypes.byref(ctypes.c_float(value) if single else ctypes.c_double(value))
