"""Eigenvalue-sign statistics: top-k sign agreement between layers, fractions of positive
eigenvalues, and the signed spectral mass."""

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from ..linalg.binary_scaling import normalized_rows
from . import pair_lists
from .arguments import float_array, k_value, k_value_array, layer_index
from .thread_count import threads_for

#: Signs are packed 64 to a word: a pair's agreement is a few bitwise operations a word.
_WORD_BITS = 64


@njit(cache=True, error_model="numpy")
def _pack_signs(sym_eigs, length, positive, negative):
    """Bit ``b`` of word ``w`` of ``positive[L, h]`` / ``negative[L, h]`` is set when
    ``lambda_m > 0`` / ``lambda_m < 0``, ``m = 64 w + b < length``; a nan sets both bits
    (it then agrees with nothing, as ``np.sign(nan) == x`` is False); 0 and -0.0 set neither.

    sym_eigs: (L, H, m) float64; positive, negative: (L, H, ceil(length / 64)) uint64.
    """
    for layer in range(sym_eigs.shape[0]):
        for h in range(sym_eigs.shape[1]):
            row = sym_eigs[layer, h]
            for w in range(positive.shape[2]):
                base = w * _WORD_BITS
                pos = np.uint64(0)
                neg = np.uint64(0)
                for b in range(min(_WORD_BITS, length - base)):
                    x = row[base + b]
                    bit = np.uint64(1) << np.uint64(b)
                    if not x <= 0.0:  # positive or nan
                        pos |= bit
                    if not x >= 0.0:  # negative or nan
                        neg |= bit
                positive[layer, h, w] = pos
                negative[layer, h, w] = neg


def _popcount(x):
    """Number of set bits of a uint64, as int64 (this Python body runs under NUMBA_DISABLE_JIT)."""
    return np.int64(int(x).bit_count())


@intrinsic
def _llvm_ctpop(typingctx, x):
    """LLVM's ``ctpop`` on a uint64: one ``popcnt`` instruction."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


@overload(_popcount)
def _popcount_compiled(x):
    return lambda x: _llvm_ctpop(x)


@njit(cache=True, error_model="numpy", inline="always")
def _agreeing(pos_a, neg_a, pos_b, neg_b, w):
    """Bits of word ``w`` where the two packed sign rows agree and neither is nan."""
    return ~((pos_a[w] ^ pos_b[w]) | (neg_a[w] ^ neg_b[w]) | (pos_a[w] & neg_a[w]) | (pos_b[w] & neg_b[w]))


@njit(parallel=True, cache=True, error_model="numpy")
def _sign_agreement(positive, negative, first, second, k_sorted, out):
    """Agreement fractions of pairs of layers, every head, all k at once.

    ``out[i, q, h] = count(k_sorted[i]) / k_sorted[i]``, the count of equal signs among
    the first k eigenvalues of layers ``first[q]`` and ``second[q]``, head h: popcounts of
    whole words, then of the last word masked to the k's remaining bits.
    positive, negative: (L, H, words) from :func:`_pack_signs`; first, second: (Q,) layers;
    k_sorted: (K,) increasing, each in 1..64 * words; out: (K, Q, H).
    """
    num_heads = positive.shape[1]
    for t in prange(first.shape[0] * num_heads):
        q = t // num_heads
        h = t % num_heads
        pos_a, neg_a = positive[first[q], h], negative[first[q], h]
        pos_b, neg_b = positive[second[q], h], negative[second[q], h]
        whole_words = 0
        count = 0  # over the whole words counted so far
        for i in range(k_sorted.shape[0]):
            k = k_sorted[i]
            while (whole_words + 1) * _WORD_BITS <= k:
                count += _popcount(_agreeing(pos_a, neg_a, pos_b, neg_b, whole_words))
                whole_words += 1
            rest = k - whole_words * _WORD_BITS
            total = count
            if rest > 0:
                mask = (np.uint64(1) << np.uint64(rest)) - np.uint64(1)
                total += _popcount(_agreeing(pos_a, neg_a, pos_b, neg_b, whole_words) & mask)
            out[i, q, h] = total / k


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
    """Per (layer, head) of sym_eigs (L, H, m): ``positive_topk`` = the fraction of positive
    eigenvalues among the first ``k`` and, if ``with_mass``, ``mass = sum(lambda) / sum(|lambda|)``;
    both (L, H) float64.

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
            positive_topk[layer, h] = count / k


