"""The cross-layer operator cosine split into the operators' symmetric and skew parts.

Per head (``h`` left out), ``S_L = (g_L + g_L^T)/2`` and ``A_L = (g_L - g_L^T)/2``. A symmetric and a skew matrix are
orthogonal, so ``<g_L, g_L'> = <S_L, S_L'> + <A_L, A_L'>``, and with ``T[L, L'] = <g_L, g_L'^T>`` (measure's
``gram_transpose``, :mod:`qkalign.weights.symmetry_split`)

- ``<S_L, S_L'> = (gram[L, L'] + T[L, L'])/2`` and ``<A_L, A_L'> = (gram[L, L'] - T[L, L'])/2``;
- ``||S_L||^2 = (gram[L, L] + T[L, L])/2`` and ``||A_L||^2 = (gram[L, L] - T[L, L])/2``;
- ``cos_S[L, L'] = <S_L, S_L'> / (||S_L|| ||S_L'||)`` and ``cos_A`` likewise: how alike each half is across layers,
  on its own. NaN where the half is zero to measure's rounding (its squared norm at most :data:`PART_TOL` of
  ``||g||^2``, e.g. the skew part of tied ``Q = K``).

**The fraction of the cross-layer agreement each half carries.** The operator cosine splits exactly,
``cos(g_L, g_L') = agreement_S + agreement_A`` with ``agreement_S[L, L'] = <S_L, S_L'> / (||g_L|| ||g_L'||)``
(``= cos_S ||S_L|| ||S_L'|| / (||g_L|| ||g_L'||)``) and ``agreement_A`` likewise. Summed over the heads and the
ordered pairs ``L != L'``: ``frac_S = sum agreement_S / sum cos(g_L, g_L')`` and ``frac_A = 1 - frac_S``, the shares
of the mean off-diagonal operator cosine (each head and pair weighted alike, as the operator cosine weighs them).
``frac_S_weighted = sum <S_L, S_L'> / sum <g_L, g_L'>`` over the same terms weighs them by the operators' norms.
Both mean something only where the off-diagonal operator cosine stands above chance; they leave [0, 1] when the
halves' agreements have opposite signs.

**Chance.** For unrelated ``g = K^T Q`` with i.i.d. standard Gaussian K, Q (d x n), ``E[g_ij g_kl] = d δ_ik δ_jl``,
so ``E[S_ij S_kl] = (d/2)(δ_ik δ_jl + δ_il δ_jk)`` and ``E[A_ij A_kl] = (d/2)(δ_ik δ_jl - δ_il δ_jk)``. For two
independent heads ``E<S_1, S_2> = 0`` and ``E<S_1, S_2>^2 = sum_ijkl E[S_ij S_kl]^2 = (d^2/4)(2 n^2 + 2 n)
= d^2 n (n + 1)/2``, while ``E||S||^2 = sum_ij (d/2)(1 + δ_ij) = d n (n + 1)/2``: ``cos_S`` has mean 0 and sd
``sqrt(2 / (n (n + 1)))``, the cosine of two random vectors of the ``n (n + 1)/2``-dimensional symmetric matrices.
Likewise ``E<A_1, A_2>^2 = d^2 n (n - 1)/2`` and ``E||A||^2 = d n (n - 1)/2``: sd ``sqrt(2 / (n (n - 1)))``. Both are
about ``sqrt(2)/n``, ``sqrt(2)`` times the operator cosine's ``1/n`` (each half spans about half of g's ``n^2``
dimensions), to O(1/n) relative as that one. For a rotated ``K^T M Q``, ``E[g_ij g_kl] = ||M||_F^2 δ_ik δ_jl``
whatever ``M``: the same levels to leading order.
"""

import math

import numpy as np

from ..errors import InputError

