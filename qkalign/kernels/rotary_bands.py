"""Frequency bands of one head's rotary operator: the numba kernel of
:func:`qkalign.weights.rotary_bands.rotary_bands` (the numpy definition, with the derivation).

Per block ``(L, L')`` of the stacked Grams (``L' <= L``), copied once in pair order, the coefficients A, C, E, B of
each row pair ``I`` over the column pairs ``J`` (:mod:`~qkalign.kernels.rotary_grams`: the mean over the window of
the rotated block sum is ``sum_IJ w_cc A_IJ + w_cs C_IJ + w_sc E_IJ + w_ss B_IJ``, ``w`` the window means of
:func:`~qkalign.weights.rotary_bands.band_weights`) are contracted with the weights of the two layers' kinds,
zeroed where ``I`` and ``J`` lie in different groups: the row's sum is then row pair ``I``'s part of its group's
Gram. Diagonal blocks also give each pair's energy (``I = J``) and the full operator's mean energy (all ``I, J``,
and twice the rotated rows against the unrotated columns: the diagonal blocks are symmetric). O(4 d^2) per block,
one pass over it, as for one distance of the profile.

Timing, a qwen3-4b head ((L d) = 36 x 128, n = 2560, float32 Grams, P = 64, window 40960), one thread of this
project's shared 2-core AVX-512 machine: 15.5 ms (minimum of 20; the profile kernel at its 15 distances took 26.3 ms
in the same run), 37 ms for interleaved pairs (each block gathered); the numpy reference takes 7.4 s. In measure of
the qwen3-4b-shape bf16 folder (``deltas=()``, three alternated runs each, load average 3.5-8.7 on the 2 cores) the
bands took the best CPU time from 29.7 s to 30.5 s (+2.5 %, as 32 heads x ~20 ms predicts); the best wall times,
31.8 s without and 44.4 s with, moved with the load more than that.
"""

import numpy as np
from numba import njit

from .rotary_grams import _pair_order, _pair_ordered_block, _pair_row_coefficients, _stacked_grams


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _row_sum(weights, coef, i):
    """``sum_x sum_J weights[x, i, J] coef[x, J]``: (4, P, P), (4, P) -> float."""
    w0, w1, w2, w3 = weights[0, i], weights[1, i], weights[2, i], weights[3, i]
    c0, c1, c2, c3 = coef[0], coef[1], coef[2], coef[3]
    total = 0.0
    for j in range(c0.size):  # contiguous rows: the loop vectorises (reassoc)
        total += w0[j] * c0[j] + w1[j] * c1[j] + w2[j] * c2[j] + w3[j] * c3[j]
    return total


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _unrotated_sum(kb, qb, num_pairs):
    """``sum_ij M_ij N_ij`` over the unrotated rows and columns (``>= 2P``) of the pair-ordered blocks."""
    p2, d = 2 * num_pairs, kb.shape[0]
    total = 0.0
    for r in range(p2, d):
        kr, qr = kb[r, p2:d], qb[r, p2:d]
        for j in range(d - p2):
            total += kr[j] * qr[j]
    return total


