"""Figures of the rotary parts of an analysis: operator cosines and head norms against the distance Δ, band energy.

From ``rope_profile`` (:mod:`qkalign.stats.rope_profile`: ``deltas`` (D,), ``adjacent``, ``to_anchor``,
``offdiag`` (D,), ``to_anchor_per_layer`` (D, L), ``norm_ratio`` (D, L, H)) and ``rope_bands``
(:mod:`qkalign.stats.rope_bands`: ``window`` C, ``groups`` (G names), ``wavelengths`` and ``group_of_pair``
(P,), or ``{kind: (P,)}`` with ``layer_kinds`` (L,), ``share_mean`` (L, P+1), the last column the unrotated
dimensions, ``group_share`` (L, G), ``group_cos`` {``adjacent``, ``to_anchor``, ``offdiag``} (G,)). Either
may be absent (no RoPE, an older JSON): its figures are then not drawn. The distance axis is symmetric-log, linear on [0, 1], so Δ = 0 sits on it beside the
powers of two.
"""

import warnings

import numpy as np

from ..errors import InputError
from .figure_files import DPI, FIGSIZE, caption, colorbar, integer_ticks, numbers, part, save_figure

#: The rotary figures: cosine against Δ, head norms against Δ, band energy.
ROPE_FIGURE_NAMES = ("rope_distance_cos.png", "rope_head_norms.png", "rope_bands.png")

#: Δ axis: symmetric log, linear on [0, LINTHRESH] (Δ are integers: 0 and 1 are one decade apart on it).
LINTHRESH = 1
DELTA_LABEL = "distance Δ = query − key position (symlog axis, linear on [0, 1])"
PROFILE_PARTS = ("adjacent", "to_anchor", "offdiag")


def checked_rope(result, meta, source):
    """The rotary parts of a result dict, each checked before anything is drawn.

    Returns
    -------
    profile : dict or None
        ``deltas`` (D,) int, ``adjacent``, ``to_anchor``, ``offdiag`` (D,), ``to_anchor_per_layer``
        (D, L), ``norm_ratio`` (D, L, H) float arrays (nan where the JSON has null).
    bands : dict or None
        ``window`` float, ``groups`` list of str, ``wavelengths`` (L, P) float and ``group_of_pair`` (L, P)
        int (each layer's, from its kind), ``kind`` (layer 0's kind, None for one kind), ``share_mean``
        (L, P+1), ``group_share`` (L, G), ``group_cos`` {part: (G,)} float arrays.
    """
    L, H = meta["num_layers"], meta["num_heads"]
    profile = bands = None
    doc = _optional_part(result, "rope_profile", source)
    if doc is not None:
        deltas = _array(doc.get("deltas"), (1,), source, "rope_profile.deltas")
        if not deltas.size or np.isnan(deltas).any() or (deltas < 0).any() or (deltas != np.round(deltas)).any():
            raise InputError(source, "rope_profile.deltas", "non-negative integers", repr(doc.get("deltas"))[:60])
        D = len(deltas)
        profile = {"deltas": deltas.astype(np.int64)}
        for key, shape in [(key, (D,)) for key in PROFILE_PARTS] + [("to_anchor_per_layer", (D, L)),
                                                                    ("norm_ratio", (D, L, H))]:
            profile[key] = numbers(doc.get(key), shape, source, f"rope_profile.{key}")
    doc = _optional_part(result, "rope_bands", source)
    if doc is not None:
        bands = _checked_bands(doc, L, source)
    return profile, bands


