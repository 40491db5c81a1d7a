"""`AnalysisResult`: every number of the report, and its JSON form."""

import json
import math
from dataclasses import dataclass, fields

import numpy as np


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
        Every statistic for all layer pairs (see ``qkalign.stats.all_pairs.PAIR_KEYS``).
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
        Head-matched statistics (``qkalign.stats.head_matching.match_heads``), with ``match_heads=True``.
    rope_profile : dict, optional
        Operator cosines against the rotary distance (``qkalign.stats.rope_profile``), where measure
        recorded a ``rope_profile``.
    rope_bands : dict, optional
        Energy shares and cross-layer cosines of the rotary frequency bands (``qkalign.stats.rope_bands``), where
        measure recorded ``rope_bands``.
    symmetry : dict, optional
        Each head's symmetry score ``<g, g^T> / ||g||^2`` against chance (``qkalign.stats.symmetry``), where measure
        recorded ``symmetry``.
    symmetry_split : dict, optional
        The cross-layer operator cosine split into symmetric and skew parts, ``cos_S``, ``cos_A`` and the shares of the
        agreement (``qkalign.stats.symmetry_split``), where measure recorded ``gram_transpose`` (``--symmetry-split``).
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
    rope_profile: dict = None
    rope_bands: dict = None
    symmetry: dict = None
    symmetry_split: dict = None

    def to_dict(self):
        """Plain Python containers (lists, floats, ``None`` for nan), ready for ``json``.

        Parts that were not computed (``None``) are left out.
        """
        return {f.name: plain(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, doc):
        """The result a :meth:`to_dict` (or its JSON) describes: lists of numbers back to float64 arrays (None as nan),
        of integers to int64 arrays, and lists of values of k as lists. Keys this version does not know are left out.

        Checks nothing: the views check the parts they read (:mod:`qkalign.views.figure_files`).
        """
        known = {f.name for f in fields(cls)}
        return cls(**{key: dict(value) if key == "meta" else unplain(value, key)
                      for key, value in doc.items() if key in known})

    def to_json(self, path=None, indent=None):
        """The JSON text; also written to ``path`` when given (whole or not at all)."""
        from ..files.outputs import atomic_path

        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text

    def _repr_html_(self):
        """Jupyter's display: the verdict against chance and a small figure (:mod:`qkalign.views.notebook`)."""
        from ..views.notebook import summary_html

        return summary_html(self)


#: Keys whose lists of integers are lists in a result (values of k), not arrays.
LIST_KEYS = frozenset({"k"})


def unplain(value, key=None):
    """The inverse of :func:`plain` for a result's parts: numeric lists as arrays (see :meth:`AnalysisResult.from_dict`)."""
    if isinstance(value, dict):
        return {k: unplain(v, k) for k, v in value.items()}
    if not isinstance(value, list):
        return value
    fast = _numeric_array(value)  # the common case, a rectangular list of numbers without null, in one numpy call
    if fast is not None:
        return value if fast.dtype.kind == "i" and key in LIST_KEYS else fast
    leaves = list(_leaves(value))
    if leaves and all(isinstance(v, int) and not isinstance(v, bool) for v in leaves):
        if key in LIST_KEYS:
            return value
        array = _rectangular(value, np.int64)
    elif leaves and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in leaves):
        array = _rectangular([_nan_for_none(v) for v in value], np.float64)
    else:
        array = None
    return array if array is not None else [unplain(v, key) for v in value]


def _numeric_array(value):
    """``value`` as a float64 or int64 array when numpy reads it as one (rectangular, numbers only, not empty), else
    None (null, bools, strings, ragged or empty lists: :func:`unplain` looks at their leaves one by one)."""
    try:
        array = np.array(value)
    except (ValueError, OverflowError):
        return None
    if array.size == 0:  # [] and [[]] stay lists, as the leaf-by-leaf path leaves them
        return None
    if array.dtype.kind == "f":
        return array.astype(np.float64, copy=False)
    if array.dtype.kind == "i" and not _has_bool(value):
        return array.astype(np.int64, copy=False)
    return None


def _has_bool(value):
    """Whether a list of integers holds a bool (numpy reads ``[True, 2]`` as integers; a result keeps it a list)."""
    return any(_has_bool(v) if isinstance(v, list) else isinstance(v, bool) for v in value)


def _leaves(value):
    for v in value:
        if isinstance(v, list):
            yield from _leaves(v)
        else:
            yield v


def _nan_for_none(value):
    return [_nan_for_none(v) for v in value] if isinstance(value, list) else (np.nan if value is None else value)


def _rectangular(value, dtype):
    """``value`` as an array of ``dtype``, or None for ragged lists."""
    try:
        return np.array(value, dtype=dtype)
    except ValueError:
        return None


def plain(value):
    """``value`` with numpy arrays and scalars turned into lists, floats and ints, and nan into None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iub":
            return value.tolist()
        if value.dtype.kind == "f":  # one numpy pass instead of a Python call per element
            finite = np.isfinite(value)
            if finite.all():
                return value.tolist()
            cells = value.astype(object)
            cells[~finite] = None
            return cells.tolist()
        return plain(value.tolist())
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
