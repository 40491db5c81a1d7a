"""Figures of an analysis: (L, L) heatmaps and to-anchor curves with chance bands, as PNG.

Works from the JSON form of a result (``AnalysisResult.to_dict()`` or a ``--json``
file), so ``qkalign plot RESULT.json DIR`` needs no recomputation.
"""

from pathlib import Path

import numpy as np

#: Figure size in inches and resolution: every PNG is FIGSIZE * DPI pixels.
FIGSIZE = (6.4, 5.2)
DPI = 150

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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt


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
    fig.savefig(path)
    plt.close(fig)


def _curve(ax, x, y, chance, num_heads, label, color):
    ax.plot(x, y, marker="o", markersize=3, color=color, label=label)
    if chance is not None and chance.get("mean") is not None:
        mean = chance["mean"]
        half = 2 * chance["sd"] / np.sqrt(num_heads) if chance.get("sd") is not None else 0.0
        ax.axhline(mean, color=color, linestyle=":", linewidth=1)
        ax.axhspan(mean - half, mean + half, color=color, alpha=0.15, linewidth=0, label=f"{label}: chance ±2 s.e.")


def write_figures(result, out_dir):
    """Write the heatmaps and curves of ``result`` (a result dict) into ``out_dir``.

    Parameters
    ----------
    result : dict
        ``AnalysisResult.to_dict()`` or a loaded ``--json`` file; needs ``pairs`` and
        ``chance`` (the all-pairs analysis) for the heatmaps and bands.
    out_dir : str or Path
        Created if missing.

    Returns
    -------
    list of Path
        The PNG files written.
    """
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = result["meta"]
    num_heads, anchor = meta["num_heads"], meta["anchor"]
    pairs, chance = result.get("pairs") or {}, result.get("chance") or {}
    written = []
    for key, title, label, chance_key, limits in HEATMAPS:
        if key in pairs:
            path = out_dir / f"pairs_{key}.png"
            _heatmap(plt, pairs[key]["mean"], title, label, chance.get(chance_key), limits, path, num_heads)
            written.append(path)

    layers = np.arange(meta["num_layers"])
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    _curve(ax, layers, result["to_anchor"]["cos"], chance.get("operator_cos"), num_heads, "operator cosine", "C0")
    _curve(ax, layers, result["principal_angles"]["mean_cos"], chance.get("pa_mean_cos"), num_heads,
           f"top-{meta['topk']} subspace mean cos", "C1")
    _curve(ax, layers, result["principal_angles"]["top1_overlap"], chance.get("top1_overlap"), num_heads,
           "top-1 overlap", "C2")
    if "spectral_abs_cos" in pairs:
        _curve(ax, layers, np.asarray(pairs["spectral_abs_cos"]["mean"])[:, anchor], chance.get("spectral_abs_cos"),
               num_heads, r"spectral cosine ($|\lambda|$)", "C3")
    ax.set_xlabel("layer L")
    ax.set_ylabel("similarity to the anchor layer")
    ax.set_title(f"Layer-to-anchor similarity (anchor L={anchor}, mean over {num_heads} heads)", fontsize=10)
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7, loc="best")
    path = out_dir / "to_anchor.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written