def _signed_spectra_of(sym_eigs, k, with_mass):
    """``(mass, positive_topk)`` of :func:`_signed_spectra`, each (L, H) (mass undefined
    unless ``with_mass``)."""
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs", check_finite=False)  # nan/inf propagate as in numpy
    k = k_value(k, sym_eigs.shape[2])
    if with_mass:  # as the reference: each spectrum scaled by a power of two keeps the sums in range
        sym_eigs = normalized_rows(sym_eigs)
    mass = np.empty(sym_eigs.shape[:2])
    positive = np.empty(sym_eigs.shape[:2])
    _signed_spectra(sym_eigs, k, with_mass, mass, positive)
    return mass, positive


def signed_mass(sym_eigs):
    """Signed spectral mass ``sum(lambda) / sum(|lambda|) = tr(g) / ||spectrum||_1``: (L, H, m) -> (L, H).

    Same as :func:`qkalign.stats.reference.signed_mass`.
    """
    return _signed_spectra_of(sym_eigs, 1, True)[0]


def fraction_positive_topk(sym_eigs, k):
    """Fraction of positive eigenvalues among the top-k (|lambda| order): (L, H, m) -> (L, H).

    Same as :func:`qkalign.stats.reference.fraction_positive_topk`.
    """
    return _signed_spectra_of(sym_eigs, k, False)[1]


def _pairs_sign_agreement(sym_eigs, pairs, k_values):
    """(len(k_values), Q, H) agreement of the layer pairs ``pairs`` = (first, second)."""
    ks = k_value_array(k_values, sym_eigs.shape[2])
    k_sorted, position = np.unique(ks, return_inverse=True)
    out = np.empty((k_sorted.size, pairs[0].size, sym_eigs.shape[1]))
    if ks.size:
        words = -(-int(k_sorted[-1]) // _WORD_BITS)
        positive = np.empty(sym_eigs.shape[:2] + (words,), dtype=np.uint64)
        negative = np.empty_like(positive)
        _pack_signs(sym_eigs, k_sorted[-1], positive, negative)
        # ~20 operations per word's agreement and popcount, once per word and once per k
        with threads_for(out[0].size * (words + k_sorted.size) * 20):
            _sign_agreement(positive, negative, pairs[0], pairs[1], k_sorted, out)
    if k_sorted.size == ks.size and (np.diff(ks) > 0).all():
        return out  # already in the caller's order: no copy of (K, Q, H)
    return out[position]


def sign_agreement(sym_eigs, anchor, k_values):
    """Fraction of the top-k eigenvalues whose sign equals the anchor's, per (k, L, h).

    Same as :func:`qkalign.stats.reference.sign_agreement`. sym_eigs: (L, H, m) -> (len(k_values), L, H).
    """
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs", check_finite=False)  # nan: counted as numpy does
    anchor = layer_index(anchor, sym_eigs.shape[0])
    return _pairs_sign_agreement(sym_eigs, pair_lists.to_anchor(sym_eigs.shape[0], anchor), k_values)


def sign_agreement_all_pairs(sym_eigs, k_values):
    """Top-k sign agreement between every pair of layers, per head.

    Same as :func:`qkalign.stats.reference.sign_agreement_all_pairs`.
    sym_eigs: (L, H, m) -> (len(k_values), L, L, H) float64.
    """
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs", check_finite=False)  # nan: counted as numpy does
    num_layers = sym_eigs.shape[0]
    out = _pairs_sign_agreement(sym_eigs, pair_lists.all_ordered(num_layers), k_values)
    return out.reshape(out.shape[0], num_layers, num_layers, out.shape[2])


def fraction_positive(sym_eigs):
    """Fraction of positive eigenvalues per layer over all heads: (L, H, m) -> (L,).

    Same as :func:`qkalign.stats.reference.fraction_positive`.
    """
    sym_eigs = float_array(sym_eigs, 3, "sym_eigs", check_finite=False)  # nan > 0 is False, as in numpy
    counts = np.empty(sym_eigs.shape[0], dtype=np.int64)
    _count_positive(sym_eigs.reshape(sym_eigs.shape[0], -1), counts)
    return counts / (sym_eigs.shape[1] * sym_eigs.shape[2])
