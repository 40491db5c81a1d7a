"""One head's layer Gram at each distance of a rotary profile: the numba kernel of
:func:`qkalign.weights.rotary_grams.rotary_layer_grams` (the numpy definition, with the derivation).

``R(Δ) = D_c + D_σs Π``, with ``Π`` swapping the two dimensions of each pair, ``D_c`` the cosine
of each dimension's pair (1 where unrotated), ``D_σs`` its sine signed ``σ = -1`` on ``first`` and
``+1`` on ``second`` (0 where unrotated). So for the (L, L') blocks ``M`` of ``KK`` and ``N`` of ``QQ``,
``sum((R^T M R) * N) = sum_ij M_ij [c_i c_j N_ij + c_i σ_j s_j N_iπ(j) + σ_i s_i c_j N_π(i)j
+ σ_i σ_j s_i s_j N_π(i)π(j)]``: a bilinear form in the vectors ``c``, ``s`` (P,) of one distance,
whose coefficients need only the block and the pairing. For row pair ``I`` and column pair ``J``,
with ``m_xy``, ``n_xy`` their 2 x 2 sub-blocks (x, y = 1 for ``first``, 2 for ``second``)::

    gram(Δ) = sum_IJ c_I c_J A_IJ + c_I s_J C_IJ + s_I c_J E_IJ + s_I s_J B_IJ
    A = m11 n11 + m12 n12 + m21 n21 + m22 n22      C = m12 n11 - m11 n12 + m22 n21 - m21 n22
    E = m21 n11 + m22 n12 - m11 n21 - m12 n22      B = m11 n22 + m22 n11 - m12 n21 - m21 n12

and the unrotated dimensions count as one more group with ``c = 1``, ``s = 0``. Where layers rotate
differently (one table per layer kind), ``c_I``, ``s_I`` are those of the block's row layer L and
``c_J``, ``s_J`` those of its column layer L' (``R_L^T M R_L'``). Per block that is
O(d^2) to form the coefficients (one pass over the block, as ``block_sums``) and d^2 multiply-adds
per distance to evaluate them, instead of rotating the block for every distance.

Timing, a qwen3-4b head ((L d) = 36 x 128, n = 2560, float32 Grams, D = 15 distances 0, 1, 2, 4,
..., 8192), one thread of this project's shared 2-core AVX-512 machine: 26.5 ms (15 ms at D = 1: the
block copies and coefficients; ~0.8 ms per further distance), beside 10 ms for ``block_sums``,
220-370 ms for the SYRK of the head's stacked Q blocks and 235 ms for measure's other per-head work
(``_layer_work``): ~4 % more per query head. Pairings other than half-split gather each block: 48 ms.
Two layer kinds (Gemma 3's layout, 6 of the 36 layers global, a table each) took 27.6 ms against 27.1 ms
for one table, and one table 27.1 ms before and after the kinds were added (same bits), minima of 40
alternated calls.
The kernel is serial: a ``prange`` over the layer pairs (bit-identical for any thread count) took
13.6 ms alone on 2 threads, but ``measure`` already runs one head per core, and two heads at once in
two threads took 32 ms (serial) and 34 ms (``prange``, 4 threads on 2 cores), minima of 20; numba's
fallback threading layer (workqueue) also cannot run ``prange`` kernels from two threads at once.
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def _pair_ordered_block(gram, row0, col0, order, identity, out):
    """``out[r, c] = gram[row0 + order[r], col0 + order[c]]`` widened to float64: (d, d).

    ``order`` lists the first, then the second dimension of every pair, then the unrotated
    ones; for transformers' half-split layout it is the identity (``identity``), and the copy is
    of whole row segments. A block copied once (from memory row after row, as ``block_sums`` reads)
    is read from cache by the pair loops, whose views of it are contiguous and vectorise: that makes
    the kernel 1.8x quicker than reading the pairs from the Gram itself, at (L d, d) = (4608, 128).
    """
    d = out.shape[0]
    for r in range(d):
        target = out[r]
        if identity:
            source = gram[row0 + r, col0:col0 + d]
            for c in range(d):
                target[c] = source[c]
        else:
            source = gram[row0 + order[r], col0:col0 + d]
            for c in range(d):
                target[c] = source[order[c]]


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _pair_row_coefficients(kb, qb, i, num_pairs, coef):
    """Coefficients A, C, E, B (``coef[:4, :P]``) of row pair ``i`` (rows ``i``, ``P + i``) of the
    pair-ordered blocks ``kb`` (M), ``qb`` (N), over the column pairs; returns the unrotated columns'
    ``(A, E)``: ``sum_j m1j n1j + m2j n2j`` and ``sum_j m2j n1j - m1j n2j`` (their ``c = 1``, ``s = 0``).
    """
    p2, d = 2 * num_pairs, kb.shape[1]
    # Row segments as views indexed from 0: the loops below then read contiguous memory and vectorise.
    k1f, k1s, k1r = kb[i, :num_pairs], kb[i, num_pairs:p2], kb[i, p2:d]
    k2f, k2s, k2r = kb[num_pairs + i, :num_pairs], kb[num_pairs + i, num_pairs:p2], kb[num_pairs + i, p2:d]
    q1f, q1s, q1r = qb[i, :num_pairs], qb[i, num_pairs:p2], qb[i, p2:d]
    q2f, q2s, q2r = qb[num_pairs + i, :num_pairs], qb[num_pairs + i, num_pairs:p2], qb[num_pairs + i, p2:d]
    for p in range(num_pairs):
        m11, m12, m21, m22 = k1f[p], k1s[p], k2f[p], k2s[p]
        n11, n12, n21, n22 = q1f[p], q1s[p], q2f[p], q2s[p]
        coef[0, p] = m11 * n11 + m12 * n12 + m21 * n21 + m22 * n22
        coef[1, p] = m12 * n11 - m11 * n12 + m22 * n21 - m21 * n22
        coef[2, p] = m21 * n11 + m22 * n12 - m11 * n21 - m12 * n22
        coef[3, p] = m11 * n22 + m22 * n11 - m12 * n21 - m21 * n12
    rest_a = rest_e = 0.0
    for j in range(d - p2):
        rest_a += k1r[j] * q1r[j] + k2r[j] * q2r[j]
        rest_e += k2r[j] * q1r[j] - k1r[j] * q2r[j]
    return rest_a, rest_e


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _unrotated_row_coefficients(kb, qb, num_pairs, coef):
    """The unrotated rows' (``>= 2P`` of the pair-ordered blocks; their ``c = 1``, ``s = 0``)
    coefficients A, C summed over those rows into ``coef[0], coef[1]`` (P,); returns their
    sum over the unrotated columns, ``sum_ij m_ij n_ij``."""
    p2, d = 2 * num_pairs, kb.shape[1]
    coef[0, :] = 0.0
    coef[1, :] = 0.0
    both = 0.0
    for r in range(p2, d):
        kf, ks, kr = kb[r, :num_pairs], kb[r, num_pairs:p2], kb[r, p2:d]
        qf, qs, qr = qb[r, :num_pairs], qb[r, num_pairs:p2], qb[r, p2:d]
        for p in range(num_pairs):
            coef[0, p] += kf[p] * qf[p] + ks[p] * qs[p]
            coef[1, p] += ks[p] * qf[p] - kf[p] * qs[p]
        for j in range(d - p2):
            both += kr[j] * qr[j]
    return both


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _block_totals(kb, qb, row_cos, row_sin, col_cos, col_sin, coef, totals):
    """``totals[t] = sum((R_t^T M R'_t) * N)`` for the pair-ordered blocks ``kb`` (M), ``qb`` (N): (D,).

    ``R_t`` turns the rows by the (D, P) tables ``row_cos``, ``row_sin`` (the block's row layer),
    ``R'_t`` the columns by ``col_cos``, ``col_sin`` (its column layer; the same arrays when both layers
    rotate alike). The bilinear form of the module docstring, one row pair at a time: its coefficients
    (4, P) are formed once and evaluated at every distance, ``c_I x + s_I y`` with
    ``x = sum_J A c_J + C s_J``, ``y = sum_J E c_J + B s_J`` (plus the unrotated columns).
    """
    num_pairs = row_cos.shape[1]
    totals[:] = 0.0
    for i in range(num_pairs):
        rest_a, rest_e = _pair_row_coefficients(kb, qb, i, num_pairs, coef)
        a, c, e, b = coef[0], coef[1], coef[2], coef[3]
        for t in range(totals.size):
            cos_t, sin_t = col_cos[t], col_sin[t]
            x, y = rest_a, rest_e
            for j in range(num_pairs):  # contiguous rows: the loop vectorises (reassoc)
                x += a[j] * cos_t[j] + c[j] * sin_t[j]
                y += e[j] * cos_t[j] + b[j] * sin_t[j]
            totals[t] += row_cos[t, i] * x + row_sin[t, i] * y
    if kb.shape[0] > 2 * num_pairs:
        both = _unrotated_row_coefficients(kb, qb, num_pairs, coef)
        a, c = coef[0], coef[1]
        for t in range(totals.size):
            cos_t, sin_t = col_cos[t], col_sin[t]
            x = both
            for j in range(num_pairs):
                x += a[j] * cos_t[j] + c[j] * sin_t[j]
            totals[t] += x


# nogil: measure runs one head per core in worker threads; serial for that (the module's timing notes).
@njit(nogil=True, cache=True)
def _rotary_grams(qq, kk, order, identity, cos, sin, layer_kinds, out):
    """``out[t, a, b] = out[t, b, a]`` = the rotated block sum of block ``(a, b)``, ``b <= a``, for every t;
    ``cos``, ``sin`` (K, D, P) one table per layer kind, ``layer_kinds`` (L,) the kind of every layer."""
    num_layers, head_dim = out.shape[1], order.size
    kb, qb = np.empty((head_dim, head_dim)), np.empty((head_dim, head_dim))
    coef = np.empty((4, cos.shape[2]))
    totals = np.empty(out.shape[0])
    for a in range(num_layers):
        row_cos, row_sin = cos[layer_kinds[a]], sin[layer_kinds[a]]
        for b in range(a + 1):
            _pair_ordered_block(kk, a * head_dim, b * head_dim, order, identity, kb)
            _pair_ordered_block(qq, a * head_dim, b * head_dim, order, identity, qb)
            _block_totals(kb, qb, row_cos, row_sin, cos[layer_kinds[b]], sin[layer_kinds[b]], coef, totals)
            for t in range(totals.size):
                out[t, a, b] = totals[t]
                out[t, b, a] = totals[t]


def rotary_layer_grams(qq, kk, num_layers, head_dim, cos, sin, first, second, layer_kinds=None):
    """``gram[t, L, L'] = <g_L(Δ_t), g_L'(Δ_t)>_F``: :func:`qkalign.weights.rotary_grams.rotary_layer_grams`.

    qq, kk: (L d, L d) float32 or float64 stacked Grams (lower triangle and diagonal blocks read,
    widened to float64 one (d, d) block at a time: every product is formed in float64, and no
    float64 copy of the Grams is made); cos, sin: (D, P) float64, or (K, D, P) with ``layer_kinds``
    (L,) int in ``0..K-1`` (one table per layer kind); first, second: (P,) int, distinct dimensions in
    ``0..d-1`` -> (D, L, L) float64, exactly symmetric in (L, L').
    """
    qq, kk = _stacked_grams(qq, kk, num_layers, head_dim)
    cos = np.ascontiguousarray(cos, dtype=np.float64)
    sin = np.ascontiguousarray(sin, dtype=np.float64)
    order = _pair_order(first, second, head_dim)
    num_pairs = np.size(first)
    if layer_kinds is None:
        if cos.ndim != 2 or cos.shape != sin.shape or cos.shape[1] != num_pairs:
            raise ValueError(f"cos and sin must both be (D, P) with P = {num_pairs} pairs, got {cos.shape}, "
                             f"{sin.shape}")
        # one kind for every layer: the same code, both sides of each block reading the one table
        cos, sin, kinds = cos[None], sin[None], np.zeros(num_layers, dtype=np.int64)
    else:
        kinds = _layer_kinds(layer_kinds, num_layers)
        largest = int(kinds.max()) if kinds.size else -1
        if cos.ndim != 3 or cos.shape != sin.shape or cos.shape[2] != num_pairs or cos.shape[0] <= largest:
            raise ValueError(f"cos and sin must both be (K, D, P) with P = {num_pairs} pairs and K > {largest} "
                             f"(the largest layer kind), got {cos.shape}, {sin.shape}")
    out = np.empty((cos.shape[1], num_layers, num_layers))
    identity = bool(np.array_equal(order, np.arange(head_dim)))
    # unsigned: numba indexes with them without its negative-index wraparound, and the gather of
    # other pairings than the identity is 1.7x quicker
    _rotary_grams(qq, kk, order.astype(np.uint64), identity, cos, sin, kinds, out)
    return out


def _layer_kinds(layer_kinds, num_layers):
    """``layer_kinds`` as (L,) int64; ValueError unless L integers >= 0."""
    kinds = np.asarray(layer_kinds)
    if kinds.shape != (num_layers,) or not np.issubdtype(kinds.dtype, np.integer) or kinds.size and kinds.min() < 0:
        raise ValueError(f"layer_kinds must be {num_layers} integers >= 0 (one kind per layer), got "
                         f"{kinds.tolist()!r:.80}")
    return np.ascontiguousarray(kinds, dtype=np.int64)


def _stacked_grams(qq, kk, num_layers, head_dim):
    """``qq``, ``kk`` as C-contiguous (L d, L d) arrays of one float type (float32 or float64)."""
    qq, kk = np.asarray(qq), np.asarray(kk)
    size = num_layers * head_dim
    if qq.shape != (size, size) or kk.shape != (size, size):
        raise ValueError(f"qq and kk must be (L d, L d) = ({size}, {size}), got {qq.shape}, {kk.shape}")
    if qq.dtype != kk.dtype or qq.dtype not in (np.float32, np.float64):
        raise TypeError(f"qq and kk must be both float32 or both float64, got {qq.dtype}, {kk.dtype}")
    return np.ascontiguousarray(qq), np.ascontiguousarray(kk)


def _pair_order(first, second, head_dim):
    """The head's dimensions in pair order, ``first``, ``second``, then the unrotated ones (increasing):
    (d,) int64. ValueError unless the 2P pair dimensions are distinct and in ``0..head_dim-1``."""
    first = np.ascontiguousarray(first, dtype=np.int64).ravel()
    second = np.ascontiguousarray(second, dtype=np.int64).ravel()
    paired = np.concatenate([first, second])
    if first.size != second.size or paired.size and (paired.min() < 0 or paired.max() >= head_dim) \
            or np.unique(paired).size != paired.size:
        raise ValueError(f"first and second must pair distinct dimensions of 0..{head_dim - 1}, "
                         f"got {first.tolist()}, {second.tolist()}")
    return np.concatenate([paired, np.setdiff1d(np.arange(head_dim, dtype=np.int64), paired)])
