"""The cross-layer inner products of one operator with the other's transpose, ``<g_L, g_L'^T>``, from one GEMM.

With ``S = (g + g^T)/2`` and ``A = (g - g^T)/2`` the symmetric and skew parts of each operator,
``<S_L, S_L'> = (<g_L, g_L'> + <g_L, g_L'^T>)/2`` and ``<A_L, A_L'> = (<g_L, g_L'> - <g_L, g_L'^T>)/2``: the gram
and ``gram_transpose[L, L', h] = <g_L, g_L'^T>_F`` split the cross-layer agreement into its two halves
(:mod:`qkalign.stats.symmetry_split`). Per query head, with ``K_L``, ``Q_L`` its (d, n) blocks and ``g_L = K_L^T Q_L``,

``<g_L, g_L'^T> = tr(g_L g_L') = tr(K_L^T Q_L K_L'^T Q_L') = tr((Q_L K_L'^T)(Q_L' K_L^T))
= sum_ij X[L, L']_ij X[L', L]_ji``

for ``X = Q K^T``, the (L d, L d) product of the head's stacked Q blocks with its stacked K blocks and
``X[L, L'] = Q_L K_L'^T`` its (d, d) block: one GEMM of ``(L d)^2 n`` multiply-adds per query head (twice a SYRK's),
then block sums of ``X * X^T`` (:func:`gram_transpose_from_product`); no n x n matrix. ``gram_transpose`` is
symmetric in (L, L'), its diagonal ``<g_L, g_L^T> = tr((Q_L K_L^T)^2)`` (the symmetry score's numerator). For a
rotated operator ``g_L = K_L^T M_L Q_L`` (:mod:`~qkalign.weights.rotary_operator`) ``Q_L`` becomes ``M_L Q_L``:
``X[L, L'] = M_L Q_L K_L'^T``. measure forms ``M Q`` before the GEMM (``L d^2 n`` multiply-adds, against
``d (L d)^2`` for mapping the block rows of ``X`` after it, and no float64 copy of ``X``).

The product adds ``H (L d)^2 n`` multiply-adds to the SYRKs' ``(H + H_kv) (L d)^2 n / 2`` (1.6x them at qwen3-4b;
measure took 1.6-2.2x the wall, ``benchmarks/test_bench_measure.py``), so it is an option,
``measure(symmetry_split=True)``.
"""

import numpy as np


def stacked_product(q, k, maps=None):
    """``X = (M Q) K^T``: (L, d, n) query and key blocks of one head -> (L d, L d) in their precision.

    maps: (L, d, d) float64 ``M_L`` of a rotated operator (None: ``X = Q K^T``); ``M_L Q_L`` is rounded to the
    blocks' precision before the product, as the other products of measure are.
    """
    num_layers, d, n = q.shape
    if maps is not None:
        q = np.matmul(maps.astype(q.dtype), q)
    return q.reshape(num_layers * d, n) @ k.reshape(num_layers * d, n).T


def gram_transpose_from_product(x, num_layers, head_dim):
    """Block sums ``T[L, L'] = sum_ij X[L d + i, L' d + j] X[L' d + j, L d + i]`` (the numpy definition).

    x: (L d, L d) float32 or float64 ``X = Q K^T`` of one head -> (L, L) float64, ``<g_L, g_L'^T>``.
    """
    x = np.asarray(x, dtype=np.float64)
    blocks = x.reshape(num_layers, head_dim, num_layers, head_dim)
    # (X^T)[L d + i, L' d + j] = X[L' d + j, L d + i]
    return np.einsum("aibj,bjai->ab", blocks, blocks)


def symmetry_split_record(arrays):
    """The JSON's ``symmetry_split`` (whether measure formed ``gram_transpose``) and ``gram_transpose``: L x L x H
    nested lists, or None; pops measure's ``gram_transpose`` (L, L, H) from ``arrays`` when it is there."""
    gram_transpose = arrays.pop("gram_transpose", None)
    return {"symmetry_split": gram_transpose is not None,
            "gram_transpose": None if gram_transpose is None else gram_transpose.tolist()}
