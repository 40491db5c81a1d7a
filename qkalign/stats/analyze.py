"""`analyze`: every number of the report, from a :class:`~qkalign.QKData`, on a chosen backend.

The steps, each a function of its own: the operator cosines and the scalar rescale (a, b),
the eigen-data to the anchor (c, d: the anchor's column of the all-pairs results, or the
to-anchor functions), the seed's summaries (layer ranges, verdict), then what lies beyond
the seed (all pairs, chance levels, head matching).
"""

import math

import numpy as np

from ..checks import int_in_range, is_integer
from ..errors import InputError
from . import reference
from .all_pairs import all_pair_arrays, distance_profile, layer_pair_statistics
from .backends import DEFAULT_BACKEND, choose_backend
from .chance import DEFAULT_SEED, chance_levels
from .provenance import provenance
from .result import AnalysisResult
from .rope_bands import rope_band_statistics
from .rope_profile import rope_profile_statistics
from .rotary_records import checked_bands, checked_profile
from .symmetry import symmetry_statistics
from .symmetry_split import symmetry_split_statistics

#: The seed's verdict thresholds on the mean operator cosine to the anchor.
VERDICTS = (
    (0.9, "STRONG", "same operator up to scalar across all layers."),
    (0.5, "MEDIUM", "substantial shared operator, but layer-specific drift."),
    (0.1, "WEAK", "some alignment; far from single-operator interpretation."),
    (-math.inf, "REJECTED", "operators are effectively orthogonal across layers."),
)

RANGE_NAMES = ("early", "mid", "late")


def analyze(data, anchor=-1, backend=DEFAULT_BACKEND, k_values=None, pairs=True, chance=True,
            match_heads=False, chance_seed=DEFAULT_SEED, background_compile=False):
    """Compare every layer's QK operators with the anchor layer's, as the seed did, and beyond.

    Parameters
    ----------
    data : QKData
    anchor : int
        Anchor layer, Python indexing (-1 = last); out of range raises InputError.
    backend : {"auto", "numpy", "numba"}
        Which implementation computes the numbers: the numpy reference, the Numba kernels, or
        (``"auto"``, the default) whichever answers sooner (``qkalign.stats.backends.choose_backend``).
        The result's ``meta["backend"]`` names the one that ran.
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
    background_compile : bool
        With ``backend="auto"``, let a mid-sized input whose kernels are not compiled yet start
        their compilation in a detached background process (the command line does).

    Returns
    -------
    AnalysisResult
    """
    anchor = normalize_anchor(anchor, data.num_layers)
    impl, backend = choose_backend(backend, data, background_compile)
    k_values = checked_k_values(k_values, data.sym_eigs.shape[2])
    ranges = layer_ranges(data.num_layers)
    operators = operator_statistics(data.gram, impl, anchor)
    pair_arrays = all_pair_arrays(data, impl, k_values) if pairs else None
    agree, pa_cos, top1 = eigen_statistics_to_anchor(data, impl, anchor, k_values, pair_arrays)
    extras = beyond_seed_statistics(data, impl, anchor, k_values, pair_arrays, operators["operator_cos_per_head"],
                                    chance, chance_seed, match_heads)
    return AnalysisResult(
        meta=_meta(data, anchor, backend),
        **operators,
        sign_agreement=sign_summary(agree, k_values, ranges),
        frac_positive=impl.fraction_positive(data.sym_eigs),
        principal_angles={"mean_cos": pa_cos.mean(axis=2).mean(axis=1),
                          "min_cos": pa_cos.min(axis=2).mean(axis=1),
                          "top1_overlap": top1.mean(axis=1),
                          "cosines": pa_cos},
        verdict=verdict(operators["rescale"]["mean_cos"], operators["adjacent"]["mean"], anchor),
        layer_ranges={name: list(bounds) for name, bounds in ranges.items()},
        rope_profile=rope_profile_statistics(checked_profile(data), anchor),
        symmetry_split=symmetry_split_statistics(data, anchor),
        rope_bands=rope_band_statistics(checked_bands(data), anchor),
        symmetry=symmetry_statistics(data, operator_scales(data)),
        **extras,
    )


