"""The symmetry and directionality of each layer's whole QK operator, as Saponati et al. score them.

Saponati et al. (ICML 2025, arXiv 2502.10927; their code, github.com/matteosaponati/attention-geometry,
``utils/funs.py`` and ``utils/scores.py``) score per layer the matrix ``M = W_Q W_K^T`` (d_model x d_model, the
heads concatenated, rows on the query side) with

- the symmetry score ``s = 2 ||M_s||^2 / ||M||^2 - 1 = <M, M^T> / ||M||^2`` (as per head,
  :mod:`~qkalign.weights.symmetry`);
- the directionality score ``d = (R - C) / (R + C)`` (0 when both vanish): with ``r_i``, ``c_j`` the L2 norms of
  M's rows and columns and ``τ = mean + 2 std`` of each (the unbiased std, torch's default),
  ``R = sum_{r_i > τ_r} (r_i - τ_r)`` and ``C = sum_{c_j > τ_c} (c_j - τ_c)``: negative where a few key-side
  columns stand out (what they find in decoders), positive for query-side rows.

Here the layer's operator is ``W = sum_h K_{g(h)}^T M_L Q_h`` (n x n, rows on the key side, ``M_L`` the rotated
operator's matrix or the identity), Saponati's ``M`` transposed: the same ``s``, and their rows are ``W``'s columns.
With kv heads shared by ``G`` query heads, ``W = K^T Q~`` for the stacked (H_kv d, n) ``K`` and
``Q~_g = sum_{h in g} Q_h``: one (n, H_kv d) x (H_kv d, n) product per layer, n^2 H_kv d multiply-adds (for
grouped-query models a fraction of measure's; for full multi-head ones as much again), summed in float64.
"""

import numpy as np

#: Rows of ``W`` widened to float64 at a time for its sums.
CHUNK_ROWS = 512


def layer_operator_scores(reader, shape, maps=None):
    """``{"layer_norm_sq", "layer_transpose_inner", "layer_directionality"}``, (L,) float64 each: ``||W_L||^2``,
    ``<W_L, W_L^T>`` and ``d`` of every layer's operator, from measure's head reader (blocks scaled by powers of two,
    gains folded in); maps: (L, d, d) ``M_L`` of a rotated operator, or None."""
    L, n = shape.num_layers, shape.hidden_size
    out = {name: np.empty(L) for name in ("layer_norm_sq", "layer_transpose_inner", "layer_directionality")}
    for layer in range(L):
        k, k_exponents = reader.layer_keys(layer)
        q, q_exponents = reader.layer_queries(layer)
        # one scale per side: the heads' blocks brought to the largest exponent (exact, but for underflow far
        # below the largest head, which then adds nothing to W)
        k_top, q_top = int(k_exponents.max()), int(q_exponents.max())
        k = np.ldexp(k, (k_exponents - k_top)[:, None, None]).astype(k.dtype, copy=False)
        q = np.ldexp(q, (q_exponents - q_top)[:, None, None]).astype(q.dtype, copy=False)
        q_sum = q.reshape(shape.num_kv_heads, shape.group, shape.head_dim, n).sum(axis=1)
        if maps is not None:
            q_sum = (maps[layer] @ q_sum).astype(q.dtype)
        w = k.reshape(-1, n).T @ q_sum.reshape(-1, n)  # (n, n): key side on the rows
        norm_sq, inner, row_sq, col_sq = _sums(w)
        scale = 2 * (k_top + q_top)
        out["layer_norm_sq"][layer] = np.ldexp(norm_sq, scale)
        out["layer_transpose_inner"][layer] = np.ldexp(inner, scale)
        # Saponati's rows are the query side: W's columns
        out["layer_directionality"][layer] = directionality(np.sqrt(col_sq), np.sqrt(row_sq))
    return out


def _sums(w):
    """``sum(w^2)``, ``sum(w * w^T)``, the squared row norms (n,) and column norms (n,) of a square ``w``, in float64."""
    n = len(w)
    norm_sq = inner = 0.0
    row_sq, col_sq = np.empty(n), np.zeros(n)
    for start in range(0, n, CHUNK_ROWS):
        rows = w[start:start + CHUNK_ROWS].astype(np.float64)
        squares = rows * rows
        row_sq[start:start + CHUNK_ROWS] = squares.sum(axis=1)
        col_sq += squares.sum(axis=0)
        norm_sq += float(row_sq[start:start + CHUNK_ROWS].sum())
        inner += float(np.einsum("ij,ji->", rows, w[:, start:start + CHUNK_ROWS].astype(np.float64)))
    return norm_sq, inner, row_sq, col_sq


def directionality(row_norms, column_norms, num_std=2):
    """Saponati et al.'s directionality score of a matrix from its row and column norms: ``(R - C) / (R + C)``.

    ``R``, ``C``: the excess over ``mean + num_std std`` (unbiased std) of the rows' and the columns' norms that
    exceed it, summed; 0 when neither has any. In [-1, 1]: -1 where only columns stand out.
    """
    def excess(norms):
        threshold = norms.mean() + num_std * norms.std(ddof=1)
        return float((norms[norms > threshold] - threshold).sum())

    rows, columns = excess(np.asarray(row_norms, dtype=np.float64)), excess(np.asarray(column_norms, dtype=np.float64))
    return 0.0 if rows + columns == 0 else (rows - columns) / (rows + columns)
