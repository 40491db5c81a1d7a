"""The distance profile measure records for a rotary model: ``gram(Δ)[L, L', h] = <g_L,h(Δ), g_L',h(Δ)>``.

``g(Δ) = W_Kᵀ S R(Δ) S W_Q`` is the operator between a query at position ``m`` and a key at ``m − Δ``
(:mod:`~qkalign.weights.rope`); its Frobenius Gram comes from the stacked Grams ``K Kᵀ`` and ``Q Qᵀ``
measure already forms, one (d, d) block at a time (:mod:`~qkalign.weights.rotary_grams`), so no n × n
matrix is formed. The attention factor ``s`` scales the rotated dimensions of both sides: ``S R(Δ) S`` is
``s² R(Δ)`` on them, which the tables carry (``s² cos``, ``s² sin``): for a head rotated whole,
``gram(0) = s⁴ gram`` (the operator the model applies), cosines unchanged. The default distances are 0
and the powers of two up to the model's context length.
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
    float64 (times ``s²``) and the pairs ``first``, ``second`` (P,) of the file's rows."""

    deltas: tuple
    cos: np.ndarray
    sin: np.ndarray
    first: np.ndarray
    second: np.ndarray


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
    """The :class:`ProfilePlan` of a model whose layers all rotate alike; None when it has no RoPE or its
    layers differ (Gemma 3's local and global layers: not computed yet)."""
    if model_rope is None or not model_rope.uniform:
        return None
    spec = model_rope.layer(0)
    cos, sin = rotary_tables(deltas, spec.inv_freq)
    scale = spec.attention_factor ** 2
    first, second = spec.pairs()
    return ProfilePlan(tuple(deltas), scale * cos, scale * sin, np.asarray(first), np.asarray(second))


def profile_record(plan, gram, model_rope, deltas=None):
    """The JSON's ``rope_profile``: ``{"deltas": [...], "gram": D x L x L x H}``, or None (with the reason in
    ``rope_profile_note``)."""
    if plan is not None:
        return {"rope_profile": {"deltas": list(plan.deltas), "gram": gram.tolist()}, "rope_profile_note": None}
    if model_rope is None:
        note = "no RoPE"
    elif deltas is not None and len(deltas) == 0:
        note = "not asked for (no distances)"
    else:
        note = "not computed: its layers rotate differently (local and global)"
    return {"rope_profile": None, "rope_profile_note": note}
