"""Figures of an analysis: (L, L) heatmaps and to-anchor curves with chance bands, as PNG.

With RoPE (``rope_profile``, ``rope_bands``), also the rotary figures of :mod:`qkalign.views.rope_figures`.

Works from the JSON form of a result (``AnalysisResult.to_dict()`` or a ``--json``
file), so ``qkalign plot RESULT.json DIR`` needs no recomputation.
"""

from pathlib import Path

import numpy as np

from ..checks import int_in_range, positive_int
from ..errors import InputError
from .figure_files import DPI, FIGSIZE, caption, colorbar, figure_folder, integer_ticks
from .figure_files import numbers as _numbers
from .figure_files import part as _part
from .figure_files import save_figure as _save
from .rope_figures import ROPE_FIGURE_NAMES
from .symmetry_figures import (
    SYMMETRY_FIGURE_NAMES,
    checked_split,
    checked_symmetry,
    write_split_figure,
    write_symmetry_figure,
)

#: (key in result["pairs"], title, colour-bar label, chance key)
HEATMAPS = (
    ("operator_cos", "Operator cosine between layers", r"cos($g_L$, $g_{L'}$)", "operator_cos"),
    ("resid_frac", "Scalar-rescale residual between layers", r"$\sqrt{1 - \cos^2}$", "resid_frac"),
    ("pa_mean_cos", "Top-k eigensubspaces: mean principal cosine", "mean cos(principal angles)", "pa_mean_cos"),
    ("pa_min_cos", "Top-k eigensubspaces: smallest principal cosine", "min cos(principal angles)", "pa_min_cos"),
    ("top1_overlap", "Top eigenvector overlap", r"$(v_L \cdot v_{L'})^2$", "top1_overlap"),
    ("spectral_cos", "Spectral cosine (signed eigenvalues)", r"cos($\lambda_L$, $\lambda_{L'}$)", "spectral_cos"),
    ("spectral_abs_cos", "Spectral cosine (|eigenvalues|)", r"cos($|\lambda_L|$, $|\lambda_{L'}|$)", "spectral_abs_cos"),
)

#: The to-anchor panels: (curve or heatmap key, title, chance key); each panel has its own axis.
TO_ANCHOR_PANELS = (
    ("to_anchor.cos", "operator cosine", "operator_cos"),
    ("principal_angles.mean_cos", "top-k subspace: mean principal cosine", "pa_mean_cos"),
    ("principal_angles.top1_overlap", "top-1 eigenvector overlap", "top1_overlap"),
    ("pa_min_cos", "top-k subspace: smallest principal cosine", "pa_min_cos"),
    ("spectral_cos", "spectral cosine (signed λ)", "spectral_cos"),
    ("spectral_abs_cos", "spectral cosine (|λ|)", "spectral_abs_cos"),
)

#: The head-resolved statistics to the anchor, drawn as layer x head maps: (pairs key, title, chance key).
PER_HEAD_PANELS = (
    ("operator_cos", "operator cosine", "operator_cos"),
    ("pa_mean_cos", "top-k subspace mean cosine", "pa_mean_cos"),
    ("top1_overlap", "top-1 eigenvector overlap", "top1_overlap"),
    ("spectral_cos", "spectral cosine (signed λ)", "spectral_cos"),
)

#: At most this many heads get their own L x L panel in ``pairs_operator_cos_heads.png``.
MAX_HEAD_PANELS = 64

#: Colour scales fitted to the off-diagonal values: this percentile of |value - centre| is the scale's end.
ROBUST_PERCENTILE = 98

#: Every file :func:`write_figures` may write in its folder (checked before the work).
FIGURE_NAMES = tuple(f"pairs_{h[0]}.png" for h in HEATMAPS) + ("to_anchor.png", "per_head.png",
                                                                 "pairs_operator_cos_heads.png") + \
    ROPE_FIGURE_NAMES + SYMMETRY_FIGURE_NAMES

#: The chance levels the figures draw (as centres, bands or z-scores).
CHANCE_KEYS = {h[3] for h in HEATMAPS} | {p[2] for p in TO_ANCHOR_PANELS}


def off_diagonal(matrix):
    """``matrix`` (L, L) as floats with its diagonal set to nan (1 or 0 by construction: it would set the scale)."""
    out = np.array(matrix, dtype=float)
    np.fill_diagonal(out, np.nan)
    return out


