"""Batched numpy linear algebra shared by ``weights``, ``stats`` and ``kernels``.

- ``blas_threads``: BLAS on one thread per call and batches split across the cores;
- ``cholesky_qr``: orthonormal rows of many small blocks from their Grams (Householder QR
  where Cholesky-QR cannot be trusted);
- ``binary_scaling``: exact power-of-two rescaling that keeps products inside the float range;
- ``syrk``: the lower triangle of ``X X^T`` by one BLAS SYRK, the GIL released;
- ``cholesky``: lower Cholesky factors of a batch of small matrices (LAPACK, the GIL released);
- ``leading_eigen``: every eigenvalue and the leading eigenvectors of small symmetric matrices (LAPACK);
- ``scipy_routines``: scipy's BLAS and LAPACK routines through ctypes, which releases the GIL.

The Numba kernels' own k x k linear algebra (run inside ``prange``) is ``qkalign.kernels.small_linalg``.
"""
