"""Top-1 overlap: squared cosine between the leading eigenvectors of two layers, per head."""

import numpy as np
from numba import njit, prange

from . import pairs
from .checks import eig_dirs_array, layer_index


@njit(parallel=True, cache=True)
def _top1_overlap(eig_dirs, first, second, out):
    """``out[q, h] = (a . b)^2 / (|a|^2 |b|^2)`` with ``a = eig_dirs[first[q], h, 0]``,
    ``b = eig_dirs[second[q], h, 0]``; eig_dirs: (L, H, k, n), out: (Q, H)."""
    num_heads = eig_dirs.shape[1]
    for t in prange(first.shape[0] * num_heads):
        q = t // num_heads
        h = t % num_heads
        a = eig_dirs[first[q], h, 0]
        b = eig_dirs[second[q], h, 0]
        dot = 0.0
        a_sq = 0.0
        b_sq = 0.0
        for m in range(a.shape[0]):
            dot += a[m] * b[m]
            a_sq += a[m] * a[m]
            b_sq += b[m] * b[m]
        out[q, h] = dot * dot / (a_sq * b_sq)


def top1_overlap(eig_dirs, anchor):
    """Squared cosine between each head's top eigenvector and the anchor's: (L, H, k, n) -> (L, H).

    Same as :func:`qkalign.reference.top1_overlap`.
    """
    eig_dirs = eig_dirs_array(eig_dirs)
    num_layers, num_heads = eig_dirs.shape[:2]
    first, second = pairs.to_anchor(num_layers, layer_index(anchor, num_layers))
    out = np.empty((num_layers, num_heads))
    _top1_overlap(eig_dirs, first, second, out)
    return out


def top1_overlap_all_pairs(eig_dirs):
    """Squared cosine between the top eigenvectors of every pair of layers: (L, H, k, n) -> (L, L, H).

    Same as :func:`qkalign.reference.top1_overlap_all_pairs`.
    """
    eig_dirs = eig_dirs_array(eig_dirs)
    num_layers, num_heads = eig_dirs.shape[:2]
    first, second = pairs.all_ordered(num_layers)
    out = np.empty((first.size, num_heads))
    _top1_overlap(eig_dirs, first, second, out)
    return out.reshape(num_layers, num_layers, num_heads)
