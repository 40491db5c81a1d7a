"""A ``rope_bands`` part of a result dict built by hand, in analyze's layout (:mod:`qkalign.stats.rope_bands`), for
figure and sweep tests that need no rotary model.

Layout: ``window`` C, ``groups`` (G names), ``layer_kinds`` (L names), ``wavelengths`` and ``group_of_pair`` (P,)
(or ``{kind: (P,)}`` for several kinds), ``share`` (L, H, P+1) (last column: the unrotated dimensions),
``share_mean`` (L, P+1), ``group_share`` (L, G), ``band_sum_ratio`` (L, H), ``dominant_heads`` (L, G),
``group_cos`` {``adjacent``, ``to_anchor``, ``offdiag``: (G,), ``to_anchor_per_layer``: (G, L)}.
"""

import numpy as np


def fake_rope_bands(num_layers, num_heads, pairs, *, edges=None, unrotated=False, kinds=None, window=4096, seed=0):
    """A JSON-ready ``rope_bands`` dict with random positive shares.

    The pairs go by increasing wavelength, grouped ``high`` | ``mid`` | ``low`` at the pair indices ``edges``
    (default: thirds of ``pairs``); ``kinds`` (L names) gives per-kind wavelengths and groups, the edges of
    the second kind one pair later.
    """
    rng = np.random.default_rng(seed)
    edges = list(edges) if edges is not None else [pairs // 3, 2 * pairs // 3]
    groups = ["high", "mid", "low"] + (["unrotated"] if unrotated else [])
    wavelengths = 2 * np.pi * 10_000.0 ** (np.arange(pairs) / pairs)
    group_of_pair = np.searchsorted(edges, np.arange(pairs), side="right")
    layer_groups = np.tile(group_of_pair, (num_layers, 1))
    energy = rng.gamma(2.0, 1.0, (num_layers, num_heads, pairs + 1))
    if not unrotated:
        energy[..., pairs] = 0.0
    share = energy / energy.sum(axis=2, keepdims=True)
    if kinds is None:
        recorded = {"wavelengths": wavelengths.tolist(), "group_of_pair": group_of_pair.tolist(),
                    "layer_kinds": ["all"] * num_layers}
    else:
        names = list(dict.fromkeys(kinds))
        later = np.searchsorted([e + 1 for e in edges], np.arange(pairs), side="right")
        per_kind = {names[0]: group_of_pair, **{name: later for name in names[1:]}}
        layer_groups = np.stack([per_kind[kind] for kind in kinds])
        recorded = {"wavelengths": {name: (wavelengths * (1 + k)).tolist() for k, name in enumerate(names)},
                    "group_of_pair": {name: row.tolist() for name, row in per_kind.items()}, "layer_kinds": list(kinds)}
    per_head = np.stack([(share[:, :, :pairs] * (layer_groups[:, None, :] == g)).sum(axis=2) for g in range(3)]
                        + ([share[:, :, pairs]] if unrotated else []), axis=2)  # (L, H, G)
    G = len(groups)
    dominant = per_head.argmax(axis=2)
    group_cos = {key: rng.uniform(-0.05, 0.3, G).tolist() for key in ("adjacent", "to_anchor", "offdiag")}
    group_cos["to_anchor_per_layer"] = rng.uniform(-0.05, 0.3, (G, num_layers)).tolist()
    return {"window": window, "groups": groups, **recorded, "share": share.tolist(),
            "share_mean": share.mean(axis=1).tolist(), "group_share": per_head.mean(axis=1).tolist(),
            "band_sum_ratio": rng.uniform(0.9, 1.1, (num_layers, num_heads)).tolist(),
            "dominant_heads": np.stack([(dominant == g).sum(axis=1) for g in range(G)], axis=1).tolist(),
            "group_cos": group_cos}
