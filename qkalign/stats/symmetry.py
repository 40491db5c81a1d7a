"""How symmetric the operators are: the symmetry score ``s = <g, g^T> / ||g||^2`` of every head, against chance.

``s = (||S||^2 - ||A||^2) / ||g||^2`` for the symmetric and skew parts ``S``, ``A`` of ``g`` (1 symmetric, -1 skew;
:mod:`qkalign.weights.symmetry`): Saponati et al.'s symmetry score (ICML 2025), here per head. measure records
``symmetry`` {``per_head``, ``transpose_inner``} (L x H).

**Chance.** For unrelated ``g = K^T Q`` with i.i.d. Gaussian K, Q (d x n), ``X = Q K^T`` has entries ``q_i . k_j``:
``E <g, g^T> = E tr(X^2) = sum_i E X_ii^2 = d n`` (the off-diagonal products ``X_ij X_ji`` have mean 0) and
``E ||g||^2 = E tr(K K^T Q Q^T) = d n^2``, so ``s`` has mean ``1/n``; ``Var tr(X^2) = 2 d n^2 + 4 (d(d-1)/2) n^2
= 2 d^2 n^2`` to leading order, an sd of ``sqrt(2)/n``. Both to O(1/n) relative. For a rotated operator
``K^T M Q`` the mean stays ``1/n`` (``E tr((M X)^2) = n ||M||_F^2``, ``E ||g||^2 = n^2 ||M||_F^2``) and a scaled
rotation changes nothing (``M Q`` is Gaussian again); for other ``M`` (a window mean) the sd is drawn by Monte
Carlo with ``M``'s singular values (:func:`symmetry_chance`). The directionality ``d`` of the layers' whole operators
has its own level (:mod:`~qkalign.stats.directionality_chance`): mean 0, its sd by Monte Carlo.
"""

import warnings

import numpy as np

from ..errors import InputError
from .directionality_chance import directionality_chance

#: Monte Carlo draws of the chance level of ``s`` for operators ``K^T M Q`` with unequal singular values of ``M``.
SYMMETRY_SAMPLES = 200


def symmetry_chance(head_dim, hidden_size, operator_scales=None, seed=0):
    """``{"mean", "sd", "method", ...}`` of one head's ``s`` for unrelated operators of this shape.

    operator_scales: (m, d) singular values of each layer's ``M`` (None: ``M`` a scaled rotation or absent).
    """
    n = hidden_size
    if operator_scales is None:
        return {"mean": 1.0 / n, "sd": float(np.sqrt(2.0) / n), "method": "analytic", "samples": None,
                "note": "Gaussian factors: mean 1/n, sd sqrt(2)/n, to O(1/n)"}
    rng = np.random.default_rng(seed)
    scales = np.asarray(operator_scales, dtype=np.float64)
    draws = np.empty(SYMMETRY_SAMPLES)
    for i in range(SYMMETRY_SAMPLES):
        sigma = scales[rng.integers(len(scales))]
        k, q = rng.standard_normal((2, head_dim, n))
        x = sigma[:, None] * (q @ k.T)  # Σ Q K^T: M = U Σ V^T, with U^T and V^T absorbed by the Gaussian factors
        norm_sq = np.einsum("ij,ij->", k @ k.T, (sigma[:, None] * q) @ (sigma[:, None] * q).T)
        draws[i] = np.einsum("ij,ji->", x, x) / norm_sq
    return {"mean": 1.0 / n, "sd": float(draws.std()), "method": "monte-carlo, operators K^T M Q with the singular "
            "values of the input's M (mean 1/n exact to O(1/n))", "samples": SYMMETRY_SAMPLES, "note": ""}


