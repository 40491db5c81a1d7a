"""`analyze`: every number of the report, from a :class:`QKData`, on a chosen backend."""

import json
import math
from dataclasses import dataclass, fields

import numpy as np

from . import reference
from .backends import DEFAULT_BACKEND, get_backend
from .chance import DEFAULT_SEED, chance_levels
from .errors import InputError
from .layer_pairs import all_pair_arrays, distance_profile, layer_pair_statistics

#: The seed's verdict thresholds on the mean operator cosine to the anchor.
VERDICTS = (
    (0.9, "STRONG", "same operator up to scalar across all layers."),
    (0.5, "MEDIUM", "substantial shared operator, but layer-specific drift."),
    (0.1, "WEAK", "some alignment; far from single-operator interpretation."),
    (-math.inf, "REJECTED", "operators are effectively orthogonal across layers."),
)

RANGE_NAMES = ("early", "mid", "late")


def normalize_anchor(anchor, num_layers):
    """Python-style index (-1 = last, -2 = second last) to a layer number in ``0..L-1``."""
    if isinstance(anchor, bool) or not isinstance(anchor, (int, np.integer)) or not -num_layers <= anchor < num_layers:
        raise InputError("--anchor", "", f"an integer layer index in [{-num_layers}, {num_layers - 1}]", repr(anchor))
    return int(anchor) % num_layers


def layer_ranges(num_layers):
    """Thirds of the layers ``[start, stop)`` (early, mid, late); the first ones get the remainder.

    For 36 layers these are the seed's hard-coded 0-11, 12-23, 24-35.
    """
    parts = np.array_split(np.arange(num_layers), 3)
    bounds = []
    start = 0
    for part in parts:
        bounds.append((start, start + len(part)))
        start += len(part)
    return dict(zip(RANGE_NAMES, bounds))


def verdict_label(mean_cos_to_anchor):
    """The seed's verdict ``(label, text)`` for a mean operator cosine to the anchor."""
    for threshold, label, text in VERDICTS:
        if mean_cos_to_anchor > threshold:
            return label, text
    return VERDICTS[-1][1], VERDICTS[-1][2]


