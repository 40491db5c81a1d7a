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
    """The JSON's ``symmetry``: ``{"transpose_inner": L x H, "per_head": L x H}``, ``<g, g^T>`` and ``s`` of every
    head (``s`` NaN, JSON null, for a zero operator); pops measure's ``transpose_inner`` (L, H) from ``arrays``."""
    inner = arrays.pop("transpose_inner")
    norms_sq = np.einsum("llh->lh", arrays["gram"])
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(norms_sq > 0, inner / norms_sq, np.nan)
    return {"symmetry": {"transpose_inner": inner.tolist(), "per_head": _nulls(score)}}


def _nulls(values):
    """``values`` as nested lists with NaN as None (JSON null)."""
    return np.where(np.isnan(values), None, values).tolist()
