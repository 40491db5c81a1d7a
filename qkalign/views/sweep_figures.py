"""Figures of a sweep (``qkalign plot OUT.zarr DIR``): statistics against the training step, and heatmap grids.

Reads the store written by ``qkalign sweep`` (:mod:`qkalign.sweeps.store`); only runs with
status ``ok`` are drawn. The x axis is the training step parsed from the revision (``step1000``,
Pythia's names) or, for local checkpoint folders, from the folder's name; without step numbers,
the runs in store order. With revisions, each source is one curve; otherwise all runs are one.
Models with RoPE add the rotary distance profile and the band groups along the sweep.
"""

import json
import re
from pathlib import Path

import numpy as np

from .figure_files import DPI, FIGSIZE, figure_folder, figure_style, integer_ticks, save_figure
from .figure_files import pyplot as _pyplot

STEP = re.compile(r"(?:^|[^a-z])(?:step|global_step|checkpoint|ckpt|iter)[-_]?(\d+)", re.IGNORECASE)

#: (title, y label, function of (dataset, run) -> value, chance key)
PANELS = (
    ("Adjacent layers: operator cosine", r"mean$_{L}$ cos($g_L$, $g_{L+1}$)", "adjacent_operator_cos", "operator_cos"),
    ("Adjacent layers: top-k subspace mean principal cosine", "mean principal cosine", "adjacent_pa_mean_cos",
     "pa_mean_cos"),
    ("To the anchor layer: operator cosine", "mean over layers (anchor left out)", "anchor_operator_cos",
     "operator_cos"),
    ("To the anchor layer: top-k subspace mean principal cosine", "mean over layers (anchor left out)",
     "anchor_pa_mean_cos", "pa_mean_cos"),
)

#: (variable, title, colour-bar label, colour limits) of the heatmap grids.
GRIDS = (
    ("operator_cos", "Operator cosine between layers", r"cos($g_L$, $g_{L'}$)", (-1, 1)),
    ("pairs.pa_mean_cos.mean", "Top-k eigensubspaces: mean principal cosine", "mean principal cosine", (0, 1)),
)
MAX_GRID_RUNS = 36

#: At most this many distances Δ are followed along the sweep (spread over the ones every run measured).
MAX_ROPE_DELTAS = 4
#: Line style of each source (curve) in the rotary figures, whose colours are distances or band groups.
LINE_STYLES = ("-", "--", ":", "-.")


def step_of(text):
    """The training step named in ``text`` (``step1000``, ``.../checkpoint-500``), or None."""
    match = STEP.search(Path(str(text)).name) or STEP.search(str(text))
    return int(match.group(1)) if match else None


def run_table(ds):
    """Per ``ok`` run: dicts with index, label, curve (group name), step (or None); by curve and
    step when every run has a step, else in store order."""
    runs = []
    for i in np.flatnonzero(ds["status"].values == "ok"):
        source, revision = str(ds["source"].values[i]), str(ds["revision"].values[i])
        step = step_of(revision) if revision else step_of(source)
        curve = source if revision else "all runs"
        label = f"{Path(source).name}@{revision}" if revision else Path(source).name
        runs.append({"index": int(i), "label": label, "curve": curve, "step": step})
    if all(run["step"] is not None for run in runs):
        runs.sort(key=lambda run: (run["curve"], run["step"]))
    return runs


def statistic(ds, run, name):
    """One number per run for a panel of :data:`PANELS`."""
    L = int(ds["meta.num_layers"].values[run])
    anchor = int(ds["meta.anchor"].values[run])
    others = np.arange(L) != anchor
    if name == "adjacent_operator_cos":
        return float(ds["adjacent.mean"].values[run])
    if name == "adjacent_pa_mean_cos":
        matrix = ds["pairs.pa_mean_cos.mean"].values[run, :L, :L]
        return float(np.mean(np.diagonal(matrix, offset=1))) if L > 1 else np.nan
    if name == "anchor_operator_cos":
        return float(ds["verdict.mean_cos_to_anchor_excluding_anchor"].values[run])
    if name == "anchor_pa_mean_cos":
        values = ds["principal_angles.mean_cos"].values[run, :L]
        return float(values[others].mean()) if others.any() else np.nan
    raise KeyError(name)