#: A half whose squared norm is at most this fraction of ``||g||^2`` is zero to rounding (NaN cosines): float32
#: products give ``<g, g^T>`` to ~2e-7 of ``||g||^2`` (tied and skew tests), so such a half's cosines would be good
#: to no better than ~0.2 %; float64 ones to ~1e-15. An unrecorded precision counts as float32.
PART_TOL = {"float32": 1e-4, "float64": 1e-10}
#: How far ``|gram_transpose[L, L']|`` may exceed its Cauchy-Schwarz bound ``sqrt(gram[L, L] gram[L', L'])`` (relative)
#: in a valid file: 50 times float32's excess for exactly skew operators.
ROUNDING_EXCESS = 1e-5
PARTS = ("S", "A")


def split_chance(hidden_size):
    """``{"S": level, "A": level}``: mean 0 and the sd of one head's ``cos_S``, ``cos_A`` for unrelated operators."""
    n = hidden_size
    sds = {"S": math.sqrt(2.0 / (n * (n + 1))), "A": math.sqrt(2.0 / (n * (n - 1))) if n > 1 else float("nan")}
    notes = {"S": "sqrt(2 / (n (n + 1)))", "A": "sqrt(2 / (n (n - 1)))"}
    return {part: {"mean": 0.0, "sd": sds[part], "method": "analytic",
                   "note": f"Gaussian factors: mean 0, sd {notes[part]}, to O(1/n)"} for part in PARTS}


def symmetry_split_statistics(data, anchor):
    """The split of a :class:`~qkalign.QKData` whose ``extra`` holds measure's ``gram_transpose`` (None without).

    Returns
    -------
    dict or None
        ``cos_S``, ``cos_A`` (L, L) head means (NaN heads left out) and ``cos_S_per_head``, ``cos_A_per_head``
        (L, L, H); ``agreement_S``, ``agreement_A`` (L, L) head means, adding up to ``operator_cos``;
        ``to_anchor_per_layer`` {S, A: (L,)}; per part ``S``, ``A``: ``adjacent``, ``to_anchor`` (anchor excluded),
        ``offdiag`` means over pairs and heads and their z-scores against ``chance`` (``z = mean / (sd / sqrt(m))``
        for the m finite values averaged, each unordered pair once); ``offdiag_agreement``
        {S, A, operator_cos} means over heads and off-diagonal pairs; ``frac_S``, ``frac_A``, ``frac_S_weighted``.
    """
    gram_transpose = checked_gram_transpose(data)
    if gram_transpose is None:
        return None
    gram = np.asarray(data.gram, dtype=np.float64)
    precision = (data.extra or {}).get("precision")
    tol = PART_TOL.get(precision if isinstance(precision, str) else "float32", PART_TOL["float32"])
    inner = {"S": (gram + gram_transpose) / 2, "A": (gram - gram_transpose) / 2}
    norms_sq = np.einsum("llh->lh", gram)
    chance = split_chance(data.hidden_size)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        norms = np.sqrt(norms_sq)
        for part in PARTS:
            part_sq = np.einsum("llh->lh", inner[part])
            part_norms = np.where(part_sq > tol * norms_sq, np.sqrt(np.maximum(part_sq, 0.0)), np.nan)
            out[f"cos_{part}_per_head"] = inner[part] / (part_norms[:, None, :] * part_norms[None, :, :])
            out[f"agreement_{part}_per_head"] = inner[part] / (norms[:, None, :] * norms[None, :, :])
    return _summaries(out, inner, gram, anchor, chance)


