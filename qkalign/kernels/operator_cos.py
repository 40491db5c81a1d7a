"""Operator cosines from the gram tensor: per head, and the rescale onto an anchor layer.

Serial kernels: an O(L^2 H) pass over a gram of a few MB takes well under a
millisecond, less than waking the worker threads of a ``prange`` (see ``thread_count``).
"""

import numpy as np
from numba import njit

from .arguments import float_array, layer_index


@njit(cache=True, error_model="numpy")
def _norms(gram, out):
    """``out[L, h] = sqrt(gram[L, L, h])`` (L, H); returns how many diagonal entries are not > 0."""
    bad = 0
    for layer in range(gram.shape[0]):
        for h in range(gram.shape[2]):
            diagonal = gram[layer, layer, h]
            bad += not diagonal > 0.0
            out[layer, h] = np.sqrt(diagonal)
    return bad


@njit(cache=True, error_model="numpy")
def _operator_cos_per_head(gram, out):
    """``out[i, j, h] = gram[i, j, h] / (||g_i^h|| ||g_j^h||)``; gram, out: (L, L, H).

    The same operations as the reference, so the same bits: ``1 - cos^2`` downstream
    amplifies any ulp of a cosine near 1; ``out[i, i] = 1`` exactly. Returns the number of diagonal entries
    that are not > 0 (``out`` is then undefined).
    """
    num_layers, _, num_heads = gram.shape
    norms = np.empty((num_layers, num_heads))
    bad = _norms(gram, norms)
    if bad:
        return bad
    for i in range(num_layers):
        for j in range(num_layers):
            # 1-d rows over heads: contiguous, so the loop vectorises
            gram_row, out_row, norms_i, norms_j = gram[i, j], out[i, j], norms[i], norms[j]
            if i == j:  # a layer with itself: 1 by construction, as the reference
                out_row[:] = 1.0
                continue
            for h in range(num_heads):
                out_row[h] = gram_row[h] / (norms_i[h] * norms_j[h])
    return 0


@njit(cache=True, error_model="numpy")
def _rescale_to_anchor(gram, anchor, t_opt, mean_cos, mean_resid, resid_of_mean_cos):
    """Per layer ``L``: head means of ``gram[L, a] / gram[a, a]``, of ``cos[L, a]`` and of
    ``sqrt(1 - cos^2)``; then ``sqrt(1 - mean_cos^2)``. Returns the number of diagonal
    entries that are not > 0 (the outputs are then undefined)."""
    num_layers, _, num_heads = gram.shape
    norms = np.empty((num_layers, num_heads))
    bad = _norms(gram, norms)
    if bad:
        return bad
    for layer in range(num_layers):
        t_sum = 0.0
        cos_sum = 0.0
        resid_sum = 0.0
        for h in range(num_heads):
            t_sum += gram[layer, anchor, h] / gram[anchor, anchor, h]
            cos = 1.0 if layer == anchor else gram[layer, anchor, h] / (norms[layer, h] * norms[anchor, h])
            cos_sum += cos
            resid_sum += np.sqrt(min(max(1.0 - cos * cos, 0.0), 1.0))
        t_opt[layer] = t_sum / num_heads
        mean_cos[layer] = cos_sum / num_heads
        mean_resid[layer] = resid_sum / num_heads
        resid_of_mean_cos[layer] = np.sqrt(max(1.0 - mean_cos[layer] ** 2, 0.0))
    return 0


def _gram_array(gram):
    """``gram`` as a C-contiguous (L, L, H) float64 array."""
    gram = float_array(gram, 3, "gram", check_finite=False)
    if gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must have shape (L, L, H), got {gram.shape}")
    return gram


def _check_diagonal(bad):
    if bad:
        raise ValueError(f"gram has {bad} diagonal entries gram[L, L, h] <= 0 (zero-norm heads) or nan")


def operator_cos_per_head(gram):
    """Operator cosine ``cos[L, L', h] = gram[L, L', h] / (||g_L^h|| ||g_L'^h||)``.

    Same as :func:`qkalign.stats.reference.operator_cos_per_head`. gram: (L, L, H) -> (L, L, H) float64.
    """
    gram = _gram_array(gram)
    out = np.empty_like(gram)
    _check_diagonal(_operator_cos_per_head(gram, out))
    return out


def rescale_to_anchor(gram, anchor):
    """``(t_opt, mean_cos, mean_resid, resid_of_mean_cos)``, each (L,) float64.

    Same as :func:`qkalign.stats.reference.rescale_to_anchor`.
    """
    gram = _gram_array(gram)
    num_layers = gram.shape[0]
    outs = tuple(np.empty(num_layers) for _ in range(4))
    _check_diagonal(_rescale_to_anchor(gram, layer_index(anchor, num_layers), *outs))
    return outs