def symmetry_statistics(data, operator_scales=None):
    """The symmetry statistics of a :class:`~qkalign.QKData` whose ``extra`` holds measure's ``symmetry`` (None
    without it).

    Returns
    -------
    dict or None
        ``per_head`` (L, H) ``s``; ``per_layer`` (L,) head means; ``mean``, ``median`` over all heads;
        ``chance`` (one head's level); ``z_per_layer`` (L,) of the head means; ``z`` of the mean over all heads.
    """
    record = (data.extra or {}).get("symmetry")
    if record is None:
        return None
    score = _checked_scores(record, data)
    chance = symmetry_chance(data.head_dim, data.hidden_size, operator_scales)
    heads = np.isfinite(score).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a layer of zero operators only: its mean is NaN
        per_layer = np.nanmean(score, axis=1)
        z_per_layer = (per_layer - chance["mean"]) / (chance["sd"] / np.sqrt(heads))
        total = np.isfinite(score).sum()
        mean = float(np.nanmean(score)) if total else float("nan")
        z = (mean - chance["mean"]) / (chance["sd"] / np.sqrt(total)) if total else float("nan")
    out = {"per_head": score, "per_layer": per_layer, "mean": mean,
           "median": float(np.nanmedian(score)) if total else float("nan"), "chance": chance,
           "z_per_layer": z_per_layer, "z": float(z)}
    out.update(_layer_operator_statistics(record, data, chance, operator_scales))
    return out


def _layer_operator_statistics(record, data, chance, operator_scales=None):
    """Saponati et al.'s per-layer scores of the layers' whole operators, where recorded: ``layer_score`` (L,) ``s``
    with ``layer_z`` (L,) (one operator: the per-head level applies, its ``Q~`` a scaled Gaussian too),
    ``directionality`` (L,) ``d`` with ``directionality_chance`` (one layer's level,
    :func:`~qkalign.stats.directionality_chance.directionality_chance`) and ``directionality_z`` (L,), their
    medians over layers (what Saponati et al. report), and ``directionality_mean`` with ``directionality_mean_z``
    (the layers taken independent: sd / sqrt(layers))."""
    if record.get("per_layer") is None and record.get("directionality") is None:  # not measured
        return {}
    shape = (data.num_layers,)
    values = {}
    for key, low in (("per_layer", -1 - 1e-6), ("directionality", -1 - 1e-12)):
        try:
            array = np.array([np.nan if v is None else v for v in record.get(key)], dtype=np.float64)
        except (TypeError, ValueError):
            array = None
        if array is None or array.shape != shape or np.isinf(array).any() or (np.abs(array) > -low).any():
            raise InputError(data.json_path, f"symmetry.{key}", f"{shape[0]} numbers in [-1, 1] (or null)",
                             repr(record.get(key))[:80])
        values[key] = array
    layer_score, direction = values["per_layer"], values["directionality"]
    level = directionality_chance(data.hidden_size, _kv_heads(data), data.head_dim, operator_scales)
    layers = np.isfinite(direction).sum()
    mean = float(np.nanmean(direction)) if layers else float("nan")
    return {"layer_score": layer_score, "layer_z": (layer_score - chance["mean"]) / chance["sd"],
            "layer_score_median": float(np.nanmedian(layer_score)),
            "directionality": direction,
            "directionality_median": float(np.nanmedian(direction)) if layers else float("nan"),
            "directionality_chance": level,
            "directionality_z": (direction - level["mean"]) / level["sd"],
            "directionality_mean": mean,
            "directionality_mean_z": float((mean - level["mean"]) / (level["sd"] / np.sqrt(layers))) if layers
            else float("nan")}


def _kv_heads(data):
    """The input's kv heads (``extra["num_kv_heads"]``, as measure records it; absent: one per query head)."""
    value = (data.extra or {}).get("num_kv_heads", data.num_heads)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1 or data.num_heads % value:
        raise InputError(data.json_path, "num_kv_heads", f"a whole number >= 1 dividing num_heads {data.num_heads}",
                         repr(value)[:80])
    return int(value)


def _checked_scores(record, data):
    """``record["per_head"]`` as an (L, H) float array in [-1, 1] (null: NaN); one error line otherwise."""
    shape = (data.num_layers, data.num_heads)
    expected = f"an object with per_head: {shape[0]} lists of {shape[1]} numbers in [-1, 1] (or null)"
    if not isinstance(record, dict):
        raise InputError(data.json_path, "symmetry", expected, type(record).__name__)
    try:
        score = np.array([[np.nan if v is None else v for v in row] for row in record.get("per_head")],
                         dtype=np.float64)
    except (TypeError, ValueError):
        score = None
    # a rounding's excess beyond 1 (|<g, g^T>| <= ||g||^2 by Cauchy-Schwarz) is allowed, no more
    if score is None or score.shape != shape or np.isinf(score).any() or (np.abs(score) > 1 + 1e-6).any():
        raise InputError(data.json_path, "symmetry.per_head", expected, repr(record.get("per_head"))[:80])
    return score