def normalize_anchor(anchor, num_layers):
    """Python-style index (-1 = last, -2 = second last) to a layer number in ``0..L-1``."""
    if not is_integer(anchor) or not -num_layers <= anchor < num_layers:
        raise InputError("--anchor", "", f"an integer layer index in [{-num_layers}, {num_layers - 1}]", repr(anchor))
    return int(anchor) % num_layers


def checked_k_values(k_values, spectrum_length):
    """The sign-agreement k values as a tuple of ints in ``1..spectrum_length`` (the seed's by default)."""
    if k_values is None:
        return reference.sign_k_values(spectrum_length)
    return tuple(int_in_range(k, 1, spectrum_length, "k_values", why="the spectrum length") for k in k_values)


def layer_ranges(num_layers):
    """Thirds of the layers ``[start, stop)`` (early, mid, late); the first ones get the remainder.

    For 36 layers these are the seed's hard-coded 0-11, 12-23, 24-35.
    """
    sizes = [len(part) for part in np.array_split(np.arange(num_layers), 3)]
    stops = np.cumsum(sizes)
    return {name: (int(stop - size), int(stop)) for name, size, stop in zip(RANGE_NAMES, sizes, stops)}


def verdict_label(mean_cos_to_anchor):
    """The seed's verdict ``(label, text)`` for a mean operator cosine to the anchor."""
    for threshold, label, text in VERDICTS:
        if mean_cos_to_anchor > threshold:
            return label, text
    return VERDICTS[-1][1], VERDICTS[-1][2]


def _mean_or_nan(values):
    return float(values.mean()) if values.size else math.nan


def operator_statistics(gram, impl, anchor):
    """Sections (a) and (b): the operator cosines and the scalar rescale onto the anchor.

    gram: (L, L, H) float64. Returns the fields operator_cos (L, L), operator_cos_per_head
    (L, L, H), adjacent {mean, min, max}, to_anchor {cos, t_opt, resid_frac} and rescale
    {mean_cos, mean_resid} of :class:`AnalysisResult`.
    """
    cos_per_head = impl.operator_cos_per_head(gram)
    cos = cos_per_head.mean(axis=2)
    adjacent = reference.adjacent_cos(cos)
    t_opt, mean_cos, mean_resid, resid_of_mean_cos = impl.rescale_to_anchor(gram, anchor)
    return {
        "operator_cos": cos,
        "operator_cos_per_head": cos_per_head,
        "adjacent": {"mean": _mean_or_nan(adjacent),
                     "min": float(adjacent.min()) if adjacent.size else math.nan,
                     "max": float(adjacent.max()) if adjacent.size else math.nan},
        "to_anchor": {"cos": cos[:, anchor], "t_opt": t_opt, "resid_frac": resid_of_mean_cos},
        "rescale": {"mean_cos": mean_cos, "mean_resid": mean_resid},
    }


def eigen_statistics_to_anchor(data, impl, anchor, k_values, pair_arrays=None):
    """Sections (c) and (d): sign agreement (len k, L, H), principal cosines (L, H, k) and top-1
    overlap (L, H) of every layer against the anchor.

    With ``pair_arrays`` (:func:`~qkalign.stats.all_pairs.all_pair_arrays`) they are the anchor's
    column of those, with no second pass over eig_dirs; else the backend's to-anchor functions.
    """
    if pair_arrays is not None:
        return (np.ascontiguousarray(pair_arrays["sign_agreement"][:, :, anchor]),
                np.ascontiguousarray(pair_arrays["principal_cosines"][:, anchor]),
                np.ascontiguousarray(pair_arrays["top1_overlap"][:, anchor]))
    return (impl.sign_agreement(data.sym_eigs, anchor, k_values),
            impl.principal_cosines_to_anchor(data.eig_dirs, anchor),
            impl.top1_overlap(data.eig_dirs, anchor))


def sign_summary(agree, k_values, ranges):
    """The sign agreement of section (c): for each k the mean over layers and heads, over the
    layers of each range, and all of ``agree`` (len k, L, H) as ``per_layer_head``."""
    sign = {"k": list(k_values), "mean": [float(a.mean()) for a in agree]}
    for name, (start, stop) in ranges.items():
        sign[name] = [_mean_or_nan(a[start:stop]) for a in agree]
    sign["per_layer_head"] = agree
    return sign