def robust_half_range(values, center):
    """The scale's half-width around ``center``: the ROBUST_PERCENTILE-th percentile of ``|values - center|``
    over the finite values (so one outlier cannot flatten the rest), or 1 when there is nothing to fit."""
    deviation = np.abs(np.asarray(values, dtype=float) - center)
    deviation = deviation[np.isfinite(deviation)]
    if deviation.size == 0:
        return 1.0
    half = float(np.percentile(deviation, ROBUST_PERCENTILE))
    return half if half > 0 else float(deviation.max()) or 1.0


def head_mean_z(values, level, num_heads):
    """z of a mean over ``num_heads`` heads, ``(values - mean) / (sd / sqrt(H))``; None without a level's sd."""
    if level is None or level.get("mean") is None or not level.get("sd"):
        return None
    return (np.asarray(values, dtype=float) - level["mean"]) / (level["sd"] / np.sqrt(num_heads))


def _diverging_map(plt, fig, ax, values, center, label, annotate):
    """``values`` in diverging colours centred at ``center`` (scale fitted by :func:`robust_half_range`;
    nan grey); the colour bar says both. Values are written in the cells of small maps."""
    half = robust_half_range(values, center)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    image = ax.imshow(values, origin="lower", cmap=cmap, vmin=center - half, vmax=center + half,
                      interpolation="none", aspect="auto")
    bar = colorbar(fig, image, ax=ax)
    bar.set_label(f"{label}\ncentre {center:.3g}, ends ±{half:.3g} ({ROBUST_PERCENTILE}th pct of |off-diag − centre|)",
                  fontsize=7)
    if annotate and values.shape[0] * values.shape[1] <= 144:
        for (row, col), value in np.ndenumerate(values):
            if np.isfinite(value):
                ax.text(col, row, f"{value:.2g}", ha="center", va="center", fontsize=6,
                        color="white" if abs(value - center) > 0.6 * half else "black")
    return image


def _layer_axes(ax, num_layers, xlabel="layer L'"):
    ax.set_xlabel(xlabel)
    ax.set_ylabel("layer L")
    integer_ticks(ax.xaxis)
    integer_ticks(ax.yaxis)


def _heatmap(plt, meta, matrix, title, label, chance, path):
    """Left: the head-mean statistic between layers, diagonal masked, centred at chance; right: its z-score."""
    H = meta["num_heads"]
    values = off_diagonal(matrix)
    center = chance["mean"] if chance is not None and chance.get("mean") is not None else float(np.nanmedian(values))
    z = head_mean_z(values, chance, H)
    fig, axes = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 2, FIGSIZE[1]), dpi=DPI, squeeze=False)
    raw, zmap = axes[0]
    _diverging_map(plt, fig, raw, values, center, label + (" (centre: chance)" if chance else " (centre: median)"),
                   annotate=True)
    raw.set_title(f"{title}, mean over {H} heads (diagonal masked)", fontsize=9)
    _layer_axes(raw, meta["num_layers"])
    if z is not None:
        _diverging_map(plt, fig, zmap, z, 0.0, f"z = (value − chance) / (sd/√{H})", annotate=True)
        zmap.set_title(f"z-score against unrelated operators (chance {chance['mean']:.3g}, sd {chance['sd']:.3g})",
                       fontsize=9)
        _layer_axes(zmap, meta["num_layers"])
    else:
        zmap.axis("off")
        zmap.text(0.5, 0.5, "no chance level with a spread:\nno z-score", ha="center", va="center")
    fig.suptitle(caption(meta, f"layer L vs layer L′, {title.lower()}"), fontsize=10)
    # fixed margins, not tight_layout: every heatmap has this one layout, and fitting it costs a third of the drawing
    fig.subplots_adjust(left=0.055, right=0.945, bottom=0.1, top=0.83, wspace=0.42)
    _save(plt, fig, path)


