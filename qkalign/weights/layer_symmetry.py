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

:func:`layer_operator_scores` is the definition: it reads each layer's blocks again and sums ``W`` in numpy.
``measure`` instead gathers the blocks its head tasks read (:class:`LayerOperators`: each kv head's ``K`` stack, and
``Q~`` summed in head order, so the same float32 sums as the definition's) and runs one task per layer on its worker
threads: the product on single-threaded BLAS, the sums in one pass over ``W``
(:func:`qkalign.kernels.layer_sums.operator_sums`). What that keeps: ``2 L H_kv d n`` numbers (the K stacks and the
``Q~`` sums), ``L H_kv d n`` of them beyond what measure holds anyway.
"""

import numpy as np

#: Rows of ``W`` widened to float64 at a time for its sums.
CHUNK_ROWS = 512
#: The per-layer arrays of the scores, (L,) float64 each, in the order :meth:`LayerOperators.layer_scores` gives them.
LAYER_SCORES = ("layer_norm_sq", "layer_transpose_inner", "layer_directionality")


def layer_operator_scores(reader, shape, maps=None):
    """``{"layer_norm_sq", "layer_transpose_inner", "layer_directionality"}``, (L,) float64 each: ``||W_L||^2``,
    ``<W_L, W_L^T>`` and ``d`` of every layer's operator, from measure's head reader (blocks scaled by powers of two,
    gains folded in); maps: (L, d, d) ``M_L`` of a rotated operator, or None."""
    L, n = shape.num_layers, shape.hidden_size
    out = {name: np.empty(L) for name in LAYER_SCORES}
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
        norm_sq, inner, row_sq, col_sq = operator_sums(w)
        scale = 2 * (k_top + q_top)
        out["layer_norm_sq"][layer] = np.ldexp(norm_sq, scale)
        out["layer_transpose_inner"][layer] = np.ldexp(inner, scale)
        # Saponati's rows are the query side: W's columns
        out["layer_directionality"][layer] = directionality(np.sqrt(col_sq), np.sqrt(row_sq))
    return out


class LayerOperators:
    """Every layer's ``K`` and ``Q~`` gathered from measure's head tasks, and the scores of ``W = K^T M_L Q~``.

    The blocks come as measure's reader gives them (``blocks 2^exponents``, each head and layer its own exponent).
    :meth:`add_keys` keeps a kv head's ``(L, d, n)`` stack; :meth:`add_queries`, called for the query heads in head
    order, adds each into its group's ``Q~`` (``query_sums``: (L, H_kv, d, n)) at the group's largest exponent so far,
    rescaling the partial sum when a larger one comes: the float32 sums of :func:`layer_operator_scores` (scaling by
    powers of two commutes with rounding; only entries pushed into the subnormal range, 2^126 (float64: 2^1022)
    below a layer's largest head, could round differently). :meth:`layer_scores` of one layer is then independent of
    every other: measure runs them as tasks on its worker threads, on single-threaded BLAS. maps: (L, d, d) ``M_L``
    of a rotated operator, or None.
    """

    def __init__(self, shape, dtype, maps=None):
        self.shape, self.dtype, self.maps = shape, np.dtype(dtype), maps
        L, n = shape.num_layers, shape.hidden_size
        self.keys = [None] * shape.num_kv_heads  # (blocks (L, d, n), exponents (L,)) of each kv head
        self.query_sums = np.empty((L, shape.num_kv_heads, shape.head_dim, n), dtype=self.dtype)
        self.query_exponents = np.zeros((L, shape.num_kv_heads), dtype=np.int64)
        self._scratch = np.empty((shape.head_dim, n), dtype=self.dtype)

    def add_keys(self, kv_head, blocks, exponents):
        """Keep kv head ``kv_head``'s stack: blocks (L, d, n), exponents (L,) int (not copied)."""
        self.keys[kv_head] = (blocks, np.asarray(exponents, dtype=np.int64))

    def add_queries(self, head, blocks, exponents):
        """Add query head ``head``'s stack (blocks (L, d, n), exponents (L,)) into its group's ``Q~``; heads in order."""
        group = head // self.shape.group
        sums, tops = self.query_sums[:, group], self.query_exponents[:, group]
        if head % self.shape.group == 0:
            sums[...] = blocks
            tops[:] = exponents
            return
        for layer in range(len(sums)):
            top = max(int(tops[layer]), int(exponents[layer]))
            if top > tops[layer]:
                times_power_of_two(sums[layer], int(tops[layer]) - top, out=sums[layer])
                tops[layer] = top
            if exponents[layer] == top:
                sums[layer] += blocks[layer]
            else:
                sums[layer] += times_power_of_two(blocks[layer], int(exponents[layer]) - top, out=self._scratch)

    def layer_scores(self, layer):
        """``(||W||^2, <W, W^T>, d)`` of layer ``layer``'s operator, float64 (the sums in one pass over ``W``); once
        per layer, every query head added: it scales that layer's ``Q~`` in place."""
        from ..kernels.layer_sums import operator_sums as fused_sums  # numba: imported when measuring

        shape, d = self.shape, self.shape.head_dim
        k_exponents = np.array([exponents[layer] for _, exponents in self.keys])
        q_exponents = self.query_exponents[layer]
        # one scale per side, as in layer_operator_scores: the heads' blocks brought to the largest exponent
        k_top, q_top = int(k_exponents.max()), int(q_exponents.max())
        k = np.empty((shape.num_kv_heads * d, shape.hidden_size), dtype=self.dtype)
        for kv_head, (blocks, exponents) in enumerate(self.keys):
            times_power_of_two(blocks[layer], int(exponents[layer]) - k_top, out=k[kv_head * d:(kv_head + 1) * d])
        q_sum = self.query_sums[layer]
        for kv_head in np.flatnonzero(q_exponents != q_top):  # each layer's sums are read once: scaled in place
            times_power_of_two(q_sum[kv_head], int(q_exponents[kv_head]) - q_top, out=q_sum[kv_head])
        if self.maps is not None:
            q_sum = (self.maps[layer] @ q_sum).astype(self.dtype)
        norm_sq, inner, row_sq, col_sq = fused_sums(k.T @ q_sum.reshape(-1, shape.hidden_size))
        scale = 2 * (k_top + q_top)
        # Saponati's rows are the query side: W's columns
        return np.ldexp(norm_sq, scale), np.ldexp(inner, scale), directionality(np.sqrt(col_sq), np.sqrt(row_sq))


def times_power_of_two(block, exponent, out):
    """``out = block 2^exponent``, rounded once as ``np.ldexp`` rounds it (exactly, unless it underflows): a product by
    the power of two where that is a number of ``out``'s format (subnormal ones too; ~20x quicker than ldexp), ldexp
    beyond. Returns ``out``."""
    info = np.finfo(out.dtype)
    if exponent == 0:
        np.copyto(out, block)
    elif info.minexp - info.nmant <= exponent < info.maxexp:
        np.multiply(block, np.ldexp(out.dtype.type(1), exponent), out=out)
    else:
        np.ldexp(block, exponent, out=out)
    return out


def operator_sums(w, chunk_rows=CHUNK_ROWS):
    """``(sum w^2, sum w * w^T, row_sq, col_sq)`` of a square ``w``: float64 scalars and the squared row and column
    norms (n,), in float64 (``w`` widened ``chunk_rows`` rows at a time)."""
    n = len(w)
    norm_sq = inner = 0.0
    row_sq, col_sq = np.empty(n), np.zeros(n)
    for start in range(0, n, chunk_rows):
        rows = w[start:start + chunk_rows].astype(np.float64)
        squares = rows * rows
        row_sq[start:start + chunk_rows] = squares.sum(axis=1)
        col_sq += squares.sum(axis=0)
        norm_sq += float(row_sq[start:start + chunk_rows].sum())
        inner += float(np.einsum("ij,ji->", rows, w[:, start:start + chunk_rows].astype(np.float64)))
    return np.float64(norm_sq), np.float64(inner), row_sq, col_sq


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