def _summaries(per_head, inner, gram, anchor, chance):
    """Head means, pair summaries with their z-scores, the agreement shares (see :func:`symmetry_split_statistics`)."""
    num_layers = gram.shape[0]
    layers = np.arange(num_layers)
    off = ~np.eye(num_layers, dtype=bool)
    upper = np.triu(off)  # each pair once: cos is symmetric in (L, L'), and a z-score counts independent values
    adjacent = np.zeros_like(off)
    adjacent[layers[:-1], layers[:-1] + 1] = True
    to_anchor = np.zeros_like(off)
    to_anchor[layers != anchor, anchor] = True
    result = {}
    for part in PARTS:
        cos = per_head[f"cos_{part}_per_head"]
        result[f"cos_{part}"] = _nanmean(cos, axis=2)
        result[f"cos_{part}_per_head"] = cos
        summary = {}
        for name, mask in (("adjacent", adjacent), ("to_anchor", to_anchor), ("offdiag", upper)):
            values = cos[mask]
            count = int(np.isfinite(values).sum())
            mean = float(_nanmean(values)) if count else math.nan
            summary[name] = mean
            summary[f"z_{name}"] = (mean - chance[part]["mean"]) / (chance[part]["sd"] / math.sqrt(count)) \
                if count and chance[part]["sd"] > 0 else math.nan
        result[part] = summary
    for part in PARTS:
        result[f"agreement_{part}"] = per_head[f"agreement_{part}_per_head"].mean(axis=2)
    per_layer = {}
    for part in PARTS:
        column = result[f"cos_{part}"][:, anchor].copy()
        column[anchor] = 1.0 if np.isfinite(column[anchor]) else math.nan  # exact by construction
        per_layer[part] = column
    result["to_anchor_per_layer"] = per_layer
    shares = {part: float(per_head[f"agreement_{part}_per_head"][off].mean()) if off.any() else math.nan
              for part in PARTS}
    total = shares["S"] + shares["A"]
    result["offdiag_agreement"] = {**shares, "operator_cos": total}
    with np.errstate(invalid="ignore", divide="ignore"):
        result["frac_S"] = shares["S"] / total if total != 0 else math.nan
        result["frac_A"] = shares["A"] / total if total != 0 else math.nan
        weighted = float(gram[off].sum()) if off.any() else 0.0
        result["frac_S_weighted"] = float(inner["S"][off].sum()) / weighted if weighted != 0 else math.nan
    result["chance"] = chance
    return result


def _nanmean(values, axis=None):
    """``np.nanmean`` without its warning for all-NaN slices (they stay NaN)."""
    values = np.asarray(values)
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, values, 0.0).sum(axis=axis) / finite.sum(axis=axis)


def checked_gram_transpose(data):
    """``extra["gram_transpose"]`` as an (L, L, H) float64 array (None when absent or null); one error line when it
    is not L x L x H finite numbers within the Cauchy-Schwarz bound ``|T[L, L']| <= sqrt(gram[L, L] gram[L', L'])``
    (to :data:`ROUNDING_EXCESS`), which for ``L = L'`` says ``|<g, g^T>| <= ||g||^2``."""
    values = (data.extra or {}).get("gram_transpose")
    if values is None:
        return None
    shape = (data.num_layers, data.num_layers, data.num_heads)
    expected = (f"{shape[0]} x {shape[1]} x {shape[2]} finite numbers <g_L, g_L'^T> (measure --symmetry-split), "
                "each within sqrt(gram[L, L] gram[L', L']) in size")
    try:
        transposed = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        transposed = None
    if transposed is None:
        raise InputError(data.json_path, "gram_transpose", expected, repr(values)[:80])
    if transposed.shape != shape:
        raise InputError(data.json_path, "gram_transpose", expected, f"shape {transposed.shape}")
    if not np.isfinite(transposed).all():
        a, b, h = (int(i) for i in np.argwhere(~np.isfinite(transposed))[0])
        raise InputError(data.json_path, "gram_transpose", expected, f"{values[a][b][h]!r} at [{a}][{b}][{h}]")
    diagonal = np.einsum("llh->lh", np.asarray(data.gram, dtype=np.float64))
    bound = np.sqrt(diagonal[:, None, :] * diagonal[None, :, :])
    excess = np.abs(transposed) > bound * (1 + ROUNDING_EXCESS)
    if excess.any():
        a, b, h = (int(i) for i in np.argwhere(excess)[0])
        raise InputError(data.json_path, "gram_transpose", expected,
                         f"{transposed[a, b, h]:.6g} at [{a}][{b}][{h}], beyond its bound {bound[a, b, h]:.6g}")
    return transposed
