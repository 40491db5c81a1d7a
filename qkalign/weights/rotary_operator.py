"""Which operator measure analyses: ``raw`` (``W_Kᵀ W_Q``), ``delta:D`` (``g(D)``) or ``window:W`` (their mean).

A rotary model scores a query at position ``m`` against a key at ``m − Δ`` with ``g(Δ) = W_Kᵀ S R(Δ) S W_Q``
(:mod:`~qkalign.weights.rope`). ``measure --operator`` chooses what the Grams and eigen-directions describe:

- ``raw`` (the default): ``g = W_Kᵀ W_Q``, the seed's operator, bit for bit today's numbers;
- ``delta:D``: ``g(D)``, the operator between tokens ``D`` positions apart (``D >= 0``: the query after the key);
- ``window:W``: ``ḡ_W = (1/W) Σ_{Δ=0}^{W−1} g(Δ) = W_Kᵀ S R̄_W S W_Q``, the mean over the first ``W`` distances,
  with ``R̄_W`` block diagonal: each pair's 2 x 2 block ``[[c̄, −s̄], [s̄, c̄]]`` holds the mean cosine and sine of
  its angle over the window (:func:`~qkalign.weights.rope_means.mean_cos_sin`, closed form), 1 on unrotated
  dimensions. High frequencies average out (``|c̄ + i s̄| ≈ 2 / (W θ)``), low ones stay.

Each is ``Kᵀ M Q`` for one (d, d) matrix ``M`` per layer (``S R S`` or ``S R̄ S``), so measure's low-rank route
holds with ``Q`` replaced by ``M Q``, which is never formed: the gram from the stacked Grams of the unrotated
blocks (the rotary kernel, at the one table row ``(c, s)`` of ``M``), ``fro_sq`` from ``(K Qᵀ) Mᵀ``, and the
symmetric part ``S = Aᵀ J' A`` with ``A = [K; Q]`` and ``J' = [[0, M/2], [Mᵀ/2, 0]]``: with ``A Aᵀ = C Cᵀ``
(the unrotated blocks' factor, as for ``raw``) its nonzero spectrum is that of ``Cᵀ J' C`` and its eigenvectors
are ``Aᵀ C⁻ᵀ W`` (:func:`~qkalign.weights.factored_operator.symmetric_part_eigen_from_gram`). Factoring the
Gram of ``[K; M Q]`` instead would see the pairs a long window nearly annihilates as rank deficiency.
"""

from dataclasses import dataclass

import numpy as np

from ..checks import int_in_range
from ..errors import InputError
from .rope_means import mean_cos_sin
from .rope_profile import MAX_DELTA, differing_pairs
from .rotary_grams import rotation_matrix

KINDS = ("raw", "delta", "window")


@dataclass(frozen=True)
class Operator:
    """``kind`` in :data:`KINDS` and its ``value`` (the distance D, the window W; None for raw)."""

    kind: str = "raw"
    value: int = None

    @property
    def name(self):
        """``raw``, ``delta:D`` or ``window:W``, as ``--operator`` spells it."""
        return self.kind if self.value is None else f"{self.kind}:{self.value}"

    @property
    def definition(self):
        """The operator as a formula, for the JSON and the report."""
        if self.kind == "delta":
            return f"g({self.value}) = W_K^T S R({self.value}) S W_Q: query {self.value} positions after the key"
        if self.kind == "window":
            return (f"mean of g(D) = W_K^T S R(D) S W_Q over D = 0..{self.value - 1}: W_K^T S Rbar_{self.value} S W_Q "
                    "(each rotary pair's mean cos/sin over the window)")
        return "g = W_K^T W_Q (the operator at relative position 0, no rotary embedding applied)"


RAW = Operator()


