"""The frequency bands measure records for a rotary model: ``rope_bands``, each head's operator split by rotary pair.

Per layer ``L`` and query head ``h``, with the window ``C`` the model's context length (the distances
``Δ = 0 .. C-1``; :mod:`~qkalign.weights.rotary_bands` has the definitions and the derivation):

- ``energy[L, h, p] = mean_Δ ||g_p(Δ)||_F^2`` for the pairs ``p`` (``g_p = s^2 K_p^T R_p(Δ) Q_p``, the head's
  rows ``first[p]``, ``second[p]``), then ``||g_rest||_F^2`` of the unrotated rows (0 without);
- ``mean_energy[L, h] = mean_Δ ||g(Δ)||_F^2``, the interference between bands included (``energy`` leaves it out);
- ``group_gram[G, L, L', h] = mean_Δ <g_G,L(Δ), g_G,L'(Δ)>_F`` for the groups high, mid, low (by wavelength against
  ``C``: :data:`~qkalign.weights.rotary_bands.BAND_GROUPS`) and ``unrotated`` where the rotary is partial.

All exact, in closed form. Layers of different RoPE (Gemma 3's local and global) pair each layer's own frequencies
and attention factor; a pair can then fall in different groups at different kinds of layers.
"""

from dataclasses import dataclass

import numpy as np

from .rope_profile import differing_pairs
from .rotary_bands import BAND_GROUPS, UNROTATED, band_group_of_pair, band_wavelengths, band_weights


@dataclass(frozen=True)
class BandPlan:
    """What one head's bands need: the window, the layer kinds, the weights and groups of each kind, the pairs.

    ``kinds`` (K,) names; ``layer_kinds`` (L,) int64 their indices; ``wavelengths``, ``group_of_pair`` (K, P);
    ``products``, ``means`` (K, K, 4, P, P), (K, 2, P) (:func:`~qkalign.weights.rotary_bands.band_weights`);
    ``first``, ``second`` (P,); ``unrotated``: whether the head has unrotated dimensions.
    """

    window: int
    kinds: tuple
    layer_kinds: np.ndarray
    wavelengths: np.ndarray
    group_of_pair: np.ndarray
    products: np.ndarray
    means: np.ndarray
    first: np.ndarray
    second: np.ndarray
    unrotated: bool

    @property
    def groups(self):
        """The recorded groups' names: the band groups, then ``unrotated`` where the head has such dimensions."""
        return BAND_GROUPS + ((UNROTATED,) if self.unrotated else ())

    @property
    def num_groups(self):
        """G, the band groups of the kernel (its group Grams have one more: the unrotated dimensions)."""
        return len(BAND_GROUPS)


def band_plan(model_rope, window):
    """The :class:`BandPlan` of a model's RoPE over ``window`` distances; None without RoPE, or when its kinds of
    layers pair different dimensions (none does so far)."""
    if model_rope is None or differing_pairs(model_rope):
        return None
    kinds = tuple(model_rope.specs)
    specs = [model_rope.specs[kind] for kind in kinds]
    inv_freqs = np.stack([spec.inv_freq for spec in specs])
    products, means = band_weights(inv_freqs, [spec.attention_factor for spec in specs], window)
    first, second = specs[0].pairs()
    return BandPlan(int(window), kinds, np.array([kinds.index(k) for k in model_rope.layer_kinds], dtype=np.int64),
                    band_wavelengths(inv_freqs), band_group_of_pair(inv_freqs, window), products, means,
                    np.asarray(first), np.asarray(second), specs[0].rotary_dims < specs[0].head_dim)


def band_record(plan, arrays, model_rope):
    """The JSON's ``rope_bands`` and ``rope_bands_note``; pops measure's band arrays from ``arrays``.

    ``rope_bands``: ``window``, ``groups``, ``layer_kinds`` (L names), ``wavelengths`` and ``group_of_pair`` (index
    into ``groups``) of every pair: (P,) lists when every layer rotates alike, else ``{kind: (P,)}``
    (a wavelength is null for a pair that never turns), ``energy`` L x H x (P+1), ``mean_energy`` L x H,
    ``group_gram`` G x L x L x H. None without RoPE, with the reason in ``rope_bands_note``.
    """
    energy = arrays.pop("rope_band_energy", None)
    mean_energy = arrays.pop("rope_band_mean_energy", None)
    group_gram = arrays.pop("rope_band_gram", None)
    if plan is None:
        note = "no RoPE" if model_rope is None else "not computed: its kinds of layers pair different dimensions"
        return {"rope_bands": None, "rope_bands_note": note}
    wavelengths = [[None if np.isinf(x) else float(x) for x in row] for row in plan.wavelengths]
    groups = [[int(x) for x in row] for row in plan.group_of_pair]
    if len(plan.kinds) == 1:
        wavelengths, groups = wavelengths[0], groups[0]
    else:
        wavelengths, groups = dict(zip(plan.kinds, wavelengths)), dict(zip(plan.kinds, groups))
    return {"rope_bands": {
        "window": plan.window, "groups": list(plan.groups), "layer_kinds": [plan.kinds[k] for k in plan.layer_kinds],
        "wavelengths": wavelengths, "group_of_pair": groups, "energy": energy.tolist(),
        "mean_energy": mean_energy.tolist(), "group_gram": group_gram[:len(plan.groups)].tolist()},
        "rope_bands_note": None}