def _to_anchor_figure(plt, meta, curves, heatmaps, chance, path):
    """One panel per statistic, each with its own y axis fitted to the non-anchor layers, and its chance
    level ±2 s.e. of a mean of H unrelated heads."""
    L, H, anchor = meta["num_layers"], meta["num_heads"], meta["anchor"]
    panels = [(curves[key] if key in curves else heatmaps[key][:, anchor], title, chance.get(level))
              for key, title, level in TO_ANCHOR_PANELS if key in curves or key in heatmaps]
    cols = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(FIGSIZE[0] * cols, FIGSIZE[1] * 0.62 * rows), dpi=DPI,
                             squeeze=False, sharex=True)
    layers = np.arange(L)
    others = layers != anchor
    for ax, (values, title, level) in zip(axes.flat, panels):
        ax.plot(layers[others], values[others], marker="o", markersize=3, color="C0")
        ax.axvline(anchor, color="0.6", linewidth=0.8, linestyle="--")
        shown = list(values[others][np.isfinite(values[others])])
        if level is not None and level.get("mean") is not None:
            half = 2 * level["sd"] / np.sqrt(H) if level.get("sd") is not None else 0.0
            ax.axhspan(level["mean"] - half, level["mean"] + half, color="C1", alpha=0.25, linewidth=0)
            ax.axhline(level["mean"], color="C1", linestyle=":", linewidth=1)
            shown += [level["mean"] - half, level["mean"] + half]
            z = head_mean_z(values[others], level, H)
            title += "" if z is None else f"  (median z {np.nanmedian(z):+.3g})"
        if shown:
            low, high = min(shown), max(shown)
            pad = 0.08 * (high - low) or 0.05 * max(abs(high), 1e-12)
            ax.set_ylim(low - pad, high + pad)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel(f"layer L (dashed: the anchor L={anchor}, left out)", fontsize=8)
    fig.suptitle(caption(meta, f"each layer to the anchor L={anchor}, mean over {H} heads; "
                               "band: chance ±2 s.e."), fontsize=9)
    height = FIGSIZE[1] * 0.62 * rows  # fixed margins in inches (tight_layout would double the drawing time)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.45 / height, top=1 - 0.75 / height, hspace=0.35, wspace=0.2)
    _save(plt, fig, path)


def _per_head_figure(plt, meta, per_head, chance, path):
    """Layer x head maps of each head's statistic to the anchor, centred at chance (the anchor's row masked)."""
    L, anchor = meta["num_layers"], meta["anchor"]
    panels = [(per_head[key], title, chance.get(level)) for key, title, level in PER_HEAD_PANELS if key in per_head]
    cols = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(FIGSIZE[0] * cols, FIGSIZE[1] * 0.75 * rows), dpi=DPI,
                             squeeze=False)
    for ax, (values, title, level) in zip(axes.flat, panels):
        values = np.array(values, dtype=float)
        values[anchor] = np.nan
        center = level["mean"] if level is not None and level.get("mean") is not None else float(np.nanmedian(values))
        _diverging_map(plt, fig, ax, values, center, "value (centre: chance)" if level else "value", annotate=False)
        ax.set_title(f"{title}, each head to its anchor head", fontsize=8)
        _layer_axes(ax, L, xlabel="head h")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.suptitle(caption(meta, f"layer × head, each head h of layer L to head h of the anchor L={anchor} "
                               "(grey row: the anchor)"), fontsize=9)
    height = FIGSIZE[1] * 0.75 * rows  # fixed margins in inches (tight_layout would double the drawing time)
    fig.subplots_adjust(left=0.07, right=0.97, bottom=0.5 / height, top=1 - 0.75 / height, hspace=0.45, wspace=0.3)
    _save(plt, fig, path)


