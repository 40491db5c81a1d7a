"""The distance profile measure records for a rotary model: ``gram(Δ)[L, L', h] = <g_L,h(Δ), g_L',h(Δ)>``.

``g(Δ) = W_Kᵀ S R(Δ) S W_Q`` is the operator between a query at position ``m`` and a key at ``m − Δ``
(:mod:`~qkalign.weights.rope`); its Frobenius Gram comes from the stacked Grams ``K Kᵀ`` and ``Q Qᵀ``
measure already forms, one (d, d) block at a time (:mod:`~qkalign.weights.rotary_grams`), so no n × n
matrix is formed. The attention factor ``s`` scales the rotated dimensions of both sides: ``S R(Δ) S`` is
``s² R(Δ)`` on them, which the tables carry (``s² cos``, ``s² sin``): for a head rotated whole,
``gram(0) = s⁴ gram`` (the operator the model applies), cosines unchanged. Layers of different kinds
(Gemma 3's local layers at ``rope_local_base_freq``, its global ones at ``rope_theta`` with any scaling)
each rotate by their own ``θ`` and ``s``: one table per kind, block (L, L') rotating its rows by layer
L's and its columns by layer L''s, so ``gram(0)[L, L'] = s_L² s_L'² gram[L, L']``. That needs the same
pairs in every kind (so far every model's). The default distances are 0 and the powers of two up to
the model's context length.
"""

from dataclasses import dataclass

import numpy as np

from ..checks import int_in_range
from ..errors import InputError
from .rotary_grams import rotary_tables

#: The context length assumed where the model states none (transformers' default for Llama).
DEFAULT_CONTEXT = 2048
#: The largest distance accepted (2^31: positions beyond any model's context).
MAX_DELTA = 2**31


@dataclass(frozen=True)
class ProfilePlan:
    """What one head's profile needs: the distances ``deltas`` (D,), the tables ``cos``, ``sin`` (D, P)
    float64 (times ``s²``) and the pairs ``first``, ``second`` (P,) of the file's rows. Layers of several
    kinds: ``cos``, ``sin`` (K, D, P), one table per kind, and ``layer_kinds`` (L,) int64 the kind of every
    layer (None when all layers rotate alike)."""

    deltas: tuple
    cos: np.ndarray
    sin: np.ndarray
    first: np.ndarray
    second: np.ndarray
    layer_kinds: np.ndarray = None


def default_deltas(context_length):
    """``(0, 1, 2, 4, ..., 2^k)`` with ``2^k <= context_length``."""
    deltas, power = [0], 1
    while power <= context_length:
        deltas.append(power)
        power *= 2
    return tuple(deltas)


def check_deltas(deltas, source="--deltas"):
    """``deltas`` as a tuple of distinct non-negative ints in increasing order (at most 64 of them)."""
    try:
        values = [int_in_range(d, 0, MAX_DELTA, source) for d in deltas]
    except TypeError:
        raise InputError(source, "", "a list of distances (non-negative integers)", repr(deltas)[:80]) from None
    if not values or len(values) > 64 or len(set(values)) != len(values):
        raise InputError(source, "", "1 to 64 distinct distances", f"{len(values)} values")
    return tuple(sorted(values))


def profile_plan(model_rope, deltas):
    """The :class:`ProfilePlan` of a rotary model: one table when its layers all rotate alike, else one per
    layer kind (Gemma 3's local and global layers); None when it has no RoPE or its kinds pair different
    dimensions (:func:`differing_pairs`)."""
    if model_rope is None or differing_pairs(model_rope):
        return None
    first, second = model_rope.layer(0).pairs()
    if model_rope.uniform:
        cos, sin = _scaled_tables(model_rope.layer(0), deltas)
        return ProfilePlan(tuple(deltas), cos, sin, np.asarray(first), np.asarray(second))
    kinds = list(model_rope.specs)
    tables = [_scaled_tables(model_rope.specs[kind], deltas) for kind in kinds]
    layer_kinds = np.array([kinds.index(kind) for kind in model_rope.layer_kinds], dtype=np.int64)
    return ProfilePlan(tuple(deltas), np.stack([c for c, _ in tables]), np.stack([s for _, s in tables]),
                       np.asarray(first), np.asarray(second), layer_kinds)


def _scaled_tables(spec, deltas):
    """``s² cos(Δ_t θ_p)``, ``s² sin(Δ_t θ_p)`` of one layer kind: two (D, P) float64."""
    cos, sin = rotary_tables(deltas, spec.inv_freq)
    scale = spec.attention_factor ** 2
    return scale * cos, scale * sin


def differing_pairs(model_rope):
    """Whether the layer kinds of ``model_rope`` rotate different dimension pairs (their pairing or rotated
    dimensions differ): the profile's blocks then have no common pairs, and it is not computed."""
    first, second = model_rope.layer(0).pairs()
    return not all(np.array_equal(a, first) and np.array_equal(b, second)
                   for a, b in (spec.pairs() for spec in model_rope.specs.values()))


def profile_record(plan, gram, model_rope, deltas=None, transpose_inner=None):
    """The JSON's ``rope_profile``: ``{"deltas": [...], "gram": D x L x L x H, "transpose_inner": D x L x H}``
    (``<g(Δ), g(Δ)^T>`` of every head: its symmetry at each distance), or None (with the reason in
    ``rope_profile_note``)."""
    if plan is not None:
        record = {"deltas": list(plan.deltas), "gram": gram.tolist(),
                  "transpose_inner": None if transpose_inner is None else transpose_inner.tolist()}
        return {"rope_profile": record, "rope_profile_note": None}
    if model_rope is None:
        note = "no RoPE"
    elif deltas is not None and len(deltas) == 0:
        note = "not asked for (no distances)"
    else:
        kinds = "; ".join(f"{kind}: {spec.pairing}, {spec.rotary_dims} rotated dimensions"
                          for kind, spec in model_rope.specs.items())
        note = f"not computed: its layer kinds rotate different dimension pairs ({kinds})"
    return {"rope_profile": None, "rope_profile_note": note}
