"""Operator cosines from the gram tensor: per head, and the rescale onto an anchor layer.

Serial kernels: an O(L^2 H) pass over a gram of a few MB takes well under a
millisecond, less than waking the worker threads of a ``prange`` (see ``threads``).
"""

import numpy as np
from numba import njit

from .checks import float_array, layer_index


@njit(cache=True)
def _operator_cos_per_head(gram, inverse_norms, out):
    """``out[i, j, h] = gram[i, j, h] inverse_norms[i, h] inverse_norms[j, h]``; gram, out: (L, L, H).

    Multiplying by precomputed reciprocals (within 2 ulps of the reference's division)
    keeps the loop off the divider, whose throughput bounds it otherwise.
    """
    num_layers = gram.shape[0]
    for i in range(num_layers):
        for j in range(num_layers):
            # 1-d rows over heads: contiguous, so the loop vectorises
            gram_row, out_row, inv_i, inv_j = gram[i, j], out[i, j], inverse_norms[i], inverse_norms[j]
            for h in range(gram_row.shape[0]):
                out_row[h] = gram_row[h] * (inv_i[h] * inv_j[h])


@njit(cache=True)
def _rescale_to_anchor(gram, norms, anchor, t_opt, mean_cos, mean_resid, resid_of_mean_cos):
    """Per layer ``L``: head means of ``gram[L, a] / gram[a, a]``,
    of ``cos[L, a]`` and of ``sqrt(1 - cos^2)``; then ``sqrt(1 - mean_cos^2)``."""
    num_layers, _, num_heads = gram.shape
    for layer in range(num_layers):
        t_sum = 0.0
        cos_sum = 0.0
        resid_sum = 0.0
        for h in range(num_heads):
            t_sum += gram[layer, anchor, h] / gram[anchor, anchor, h]
            cos = gram[layer, anchor, h] / (norms[layer, h] * norms[anchor, h])
            cos_sum += cos
            resid_sum += np.sqrt(min(max(1.0 - cos * cos, 0.0), 1.0))
        t_opt[layer] = t_sum / num_heads
        mean_cos[layer] = cos_sum / num_heads
        mean_resid[layer] = resid_sum / num_heads
        resid_of_mean_cos[layer] = np.sqrt(max(1.0 - mean_cos[layer] ** 2, 0.0))


def _gram_and_norms(gram):
    """``gram`` as (L, L, H) float64 and the operator norms ``sqrt(gram[L, L, h])`` (L, H),
    checking that the diagonal is positive (the cosines divide by it). Other nan/inf
    entries propagate to the result, as in the reference."""
    gram = float_array(gram, 3, "gram", check_finite=False)
    if gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must have shape (L, L, H), got {gram.shape}")
    diagonal = np.diagonal(gram, axis1=0, axis2=1).T
    if not (diagonal > 0).all():
        raise ValueError("gram has a diagonal entry gram[L, L, h] <= 0 (a zero-norm head) or nan")
    return gram, np.sqrt(diagonal)


def operator_cos_per_head(gram):
    """Operator cosine ``cos[L, L', h] = gram[L, L', h] / (||g_L^h|| ||g_L'^h||)``.

    Same as :func:`qkalign.reference.operator_cos_per_head`. gram: (L, L, H) -> (L, L, H) float64.
    """
    gram, norms = _gram_and_norms(gram)
    out = np.empty_like(gram)
    _operator_cos_per_head(gram, 1.0 / norms, out)
    return out


def rescale_to_anchor(gram, anchor):
    """``(t_opt, mean_cos, mean_resid, resid_of_mean_cos)``, each (L,) float64.

    Same as :func:`qkalign.reference.rescale_to_anchor`.
    """
    gram, norms = _gram_and_norms(gram)
    num_layers = gram.shape[0]
    outs = tuple(np.empty(num_layers) for _ in range(4))
    _rescale_to_anchor(gram, norms, layer_index(anchor, num_layers), *outs)
    return outs
