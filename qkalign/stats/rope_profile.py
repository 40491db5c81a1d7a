"""The cross-layer statistics of measure's rotary distance profile: operator cosines against the distance Δ.

From ``rope_profile`` {``deltas`` (D,), ``gram`` (D, L, L, H)} (:mod:`qkalign.weights.rope_profile`),
``cos(Δ)[L, L', h] = gram(Δ)[L, L', h] / sqrt(gram(Δ)[L, L, h] gram(Δ)[L', L', h])``: how alike the
operators the model applies at distance Δ are across layers, summarised as the seed summarises Δ = 0
(adjacent layers, to the anchor with the anchor excluded, all pairs off the diagonal), and each head's
norm ``||g_L,h(Δ)||_F / ||g_L,h(0)||_F``.
"""

import numpy as np


def rope_profile_statistics(profile, anchor):
    """The statistics of a ``rope_profile`` (None: none recorded) to the layer ``anchor`` (non-negative).

    Returns
    -------
    dict or None
        ``deltas`` (D,); ``adjacent``, ``to_anchor``, ``offdiag`` (D,) float64: head- and pair-mean operator
        cosines; ``to_anchor_per_layer`` (D, L) head-mean cosine of each layer to the anchor (the anchor's
        own: 1); ``norm_ratio`` (D, L, H) float64, each head's norm relative to its norm at Δ = 0; where measure
        recorded ``transpose_inner``, ``symmetry`` (D,) and ``symmetry_per_layer`` (D, L): the heads' mean symmetry
        score ``<g(Δ), g(Δ)^T> / ||g(Δ)||^2`` (:mod:`qkalign.stats.symmetry`).
    """
    if not profile:
        return None
    gram = np.asarray(profile["gram"], dtype=np.float64)
    num_layers = gram.shape[1]
    norms = np.sqrt(np.einsum("tllh->tlh", gram))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = gram / (norms[:, :, None, :] * norms[:, None, :, :])
        norm_ratio = norms / norms[:1]
    mean_cos = cos.mean(axis=3)  # (D, L, L)
    others = np.arange(num_layers) != anchor
    off = ~np.eye(num_layers, dtype=bool)
    to_anchor = mean_cos[:, :, anchor].copy()
    to_anchor[:, anchor] = 1.0  # exact by construction
    layers = np.arange(num_layers - 1)
    out = {
        "deltas": list(profile["deltas"]),
        "adjacent": mean_cos[:, layers, layers + 1].mean(axis=1) if num_layers > 1 else np.full(len(gram), np.nan),
        "to_anchor": mean_cos[:, others, anchor].mean(axis=1) if num_layers > 1 else np.full(len(gram), np.nan),
        "offdiag": mean_cos[:, off].mean(axis=1) if num_layers > 1 else np.full(len(gram), np.nan),
        "to_anchor_per_layer": to_anchor,
        "norm_ratio": norm_ratio,
    }
    if profile.get("transpose_inner") is not None:  # each head's symmetry s(Δ) = <g(Δ), g(Δ)^T> / ||g(Δ)||^2
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.asarray(profile["transpose_inner"], dtype=np.float64) / norms**2  # (D, L, H)
        out["symmetry"] = np.nanmean(score, axis=(1, 2))
        out["symmetry_per_layer"] = np.nanmean(score, axis=2)
    return out