def parse_operator(text, source="--operator"):
    """An :class:`Operator` from ``raw``, ``delta:D`` (``0 <= D <= 2^31``) or ``window:W`` (``1 <= W <= 2^31``);
    an :class:`Operator` is returned as it is. Anything else is one :class:`~qkalign.errors.InputError`."""
    if isinstance(text, Operator):
        return text
    expected = "raw, delta:D (a distance D >= 0) or window:W (a window of W >= 1 distances)"
    if not isinstance(text, str):
        raise InputError(source, "", expected, repr(text)[:80])
    kind, _, value = text.strip().lower().partition(":")
    if kind == "raw" and not value:
        return RAW
    if kind not in ("delta", "window") or not value.strip().isdigit():
        raise InputError(source, "", expected, repr(text)[:80])
    return Operator(kind, int_in_range(int(value), 0 if kind == "delta" else 1, MAX_DELTA, source))


@dataclass(frozen=True)
class OperatorPlan:
    """What measure needs for a rotated operator ``g_L = K_Lᵀ M_L Q_L``.

    operator: the :class:`Operator`; cos, sin: (1, P) float64 table row of ``M`` (``s² c``, ``s² s``) for the rotary
    kernel, or (K, 1, P) with ``layer_kinds`` (L,) int64 for models whose layers rotate differently (None when all
    alike); first, second: (P,) the pairs; maps: (L, d, d) float64, ``M_L``.
    """

    operator: Operator
    cos: np.ndarray
    sin: np.ndarray
    layer_kinds: np.ndarray
    first: np.ndarray
    second: np.ndarray
    maps: np.ndarray


def operator_plan(operator, model_rope, model_name):
    """The :class:`OperatorPlan` of ``operator`` (None for ``raw``) for a model's
    :class:`~qkalign.weights.rope.ModelRope` (None: no RoPE, refused for a rotated operator)."""
    operator = parse_operator(operator)
    if operator.kind == "raw":
        return None
    if model_rope is None:
        raise InputError(model_name, "--operator", "a rotary model for a rotated operator (or --operator raw)",
                         f"{operator.name} of a model without RoPE")
    kinds = list(model_rope.specs)
    specs = [model_rope.specs[kind] for kind in kinds]
    first, second = specs[0].pairs()
    if differing_pairs(model_rope):
        raise InputError(model_name, "--operator", "layers whose rotary pairs are the same dimensions",
                         "layers pairing different dimensions")
    rows = [_table_row(spec, operator) for spec in specs]
    cos = np.stack([row[0] for row in rows])[:, None, :]  # (K, 1, P)
    sin = np.stack([row[1] for row in rows])[:, None, :]
    layer_kinds = np.array([kinds.index(k) for k in model_rope.layer_kinds], dtype=np.int64)
    head_dim = specs[0].head_dim
    by_kind = np.stack([rotation_matrix(head_dim, first, second, c[0], s[0]) for c, s in zip(cos, sin)])
    maps = by_kind[layer_kinds]
    if model_rope.uniform:
        cos, sin, layer_kinds = cos[0], sin[0], None
    return OperatorPlan(operator, cos, sin, layer_kinds, np.asarray(first), np.asarray(second), maps)


def _table_row(spec, operator):
    """``(s² c, s² s)`` (P,) of one layer kind: the cosine and sine of ``D θ``, or their means over the window."""
    if operator.kind == "delta":
        angles = float(operator.value) * spec.inv_freq
        cos, sin = np.cos(angles), np.sin(angles)
    else:
        cos, sin = mean_cos_sin(spec.inv_freq, operator.value)
    scale = spec.attention_factor ** 2
    return scale * cos, scale * sin


def operator_record(operator, plan=None):
    """The JSON's ``operator`` (its ``--operator`` name), ``operator_definition`` and ``operator_singular_values``
    (L x d, the singular values of each layer's ``M``: analyze's chance levels of the spectra depend on them;
    None for ``raw``); for a rotated operator (its :class:`OperatorPlan` ``plan``) also the ``rope`` note."""
    operator = parse_operator(operator)
    record = {"operator": operator.name, "operator_definition": operator.definition, "operator_singular_values": None}
    if plan is not None:
        record["rope"] = f"applied: the operator {operator.name}, {operator.definition}"
        record["operator_singular_values"] = np.linalg.svd(plan.maps, compute_uv=False).tolist()
    return record
