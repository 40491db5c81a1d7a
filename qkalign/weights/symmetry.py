"""How symmetric each QK operator is: ``s = <g, g^T>_F / ||g||_F^2``, per head, from measure's (d, d) products.

With ``S = (g + g^T)/2`` and ``A = (g - g^T)/2``, ``||g||^2 = ||S||^2 + ||A||^2`` and ``<g, g^T> = ||S||^2 - ||A||^2``,
so ``s = (||S||^2 - ||A||^2) / ||g||^2`` lies in [-1, 1]: 1 for a symmetric operator, -1 for a skew one. This is
the symmetry score of Saponati et al. (ICML 2025, arXiv 2502.10927; their code, ``utils/scores.py``, stores
``r = ||S||^2 / ||g||^2`` and reports ``2 r - 1``, the same ``s``), which they compute per layer on the layer's
whole matrix ``W_Q W_K^T`` (its heads summed): a transpose of ``g``, with the same score. Per head,
``<g, g^T> = tr(K^T Q K^T Q) = tr((Q K^T)^2)`` needs only the (d, d) product ``K Q^T`` measure forms anyway.
"""

import numpy as np


def symmetry_record(arrays):
    """The JSON's ``symmetry``: ``<g, g^T>`` (``transpose_inner``) and ``s`` (``per_head``) of every head, L x H; of every
    layer's whole operator (:mod:`~qkalign.weights.layer_symmetry`; null unless measured) ``layer_norm_sq``,
    ``layer_transpose_inner``, ``per_layer`` (its ``s``) and ``directionality``, L each. A zero operator's ``s`` is NaN (JSON null). Pops
    measure's arrays of them from ``arrays``."""
    inner = arrays.pop("transpose_inner")
    norms_sq = np.einsum("llh->lh", arrays["gram"])
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(norms_sq > 0, inner / norms_sq, np.nan)
    record = {"transpose_inner": inner.tolist(), "per_head": _nulls(score), "layer_norm_sq": None,
              "layer_transpose_inner": None, "per_layer": None, "directionality": None}
    if "layer_norm_sq" in arrays:  # measure(layer_symmetry=True)
        layer_norm_sq, layer_inner = arrays.pop("layer_norm_sq"), arrays.pop("layer_transpose_inner")
        with np.errstate(invalid="ignore", divide="ignore"):
            layer_score = np.where(layer_norm_sq > 0, layer_inner / layer_norm_sq, np.nan)
        record.update(layer_norm_sq=layer_norm_sq.tolist(), layer_transpose_inner=layer_inner.tolist(),
                      per_layer=_nulls(layer_score), directionality=arrays.pop("layer_directionality").tolist())
    return {"symmetry": record}


def rotated_transpose_inner(kq, cos, sin, first, second, layer_kinds=None):
    """``<g_L(Δ_t), g_L(Δ_t)^T> = tr((M_t Q_L K_L^T)^2)`` for every distance of a rotary profile: (D, L) float64.

    kq: (L, d, d) ``K_L Q_L^T``; cos, sin: (D, P) tables of ``M_t = S R(Δ_t) S`` (or (K, D, P) with ``layer_kinds``
    (L,), one per kind of layer), pairs ``first``, ``second`` (P,). ``M`` turns only the rows of each pair, so
    ``M X`` costs O(d^2) per layer and distance.
    """
    x = np.swapaxes(np.asarray(kq, dtype=np.float64), -1, -2)  # Q K^T
    cos, sin = np.asarray(cos, dtype=np.float64), np.asarray(sin, dtype=np.float64)
    if layer_kinds is None:
        cos, sin, layer_kinds = cos[None], sin[None], np.zeros(len(x), dtype=np.int64)
    out = np.empty((cos.shape[1], len(x)))
    top, bottom = x[:, first], x[:, second]  # (L, P, d)
    for t in range(cos.shape[1]):
        c, s = cos[layer_kinds, t][:, :, None], sin[layer_kinds, t][:, :, None]  # (L, P, 1)
        y = x.copy()
        y[:, first] = c * top - s * bottom
        y[:, second] = s * top + c * bottom
        out[t] = np.einsum("lij,lji->l", y, y)
    return out


def _nulls(values):
    """``values`` as nested lists with NaN as None (JSON null)."""
    return np.where(np.isnan(values), None, values).tolist()
