"""Eigenvalue-sign statistics: top-k sign agreement between layers, fraction of positive eigenvalues."""

import numpy as np
from numba import njit, prange

from . import pairs
from .checks import float_array, k_value_array, layer_index
from .threads import threads_for


@njit(cache=True, error_model="numpy")
def _count_same_sign(a, b, start, stop):
    """Number of ``m`` in ``[start, stop)`` with ``sign(a[m]) == sign(b[m])``, as numpy counts it:
    ``sign(0) = 0``, and a nan never equals anything (so no input needs checking first)."""
    count = 0
    for m in range(start, stop):
        x = a[m]
        y = b[m]
        count += ((x > 0.0) == (y > 0.0)) & ((x < 0.0) == (y < 0.0)) & (x == x) & (y == y)
    return count


@njit(parallel=True, cache=True, error_model="numpy")
def _sign_agreement(sym_eigs, first, second, k_sorted, out):
    """Agreement fractions of pairs of layers, every head, all k at once.

    For pair ``q`` and head ``h`` one pass over the stored order counts equal signs
    segment by segment between the k values: ``out[i, q, h] = count(k_sorted[i]) / k_sorted[i]``.
    sym_eigs: (L, H, m); first, second: (Q,) layers; k_sorted: (K,) increasing in 1..m; out: (K, Q, H).
    """
    num_heads = sym_eigs.shape[1]
    for t in prange(first.shape[0] * num_heads):
        q = t // num_heads
        h = t % num_heads
        a = sym_eigs[first[q], h]
        b = sym_eigs[second[q], h]
        count = 0
        start = 0
        for i in range(k_sorted.shape[0]):
            count += _count_same_sign(a, b, start, k_sorted[i])
            start = k_sorted[i]
            out[i, q, h] = count / start


@njit(cache=True, error_model="numpy")
def _count_positive(rows, out):
    """``out[L]`` = number of positive entries of ``rows[L]`` (L, H m); serial: one O(L H m) pass."""
    for layer in range(rows.shape[0]):
        row = rows[layer]
        count = 0
        for m in range(row.shape[0]):
            count += row[m] > 0.0
        out[layer] = count


def _pairs_sign_agreement(sym_eigs, pairs, k_values):
    """(len(k_values), Q, H) agreement of the layer pairs ``pairs`` = (first, second)."""
    ks = k_value_array(k_values, sym_eigs.shape[2])
    k_sorted, position = np.unique(ks, return_inverse=True)
    out = np.empty((k_sorted.size, pairs[0].size, sym_eigs.shape[1]))
    if ks.size:
        with threads_for(out[0].size * k_sorted[-1] * 4):
            _sign_agreement(sym_eigs, pairs[0], pairs[1], k_sorted, out)
    return out[position]


def sign_agreement(sym_eigs, anchor, k_values):
    """Fraction of the top-k eigenvalues whose sign equals the anchor's, per (k, L, h).

    Same as :func:`qkalign.reference.sign_agreement`. sym_eigs: (L, H, m) -> (len(k_values), L, H).
    """
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs", check_finite=False)  # nan: counted as numpy does
    anchor = layer_index(anchor, sym_eigs.shape[0])
    return _pairs_sign_agreement(sym_eigs, pairs.to_anchor(sym_eigs.shape[0], anchor), k_values)


def sign_agreement_all_pairs(sym_eigs, k_values):
    """Top-k sign agreement between every pair of layers, per head.

    Same as :func:`qkalign.reference.sign_agreement_all_pairs`.
    sym_eigs: (L, H, m) -> (len(k_values), L, L, H) float64.
    """
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs", check_finite=False)  # nan: counted as numpy does
    num_layers = sym_eigs.shape[0]
    out = _pairs_sign_agreement(sym_eigs, pairs.all_ordered(num_layers), k_values)
    return out.reshape(out.shape[0], num_layers, num_layers, out.shape[2])


def fraction_positive(sym_eigs):
    """Fraction of positive eigenvalues per layer over all heads: (L, H, m) -> (L,).

    Same as :func:`qkalign.reference.fraction_positive`.
    """
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs", check_finite=False)  # nan > 0 is False, as in numpy
    counts = np.empty(sym_eigs.shape[0], dtype=np.int64)
    _count_positive(sym_eigs.reshape(sym_eigs.shape[0], -1), counts)
    return counts / (sym_eigs.shape[1] * sym_eigs.shape[2])