def write_sweep_figures(store, out_dir):
    """Write the figures of the sweep store ``store`` into ``out_dir``; returns the PNG paths.

    ``statistics_vs_step.png``: four panels (adjacent-layer and to-anchor operator cosine and
    principal-angle cosine) against the step, with each run's chance level ±2 s.e. of a mean
    over its heads; ``grid_<variable>.png``: the (L, L) heatmap of every run (at most
    :data:`MAX_GRID_RUNS`, evenly spaced), each cropped to its own layers. Where runs hold a
    rotary profile, ``rope_profile_vs_step.png`` (adjacent and to-anchor cosine at a few Δ);
    where they hold frequency bands, ``rope_bands_vs_step.png`` (each group's share of the
    energy and its to-anchor cosine); where they hold symmetry scores, ``symmetry_vs_step.png`` (the heads'
    mean and median ``s`` with their chance level, and the layers' median ``s`` and directionality where
    measured with ``layer_symmetry``); where they hold the symmetric/skew split (``--symmetry-split``),
    ``symmetry_split_vs_step.png`` (the adjacent, to-anchor and off-diagonal cosines of the symmetric and skew parts
    with their chance bands, and the shares of the off-diagonal agreement each part carries).
    """
    return draw_sweep_figures(open_sweep_store(store), out_dir)


def open_sweep_store(store):
    """The dataset of the sweep store ``store``; one error line if it is not one."""
    import xarray as xr

    from ..errors import InputError

    try:
        ds = xr.open_zarr(str(store), consolidated=True, chunks=None)
    except (OSError, KeyError, ValueError) as exc:  # zarr's and xarray's ways of saying "not a store"
        raise InputError(store, "", "a Zarr store written by qkalign sweep", f"{type(exc).__name__}: {exc}") from None
    if "status" not in ds:
        raise InputError(store, "", "a Zarr store written by qkalign sweep", "other variables")
    return ds


def draw_sweep_figures(ds, out_dir):
    """The figures of :func:`write_sweep_figures` for an opened sweep dataset ``ds``."""
    out_dir = figure_folder(out_dir)
    runs = run_table(ds)
    if not runs:
        return []
    plt = _pyplot()
    with figure_style():
        written = [_statistics_figure(plt, ds, runs, out_dir)] + [
            _grid_figure(plt, ds, runs, variable, title, label, limits, out_dir)
            for variable, title, label, limits in GRIDS if variable in ds]
        deltas = followed_deltas(ds, runs)
        if deltas:
            written.append(_rope_profile_figure(plt, ds, runs, deltas, out_dir))
        if band_groups(ds, runs):
            written.append(_rope_bands_figure(plt, ds, runs, out_dir))
        if "symmetry.mean" in ds:
            written.append(_symmetry_figure(plt, ds, runs, out_dir))
        if "symmetry_split.frac_S" in ds:
            written.append(_symmetry_split_figure(plt, ds, runs, out_dir))
    return written


def _x_values(runs):
    """The x of each run (its step, or its position) and the axis label."""
    if all(run["step"] is not None for run in runs):
        return [run["step"] for run in runs], "training step"
    return list(range(len(runs))), "run"


