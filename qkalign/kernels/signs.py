"""Eigenvalue-sign statistics: top-k sign agreement between layers, fractions of positive
eigenvalues, and the signed spectral mass."""

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


@njit(fastmath={"reassoc", "nsz"}, cache=True, error_model="numpy")
def _signed_spectra(sym_eigs, k, with_mass, mass, positive_topk):
    """Per (layer, head) of sym_eigs (L, H, m): ``positive_topk`` = the number of positive
    eigenvalues among the first ``k`` and, if ``with_mass``, ``mass = sum(lambda) / sum(|lambda|)``;
    both (L, H).

    Serial: one O(L H m) pass. Reassociation vectorises the two sums (their rounding then
    differs from numpy's pairwise sums by ~m eps of ``sum(|lambda|)``, an absolute error of
    the mass).
    """
    for layer in range(sym_eigs.shape[0]):
        for h in range(sym_eigs.shape[1]):
            row = sym_eigs[layer, h]
            if with_mass:
                total = 0.0
                total_abs = 0.0
                for m in range(row.shape[0]):
                    total += row[m]
                    total_abs += abs(row[m])
                mass[layer, h] = total / total_abs
            count = 0
            for m in range(k):
                count += row[m] > 0.0
            positive_topk[layer, h] = count


def _signed_spectra_of(sym_eigs, k, with_mass):
    """``(mass, positive_topk counts)`` of :func:`_signed_spectra`, each (L, H) (mass undefined
    unless ``with_mass``)."""
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs", check_finite=False)  # nan/inf propagate as in numpy
    (k,) = k_value_array((k,), sym_eigs.shape[2])
    mass = np.empty(sym_eigs.shape[:2])
    positive = np.empty(sym_eigs.shape[:2], dtype=np.int64)
    _signed_spectra(sym_eigs, k, with_mass, mass, positive)
    return mass, positive


def signed_mass(sym_eigs):
    """Signed spectral mass ``sum(lambda) / sum(|lambda|) = tr(g) / ||spectrum||_1``: (L, H, m) -> (L, H).

    Same as :func:`qkalign.reference.signed_mass`.
    """
    return _signed_spectra_of(sym_eigs, 1, True)[0]


def fraction_positive_topk(sym_eigs, k):
    """Fraction of positive eigenvalues among the top-k (|lambda| order): (L, H, m) -> (L, H).

    Same as :func:`qkalign.reference.fraction_positive_topk`.
    """
    return _signed_spectra_of(sym_eigs, k, False)[1] / k


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
