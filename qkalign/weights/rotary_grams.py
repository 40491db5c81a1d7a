"""One head's layer Gram at each relative distance of a rotary profile, from its stacked Grams.

With ``K``, ``Q`` a head's (d, n) blocks in layer L, rotary attention scores a query at position
``m`` against a key at ``n`` with the operator of the relative distance ``Δ = m - n``,
``g(Δ) = K^T R(Δ) Q``: ``score = x_n^T g(m - n) x_m`` (before the 1/sqrt(d) scale). ``R(Δ)`` (d, d)
rotates each pair ``p`` of dimensions ``(first[p], second[p])`` by the angle ``Δ θ_p``, from
``first`` towards ``second``, and leaves the other dimensions (``>= d_rot`` in transformers' layout)
alone: ``(R v)_first = c v_first - s v_second``, ``(R v)_second = s v_first + c v_second`` with
``c = cos(Δ θ_p)``, ``s = sin(Δ θ_p)``.

The sign, from transformers (``models/llama/modeling_llama.py``, 5.24)::

    q_embed = (q * cos) + (rotate_half(q) * sin)     # rotate_half(x) = cat((-x2, x1))

with ``cos = cat(freqs, freqs).cos()``, ``freqs = position * inv_freq``, pairs ``(i, i + d_rot/2)``.
So ``q_m' = R(m) q_m`` and ``k_n' = R(n) k_n`` with ``R`` as above, and since
``R(a)^T R(b) = R(b - a)`` and ``R(x)^T = R(-x)``::

    q_m' . k_n' = q_m^T R(n - m) k_n = k_n^T R(m - n) q_m = x_n^T K^T R(Δ) Q x_m.

The Gram of the operators at one ``Δ`` needs no n x n matrix: with ``R = R(Δ)`` the same in both
layers, and ``tr(A B^T) = sum(A * B)``::

    <g_L(Δ), g_L'(Δ)>_F = tr(Q_L^T R^T K_L K_L'^T R Q_L') = tr((R^T K_L K_L'^T R) (Q_L' Q_L^T))
                        = sum((R^T K_L K_L'^T R) * (Q_L Q_L'^T)),

the (L, L') blocks ``M = KK[L, L']``, ``N = QQ[L, L']`` of the stacked Grams. ``R`` is block
diagonal (one 2 x 2 rotation per pair, 1 elsewhere), so ``R^T M R`` only mixes the two rows and
the two columns of each pair: rows ``(R^T M)_first = c M_first + s M_second``,
``(R^T M)_second = -s M_first + c M_second``, and the same combination of the columns for
``(R^T M) R``. That is O(d^2) per block and distance, where the products would be O(d^3).
``qkalign.kernels.rotary_grams`` computes the same sums as a bilinear form in ``(cos, sin)``.

Layers of different kinds (Gemma 3's local layers at ``rope_local_base_freq``, its global ones at
``rope_theta`` with their scaling) rotate by their own ``R_L(Δ)``, the pairs being the same::

    <g_L(Δ), g_L'(Δ)>_F = sum((R_L^T K_L K_L'^T R_L') * (Q_L Q_L'^T)),

the rows of block (L, L') turned by layer L's angles, its columns by layer L''s: the stacked rotation
is block diagonal, ``diag(R_0(Δ), .., R_{L-1}(Δ))``, one table of ``(cos, sin)`` per layer kind.
"""

import numpy as np

from .factored_operator import layer_gram_from_blocks


