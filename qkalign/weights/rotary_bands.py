r"""Frequency bands of one head's rotary operator, averaged over the distances of the context: the numpy definition.

``g(Δ) = K^T S R(Δ) S Q`` (:mod:`~qkalign.weights.rotary_grams`) splits by rotary pair: ``R(Δ)`` is block diagonal,
so with ``K_p``, ``Q_p`` (2, n) the rows ``first[p]``, ``second[p]`` of pair ``p`` and ``K_r``, ``Q_r`` the
unrotated rows (``>= d_rot``; none unless the rotary is partial)::

    g(Δ) = sum_p g_p(Δ) + g_rest,    g_p(Δ) = s^2 K_p^T R_p(Δ) Q_p,    g_rest = K_r^T Q_r,

``R_p(Δ)`` the 2 x 2 rotation by ``Δ θ_p`` and ``s`` the attention factor (``S R S`` is ``s^2 R`` on the rotated
dimensions). Averages run over the window ``W``: the distances ``Δ = 0 .. W-1`` a causal query looks back at
within the model's context length ``W = C``, each distance once (not weighted by how many query-key pairs lie at
it), in closed form (:mod:`~qkalign.weights.rope_means`: Dirichlet sums, no sum over the window):

- band energy ``E_p = mean_Δ ||g_p(Δ)||_F^2``, and ``E_rest = ||g_rest||_F^2``. The bands' share of the head,
  ``E_p / (sum_q E_q + E_rest)``, leaves out their interference: ``mean_Δ ||g(Δ)||^2`` (also returned) adds
  ``2 sum_{p<q} mean_Δ <g_p, g_q>`` and the terms with ``g_rest``, which are not zero in general;
- group operator ``g_G(Δ) = sum_{p in G} g_p(Δ)`` for a set ``G`` of pairs (the unrotated rows are a group of
  their own), and its cross-layer Gram ``gram_G[L, L'] = mean_Δ <g_G,L(Δ), g_G,L'(Δ)>_F``.

Both come from the blocks ``M = KK[L, L']``, ``N = QQ[L, L']`` of the stacked Grams. With ``τ_i = +1`` on
``first``, ``-1`` on ``second``, ``π(i)`` the other dimension of ``i``'s pair, ``c_i``, ``s_i`` the cosine
and sine of ``i``'s pair angle (``c = 1``, ``s = 0``, ``π(i) = i`` on unrotated dimensions), ``R`` has
``R_ii = c_i``, ``R_π(i)i = τ_i s_i``, and::

    <g_L, g_L'> = sum_ij N_ij (R_L^T M R_L')_ij
                = sum_ij N_ij [c_i c_j M_ij + τ_j c_i s_j M_iπ(j) + τ_i s_i c_j M_π(i)j + τ_i τ_j s_i s_j M_π(i)π(j)],

row dimension ``i`` rotated at layer L's frequencies, column ``j`` at layer L''s (they differ in Gemma 3's local
and global layers). The ``(i, j)`` term of a pair's (or a group's) dimensions involves only those dimensions of
``M`` and ``N``: ``||g_p||^2`` is the sum of the terms of ``p x p`` in a diagonal block, ``<g_G,L, g_G,L'>``
that of ``G x G`` in block ``(L, L')``. The mean over the window replaces ``c_i c_j``, ``c_i s_j``, ``s_i c_j``,
``s_i s_j`` by their means (:func:`band_weights`). ``qkalign.kernels.rotary_bands`` computes the same sums from
the pair coefficients A, C, E, B of :mod:`~qkalign.kernels.rotary_grams`.

Band groups by the wavelength ``λ_p = 2π / θ_p`` against the window: see :data:`BAND_GROUPS`.
"""

import numpy as np

from .rope_means import mean_cos_sin, mean_products
from .rotary_grams import _mirrored_lower