def _statistics_figure(plt, ds, runs, out_dir):
    x, xlabel = _x_values(runs)
    fig, axes = plt.subplots(2, 2, figsize=(FIGSIZE[0] * 2, FIGSIZE[1] * 1.6), dpi=DPI, squeeze=False)
    curves = list(dict.fromkeys(run["curve"] for run in runs))
    for ax, (title, ylabel, name, chance_key) in zip(axes.flat, PANELS):
        for c, curve in enumerate(curves):
            members = sorted((x[i], run) for i, run in enumerate(runs) if run["curve"] == curve)
            xs = np.array([xv for xv, _ in members], dtype=float)
            ys = np.array([statistic(ds, run["index"], name) for _, run in members])
            color = f"C{c % 10}"
            ax.plot(xs, ys, marker="o", markersize=3, color=color, label=None if curve == "all runs" else curve)
            mean, half = _chance_band(ds, [run["index"] for _, run in members], chance_key)
            if np.isfinite(mean).any():
                ax.plot(xs, mean, color=color, linestyle=":", linewidth=1)
                ax.fill_between(xs, mean - half, mean + half, color=color, alpha=0.15, linewidth=0,
                                label="chance ±2 s.e." if c == 0 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if xlabel == "training step" and min(x) > 0 and max(x) / min(x) > 100:
            ax.set_xscale("log")
        if xlabel == "run":
            ax.set_xticks(range(len(runs)), [run["label"] for run in runs], rotation=60, fontsize=6, ha="right")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"QK alignment across {len(runs)} runs (mean over heads; chance: unrelated operators)", fontsize=11)
    return _written(plt, fig, out_dir / "statistics_vs_step.png")


def _chance_band(ds, indices, key):
    """Per run, the chance mean and 2 s.e. of a mean over its heads (NaN where the store has none)."""
    if f"chance.{key}.mean" not in ds:
        return np.full(len(indices), np.nan), np.zeros(len(indices))
    mean = ds[f"chance.{key}.mean"].values[indices]
    sd = np.nan_to_num(ds[f"chance.{key}.sd"].values[indices]) if f"chance.{key}.sd" in ds else 0.0
    return mean, 2 * sd / np.sqrt(ds["meta.num_heads"].values[indices])


