"""All layer pairs: every statistic as (L, L) matrices, and their profile over layer distance.

The seed compares each layer with one anchor; here every layer is compared with
every other, per head (L, L, H) and averaged over heads (L, L). The statistics
come from a backend (the numpy reference or the Numba kernels).
"""

import numpy as np

#: The keys of ``AnalysisResult.pairs``; each holds {"mean": (L, L), "per_head": (L, L, H)}
#: except sign_agreement: {"k": [...], "mean": (len k, L, L), "per_head": (len k, L, L, H)}.
PAIR_KEYS = ("operator_cos", "resid_frac", "sign_agreement", "pa_mean_cos", "pa_min_cos", "top1_overlap",
             "spectral_cos", "spectral_abs_cos")

#: The statistics of the distance profile and of the report's side-by-side table.
DISTANCE_KEYS = ("operator_cos", "spectral_cos", "spectral_abs_cos", "pa_mean_cos", "top1_overlap", "sign_agreement")


def all_pair_arrays(data, impl, k_values):
    """The per-head all-pairs results of the backend that need eigen-data.

    Returns
    -------
    dict
        principal_cosines (L, L, H, k), top1_overlap, spectral_cos, spectral_abs_cos (each
        (L, L, H)) and sign_agreement (len(k_values), L, L, H), all float64 and symmetric
        in the two layer axes.
    """
    return {
        "principal_cosines": impl.principal_cosines_all_pairs(data.eig_dirs),
        "top1_overlap": impl.top1_overlap_all_pairs(data.eig_dirs),
        "spectral_cos": impl.spectral_cos_all_pairs(data.sym_eigs, False),
        "spectral_abs_cos": impl.spectral_cos_all_pairs(data.sym_eigs, True),
        "sign_agreement": impl.sign_agreement_all_pairs(data.sym_eigs, k_values),
    }


def layer_pair_statistics(data, arrays, cos_per_head, k_values):
    """Every pair statistic of ``data``.

    Parameters
    ----------
    data : QKData
    arrays : dict
        :func:`all_pair_arrays` of ``data``.
    cos_per_head : (L, L, H) float64
        The operator cosine, already computed for the to-anchor analysis.
    k_values : tuple of int

    Returns
    -------
    dict
        ``{key: {"mean": ..., "per_head": ...}}`` for every key of :data:`PAIR_KEYS`.
    """
    pa = arrays["principal_cosines"]
    per_head = {
        "operator_cos": cos_per_head,
        "resid_frac": np.sqrt(np.clip(1.0 - cos_per_head**2, 0.0, 1.0)),
        "pa_mean_cos": pa.mean(axis=-1),
        "pa_min_cos": pa.min(axis=-1),
        "top1_overlap": arrays["top1_overlap"],
        "spectral_cos": arrays["spectral_cos"],
        "spectral_abs_cos": arrays["spectral_abs_cos"],
    }
    pairs = {key: {"mean": value.mean(axis=-1), "per_head": value} for key, value in per_head.items()}
    sign = arrays["sign_agreement"]
    pairs["sign_agreement"] = {"k": list(k_values), "mean": sign.mean(axis=-1), "per_head": sign}
    return {key: pairs[key] for key in PAIR_KEYS}


def report_k(k_values, topk):
    """The sign-agreement k shown in summaries: the largest k <= topk (else the smallest k)."""
    fitting = [k for k in k_values if k <= topk]
    return max(fitting) if fitting else min(k_values)


def distance_profile(pairs, topk):
    """Mean of each (L, L) statistic over the layer pairs at each distance ``|L - L'| = 1 .. L-1``.

    Returns
    -------
    dict
        ``distance`` (list of int), one list per key of :data:`DISTANCE_KEYS` (sign agreement at
        :func:`report_k`), and ``sign_agreement_k``.
    """
    num_layers = pairs["operator_cos"]["mean"].shape[0]
    k_values = pairs["sign_agreement"]["k"]
    k = report_k(k_values, topk)
    matrices = {key: pairs[key]["mean"] for key in DISTANCE_KEYS if key != "sign_agreement"}
    matrices["sign_agreement"] = pairs["sign_agreement"]["mean"][k_values.index(k)]
    distances = list(range(1, num_layers))
    profile = {"distance": distances, "sign_agreement_k": k}
    for key in DISTANCE_KEYS:
        profile[key] = [float(np.diagonal(matrices[key], offset=dist).mean()) for dist in distances]
    return profile