def head_mosaic(cube, cols):
    """The (L, L) maps ``cube[:, :, h]`` tiled row by row, ``cols`` to a row, one nan row and column between
    neighbours (and nan in unused tiles): a ((L + 1) rows - 1, (L + 1) cols - 1) array; the map of head ``h``
    starts at row ``(h // cols) (L + 1)`` (from the top) and column ``(h % cols) (L + 1)``."""
    L, _, heads = cube.shape
    rows = -(-heads // cols)
    mosaic = np.full((rows * (L + 1) - 1, cols * (L + 1) - 1), np.nan)
    for h in range(heads):
        r, c = divmod(h, cols)
        mosaic[r * (L + 1):r * (L + 1) + L, c * (L + 1):c * (L + 1) + L] = cube[::-1, :, h]  # layer 0 at the bottom
    return mosaic


def _heads_grid_figure(plt, meta, per_head, chance, path):
    """One L x L panel of the operator cosine per head (at most MAX_HEAD_PANELS), one colour scale for all.

    The panels are tiles of one image (:func:`head_mosaic`), not one axes each: 64 axes would cost seconds to draw.
    """
    H, L = meta["num_heads"], meta["num_layers"]
    shown = min(H, MAX_HEAD_PANELS)
    cols = int(np.ceil(np.sqrt(shown)))
    rows = -(-shown // cols)
    cube = np.array(per_head, dtype=float)[:, :, :shown].copy()
    for h in range(shown):
        np.fill_diagonal(cube[:, :, h], np.nan)
    center = chance["mean"] if chance is not None and chance.get("mean") is not None else float(np.nanmedian(cube))
    half = robust_half_range(cube, center)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    mosaic = head_mosaic(cube, cols)
    width = FIGSIZE[0] * 1.5
    height = 0.86 * width * rows / cols + 1.1  # the tiles' aspect, plus room for the titles
    fig, ax = plt.subplots(figsize=(width, height), dpi=DPI)
    # room on the right for the colour bar, its ticks and its label (the tiles keep their aspect inside the rest)
    fig.subplots_adjust(left=0.02, right=0.86, bottom=0.15 / height, top=1 - 0.95 / height)
    image = ax.imshow(mosaic, cmap=cmap, vmin=center - half, vmax=center + half, interpolation="none")
    diagonal = np.full(mosaic.shape, np.nan)  # the masked diagonals in grey, as on the other heatmaps
    for h in range(shown):
        r, c = divmod(h, cols)
        for layer in range(L):
            diagonal[r * (L + 1) + L - 1 - layer, c * (L + 1) + layer] = 1.0
        ax.text(c * (L + 1) + L / 2 - 0.5, r * (L + 1) - 0.6, f"head {h}", ha="center", va="bottom", fontsize=6)
    ax.imshow(diagonal, cmap=plt.get_cmap("Greys"), vmin=0, vmax=6, interpolation="none")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    bar = colorbar(fig, image, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label(f"cos($g_L$, $g_{{L'}}$) per head; centre {center:.3g} (chance), ends ±{half:.3g}", fontsize=7)
    more = f" (first {shown} of {H})" if shown < H else ""
    ax.set_title("each tile: layer L (up) × layer L′ (right), diagonal grey", fontsize=7, pad=10)
    fig.suptitle(caption(meta, f"operator cosine between layers, one L × L panel per head{more}"), fontsize=9)
    _save(plt, fig, path)


def checked_result(result, source):
    """The parts of a result dict that the figures draw, each checked before anything is drawn.

    Returns ``(meta, curves, heatmaps, chance, rope)``: ``meta`` adds ``model`` (the name of the
    measured file or folder, for titles); ``curves`` maps ``to_anchor.cos``,
    ``principal_angles.mean_cos`` and ``principal_angles.top1_overlap`` to (L,) float arrays,
    ``heatmaps`` the present ``pairs.*.mean`` to (L, L) arrays (nan where the JSON has null),
    ``chance`` the chance levels as ``{key: {"mean": float or None, "sd": float or None}}``,
    ``rope`` the ``(profile, bands)`` of :func:`qkalign.views.rope_figures.checked_rope` (None where absent).
    The lengths come from the arrays in the file, so a declared ``num_layers`` cannot make
    this allocate more than the file holds.
    """
    meta = _part(result, "meta", source)
    num_layers = positive_int(meta.get("num_layers"), source, "meta.num_layers")
    clean_meta = {"num_layers": num_layers,
                  "num_heads": positive_int(meta.get("num_heads"), source, "meta.num_heads"),
                  "topk": positive_int(meta.get("topk"), source, "meta.topk"),
                  "anchor": int_in_range(meta.get("anchor"), 0, num_layers - 1, source, "meta.anchor"),
                  "model": _model_name(meta.get("grams_path")),
                  "operator": str(meta.get("operator") or "raw")[:40]}
    for key in ("hidden_size", "head_dim"):  # for the captions; older JSONs may lack them
        clean_meta[key] = positive_int(meta[key], source, f"meta.{key}") if meta.get(key) is not None else None
    curves = {}
    for part, key in (("to_anchor", "cos"), ("principal_angles", "mean_cos"), ("principal_angles", "top1_overlap")):
        curves[f"{part}.{key}"] = _numbers(_part(result, part, source).get(key), (num_layers,), source, f"{part}.{key}")
    pairs = result.get("pairs") or {}
    if not isinstance(pairs, dict):
        raise InputError(source, "pairs", "an object", type(pairs).__name__)
    heatmaps = {key: _numbers(_part(pairs, key, source, "pairs.").get("mean"), (num_layers, num_layers), source,
                              f"pairs.{key}.mean")
                for key, *_ in HEATMAPS if key in pairs}
    chance = result.get("chance") or {}
    if not isinstance(chance, dict):
        raise InputError(source, "chance", "an object", type(chance).__name__)
    levels = {}
    for key in CHANCE_KEYS & chance.keys():
        level = _part(chance, key, source, "chance.")
        levels[key] = {name: None if level.get(name) is None else
                       float(_numbers(level.get(name), (), source, f"chance.{key}.{name}"))
                       for name in ("mean", "sd")}
    from .rope_figures import checked_rope

    return clean_meta, curves, heatmaps, levels, checked_rope(result, clean_meta, source)


def _model_name(path):
    """The measured model's name for titles: the folder of a weights file named ``model*`` (``model.safetensors``,
    a shard), else the last part of the path (a GGUF file, a folder, a grams JSON)."""
    if not isinstance(path, str) or not path:
        return "model"
    path = Path(path)
    if path.name.startswith("model") and path.suffix in (".safetensors", ".json") and path.parent.name:
        return path.parent.name
    return path.name or "model"


def write_figures(result, out_dir, source="result", workers=1):
    """Write the heatmaps and curves of ``result`` (a result dict) into ``out_dir``.

    Parameters
    ----------
    result : dict
        ``AnalysisResult.to_dict()`` or a loaded ``--json`` file; needs ``pairs`` and
        ``chance`` (the all-pairs analysis) for the heatmaps and bands; ``rope_profile`` and
        ``rope_bands`` (models with RoPE) for the rotary figures.
    out_dir : str, Path or FigureCollection
        A folder (created if missing) for PNG files, or a collection for SVG text.
    source : str
        What the result came from, for error lines (the JSON's path).
    workers : int
        Processes drawing side by side (:mod:`.figure_jobs`); 1: all in this process. The same figures either way.

    Returns
    -------
    list of Path (or of the collection's slots)
        The figures written, in the order of :data:`FIGURE_NAMES`.
    """
    from .figure_jobs import run_jobs

    return run_jobs(figure_jobs(result, source), figure_folder(out_dir), workers)


def figure_jobs(result, source="result"):
    """The figures of ``result``, checked, as ``(function, args)`` jobs: ``function(plt, *args, out_dir)`` draws
    one figure (or the rotary set) into ``out_dir`` and returns what it wrote. Everything is checked here, before
    any figure is drawn."""
    meta, curves, heatmaps, chance, (profile, bands) = checked_result(result, source)
    per_head = checked_per_head(result, meta, source)
    symmetry, split = checked_symmetry(result, meta, source), checked_split(result, meta, source)
    jobs = [(_heatmap_job, (meta, heatmaps[key], title, label, chance.get(chance_key), f"pairs_{key}.png"))
            for key, title, label, chance_key in HEATMAPS if key in heatmaps]
    jobs.append((_one_figure_job, (_to_anchor_figure, "to_anchor.png", meta, curves, heatmaps, chance)))
    if per_head:
        anchor = meta["anchor"]
        jobs.append((_one_figure_job, (_per_head_figure, "per_head.png", meta,
                                       {key: cube[:, anchor, :] for key, cube in per_head.items()}, chance)))
    if "operator_cos" in per_head:
        jobs.append((_one_figure_job, (_heads_grid_figure, "pairs_operator_cos_heads.png", meta,
                                       per_head["operator_cos"], chance.get("operator_cos"))))
    if profile is not None or bands is not None:
        from .rope_figures import write_rope_figures

        jobs.append((_rope_job, (write_rope_figures, meta, profile, bands, chance.get("operator_cos"))))
    if symmetry is not None:
        jobs.append((_one_figure_job, (write_symmetry_figure, SYMMETRY_FIGURE_NAMES[0], meta, symmetry)))
    if split is not None:
        jobs.append((_one_figure_job, (write_split_figure, SYMMETRY_FIGURE_NAMES[1], meta, split)))
    return jobs


def _heatmap_job(plt, meta, matrix, title, label, chance, name, out_dir):
    path = out_dir / name
    _heatmap(plt, meta, matrix, title, label, chance, path)
    return [path]


def _one_figure_job(plt, draw, name, *args):
    """``draw(plt, *args[:-1], out_dir / name)``: the figure functions take their target last."""
    *args, out_dir = args
    path = out_dir / name
    draw(plt, *args, path)
    return [path]


def _rope_job(plt, write, meta, profile, bands, chance, out_dir):
    return write(plt, meta, profile, bands, chance, out_dir)


def checked_per_head(result, meta, source):
    """``pairs.KEY.per_head`` (L, L, H) of the statistics :data:`PER_HEAD_PANELS` draws, where the JSON has them."""
    pairs = result.get("pairs") or {}
    shape = (meta["num_layers"], meta["num_layers"], meta["num_heads"])
    return {key: _numbers(pairs[key]["per_head"], shape, source, f"pairs.{key}.per_head")
            for key, *_ in PER_HEAD_PANELS
            if isinstance(pairs.get(key), dict) and pairs[key].get("per_head") is not None}