def _mean_or_nan(values):
    return float(values.mean()) if values.size else math.nan


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """Every number of the report; ``to_dict``/``to_json`` give the JSON output.

    Attributes
    ----------
    meta : dict
        num_layers, num_heads, head_dim, hidden_size, topk, anchor, backend, input paths.
    operator_cos : (L, L) float64
        Head-averaged operator cosine.
    operator_cos_per_head : (L, L, H) float64
    adjacent : dict
        mean, min, max of ``operator_cos[L, L+1]`` (nan for one layer).
    to_anchor : dict of (L,) float64
        cos, t_opt, resid_frac (``sqrt(1 - cos^2)`` of the head-averaged cos, as the seed).
    rescale : dict of (L,) float64
        mean_cos, mean_resid: per-head cos and residual fraction to the anchor, averaged.
    sign_agreement : dict
        k (list), and mean, early, mid, late (one value per k); per_layer_head (len(k), L, H).
    frac_positive : (L,) float64
        Fraction of positive eigenvalues of ``(g + g^T)/2`` per layer.
    principal_angles : dict
        mean_cos, min_cos, top1_overlap (each (L,), head-averaged) and cosines (L, H, k).
    verdict : dict
        mean_cos_to_anchor, mean_cos_adjacent, label, text, and
        mean_cos_to_anchor_excluding_anchor (the seed's mean includes the anchor's own 1.0).
    layer_ranges : dict
        early, mid, late as ``[start, stop)`` layer bounds.
    pairs : dict, optional
        Every statistic for all layer pairs (see ``qkalign.layer_pairs.PAIR_KEYS``).
    by_distance : dict, optional
        Means of the pair statistics over the pairs at each layer distance.
    signed_mass : (L, H) float64, optional
        ``sum(lambda) / sum(|lambda|)`` of each head's spectrum.
    frac_positive_topk : (L, H) float64, optional
        Fraction of positive eigenvalues among the top-k (k = topk).
    chance : dict, optional
        Per statistic, its level for unrelated operators of this shape
        (mean, sd of one head, method, seed, samples, note).
    matched : dict, optional
        Head-matched statistics (``qkalign.matching.match_heads``), with ``match_heads=True``.
    """

    meta: dict
    operator_cos: np.ndarray
    operator_cos_per_head: np.ndarray
    adjacent: dict
    to_anchor: dict
    rescale: dict
    sign_agreement: dict
    frac_positive: np.ndarray
    principal_angles: dict
    verdict: dict
    layer_ranges: dict
    pairs: dict = None
    by_distance: dict = None
    signed_mass: np.ndarray = None
    frac_positive_topk: np.ndarray = None
    chance: dict = None
    matched: dict = None

    def to_dict(self):
        """Plain Python containers (lists, floats, ``None`` for nan), ready for ``json``.

        Parts that were not computed (``None``) are left out.
        """
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}

    def to_json(self, path=None, indent=None):
        """The JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def analyze(data, anchor=-1, backend=DEFAULT_BACKEND, k_values=None, pairs=True, chance=True,
            match_heads=False, chance_seed=DEFAULT_SEED):
    """Compare every layer's QK operators with the anchor layer's, as the seed did.

    Parameters
    ----------
    data : QKData
    anchor : int
        Anchor layer, Python indexing (-1 = last); out of range raises InputError.
    backend : {"numpy", "numba"}
        Which implementation computes the numbers (default ``DEFAULT_BACKEND``).
    k_values : sequence of int, optional
        Top-k values for the sign agreement; default the seed's 2, 4, ..., 256
        up to the spectrum length.
    pairs : bool
        Also compare all layer pairs (``pairs``, ``by_distance``, ``signed_mass``,
        ``frac_positive_topk``). The to-anchor sign agreement, principal angles and
        top-1 overlap are then the anchor's column of the pair results (equal to the
        to-anchor functions to rounding: ~1e-16).
    chance : bool
        Also compute the chance levels (Monte Carlo seeded by ``chance_seed``).
    match_heads : bool
        Also match heads across layers by their best assignment (``matched``).

    Returns
    -------
    AnalysisResult
    """
    L, H = data.num_layers, data.num_heads
    anchor = normalize_anchor(anchor, L)
    impl = get_backend(backend)
    spectrum_length = data.sym_eigs.shape[2]
    k_values = reference.sign_k_values(spectrum_length) if k_values is None else tuple(int(k) for k in k_values)
    for k in k_values:
        if not 1 <= k <= spectrum_length:
            raise InputError("k_values", "", f"integers in 1..{spectrum_length} (the spectrum length)", repr(k))
    ranges = layer_ranges(L)

    cos_per_head = impl.operator_cos_per_head(data.gram)
    cos = cos_per_head.mean(axis=2)
    adjacent = reference.adjacent_cos(cos)
    t_opt, mean_cos, mean_resid, resid_of_mean_cos = impl.rescale_to_anchor(data.gram, anchor)

    if pairs:
        # The anchor's column of the all-pairs results: no second pass over eig_dirs, and the
        # to-anchor numbers are exactly those of the pair matrices.
        pair_arrays = all_pair_arrays(data, impl, k_values)
        agree = np.ascontiguousarray(pair_arrays["sign_agreement"][:, :, anchor])
        pa_cos = np.ascontiguousarray(pair_arrays["principal_cosines"][:, anchor])
        top1 = np.ascontiguousarray(pair_arrays["top1_overlap"][:, anchor])
    else:
        agree = impl.sign_agreement(data.sym_eigs, anchor, k_values)
        pa_cos = impl.principal_cosines_to_anchor(data.eig_dirs, anchor)
        top1 = impl.top1_overlap(data.eig_dirs, anchor)
    sign = {"k": list(k_values), "mean": [float(a.mean()) for a in agree]}
    for name, (start, stop) in ranges.items():
        sign[name] = [_mean_or_nan(a[start:stop]) for a in agree]
    sign["per_layer_head"] = agree

    to_anchor_cos = cos[:, anchor]
    label, text = verdict_label(float(mean_cos.mean()))
    others = np.arange(L) != anchor
    verdict = {
        "mean_cos_to_anchor": float(mean_cos.mean()),
        "mean_cos_adjacent": _mean_or_nan(adjacent),
        "label": label,
        "text": text,
        "mean_cos_to_anchor_excluding_anchor": _mean_or_nan(mean_cos[others]),
    }
    meta = {
        "num_layers": L, "num_heads": H, "head_dim": data.head_dim, "hidden_size": data.hidden_size,
        "topk": data.topk, "anchor": anchor, "backend": backend,
        "grams_path": data.json_path, "eigdirs_path": data.eigdirs_path,
    }
    extras = {}
    if pairs:
        extras["pairs"] = layer_pair_statistics(data, pair_arrays, cos_per_head, k_values)
        extras["by_distance"] = distance_profile(extras["pairs"], data.topk)
        extras["signed_mass"] = impl.signed_mass(data.sym_eigs)
        extras["frac_positive_topk"] = impl.fraction_positive_topk(data.sym_eigs, data.topk)
    if chance:
        levels = chance_levels(data.head_dim, data.hidden_size, data.topk, k_values, seed=chance_seed)
        extras["chance"] = {name: level.to_dict() for name, level in levels.items()}
    if match_heads:
        from .matching import MATCHED_CHANCE_TRIALS, matched_chance
        from .matching import match_heads as match

        extras["matched"] = match(data, anchor, k_values)
        if chance:
            mean, sd = matched_chance(H, data.hidden_size, data.topk, seed=chance_seed)
            extras["chance"]["matched_pa_mean_cos"] = {
                "mean": mean, "sd": sd, "method": "monte-carlo", "seed": chance_seed,
                "samples": MATCHED_CHANCE_TRIALS, "note": "best-matched heads of two layers of random subspaces: selection bias alone"}
    return AnalysisResult(
        meta=meta,
        operator_cos=cos,
        operator_cos_per_head=cos_per_head,
        adjacent={"mean": _mean_or_nan(adjacent),
                  "min": float(adjacent.min()) if adjacent.size else math.nan,
                  "max": float(adjacent.max()) if adjacent.size else math.nan},
        to_anchor={"cos": to_anchor_cos, "t_opt": t_opt, "resid_frac": resid_of_mean_cos},
        rescale={"mean_cos": mean_cos, "mean_resid": mean_resid},
        sign_agreement=sign,
        frac_positive=impl.fraction_positive(data.sym_eigs),
        principal_angles={"mean_cos": pa_cos.mean(axis=2).mean(axis=1),
                          "min_cos": pa_cos.min(axis=2).mean(axis=1),
                          "top1_overlap": top1.mean(axis=1),
                          "cosines": pa_cos},
        verdict=verdict,
        layer_ranges={name: list(bounds) for name, bounds in ranges.items()},
        **extras,
    )