def _checked_bands(doc, num_layers, source):
    """The drawn parts of ``rope_bands``, checked; ``wavelengths`` and ``group_of_pair`` as (L, P), each layer's own."""
    window = numbers(doc.get("window"), (), source, "rope_bands.window")
    if not window > 0:
        raise InputError(source, "rope_bands.window", "a positive number", repr(doc.get("window")))
    groups = doc.get("groups")
    if (not isinstance(groups, list) or not groups or not all(isinstance(g, str) and g for g in groups)
            or len(set(groups)) != len(groups)):
        raise InputError(source, "rope_bands.groups", "a list of distinct group names", repr(groups)[:60])
    G = len(groups)
    wavelengths, kind = _per_layer(doc, "wavelengths", num_layers, source)
    if (wavelengths <= 0).any():
        raise InputError(source, "rope_bands.wavelengths", "positive numbers (or null: a pair that never turns)",
                         "a number <= 0")
    group_of_pair, _ = _per_layer(doc, "group_of_pair", num_layers, source)
    if group_of_pair.shape != wavelengths.shape:
        raise InputError(source, "rope_bands.group_of_pair", f"one group per rotary pair ({wavelengths.shape[1]})",
                         f"{group_of_pair.shape[1]}")
    if np.isnan(group_of_pair).any() or not np.isin(group_of_pair, np.arange(G)).all():
        raise InputError(source, "rope_bands.group_of_pair", f"indices into rope_bands.groups (0..{G - 1})",
                         repr(doc.get("group_of_pair"))[:60])
    P = wavelengths.shape[1]
    group_cos = part(doc, "group_cos", source, "rope_bands.")
    return {"window": float(window), "groups": list(groups), "wavelengths": wavelengths, "kind": kind,
            "group_of_pair": group_of_pair.astype(np.int64),
            "share_mean": numbers(doc.get("share_mean"), (num_layers, P + 1), source, "rope_bands.share_mean"),
            "group_share": numbers(doc.get("group_share"), (num_layers, G), source, "rope_bands.group_share"),
            "group_cos": {key: numbers(group_cos.get(key), (G,), source, f"rope_bands.group_cos.{key}")
                          for key in PROFILE_PARTS}}


def _per_layer(doc, key, num_layers, source):
    """``(values, kind)``: ``doc[key]``, a (P,) list for every layer or ``{kind: (P,) list}`` with ``layer_kinds``
    naming each layer's, as an (L, P) float array; ``kind`` the name of layer 0's kind (None for one list)."""
    value, field = doc.get(key), f"rope_bands.{key}"
    if not isinstance(value, dict):
        row = _array(value, (1,), source, field)
        if not row.size:
            raise InputError(source, field, "one value per rotary pair", "none")
        return np.tile(row, (num_layers, 1)), None
    kinds = doc.get("layer_kinds")
    if not isinstance(kinds, list) or len(kinds) != num_layers or not all(isinstance(k, str) and k in value
                                                                          for k in kinds):
        raise InputError(source, "rope_bands.layer_kinds", f"{num_layers} names of kinds in {field}",
                         repr(kinds)[:60])
    rows = {kind: _array(value[kind], (1,), source, f"{field}.{kind}") for kind in dict.fromkeys(kinds)}
    if len({row.size for row in rows.values()}) != 1 or not rows[kinds[0]].size:
        raise InputError(source, field, "one value per rotary pair, as many for every kind",
                         str({kind: row.size for kind, row in rows.items()}))
    return np.stack([rows[kind] for kind in kinds]), kinds[0]


def _optional_part(doc, key, source):
    """``doc[key]`` if it is an object, None if missing or null; one error line if anything else."""
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError(source, key, "an object (or null)", type(value).__name__)
    return value


def _array(value, ndims, source, field):
    """``value`` as a float array with one of the numbers of axes ``ndims``, its lengths its own."""
    try:
        ndim = np.array(value, dtype=float).ndim
    except (TypeError, ValueError, OverflowError):
        ndim = None
    if ndim not in ndims:
        raise InputError(source, field, f"numbers (or null) with {' or '.join(map(str, ndims))} axes",
                         repr(value)[:60])
    return numbers(value, np.shape(value), source, field)


def write_rope_figures(plt, meta, profile, bands, chance, out_dir):
    """Write the rotary figures whose data is present; returns their paths.

    ``chance`` is the result's ``operator_cos`` level ({"mean", "sd"}, or None): a rotation of
    unrelated operators is unrelated, so it is the chance level at every distance and of every band.
    """
    written = []
    if profile is not None:
        written.append(_distance_cos_figure(plt, meta, profile, chance, out_dir / ROPE_FIGURE_NAMES[0]))
        written.append(_head_norm_figure(plt, meta, profile, out_dir / ROPE_FIGURE_NAMES[1]))
    if bands is not None:
        written.append(_bands_figure(plt, meta, bands, chance, out_dir / ROPE_FIGURE_NAMES[2]))
    return written


