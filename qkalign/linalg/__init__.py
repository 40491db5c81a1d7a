"""Batched numpy linear algebra shared by ``weights``, ``stats`` and ``kernels``.

- ``blas_threads``: BLAS on one thread per call and batches split across the cores;
- ``cholesky_qr``: orthonormal rows of many small blocks from their Grams (Householder QR
  where Cholesky-QR cannot be trusted);
- ``binary_scaling``: exact power-of-two rescaling that keeps products inside the float range;
- ``syrk``: the lower triangle of ``X X^T`` by one BLAS SYRK, the GIL released.

The Numba kernels' own k x k linear algebra (run inside ``prange``) is ``qkalign.kernels.small_linalg``.
"""
