"""Figures of an analysis: (L, L) heatmaps and to-anchor curves with chance bands, as PNG.

With RoPE (``rope_profile``, ``rope_bands``), also the rotary figures of :mod:`qkalign.views.rope_figures`.

Works from the JSON form of a result (``AnalysisResult.to_dict()`` or a ``--json``
file), so ``qkalign plot RESULT.json DIR`` needs no recomputation.
"""

from pathlib import Path

import numpy as np

from ..checks import int_in_range, positive_int
from ..errors import InputError
from .figure_files import DPI, FIGSIZE, figure_folder
from .figure_files import numbers as _numbers
from .figure_files import part as _part
from .figure_files import pyplot as _pyplot
from .figure_files import save_figure as _save
from .rope_figures import ROPE_FIGURE_NAMES
from .symmetry_figures import (
    SYMMETRY_FIGURE_NAMES,
    checked_split,
    checked_symmetry,
    write_split_figure,
    write_symmetry_figure,
)

#: (key in result["pairs"], title, colour-bar label, chance key, colour limits)
HEATMAPS = (
    ("operator_cos", "Operator cosine between layers", r"cos($g_L$, $g_{L'}$)", "operator_cos", (-1, 1)),
    ("resid_frac", "Scalar-rescale residual between layers", r"$\sqrt{1 - \cos^2}$", "resid_frac", (0, 1)),
    ("pa_mean_cos", "Top-k eigensubspaces: mean principal cosine", "mean cos(principal angles)", "pa_mean_cos", (0, 1)),
    ("pa_min_cos", "Top-k eigensubspaces: smallest principal cosine", "min cos(principal angles)", "pa_min_cos", (0, 1)),
    ("top1_overlap", "Top eigenvector overlap", r"$(v_L \cdot v_{L'})^2$", "top1_overlap", (0, 1)),
    ("spectral_cos", "Spectral cosine (signed eigenvalues)", r"cos($\lambda_L$, $\lambda_{L'}$)", "spectral_cos", (-1, 1)),
    ("spectral_abs_cos", "Spectral cosine (|eigenvalues|)", r"cos($|\lambda_L|$, $|\lambda_{L'}|$)", "spectral_abs_cos",
     (0, 1)),
)

#: Every file :func:`write_figures` may write in its folder (checked before the work).
FIGURE_NAMES = tuple(f"pairs_{h[0]}.png" for h in HEATMAPS) + ("to_anchor.png",) + ROPE_FIGURE_NAMES + \
    SYMMETRY_FIGURE_NAMES

#: The chance levels the figures draw (as bands or in titles).
CHANCE_KEYS = {h[3] for h in HEATMAPS} | {"operator_cos", "pa_mean_cos", "top1_overlap", "spectral_abs_cos"}


def _heatmap(plt, matrix, title, label, chance, limits, path, num_heads):
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    image = ax.imshow(np.asarray(matrix, dtype=float), origin="lower", cmap="viridis",
                      vmin=limits[0], vmax=limits[1], interpolation="nearest")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(label)
    ax.set_xlabel("layer L'")
    ax.set_ylabel("layer L")
    subtitle = f"mean over {num_heads} heads"
    if chance is not None and chance.get("mean") is not None:
        subtitle += f"; chance {chance['mean']:.3g}"
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    _save(plt, fig, path)


def _curve(ax, x, y, chance, num_heads, label, color):
    ax.plot(x, y, marker="o", markersize=3, color=color, label=label)
    if chance is not None and chance.get("mean") is not None:
        mean = chance["mean"]
        half = 2 * chance["sd"] / np.sqrt(num_heads) if chance.get("sd") is not None else 0.0
        ax.axhline(mean, color=color, linestyle=":", linewidth=1)
        ax.axhspan(mean - half, mean + half, color=color, alpha=0.15, linewidth=0, label=f"{label}: chance ±2 s.e.")


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
    """The last part of the measured path (a model file or folder, or a grams JSON), for titles."""
    name = Path(path).name if isinstance(path, str) else ""
    return name or "model"


def write_figures(result, out_dir, source="result"):
    """Write the heatmaps and curves of ``result`` (a result dict) into ``out_dir``.

    Parameters
    ----------
    result : dict
        ``AnalysisResult.to_dict()`` or a loaded ``--json`` file; needs ``pairs`` and
        ``chance`` (the all-pairs analysis) for the heatmaps and bands; ``rope_profile`` and
        ``rope_bands`` (models with RoPE) for the rotary figures.
    out_dir : str or Path
        Created if missing.
    source : str
        What the result came from, for error lines (the JSON's path).

    Returns
    -------
    list of Path
        The PNG files written.
    """
    meta, curves, heatmaps, chance, (profile, bands) = checked_result(result, source)
    symmetry, split = checked_symmetry(result, meta, source), checked_split(result, meta, source)
    plt = _pyplot()
    out_dir = figure_folder(out_dir)
    num_heads, anchor = meta["num_heads"], meta["anchor"]
    written = []
    for key, title, label, chance_key, limits in HEATMAPS:
        if key in heatmaps:
            path = out_dir / f"pairs_{key}.png"
            _heatmap(plt, heatmaps[key], title, label, chance.get(chance_key), limits, path, num_heads)
            written.append(path)

    layers = np.arange(meta["num_layers"])
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    _curve(ax, layers, curves["to_anchor.cos"], chance.get("operator_cos"), num_heads, "operator cosine", "C0")
    _curve(ax, layers, curves["principal_angles.mean_cos"], chance.get("pa_mean_cos"), num_heads,
           f"top-{meta['topk']} subspace mean cos", "C1")
    _curve(ax, layers, curves["principal_angles.top1_overlap"], chance.get("top1_overlap"), num_heads,
           "top-1 overlap", "C2")
    if "spectral_abs_cos" in heatmaps:
        _curve(ax, layers, heatmaps["spectral_abs_cos"][:, anchor], chance.get("spectral_abs_cos"),
               num_heads, r"spectral cosine ($|\lambda|$)", "C3")
    ax.set_xlabel("layer L")
    ax.set_ylabel("similarity to the anchor layer")
    ax.set_title(f"Layer-to-anchor similarity (anchor L={anchor}, mean over {num_heads} heads)", fontsize=10)
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7, loc="best")
    path = out_dir / "to_anchor.png"
    _save(plt, fig, path)
    written.append(path)
    from .rope_figures import write_rope_figures

    written += write_rope_figures(plt, meta, profile, bands, chance.get("operator_cos"), out_dir)
    if symmetry is not None:
        written.append(write_symmetry_figure(plt, meta, symmetry, out_dir / SYMMETRY_FIGURE_NAMES[0]))
    if split is not None:
        written.append(write_split_figure(plt, meta, split, out_dir / SYMMETRY_FIGURE_NAMES[1]))
    return written