def _delta_axis(ax, deltas):
    """Symlog x from just left of the smallest Δ to past the largest (margins are not symmetric on it)."""
    ax.set_xscale("symlog", linthresh=LINTHRESH, linscale=0.5)
    low, high = float(deltas.min()), float(deltas.max())
    ax.set_xlim(low - 0.3 if low < LINTHRESH else low / 1.4, max(high * 1.4, high + 0.3))
    ax.set_xlabel(DELTA_LABEL, fontsize=8)


def _delta_columns(ax, deltas):
    """x ticks of a heatmap with one column per measured Δ, labelled with (at most ~12 of) the Δ."""
    step = max(1, int(np.ceil(len(deltas) / 12)))
    ticks = np.arange(0, len(deltas), step)
    ax.set_xticks(ticks, [str(deltas[t]) for t in ticks], rotation=60, fontsize=7)
    ax.set_xlabel("distance Δ (one column per measured Δ)", fontsize=8)


def _layer_rows(ax, num_layers):
    integer_ticks(ax.yaxis)
    ax.set_ylabel("layer L")


def _distance_cos_figure(plt, meta, profile, chance, path):
    """Left: adjacent, to-anchor and off-diagonal operator cosine against Δ with the chance band of a
    mean of (L-1) H unrelated pairs; right: each layer's cosine to the anchor, layer × Δ."""
    L, H, anchor = meta["num_layers"], meta["num_heads"], meta["anchor"]
    deltas = profile["deltas"]
    fig, (ax, hm) = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 2, FIGSIZE[1]), dpi=DPI,
                                 gridspec_kw={"width_ratios": (1.15, 1)})
    labels = {"adjacent": f"adjacent layers ({L - 1}×{H} pairs)",
              "to_anchor": f"to the anchor L={anchor}, anchor excluded ({L - 1}×{H} pairs)",
              "offdiag": f"all layer pairs off the diagonal ({L * (L - 1)}×{H} ordered pairs)"}
    for c, key in enumerate(PROFILE_PARTS):
        ax.plot(deltas, profile[key], marker="o", markersize=3, color=f"C{c}", label=labels[key])
    _chance_band(ax, chance, (L - 1) * H)
    _delta_axis(ax, deltas)
    ax.set_ylabel(r"head-mean operator cosine cos($g_L(Δ)$, $g_{L'}(Δ)$)")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"Operator cosine between layers at distance Δ, mean over {H} heads", fontsize=10)

    per_layer = profile["to_anchor_per_layer"].T.copy()  # (L, D)
    per_layer[anchor] = np.nan  # 1 by construction: it would only stretch the colour scale
    limit = _limit(np.abs(per_layer))
    _layer_delta_map(plt, fig, hm, per_layer, (-limit, limit), "head-mean cosine to the anchor", deltas, L,
                     f"Each layer to the anchor L={anchor} (grey: the anchor itself)")
    fig.suptitle(caption(meta, "rotary distance profile g(Δ) = $W_K^T R(Δ) W_Q$, layer to layer"), fontsize=11)
    fig.tight_layout()
    save_figure(plt, fig, path)
    return path


def _chance_band(ax, chance, count):
    """The operator cosine's chance level ±2 s.e. of a mean of ``count`` unrelated head pairs, grey."""
    if chance is None or chance.get("mean") is None or count < 1:
        return
    mean = chance["mean"]
    half = 2 * chance["sd"] / np.sqrt(count) if chance.get("sd") is not None else 0.0
    ax.axhline(mean, color="0.3", linestyle=":", linewidth=1)
    ax.axhspan(mean - half, mean + half, color="0.5", alpha=0.3, linewidth=0,
               label=f"chance {mean:.3g} ± 2 s.e. of a mean of {count} unrelated pairs")


