"""Top-1 overlap: squared cosine between the leading eigenvectors of two layers, per head."""

import numpy as np
from numba import njit, prange

from ..stats.reference import exact_self_comparisons
from . import pair_lists
from .arguments import eig_dirs_array, layer_index
from .small_linalg import FASTMATH
from .thread_count import threads_for


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _overlap(a, b):
    """``(a . b)^2 / (|a|^2 |b|^2)`` in one vectorised pass over a, b (n,), float32 or float64,
    products and sums in float64."""
    ab = 0.0
    aa = 0.0
    bb = 0.0
    for m in range(a.shape[0]):
        x = np.float64(a[m])
        y = np.float64(b[m])
        ab += x * y
        aa += x * x
        bb += y * y
    return ab * ab / (aa * bb)


@njit(parallel=True, cache=True, error_model="numpy")
def _top1_overlap(eig_dirs, first, second, out):
    """``out[q, h]`` = overlap of ``eig_dirs[first[q], h, 0]`` and ``eig_dirs[second[q], h, 0]``;
    eig_dirs: (L, H, k, n), out: (Q, H)."""
    num_heads = eig_dirs.shape[1]
    for t in prange(first.shape[0] * num_heads):
        q = t // num_heads
        h = t % num_heads
        out[q, h] = _overlap(eig_dirs[first[q], h, 0], eig_dirs[second[q], h, 0])


def _pairs_top1_overlap(eig_dirs, first, second):
    """(Q, H) overlaps of the pairs (first[q], second[q]) of eig_dirs (L, H, k, n)."""
    out = np.empty((first.size, eig_dirs.shape[1]))
    with threads_for(3 * out.size * eig_dirs.shape[3]):  # three dot products of length n per pair
        _top1_overlap(eig_dirs, first, second, out)
    return out


def top1_overlap(eig_dirs, anchor):
    """Squared cosine between each head's top eigenvector and the anchor's: (L, H, k, n) -> (L, H).

    Same as :func:`qkalign.stats.reference.top1_overlap`.
    """
    eig_dirs = eig_dirs_array(eig_dirs)
    num_layers = eig_dirs.shape[0]
    anchor = layer_index(anchor, num_layers)
    overlap = _pairs_top1_overlap(eig_dirs, *pair_lists.to_anchor(num_layers, anchor))
    overlap[anchor] = 1.0  # the anchor with itself, as the reference
    return overlap


def top1_overlap_all_pairs(eig_dirs):
    """Squared cosine between the top eigenvectors of every pair of layers: (L, H, k, n) -> (L, L, H).

    Same as :func:`qkalign.stats.reference.top1_overlap_all_pairs`. All pairs of a head are
    one (L x n) @ (n x L) product, so BLAS takes the dot products (one call per head,
    outside any prange); the normalisation is elementwise.
    """
    eig_dirs = eig_dirs_array(eig_dirs)
    top = np.swapaxes(eig_dirs[:, :, 0, :], 0, 1).astype(np.float64)  # (H, L, n): 1/k of eig_dirs
    dots = np.matmul(top, np.swapaxes(top, 1, 2))  # (H, L, L)
    norm_sq = np.diagonal(dots, axis1=1, axis2=2)  # (H, L)
    overlap = dots**2 / (norm_sq[:, :, None] * norm_sq[:, None, :])
    return exact_self_comparisons(np.ascontiguousarray(overlap.transpose(1, 2, 0)))
