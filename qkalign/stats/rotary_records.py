"""Checks of the rotary records a grams JSON may carry (``rope_profile``, ``rope_bands``), before any statistic reads
them: a hand-edited or truncated file gets one error line naming the field, never a traceback."""

import numpy as np

from ..errors import InputError


def checked_profile(data):
    """``data.extra["rope_profile"]`` (None where absent) with ``deltas`` (D,) non-negative integers, ``gram``
    (D, L, L, H) and ``transpose_inner`` (D, L, H) or null, all finite; InputError otherwise."""
    profile = (data.extra or {}).get("rope_profile")
    if profile is None:
        return None
    _object(profile, data, "rope_profile")
    L, H = data.num_layers, data.num_heads
    deltas = _array(profile.get("deltas"), None, data, "rope_profile.deltas", "non-negative integers")
    if deltas.ndim != 1 or not deltas.size or (deltas < 0).any() or (deltas != np.round(deltas)).any():
        raise InputError(data.json_path, "rope_profile.deltas", "a list of non-negative integers",
                         repr(profile.get("deltas"))[:80])
    D = len(deltas)
    _array(profile.get("gram"), (D, L, L, H), data, "rope_profile.gram")
    if profile.get("transpose_inner") is not None:
        _array(profile["transpose_inner"], (D, L, H), data, "rope_profile.transpose_inner")
    return profile


def checked_bands(data):
    """``data.extra["rope_bands"]`` (None where absent) with ``energy`` (L, H, P+1), ``mean_energy`` (L, H),
    ``groups`` (G names), ``group_gram`` (G, L, L, H) and ``group_of_pair`` ((P,) group indices, or one list per
    layer kind with ``layer_kinds`` naming each layer's), checked; InputError otherwise."""
    bands = (data.extra or {}).get("rope_bands")
    if bands is None:
        return None
    _object(bands, data, "rope_bands")
    L, H = data.num_layers, data.num_heads
    energy = _array(bands.get("energy"), None, data, "rope_bands.energy")
    if energy.ndim != 3 or energy.shape[:2] != (L, H) or energy.shape[2] < 1:
        raise InputError(data.json_path, "rope_bands.energy", f"numbers of shape ({L}, {H}, P + 1)",
                         f"shape {energy.shape}")
    pairs = energy.shape[2] - 1
    _array(bands.get("mean_energy"), (L, H), data, "rope_bands.mean_energy")
    groups = bands.get("groups")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, str) for g in groups):
        raise InputError(data.json_path, "rope_bands.groups", "a list of group names", repr(groups)[:80])
    _array(bands.get("group_gram"), (len(groups), L, L, H), data, "rope_bands.group_gram")
    recorded = bands.get("group_of_pair")
    if isinstance(recorded, dict):
        kinds = bands.get("layer_kinds")
        if not isinstance(kinds, list) or len(kinds) != L or any(not isinstance(k, str) or k not in recorded
                                                                 for k in kinds):
            raise InputError(data.json_path, "rope_bands.layer_kinds", f"{L} kinds of layer among group_of_pair's",
                             repr(kinds)[:80])
        lists = {kind: recorded[kind] for kind in set(kinds)}
    else:
        lists = {"": recorded}
    for kind, values in lists.items():
        field = "rope_bands.group_of_pair" + (f".{kind}" if kind else "")
        indices = _array(values, (pairs,), data, field)
        if (indices != np.round(indices)).any() or (indices < 0).any() or (indices >= len(groups)).any():
            raise InputError(data.json_path, field, f"group indices 0..{len(groups) - 1}", repr(values)[:80])
    return bands


def _object(value, data, field):
    if not isinstance(value, dict):
        raise InputError(data.json_path, field, "an object", type(value).__name__)


def _array(value, shape, data, field, what="finite numbers"):
    """``value`` as a finite float array (of ``shape`` where given)."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(data.json_path, field, what + (f" of shape {shape}" if shape else ""),
                         repr(value)[:80]) from None
    if shape is not None and array.shape != shape:
        raise InputError(data.json_path, field, f"{what} of shape {shape}", f"shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(data.json_path, field, what, "a non-finite or missing value")
    return array
