"""Figures of a sweep (``qkalign plot OUT.zarr DIR``): statistics against the training step, and heatmap grids.

Reads the store written by ``qkalign sweep`` (:mod:`qkalign.sweeps.store`); only runs with
status ``ok`` are drawn. The x axis is the training step parsed from the revision (``step1000``,
Pythia's names) or, for local checkpoint folders, from the folder's name; without step numbers,
the runs in store order. With revisions, each source is one curve; otherwise all runs are one.
"""

import re
from pathlib import Path

import numpy as np

from .plots import DPI, FIGSIZE, _pyplot

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
    :data:`MAX_GRID_RUNS`, evenly spaced), each cropped to its own layers.
    """
    import xarray as xr

    from .errors import InputError

    try:
        ds = xr.open_zarr(str(store), consolidated=True, chunks=None)
    except (OSError, KeyError, ValueError) as exc:  # zarr's and xarray's ways of saying "not a store"
        raise InputError(store, "", "a Zarr store written by qkalign sweep", f"{type(exc).__name__}: {exc}") from None
    if "status" not in ds:
        raise InputError(store, "", "a Zarr store written by qkalign sweep", "other variables")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = run_table(ds)
    if not runs:
        return []
    plt = _pyplot()
    return [_statistics_figure(plt, ds, runs, out_dir)] + [
        _grid_figure(plt, ds, runs, variable, title, label, limits, out_dir)
        for variable, title, label, limits in GRIDS if variable in ds]


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
    fig.tight_layout()
    path = out_dir / "statistics_vs_step.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _chance_band(ds, indices, key):
    """Per run, the chance mean and 2 s.e. of a mean over its heads (NaN where the store has none)."""
    if f"chance.{key}.mean" not in ds:
        return np.full(len(indices), np.nan), np.zeros(len(indices))
    mean = ds[f"chance.{key}.mean"].values[indices]
    sd = np.nan_to_num(ds[f"chance.{key}.sd"].values[indices]) if f"chance.{key}.sd" in ds else 0.0
    return mean, 2 * sd / np.sqrt(ds["meta.num_heads"].values[indices])


def _grid_figure(plt, ds, runs, variable, title, label, limits, out_dir):
    from matplotlib.ticker import MaxNLocator

    if len(runs) > MAX_GRID_RUNS:
        runs = [runs[i] for i in np.linspace(0, len(runs) - 1, MAX_GRID_RUNS).round().astype(int)]
    cols = int(np.ceil(np.sqrt(len(runs))))
    rows = int(np.ceil(len(runs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 1.2, 2.6 * rows + 0.8), dpi=DPI, squeeze=False)
    image = None
    for ax, run in zip(axes.flat, runs):
        L = int(ds["meta.num_layers"].values[run["index"]])
        image = ax.imshow(ds[variable].values[run["index"], :L, :L], origin="lower", cmap="viridis",
                          vmin=limits[0], vmax=limits[1], interpolation="nearest")
        ax.set_title(run["label"] if run["step"] is None else f"step {run['step']}", fontsize=8)
        ax.set_xlabel("layer L'", fontsize=7)
        ax.set_ylabel("layer L", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat[len(runs):]:
        ax.axis("off")
    fig.suptitle(f"{title} ({len(runs)} runs, mean over heads)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03)
    bar.set_label(label)
    path = out_dir / f"grid_{variable.replace('.', '_')}.png"
    fig.savefig(path)
    plt.close(fig)
    return path
