"""Operator cosines from the gram tensor: per head, and the rescale onto an anchor layer."""

import numpy as np
from numba import njit, prange

from .checks import float_array, layer_index


@njit(parallel=True, cache=True)
def _operator_cos_per_head(gram, out):
    """``out[i, j, h] = gram[i, j, h] / (sqrt(gram[i, i, h]) sqrt(gram[j, j, h]))``; gram, out: (L, L, H)."""
    num_layers, _, num_heads = gram.shape
    for i in prange(num_layers):
        for j in range(num_layers):
            for h in range(num_heads):
                out[i, j, h] = gram[i, j, h] / (np.sqrt(gram[i, i, h]) * np.sqrt(gram[j, j, h]))


@njit(parallel=True, cache=True)
def _rescale_to_anchor(gram, anchor, t_opt, mean_cos, mean_resid, resid_of_mean_cos):
    """Per layer ``L`` (one prange slot each): head means of ``gram[L, a] / gram[a, a]``,
    of ``cos[L, a]`` and of ``sqrt(1 - cos^2)``; then ``sqrt(1 - mean_cos^2)``."""
    num_layers, _, num_heads = gram.shape
    for layer in prange(num_layers):
        t_sum = 0.0
        cos_sum = 0.0
        resid_sum = 0.0
        for h in range(num_heads):
            anchor_sq = gram[anchor, anchor, h]
            t_sum += gram[layer, anchor, h] / anchor_sq
            cos = gram[layer, anchor, h] / (np.sqrt(gram[layer, layer, h]) * np.sqrt(anchor_sq))
            cos_sum += cos
            resid_sum += np.sqrt(min(max(1.0 - cos * cos, 0.0), 1.0))
        t_opt[layer] = t_sum / num_heads
        mean_cos[layer] = cos_sum / num_heads
        mean_resid[layer] = resid_sum / num_heads
        resid_of_mean_cos[layer] = np.sqrt(max(1.0 - mean_cos[layer] ** 2, 0.0))


def _gram_array(gram):
    """``gram`` as (L, L, H) float64 with a positive diagonal (the cosines divide by it)."""
    gram = float_array(gram, 3, "gram")
    if gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must have shape (L, L, H), got {gram.shape}")
    if not (np.einsum("llh->lh", gram) > 0).all():
        raise ValueError("gram has a diagonal entry gram[L, L, h] <= 0 (a zero-norm head) or nan")
    return gram


def operator_cos_per_head(gram):
    """Operator cosine ``cos[L, L', h] = gram[L, L', h] / (||g_L^h|| ||g_L'^h||)``.

    Same as :func:`qkalign.reference.operator_cos_per_head`. gram: (L, L, H) -> (L, L, H) float64.
    """
    gram = _gram_array(gram)
    out = np.empty_like(gram)
    _operator_cos_per_head(gram, out)
    return out


def rescale_to_anchor(gram, anchor):
    """``(t_opt, mean_cos, mean_resid, resid_of_mean_cos)``, each (L,) float64.

    Same as :func:`qkalign.reference.rescale_to_anchor`.
    """
    gram = _gram_array(gram)
    num_layers = gram.shape[0]
    outs = tuple(np.empty(num_layers) for _ in range(4))
    _rescale_to_anchor(gram, layer_index(anchor, num_layers), *outs)
    return outs