def _grid_figure(plt, ds, runs, variable, title, label, limits, out_dir):
    if len(runs) > MAX_GRID_RUNS:
        runs = [runs[i] for i in np.linspace(0, len(runs) - 1, MAX_GRID_RUNS).round().astype(int)]
    cols = int(np.ceil(np.sqrt(len(runs))))
    rows = int(np.ceil(len(runs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 1.2, 2.6 * rows + 0.8), dpi=DPI, squeeze=False)
    image = None
    for ax, run in zip(axes.flat, runs):
        L = int(ds["meta.num_layers"].values[run["index"]])
        image = ax.imshow(ds[variable].values[run["index"], :L, :L], origin="lower", cmap="viridis",
                          vmin=limits[0], vmax=limits[1], interpolation="none")
        ax.set_title(run["label"] if run["step"] is None else f"step {run['step']}", fontsize=8)
        ax.set_xlabel("layer L'", fontsize=7)
        ax.set_ylabel("layer L", fontsize=7)
        ax.tick_params(labelsize=6)
        integer_ticks(ax.xaxis)
        integer_ticks(ax.yaxis)
    for ax in axes.flat[len(runs):]:
        ax.axis("off")
    fig.suptitle(f"{title} ({len(runs)} runs, mean over heads)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03)
    bar.set_label(label)
    path = out_dir / f"grid_{variable.replace('.', '_')}.png"
    save_figure(plt, fig, path)
    return path


# -- rotary figures ------------------------------------------------------------------------------

def followed_deltas(ds, runs):
    """Up to :data:`MAX_ROPE_DELTAS` distances Δ measured by every run that has a profile, spread from the
    smallest to the largest; [] when no run has one."""
    if "rope_profile.deltas" not in ds:
        return []
    measured = [set(row[np.isfinite(row)].astype(int).tolist())
                for row in (ds["rope_profile.deltas"].values[run["index"]] for run in runs)]
    measured = [m for m in measured if m]
    common = sorted(set.intersection(*measured)) if measured else []
    if len(common) <= MAX_ROPE_DELTAS:
        return common
    return [common[i] for i in np.unique(np.linspace(0, len(common) - 1, MAX_ROPE_DELTAS).round().astype(int))]


def profile_at(ds, run, key, delta):
    """``rope_profile.<key>`` of run ``run`` at distance ``delta`` (NaN where the run did not measure it)."""
    hits = np.flatnonzero(ds["rope_profile.deltas"].values[run] == delta)
    return float(ds[f"rope_profile.{key}"].values[run, hits[0]]) if hits.size else np.nan


def band_groups(ds, runs):
    """The band group names over the runs (first seen order), [] without ``rope_bands``."""
    if "rope_bands.groups" not in ds or "rope_bands.group_share" not in ds:
        return []
    names = {}
    for run in runs:
        names.update(dict.fromkeys(_run_groups(ds, run["index"])))
    return list(names)


def _run_groups(ds, run):
    text = str(ds["rope_bands.groups"].values[run])
    return json.loads(text) if text else []


def group_value(ds, run, name, statistic):
    """Group ``name`` of run ``run``: ``share`` (its layer-mean share of the energy) or ``to_anchor`` (its
    head-mean operator cosine to the anchor); NaN where the run has no such group."""
    groups = _run_groups(ds, run)
    if name not in groups:
        return np.nan
    g = groups.index(name)
    if statistic == "share":
        L = int(ds["meta.num_layers"].values[run])
        return float(np.mean(ds["rope_bands.group_share"].values[run, :L, g]))
    return float(ds[f"rope_bands.group_cos.{statistic}"].values[run, g])


def _follow(ax, runs, x, value_of, color):
    """One line per curve (source) of ``value_of(run)`` against x, in ``color``; sources by line style
    (:data:`LINE_STYLES`), a source without any value drawn as none."""
    for c, curve in enumerate(dict.fromkeys(run["curve"] for run in runs)):
        members = sorted((x[i], run) for i, run in enumerate(runs) if run["curve"] == curve)
        values = [value_of(run["index"]) for _, run in members]
        if np.isfinite(values).any():
            ax.plot([xv for xv, _ in members], values, marker="o", markersize=3, color=color,
                    linestyle=LINE_STYLES[c % len(LINE_STYLES)])


def _legend(ax, runs, names):
    """A legend of the colours (``names``: one per colour C0, C1, ...), the sources' line styles when
    there are several, and whatever else the axes labelled (the chance band)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=f"C{i % 10}", marker="o", markersize=3, label=name) for i, name in enumerate(names)]
    curves = list(dict.fromkeys(run["curve"] for run in runs))
    if len(curves) > 1:
        handles += [Line2D([], [], color="0.3", linestyle=LINE_STYLES[c % len(LINE_STYLES)], label=Path(curve).name)
                    for c, curve in enumerate(curves)]
    labelled, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + labelled, fontsize=7, loc="best")


def _step_axis(ax, runs, x, xlabel):
    ax.set_xlabel(xlabel)
    if xlabel == "training step" and min(x) > 0 and max(x) / min(x) > 100:
        ax.set_xscale("log")
    if xlabel == "run":
        ax.set_xticks(range(len(runs)), [run["label"] for run in runs], rotation=60, fontsize=6, ha="right")


def _rope_profile_figure(plt, ds, runs, deltas, out_dir):
    """Adjacent and to-anchor operator cosine at the distances ``deltas`` against the step, with the
    chance band of a mean of (L-1) H unrelated pairs (grey)."""
    x, xlabel = _x_values(runs)
    fig, axes = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 2, FIGSIZE[1]), dpi=DPI, squeeze=False)
    for ax, (key, title) in zip(axes.flat, (("adjacent", "Adjacent layers"),
                                            ("to_anchor", "To the anchor layer (anchor excluded)"))):
        for t, delta in enumerate(deltas):
            _follow(ax, runs, x, lambda run, key=key, delta=delta: profile_at(ds, run, key, delta), f"C{t % 10}")
        _pairs_chance_band(ax, ds, runs, x)
        ax.set_title(f"{title}: operator cosine at distance Δ", fontsize=10)
        ax.set_ylabel(r"head-mean cos($g_L(Δ)$, $g_{L'}(Δ)$)")
        _step_axis(ax, runs, x, xlabel)
        _legend(ax, runs, [f"Δ = {delta}" for delta in deltas])
    fig.suptitle(f"Rotary distance profile g(Δ) = $W_K^T R(Δ) W_Q$ across {len(runs)} runs "
                 "(Δ = query − key position)", fontsize=11)
    return _written(plt, fig, out_dir / "rope_profile_vs_step.png")


def _pairs_chance_band(ax, ds, runs, x):
    """Per curve, each run's operator-cosine chance level ±2 s.e. of a mean of its (L-1) H layer pairs (grey)."""
    if "chance.operator_cos.mean" not in ds:
        return
    labelled = False
    for curve in dict.fromkeys(run["curve"] for run in runs):
        members = sorted((x[i], run["index"]) for i, run in enumerate(runs) if run["curve"] == curve)
        indices = [index for _, index in members]
        mean = ds["chance.operator_cos.mean"].values[indices]
        if not np.isfinite(mean).any():
            continue
        sd = np.nan_to_num(ds["chance.operator_cos.sd"].values[indices]) if "chance.operator_cos.sd" in ds else 0.0
        pairs = np.maximum((ds["meta.num_layers"].values[indices] - 1) * ds["meta.num_heads"].values[indices], 1)
        half = 2 * sd / np.sqrt(pairs)
        xs = np.array([xv for xv, _ in members], dtype=float)
        ax.plot(xs, mean, color="0.3", linestyle=":", linewidth=1)
        ax.fill_between(xs, mean - half, mean + half, color="0.5", alpha=0.3, linewidth=0,
                        label=None if labelled else "chance ±2 s.e. of a mean of (L−1)·H pairs")
        labelled = True


def _rope_bands_figure(plt, ds, runs, out_dir):
    """Each band group's share of the energy (mean over layers) and its to-anchor operator cosine
    against the step, with the chance band of a mean of (L-1) H unrelated pairs."""
    x, xlabel = _x_values(runs)
    groups = band_groups(ds, runs)
    fig, axes = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 2, FIGSIZE[1]), dpi=DPI, squeeze=False)
    panels = (("share", "Energy share of each band group (mean over layers)", "share of the energy"),
              ("to_anchor", "Each group's part of g: operator cosine to the anchor", "head-mean operator cosine"))
    for ax, (statistic, title, ylabel) in zip(axes.flat, panels):
        for g, name in enumerate(groups):
            _follow(ax, runs, x, lambda run, name=name: group_value(ds, run, name, statistic), f"C{g % 10}")
        if statistic == "to_anchor":  # the operator cosine's level holds for a group's part (qkalign.views.rope_figures)
            _pairs_chance_band(ax, ds, runs, x)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        _step_axis(ax, runs, x, xlabel)
        _legend(ax, runs, groups)
    fig.suptitle(f"Rotary frequency bands across {len(runs)} runs", fontsize=11)
    return _written(plt, fig, out_dir / "rope_bands_vs_step.png")