# nogil: measure runs one head per core in worker threads; serial for that (kernels/rotary_grams.py's timing notes).
@njit(nogil=True, cache=True)
def _rotary_bands(qq, kk, order, identity, products, masked, means, group_of_pair, layer_kinds, energy,
                  mean_energy, group_gram):
    """Fill ``energy`` (L, P+1), ``mean_energy`` (L,) and ``group_gram`` (G+1, L, L), blocks ``(a, b)``, ``b <= a``."""
    num_layers, head_dim, num_pairs = layer_kinds.size, order.size, group_of_pair.shape[1]
    rest = group_gram.shape[0] - 1
    kb, qb = np.empty((head_dim, head_dim)), np.empty((head_dim, head_dim))
    coef = np.empty((4, num_pairs))
    for a in range(num_layers):
        ka = layer_kinds[a]
        mean_energy[a] = 0.0
        for b in range(a + 1):
            kind_b = layer_kinds[b]
            _pair_ordered_block(kk, a * head_dim, b * head_dim, order, identity, kb)
            _pair_ordered_block(qq, a * head_dim, b * head_dim, order, identity, qb)
            for g in range(rest + 1):
                group_gram[g, a, b] = 0.0
            for i in range(num_pairs):
                rest_a, rest_e = _pair_row_coefficients(kb, qb, i, num_pairs, coef)
                group_gram[group_of_pair[ka, i], a, b] += _row_sum(masked[ka, kind_b], coef, i)
                if a == b:
                    w = products[ka, ka]
                    energy[a, i] = w[0, i, i] * coef[0, i] + w[1, i, i] * coef[1, i] + w[2, i, i] * coef[2, i] \
                        + w[3, i, i] * coef[3, i]
                    mean_energy[a] += _row_sum(w, coef, i) + 2.0 * (means[ka, 0, i] * rest_a + means[ka, 1, i] * rest_e)
            unrotated = _unrotated_sum(kb, qb, num_pairs)
            group_gram[rest, a, b] = unrotated
            if a == b:
                energy[a, num_pairs] = unrotated
                mean_energy[a] += unrotated
            for g in range(rest + 1):
                group_gram[g, b, a] = group_gram[g, a, b]


def rotary_bands(qq, kk, num_layers, head_dim, products, means, group_of_pair, layer_kinds, first, second,
                 num_groups):
    """Band energies (L, P+1), mean energy (L,) and group Grams (G+1, L, L) of one head:
    :func:`qkalign.weights.rotary_bands.rotary_bands`.

    qq, kk: (L d, L d) float32 or float64 stacked Grams (lower triangle and diagonal blocks read, widened to float64
    one block at a time); products, means: (K, K, 4, P, P), (K, 2, P) float64; group_of_pair: (K, P) ints in
    ``0..G-1``; layer_kinds: (L,) ints in ``0..K-1``; first, second: (P,) distinct dimensions in ``0..d-1``.
    ``group_gram`` is exactly symmetric in (L, L').
    """
    qq, kk = _stacked_grams(qq, kk, num_layers, head_dim)
    order = _pair_order(first, second, head_dim)
    num_pairs = np.size(first)
    products = np.ascontiguousarray(products, dtype=np.float64)
    means = np.ascontiguousarray(means, dtype=np.float64)
    group_of_pair = np.ascontiguousarray(group_of_pair, dtype=np.int64)
    layer_kinds = np.ascontiguousarray(layer_kinds, dtype=np.int64)
    num_kinds = len(products)
    if products.shape != (num_kinds, num_kinds, 4, num_pairs, num_pairs) or means.shape != (num_kinds, 2, num_pairs) \
            or group_of_pair.shape != (num_kinds, num_pairs):
        raise ValueError(f"products, means and group_of_pair must be (K, K, 4, P, P), (K, 2, P), (K, P) with "
                         f"P = {num_pairs} pairs, got {products.shape}, {means.shape}, {group_of_pair.shape}")
    if layer_kinds.shape != (num_layers,) or num_layers and not 0 <= layer_kinds.min() <= layer_kinds.max() < num_kinds:
        raise ValueError(f"layer_kinds must be {num_layers} kinds in 0..{num_kinds - 1}, got {layer_kinds.tolist()}")
    if group_of_pair.size and not 0 <= group_of_pair.min() <= group_of_pair.max() < num_groups:
        raise ValueError(f"group_of_pair must lie in 0..{num_groups - 1}, got {group_of_pair.tolist()}")
    # products zeroed between pairs of different groups: a row pair's sum is then its part of its group's Gram
    same_group = group_of_pair[:, None, :, None] == group_of_pair[None, :, None, :]  # (K, K, P, P)
    masked = np.ascontiguousarray(products * same_group[:, :, None])
    energy, mean_energy = np.empty((num_layers, num_pairs + 1)), np.empty(num_layers)
    group_gram = np.empty((num_groups + 1, num_layers, num_layers))
    identity = bool(np.array_equal(order, np.arange(head_dim)))
    _rotary_bands(qq, kk, order.astype(np.uint64), identity, products, masked, means, group_of_pair, layer_kinds,
                  energy, mean_energy, group_gram)
    return energy, mean_energy, group_gram