def verdict(mean_cos, adjacent_mean, anchor):
    """The seed's verdict on ``mean_cos`` (L,), the head-mean cosine of each layer to the anchor."""
    label, text = verdict_label(float(mean_cos.mean()))
    others = np.arange(len(mean_cos)) != anchor
    return {
        "mean_cos_to_anchor": float(mean_cos.mean()),
        "mean_cos_adjacent": adjacent_mean,
        "label": label,
        "text": text,
        "mean_cos_to_anchor_excluding_anchor": _mean_or_nan(mean_cos[others]),
    }


def beyond_seed_statistics(data, impl, anchor, k_values, pair_arrays, cos_per_head, chance, chance_seed,
                           match_heads):
    """The fields beyond the seed, as keyword arguments of :class:`AnalysisResult`: the all-pairs
    statistics (when ``pair_arrays`` is given), the chance levels and the matched heads, as asked."""
    extras = {}
    if pair_arrays is not None:
        extras.update(pair_statistics(data, impl, pair_arrays, cos_per_head, k_values))
    if chance:
        extras["chance"] = chance_statistics(data, k_values, chance_seed, match_heads)
    if match_heads:
        from .head_matching import match_heads as match

        extras["matched"] = match(data, anchor, k_values)
    return extras


def pair_statistics(data, impl, pair_arrays, cos_per_head, k_values):
    """The fields pairs, by_distance, signed_mass and frac_positive_topk of :class:`AnalysisResult`."""
    pairs = layer_pair_statistics(data, pair_arrays, cos_per_head, k_values)
    return {
        "pairs": pairs,
        "by_distance": distance_profile(pairs, data.topk),
        "signed_mass": impl.signed_mass(data.sym_eigs),
        "frac_positive_topk": impl.fraction_positive_topk(data.sym_eigs, data.topk),
    }


def operator_scales(data):
    """The singular values (m, d) of a rotated operator's ``M`` per layer, as measure records them in
    ``operator_singular_values``, where some ``M`` is not a multiple of an orthogonal matrix (its spectra then
    have their own chance level); None otherwise (raw operators, and ``delta:D`` of wholly rotated heads)."""
    values = (data.extra or {}).get("operator_singular_values")
    if values is None:
        return None
    try:
        scales = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        scales = None
    if scales is None or scales.shape != (data.num_layers, data.head_dim) or not np.isfinite(scales).all() \
            or (scales < 0).any() or not (scales.max(axis=1) > 0).all():
        raise InputError(data.json_path, "operator_singular_values",
                         f"a list of {data.num_layers} lists of {data.head_dim} non-negative numbers, none all zero",
                         repr(values)[:80])
    unit = scales / scales.max(axis=1, keepdims=True)
    # a rotation's singular values are 1 to rounding (sqrt(c^2 + s^2)): a scaled orthogonal M
    return None if np.all(unit >= 1 - 64 * np.finfo(np.float64).eps) else unit


def chance_statistics(data, k_values, seed, match_heads):
    """Chance levels of every statistic (as dicts), with the head-matching one when ``match_heads``."""
    levels = chance_levels(data.head_dim, data.hidden_size, data.topk, k_values, seed=seed,
                           operator_scales=operator_scales(data))
    out = {name: level.to_dict() for name, level in levels.items()}
    if match_heads:
        from .head_matching import MATCHED_CHANCE_TRIALS, matched_chance

        mean, sd = matched_chance(data.num_heads, data.hidden_size, data.topk, seed=seed)
        out["matched_pa_mean_cos"] = {
            "mean": mean, "sd": sd, "method": "monte-carlo", "seed": seed, "samples": MATCHED_CHANCE_TRIALS,
            "note": "best-matched heads of two layers of random subspaces: selection bias alone",
            "exact_mean": False, "exact_sd": False}
    return out


def _meta(data, anchor, backend):
    return {
        "num_layers": data.num_layers, "num_heads": data.num_heads, "head_dim": data.head_dim,
        "hidden_size": data.hidden_size, "topk": data.topk, "anchor": anchor, "backend": backend,
        "grams_path": data.json_path, "eigdirs_path": data.eigdirs_path,
        # what the grams describe (qkalign.weights.rotary_operator): raw W_K^T W_Q unless measure was told otherwise
        "operator": str((data.extra or {}).get("operator") or "raw")[:80],
        "provenance": provenance(data),
    }