#: The band groups by wavelength ``λ`` against the window ``C``: high ``λ <= sqrt(C)``, mid ``sqrt(C) < λ <= C``,
#: low ``λ > C``. A low band does not complete one turn within the context: it changes little over any distance
#: the model sees, so it can carry what does not depend on position. A high band turns at least ``sqrt(C)`` times
#: with a period of at most ``sqrt(C)``: it tells nearby distances apart and averages out over far ones. ``sqrt(C)``
#: is the middle of ``1 .. C`` on the log scale the frequencies ``base^(-2p/d)`` are spaced on.
BAND_GROUPS = ("high", "mid", "low")
#: The group of a head's unrotated dimensions (partial rotary), after the band groups where present.
UNROTATED = "unrotated"


def band_wavelengths(inv_freq):
    """``λ_p = 2π / θ_p`` (any shape, float64; ``inf`` where ``θ_p = 0``, a pair that never turns)."""
    theta = np.asarray(inv_freq, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 2 * np.pi / theta


def band_group_of_pair(inv_freq, window):
    """The index in :data:`BAND_GROUPS` of every pair: ``θ`` (any shape) -> int64 of its shape."""
    wavelength = band_wavelengths(inv_freq)
    return np.where(wavelength <= np.sqrt(window), 0, np.where(wavelength <= window, 1, 2)).astype(np.int64)


def band_weights(inv_freqs, attention_factors, window):
    """Window means of the rotation products, per pair of layer kinds, times the attention factors.

    Parameters
    ----------
    inv_freqs : (K, P) float64
        ``θ_p`` of each of the K layer kinds.
    attention_factors : (K,) float64
        ``s`` of each kind.
    window : int
        ``W``: the means run over ``Δ = 0 .. W-1``.

    Returns
    -------
    products : (K, K, 4, P, P) float64
        ``products[k, k', :, I, J] = s_k^2 s_k'^2 mean_Δ (c_I c_J, c_I s_J, s_I c_J, s_I s_J)``, ``c_I = cos(Δ θ_I)``
        at kind ``k``'s frequencies (the row side), ``c_J`` at kind ``k'``'s (the column side).
    means : (K, 2, P) float64
        ``means[k] = s_k^2 mean_Δ (c_p, s_p)``: a rotated dimension against an unrotated one.
    """
    theta = np.asarray(inv_freqs, dtype=np.float64)
    scale = np.asarray(attention_factors, dtype=np.float64) ** 2
    products = np.stack(mean_products(theta[:, None, :, None], theta[None, :, None, :], window), axis=2)
    products *= (scale[:, None] * scale[None, :])[:, :, None, None, None]
    means = np.stack(mean_cos_sin(theta, window), axis=1) * scale[:, None, None]
    return products, means


def rotary_bands(qq, kk, num_layers, head_dim, products, means, group_of_pair, layer_kinds, first, second,
                 num_groups):
    """Band energies, the full operator's mean energy and the group Grams of one head, averaged over the window.

    Parameters
    ----------
    qq, kk : (L d, L d) float32 or float64
        Stacked Grams ``Q Q^T``, ``K K^T`` of one head; only the lower triangle is read.
    num_layers, head_dim : int
        L and d.
    products, means : (K, K, 4, P, P), (K, 2, P) float64
        :func:`band_weights` of the K layer kinds.
    group_of_pair : (K, P) int
        Group (``0 .. num_groups-1``) of every pair at each layer kind.
    layer_kinds : (L,) int
        Kind (``0 .. K-1``) of every layer.
    first, second : (P,) int
        Pair ``p`` rotates dimensions ``first[p]``, ``second[p]`` (distinct, ``0 <= . < d``); the rest are unrotated.
    num_groups : int
        G, the number of groups of pairs.

    Returns
    -------
    energy : (L, P + 1) float64
        ``E_p`` of every pair, then ``E_rest`` (0 without unrotated dimensions).
    mean_energy : (L,) float64
        ``mean_Δ ||g_L(Δ)||_F^2``, interference between the bands included.
    group_gram : (G + 1, L, L) float64
        ``mean_Δ <g_G,L(Δ), g_G,L'(Δ)>`` of each group, then of the unrotated dimensions (their constant Gram;
        zeros without them); symmetric in (L, L') to rounding.
    """
    qq_full, kk_full = _mirrored_lower(qq), _mirrored_lower(kk)
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    num_pairs = len(first)
    pair_of_dim = np.full(head_dim, -1)
    pair_of_dim[first], pair_of_dim[second] = np.arange(num_pairs), np.arange(num_pairs)
    partner = np.arange(head_dim)
    partner[first], partner[second] = second, first
    tau = np.zeros(head_dim)
    tau[first], tau[second] = 1.0, -1.0
    rotated = pair_of_dim >= 0
    group_of_pair = np.asarray(group_of_pair, dtype=np.int64)
    group_of_dim = np.full((len(group_of_pair), head_dim), num_groups)  # (K, d): unrotated dimensions last
    group_of_dim[:, rotated] = group_of_pair[:, pair_of_dim[rotated]]

    energy, mean_energy = np.zeros((num_layers, num_pairs + 1)), np.zeros(num_layers)
    group_gram = np.zeros((num_groups + 1, num_layers, num_layers))
    for a in range(num_layers):
        for b in range(num_layers):
            ka, kb = layer_kinds[a], layer_kinds[b]
            rows, cols = slice(a * head_dim, (a + 1) * head_dim), slice(b * head_dim, (b + 1) * head_dim)
            m, n = kk_full[rows, cols], qq_full[rows, cols]
            w = _dimension_weights(products[ka, kb], means[ka], means[kb], pair_of_dim)
            terms = n * (w[0] * m + tau[None, :] * w[1] * m[:, partner] + tau[:, None] * w[2] * m[partner, :]
                         + np.outer(tau, tau) * w[3] * m[np.ix_(partner, partner)])
            for g in range(num_groups + 1):
                group_gram[g, a, b] = terms[np.ix_(group_of_dim[ka] == g, group_of_dim[kb] == g)].sum()
            if a == b:
                mean_energy[a] = terms.sum()
                for p in range(num_pairs):
                    dims = [first[p], second[p]]
                    energy[a, p] = terms[np.ix_(dims, dims)].sum()
                energy[a, num_pairs] = terms[np.ix_(~rotated, ~rotated)].sum()
    return energy, mean_energy, group_gram


def _dimension_weights(products, row_means, col_means, pair_of_dim):
    """The means of ``c_i c_j``, ``c_i s_j``, ``s_i c_j``, ``s_i s_j`` for every dimension pair ``(i, j)``: (4, d, d).

    products: (4, P, P) of the two layers' kinds; row_means, col_means: (2, P) of the row layer's and the column
    layer's kind; pair_of_dim: (d,) pair of each dimension, -1 where unrotated (``c = 1``, ``s = 0``, unscaled).
    """
    d = len(pair_of_dim)
    rotated = pair_of_dim >= 0
    pair = np.maximum(pair_of_dim, 0)
    out = np.zeros((4, d, d))
    both = np.ix_(rotated, rotated)
    out[(slice(None),) + both] = products[np.ix_(range(4), pair[rotated], pair[rotated])]
    row_only, col_only = np.ix_(rotated, ~rotated), np.ix_(~rotated, rotated)
    out[0][row_only] = row_means[0, pair[rotated]][:, None]  # c_i against c_j = 1
    out[2][row_only] = row_means[1, pair[rotated]][:, None]  # s_i c_j
    out[0][col_only] = col_means[0, pair[rotated]][None, :]
    out[1][col_only] = col_means[1, pair[rotated]][None, :]  # c_i s_j
    out[0][np.ix_(~rotated, ~rotated)] = 1.0
    return out