def _head_norm_figure(plt, meta, profile, path):
    """Left: the L H head norms ||g(Δ)|| / ||g(0)||, median, quartiles and range against Δ; right: each
    layer's median over its heads, layer × Δ."""
    L, H = meta["num_layers"], meta["num_heads"]
    deltas, ratio = profile["deltas"], profile["norm_ratio"]  # (D, L, H)
    heads = ratio.reshape(len(deltas), -1)
    fig, (ax, hm) = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 2, FIGSIZE[1]), dpi=DPI,
                                 gridspec_kw={"width_ratios": (1.15, 1)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (absent heads) are NaN, drawn as gaps
        low, q1, median, q3, high = (np.nanpercentile(heads, q, axis=1) for q in (0, 25, 50, 75, 100))
        layer_median = np.nanmedian(ratio, axis=2).T  # (L, D)
    ax.fill_between(deltas, low, high, color="C0", alpha=0.15, linewidth=0, label=f"range over {L}×{H} heads")
    ax.fill_between(deltas, q1, q3, color="C0", alpha=0.35, linewidth=0, label="quartiles")
    ax.plot(deltas, median, marker="o", markersize=3, color="C0", label="median")
    ax.axhline(1.0, color="0.3", linestyle=":", linewidth=1)
    _delta_axis(ax, deltas)
    ax.set_ylabel(r"head norm $\|g_{L,h}(Δ)\|_F \,/\, \|g_{L,h}(0)\|_F$")
    ax.legend(fontsize=7, loc="best")
    ax.set_title("Head norms relative to Δ = 0", fontsize=10)
    limit = _limit(np.abs(layer_median - 1.0))
    _layer_delta_map(plt, fig, hm, layer_median, (1 - limit, 1 + limit), "median over the layer's heads", deltas, L,
                     f"Per layer: median over its {H} heads")
    fig.suptitle(caption(meta, "how the rotation changes each head's operator norm"), fontsize=11)
    fig.tight_layout()
    save_figure(plt, fig, path)
    return path


def _layer_delta_map(plt, fig, ax, values, limits, label, deltas, num_layers, title):
    """``values`` (L, D) as a layer x Δ map on ``ax``, diverging colours within ``limits`` (NaN grey), one column
    per measured distance."""
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    image = ax.imshow(values, origin="lower", aspect="auto", cmap=cmap, vmin=limits[0], vmax=limits[1],
                      interpolation="none")
    colorbar(fig, image, ax=ax).set_label(label)
    _delta_columns(ax, deltas)
    _layer_rows(ax, num_layers)
    ax.set_title(title, fontsize=10)


def _limit(values):
    """A colour limit fitted to ``values`` (their largest finite one), never 0."""
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def band_order(wavelengths):
    """Column order of the (P,) bands by increasing wavelength (stable; null, a pair that never turns, last)."""
    return np.argsort(np.where(np.isnan(wavelengths), np.inf, wavelengths), kind="stable")


def group_boundaries(group_of_pair):
    """Per layer, the columns ``j`` of ``group_of_pair`` ((L, P) int, columns in drawing order) where a group
    ends and another begins (between ``j - 1`` and ``j``)."""
    return [list(np.flatnonzero(row[1:] != row[:-1]) + 1) for row in group_of_pair]


def _bands_figure(plt, meta, bands, chance, path):
    """Left: layer × band energy share (bands by wavelength, group boundaries drawn); right: each
    group's share per layer, and each group's operator cosines against chance."""
    L, H = meta["num_layers"], meta["num_heads"]
    groups, wavelengths = bands["groups"], bands["wavelengths"]
    P = wavelengths.shape[1]
    order = band_order(wavelengths[0])
    share = bands["share_mean"]
    with_unrotated = "unrotated" in groups or bool(np.nan_to_num(share[:, P]).any())
    columns = np.concatenate([order, [P]]) if with_unrotated else order
    matrix = share[:, columns]
    fig = plt.figure(figsize=(FIGSIZE[0] * 2, FIGSIZE[1] * 1.25), dpi=DPI)
    grid = fig.add_gridspec(2, 2, width_ratios=(1.5, 1))
    hm, shares, cosines = fig.add_subplot(grid[:, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 1])

    # The colour scale ends at the 99th percentile so that a single dominant band does not flatten the rest;
    # the colour bar's arrow marks the cells beyond it.
    finite = matrix[np.isfinite(matrix)]
    top = float(np.percentile(finite, 99)) if finite.size else 1.0
    top = top if top > 0 else _limit(matrix)
    image = hm.imshow(matrix, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=top,
                      interpolation="none")
    colorbar(fig, image, ax=hm, extend="max" if finite.size and finite.max() > top else "neither").set_label(
        "share of the head's energy (mean over heads)")
    step = max(1, int(np.ceil(P / 10)))
    ticks = list(range(0, P, step))
    labels = [_wavelength_label(wavelengths[0, order[t]]) for t in ticks]
    if with_unrotated:
        ticks.append(P)
        labels.append("unrot.")
    hm.set_xticks(ticks, labels, rotation=60, fontsize=7)
    of_kind = "" if bands["kind"] is None else f" (of layer 0's kind, {bands['kind']})"
    hm.set_xlabel(f"rotary pair, by wavelength 2π/θ in positions{of_kind}", fontsize=8)
    _layer_rows(hm, L)
    grouped = bands["group_of_pair"][:, order]  # (L, P): each layer's group of every column
    for layer, edges in enumerate(group_boundaries(grouped)):
        for edge in edges:
            hm.plot([edge - 0.5, edge - 0.5], [layer - 0.5, layer + 0.5], color="white", linewidth=1.2)
    if with_unrotated:
        hm.axvline(P - 0.5, color="white", linewidth=1.2)
    if (grouped == grouped[0]).all():  # one grouping for every layer: name each run of columns above the map
        edges = [0] + group_boundaries(grouped[:1])[0] + [P]
        for start, stop in zip(edges[:-1], edges[1:]):
            hm.text((start + stop - 1) / 2, L - 0.5, groups[grouped[0, start]], ha="center", va="bottom", fontsize=8)
    hm.set_title(f"Energy per rotary band, mean over {H} heads (mean over Δ = 0..C−1, C = {bands['window']:g})",
                 fontsize=9, pad=14)

    layers = np.arange(L)
    for g, name in enumerate(groups):
        shares.plot(layers, bands["group_share"][:, g], marker="o", markersize=2, color=f"C{g}", label=name)
    shares.set_xlabel("layer L")
    shares.set_ylabel("share of the energy")
    shares.set_title("Energy share of each band group", fontsize=9)
    shares.legend(fontsize=7, loc="best")

    x = np.arange(len(groups))
    width = 0.27
    names = {"adjacent": "adjacent layers", "to_anchor": f"to the anchor L={meta['anchor']}", "offdiag": "all pairs"}
    for c, key in enumerate(PROFILE_PARTS):
        cosines.bar(x + (c - 1) * width, bands["group_cos"][key], width, color=f"C{c}", label=names[key])
    # The cosine of unrelated Gaussian-factor operators K^T Q (K, Q: r x n) has sd ~1/n whatever the rank r (2 to 64
    # at n = 576 simulated: 0.96-1.0 / n), so the operator cosine's level holds for a group's part of g too.
    _chance_band(cosines, chance, (L - 1) * H)
    cosines.set_xticks(x, groups, fontsize=8)
    cosines.set_ylabel("head-mean operator cosine")
    cosines.set_title("Operator cosine of each group's part of g", fontsize=9)
    cosines.legend(fontsize=7, loc="best")
    fig.suptitle(caption(meta, "rotary frequency bands: energy shares and cosines between layers"), fontsize=11)
    fig.tight_layout()
    save_figure(plt, fig, path)
    return path


def _wavelength_label(value):
    """A wavelength in positions, three digits: ``6.28``, ``471``, ``8.38k``, ``1.5M``."""
    if not np.isfinite(value):
        return "—"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"