def _symmetry_figure(plt, ds, runs, out_dir):
    """Left: the mean and median symmetry score ``s`` of every head against the step, with each run's chance level
    ±2 s.e. of a mean over its L H heads; right: the layers' whole operators (median over layers of ``s`` and of the
    directionality), where measured."""
    x, xlabel = _x_values(runs)
    fig, axes = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 2, FIGSIZE[1]), dpi=DPI, squeeze=False)
    heads, layers = axes.flat
    _follow(heads, runs, x, lambda i: float(ds["symmetry.mean"].values[i]), "C0")
    _follow(heads, runs, x, lambda i: float(ds["symmetry.median"].values[i]), "C1")
    if "symmetry.chance.mean" in ds:
        members = sorted((x[j], run["index"]) for j, run in enumerate(runs))
        indices = [index for _, index in members]
        mean, sd = ds["symmetry.chance.mean"].values[indices], ds["symmetry.chance.sd"].values[indices]
        count = np.maximum(ds["meta.num_layers"].values[indices] * ds["meta.num_heads"].values[indices], 1)
        xs = np.array([xv for xv, _ in members], dtype=float)
        heads.fill_between(xs, mean - 2 * sd / np.sqrt(count), mean + 2 * sd / np.sqrt(count), color="0.5",
                           alpha=0.3, linewidth=0, label="chance ±2 s.e. of a mean of L·H unrelated heads")
    heads.axhline(0.0, color="0.3", linestyle=":", linewidth=1)
    heads.set_title("Each head: symmetry score s = <g, gᵀ>/‖g‖²", fontsize=10)
    heads.set_ylabel("s (1 symmetric, −1 skew)")
    _step_axis(heads, runs, x, xlabel)
    _legend(heads, runs, ["mean over heads", "median over heads"])
    names = []
    for key, label in (("symmetry.layer_score_median", "layer operator: median s"),
                       ("symmetry.directionality_median", "layer operator: median directionality")):
        if key in ds:
            _follow(layers, runs, x, lambda i, key=key: float(ds[key].values[i]), f"C{len(names) % 10}")
            names.append(label)
    layers.axhline(0.0, color="0.3", linestyle=":", linewidth=1)
    layers.set_title("Each layer's whole operator (Saponati et al.'s scores)" if names else
                     "Each layer's whole operator: not measured (--layer-symmetry)", fontsize=10)
    layers.set_ylabel("median over layers")
    _step_axis(layers, runs, x, xlabel)
    if names:
        _legend(layers, runs, names)
    fig.suptitle(f"Symmetric or directional: QK operators across {len(runs)} runs", fontsize=11)
    return _written(plt, fig, out_dir / "symmetry_vs_step.png")