def rotary_layer_grams(qq, kk, num_layers, head_dim, cos, sin, first, second, layer_kinds=None):
    """``gram[t, L, L'] = <g_L(Δ_t), g_L'(Δ_t)>_F`` for every distance of a rotary profile.

    Parameters
    ----------
    qq, kk : (L d, L d) float32 or float64
        Stacked Grams ``Q Q^T``, ``K K^T`` of one head (``Q``, ``K`` its (L d, n) blocks stacked
        over layers). Only the lower triangle is read (as
        :func:`~qkalign.weights.factored_operator.stacked_gram_lower` fills it).
    num_layers, head_dim : int
        L and d.
    cos, sin : (D, P) float64, or (K, D, P) with ``layer_kinds``
        ``cos(Δ_t θ_p)``, ``sin(Δ_t θ_p)`` for the D distances and the P rotary pairs; with
        ``layer_kinds``, one such table per layer kind.
    first, second : (P,) int
        Pair ``p`` rotates dimensions ``first[p]``, ``second[p]`` of each head (``0 <= . < d``, all
        distinct); half-split: ``i`` and ``i + d_rot/2``, interleaved: ``2i`` and ``2i + 1``.
    layer_kinds : (L,) int, optional
        The kind (``0 .. K-1``) of every layer, whose table rotates it; None: one table for all.

    Returns
    -------
    (D, L, L) float64
        Symmetric in (L, L') to rounding (blocks (L, L') and (L', L) are summed apart). At ``Δ = 0``
        (``cos = 1``, ``sin = 0`` exactly) the rotated Gram is ``KK`` itself, so that row is bit for
        bit ``layer_gram_from_blocks`` of the mirrored (symmetric) Grams.
    """
    qq_full, kk_full = _mirrored_lower(qq), _mirrored_lower(kk)
    first_rows, second_rows = _stacked_indices(num_layers, head_dim, first, second)
    cos, sin = np.asarray(cos, dtype=np.float64), np.asarray(sin, dtype=np.float64)
    if layer_kinds is None:  # one kind: R_stack = I_L (x) R(Δ_t)
        cos, sin, layer_kinds = cos[None], sin[None], np.zeros(num_layers, dtype=np.int64)
    layer_kinds = np.asarray(layer_kinds, dtype=np.int64)
    out = np.empty((cos.shape[1], num_layers, num_layers))
    for t in range(cos.shape[1]):
        # R_stack = diag(R_0(Δ_t), .., R_{L-1}(Δ_t)): each layer's pairs at its kind's (c, s)
        c, s = cos[layer_kinds, t].ravel(), sin[layer_kinds, t].ravel()
        rotated = _pair_rows_rotated(kk_full, first_rows, second_rows, c, s)  # R^T KK
        rotated = _pair_rows_rotated(rotated.T, first_rows, second_rows, c, s).T  # (R^T KK) R
        # contiguous like qq_full: numpy then sums in the same order as for KK itself
        out[t] = layer_gram_from_blocks(qq_full, np.ascontiguousarray(rotated), num_layers, head_dim)
    return out


def _mirrored_lower(gram):
    """The symmetric float64 matrix with ``gram``'s lower triangle (and diagonal): (m, m) -> (m, m)."""
    lower = np.tril(np.asarray(gram, dtype=np.float64))
    return lower + np.tril(lower, -1).T


def _stacked_indices(num_layers, head_dim, first, second):
    """Rows of the stacked (L d) index of every layer's pair dimensions: two (L P,) int64 arrays."""
    offsets = head_dim * np.arange(num_layers)[:, None]
    return ((offsets + np.asarray(first, dtype=np.int64)).ravel(),
            (offsets + np.asarray(second, dtype=np.int64)).ravel())


def _pair_rows_rotated(m, first_rows, second_rows, c, s):
    """``R^T m`` for ``R`` rotating row pairs ``(first_rows[i], second_rows[i])`` by ``(c[i], s[i])``.

    m: (r, k); first_rows, second_rows, c, s: (P',) -> (r, k) float64, a copy. Rows in no pair are
    copied unchanged (``R`` is 1 there).
    """
    out = np.array(m, dtype=np.float64)
    top, bottom = m[first_rows], m[second_rows]
    out[first_rows] = c[:, None] * top + s[:, None] * bottom
    out[second_rows] = c[:, None] * bottom - s[:, None] * top
    return out


def rotary_pairs(head_dim, rotary_dims=None, interleaved=False):
    """``(first, second)`` (d_rot/2,) int64: the dimension pairs of a head's rotary embedding.

    Half-split (transformers' ``rotate_half``): ``(i, i + d_rot/2)``; interleaved (GPT-J, Meta's
    checkpoints, GGUF rows): ``(2i, 2i + 1)``. ``rotary_dims`` (even, ``<= head_dim``; None: all)
    dimensions are rotated, the first ones of the head.
    """
    rotary_dims = head_dim if rotary_dims is None else rotary_dims
    if rotary_dims % 2 or not 0 <= rotary_dims <= head_dim:
        raise ValueError(f"rotary_dims must be even and in 0..{head_dim}, got {rotary_dims}")
    half = np.arange(rotary_dims // 2, dtype=np.int64)
    return (2 * half, 2 * half + 1) if interleaved else (half, half + rotary_dims // 2)


def rotation_matrix(head_dim, first, second, cos, sin):
    """``R`` (d, d) float64: pair ``p`` turned from ``first[p]`` towards ``second[p]`` by the angle of
    ``(cos[p], sin[p])`` (any scale: ``s² R``, or a mean of rotations), the identity on unpaired dimensions."""
    r = np.eye(head_dim)
    r[first, first], r[second, second] = cos, cos
    r[first, second], r[second, first] = -np.asarray(sin), sin
    return r


def rotary_tables(distances, inv_freq):
    """``cos(Δ_t θ_p)``, ``sin(Δ_t θ_p)``: (D,) distances and (P,) frequencies -> two (D, P) float64.

    ``inv_freq`` are transformers' ``θ_p = base^(-2p / d_rot)`` for the default rope; the angle
    ``Δ θ`` is formed in float64 (transformers forms ``position * inv_freq`` in float32).
    """
    angles = np.outer(np.asarray(distances, dtype=np.float64), np.asarray(inv_freq, dtype=np.float64))
    return np.cos(angles), np.sin(angles)
