"""Eigenvalue-sign statistics: top-k sign agreement between layers, fraction of positive eigenvalues."""

import numpy as np
from numba import njit, prange

from . import pairs
from .checks import float_array, k_value_array, layer_index
from .threads import threads_for


@njit(cache=True)
def _sign(x):
    """-1, 0 or 1 (as numpy's ``sign``, for finite x)."""
    return int(x > 0.0) - int(x < 0.0)


@njit(parallel=True, cache=True)
def _sign_agreement(sym_eigs, first, second, k_values, out):
    """Agreement fractions of pairs of layers, every head, all k at once.

    For pair ``q`` and head ``h``, a running count of equal signs over the stored order
    gives every ``k`` from one pass: ``out[:, q, h] = count[k - 1] / k``.
    sym_eigs: (L, H, m); first, second: (Q,) layers; k_values: (K,) in 1..m; out: (K, Q, H).
    """
    num_heads = sym_eigs.shape[1]
    max_k = 0
    for k in k_values:
        max_k = max(max_k, k)
    for t in prange(first.shape[0] * num_heads):
        q = t // num_heads
        h = t % num_heads
        counts = np.empty(max_k, dtype=np.int64)
        count = 0
        for m in range(max_k):
            count += _sign(sym_eigs[first[q], h, m]) == _sign(sym_eigs[second[q], h, m])
            counts[m] = count
        for i in range(k_values.shape[0]):
            out[i, q, h] = counts[k_values[i] - 1] / k_values[i]


@njit(cache=True)
def _count_positive(sym_eigs, out):
    """``out[L]`` = number of positive entries of ``sym_eigs[L]`` (L, H, m); serial: one O(L H m) pass."""
    for layer in range(sym_eigs.shape[0]):
        count = 0
        for h in range(sym_eigs.shape[1]):
            for m in range(sym_eigs.shape[2]):
                count += sym_eigs[layer, h, m] > 0.0
        out[layer] = count


def _pairs_sign_agreement(sym_eigs, pairs, k_values):
    ks = k_value_array(k_values, sym_eigs.shape[2])
    out = np.empty((ks.size, pairs[0].size, sym_eigs.shape[1]))
    if ks.size:
        with threads_for(pairs[0].size * sym_eigs.shape[1] * ks.max()):
            _sign_agreement(sym_eigs, pairs[0], pairs[1], ks, out)
    return out


def sign_agreement(sym_eigs, anchor, k_values):
    """Fraction of the top-k eigenvalues whose sign equals the anchor's, per (k, L, h).

    Same as :func:`qkalign.reference.sign_agreement`. sym_eigs: (L, H, m) -> (len(k_values), L, H).
    """
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs")
    anchor = layer_index(anchor, sym_eigs.shape[0])
    return _pairs_sign_agreement(sym_eigs, pairs.to_anchor(sym_eigs.shape[0], anchor), k_values)


def sign_agreement_all_pairs(sym_eigs, k_values):
    """Top-k sign agreement between every pair of layers, per head.

    Same as :func:`qkalign.reference.sign_agreement_all_pairs`.
    sym_eigs: (L, H, m) -> (len(k_values), L, L, H) float64.
    """
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs")
    num_layers = sym_eigs.shape[0]
    out = _pairs_sign_agreement(sym_eigs, pairs.all_ordered(num_layers), k_values)
    return out.reshape(out.shape[0], num_layers, num_layers, out.shape[2])


def fraction_positive(sym_eigs):
    """Fraction of positive eigenvalues per layer over all heads: (L, H, m) -> (L,).

    Same as :func:`qkalign.reference.fraction_positive`.
    """
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs")
    counts = np.empty(sym_eigs.shape[0], dtype=np.int64)
    _count_positive(sym_eigs, counts)
    return counts / (sym_eigs.shape[1] * sym_eigs.shape[2])