#: The split's pair summaries: (key in ``symmetry_split.<part>``, title, the pairs a mean covers per head).
SPLIT_PANELS = (
    ("adjacent", "Adjacent layers", "(L−1)·H"),
    ("to_anchor", "To the anchor layer (anchor excluded)", "(L−1)·H"),
    ("offdiag", "All layer pairs (off-diagonal)", "L(L−1)/2·H"),
)
#: The shares of the off-diagonal agreement: (variable suffix, legend label).
SPLIT_SHARES = (("frac_S", "frac_S: symmetric part's share"), ("frac_A", "frac_A: skew part's share"),
                ("frac_S_weighted", "frac_S weighted by ‖g‖"))


def split_value(ds, run, name):
    """``symmetry_split.<name>`` of run ``run`` as a float (``S.adjacent``, ``A.offdiag``, ``frac_S``, ...; NaN
    where the store lacks it): what :func:`_symmetry_split_figure` draws."""
    key = f"symmetry_split.{name}"
    return float(ds[key].values[run]) if key in ds else np.nan


def split_pairs(ds, run, summary):
    """How many (pair, head) cosines the split's ``summary`` mean covers in run ``run``, NaN heads counted too."""
    L, H = int(ds["meta.num_layers"].values[run]), int(ds["meta.num_heads"].values[run])
    return max((L - 1) * H if summary != "offdiag" else L * (L - 1) // 2 * H, 1)


def _symmetry_split_figure(plt, ds, runs, out_dir):
    """Per pair summary (adjacent, to the anchor, off-diagonal): the head-mean cosines across layers of the symmetric
    part ``S`` (C0) and the skew part ``A`` (C1) against the step, each with its chance level ±2 s.e. of a mean of
    that many unrelated pairs; last panel: ``frac_S``, ``frac_A`` (the parts' shares of the mean off-diagonal operator
    cosine) and ``frac_S_weighted``."""
    x, xlabel = _x_values(runs)
    fig, axes = plt.subplots(2, 2, figsize=(FIGSIZE[0] * 2, FIGSIZE[1] * 1.8), dpi=DPI, squeeze=False)
    for ax, (summary, title, pairs) in zip(axes.flat, SPLIT_PANELS):
        for p, part in enumerate(("S", "A")):
            _follow(ax, runs, x, lambda i, name=f"{part}.{summary}": split_value(ds, i, name), f"C{p}")
            _split_chance_band(ax, ds, runs, x, part, summary, f"C{p}", pairs)
        ax.axhline(0.0, color="0.3", linestyle=":", linewidth=1)
        ax.set_title(f"{title}: cos of the symmetric and skew parts", fontsize=10)
        ax.set_ylabel(r"head-mean cos($S_L$, $S_{L'}$), cos($A_L$, $A_{L'}$)", fontsize=8)
        _step_axis(ax, runs, x, xlabel)
        _legend(ax, runs, ["S = (g + gᵀ)/2", "A = (g − gᵀ)/2"])
    shares = axes.flat[3]
    for c, (name, _) in enumerate(SPLIT_SHARES):  # frac_S in S's colour, frac_A in A's
        _follow(shares, runs, x, lambda i, name=name: split_value(ds, i, name), f"C{c}")
    shares.axhline(0.5, color="0.3", linestyle=":", linewidth=1)
    shares.set_title("Each part's share of the off-diagonal operator cosine\n(meaningful where that cosine is "
                     "above chance)", fontsize=9)
    shares.set_ylabel("share (frac_S + frac_A = 1)")
    _step_axis(shares, runs, x, xlabel)
    _legend(shares, runs, [label for _, label in SPLIT_SHARES])
    fig.suptitle(f"Symmetric and skew parts of g across layers, {len(runs)} runs{_sizes(ds, runs)} "
                 "(chance: unrelated operators)", fontsize=11)
    return _written(plt, fig, out_dir / "symmetry_split_vs_step.png")


def _split_chance_band(ax, ds, runs, x, part, summary, color, pairs):
    """Per curve, each run's chance level of ``cos_<part>`` ±2 s.e. of a mean of its ``summary``'s pairs."""
    key = f"symmetry_split.chance.{part}"
    if f"{key}.mean" not in ds:
        return
    labelled = False
    for curve in dict.fromkeys(run["curve"] for run in runs):
        members = sorted((x[i], run["index"]) for i, run in enumerate(runs) if run["curve"] == curve)
        indices = [index for _, index in members]
        mean = ds[f"{key}.mean"].values[indices]
        if not np.isfinite(mean).any():
            continue
        sd = np.nan_to_num(ds[f"{key}.sd"].values[indices]) if f"{key}.sd" in ds else 0.0
        half = 2 * sd / np.sqrt([split_pairs(ds, index, summary) for index in indices])
        ax.fill_between([xv for xv, _ in members], mean - half, mean + half, color=color, alpha=0.15, linewidth=0,
                        label=None if labelled else f"chance of {part} ±2 s.e. of a mean of {pairs} pairs")
        labelled = True


def _sizes(ds, runs):
    """`` (n=…, H=…, L=…)`` where every run has the same sizes, else ``""``."""
    sizes = []
    for name, key in (("n", "meta.hidden_size"), ("H", "meta.num_heads"), ("L", "meta.num_layers")):
        if key not in ds:
            continue
        values = {float(ds[key].values[run["index"]]) for run in runs}
        if len(values) == 1 and np.isfinite(next(iter(values))):
            sizes.append(f"{name}={int(next(iter(values)))}")
    return f" ({', '.join(sizes)})" if sizes else ""


def _written(plt, fig, path):
    """Lay ``fig`` out, write it to ``path`` and close it; returns ``path``."""
    fig.tight_layout()
    save_figure(plt, fig, path)
    return path
