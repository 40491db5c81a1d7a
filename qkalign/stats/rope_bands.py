"""The statistics of measure's rotary frequency bands: each band's share of a head's energy, and cross-layer cosines
of the band groups' operators.

From ``rope_bands`` (:mod:`qkalign.weights.rope_bands`): ``energy`` (L, H, P+1) ``E_p = mean_Δ ||g_p(Δ)||^2`` per
pair and the unrotated rows last, ``mean_energy`` (L, H), ``group_gram`` (G, L, L, H), all over the distances
``Δ = 0 .. C-1``:

- ``share[L, h, p] = E_p / sum_q E_q`` (the unrotated rows among the ``q``): the band's part of the head, its
  interference with the other bands left out;
- ``group_share[L, G]``: the head mean of the shares of the group's pairs (the unrotated rows' share for
  ``unrotated``), each layer's pairs grouped at its own frequencies;
- ``band_sum_ratio[L, h] = sum_q E_q / mean_Δ ||g(Δ)||^2``: 1 where the bands do not interfere;
- ``cross_share[G]``: the group's part of the cross-layer inner products, ``sum_{L != L', h} gram_G[L, L', h]``
  over the same sum of every group: the group's part of what the layers have in common, where ``group_share`` is
  its part of each layer's own energy;
- ``group_cos``: ``gram_G[L, L', h] / sqrt(gram_G[L, L, h] gram_G[L', L', h])`` summarised as the seed summarises
  the operator cosine (:func:`~qkalign.stats.rope_profile.rope_profile_statistics`, one row per group).
"""

import numpy as np

from .rope_profile import rope_profile_statistics


def rope_band_statistics(bands, anchor):
    """The statistics of a ``rope_bands`` record (None: none recorded) to the layer ``anchor`` (non-negative).

    Returns
    -------
    dict or None
        ``window``, ``groups`` (G names), ``wavelengths``, ``group_of_pair`` and ``layer_kinds`` as recorded;
        ``share`` (L, H, P+1), ``share_mean`` (L, P+1) head mean, ``group_share`` (L, G), ``band_sum_ratio`` (L, H),
        ``dominant_heads`` (L, G): the heads whose largest group share is that group's; ``cross_share`` (G,);
        ``group_cos``:
        ``adjacent``, ``to_anchor`` (anchor excluded), ``offdiag`` (G,) and ``to_anchor_per_layer`` (G, L),
        head-mean cosines.
    """
    if not bands:
        return None
    energy = np.asarray(bands["energy"], dtype=np.float64)
    num_layers, _, num_bands = energy.shape
    total = energy.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = energy / total[:, :, None]
        band_sum_ratio = total / np.asarray(bands["mean_energy"], dtype=np.float64)
    groups = list(bands["groups"])
    pair_groups = _layer_group_of_pair(bands, num_layers)  # (L, P)
    per_head = np.stack([(share[:, :, :-1] * (pair_groups[:, None, :] == g)).sum(axis=2) for g in range(len(groups))],
                        axis=2)  # (L, H, G)
    if "unrotated" in groups:
        per_head[:, :, groups.index("unrotated")] = share[:, :, -1]
    dominant = np.argmax(np.nan_to_num(per_head, nan=-1.0), axis=2)
    gram = np.asarray(bands["group_gram"], dtype=np.float64)
    cross = gram[:, ~np.eye(num_layers, dtype=bool)].sum(axis=(1, 2))  # (G,)
    cos = rope_profile_statistics({"deltas": groups, "gram": gram}, anchor)
    return {
        "window": bands["window"], "groups": groups, "wavelengths": bands["wavelengths"],
        "group_of_pair": bands["group_of_pair"], "layer_kinds": bands["layer_kinds"],
        "share": share, "share_mean": share.mean(axis=1), "group_share": per_head.mean(axis=1),
        "band_sum_ratio": band_sum_ratio,
        "cross_share": cross / cross.sum() if num_layers > 1 else np.full(len(groups), np.nan),
        "dominant_heads": np.stack([(dominant == g).sum(axis=1) for g in range(len(groups))], axis=1),
        "group_cos": {key: cos[key] for key in ("adjacent", "to_anchor", "offdiag", "to_anchor_per_layer")},
    }


def _layer_group_of_pair(bands, num_layers):
    """(L, P) int: each layer's group of every pair, from ``group_of_pair`` ((P,), or per kind with ``layer_kinds``)."""
    recorded = bands["group_of_pair"]
    if isinstance(recorded, dict):
        return np.array([recorded[kind] for kind in bands["layer_kinds"]], dtype=np.int64).reshape(num_layers, -1)
    return np.tile(np.asarray(recorded, dtype=np.int64), (num_layers, 1))
