"""The figure of the symmetry scores ``s = <g, g^T> / ||g||^2`` (:mod:`qkalign.stats.symmetry`) of an analysis JSON:
every head's ``s`` as a layer x head map, and per layer the heads' mean against chance, with the layers' whole
operators (Saponati et al.'s scores) where measured."""

import numpy as np

from ..errors import InputError
from .figure_files import DPI, FIGSIZE, caption, colorbar, numbers, save_figure

SYMMETRY_FIGURE_NAMES = ("symmetry.png", "symmetry_split.png")
#: The two halves of the operator cosine (:mod:`qkalign.stats.symmetry_split`).
PARTS = (("S", "symmetric part S = (g + gᵀ)/2"), ("A", "skew part A = (g − gᵀ)/2"))


def checked_symmetry(result, meta, source):
    """The drawn parts of ``result["symmetry"]`` checked (None when absent): ``per_head`` (L, H), ``per_layer`` (L,),
    ``chance`` {mean, sd}, and ``layer_score``, ``directionality`` (L,) or None; one error line for anything else."""
    doc = result.get("symmetry")
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise InputError(source, "symmetry", "an object", type(doc).__name__)
    L, H = meta["num_layers"], meta["num_heads"]
    chance = doc.get("chance")
    if not isinstance(chance, dict):
        raise InputError(source, "symmetry.chance", "an object", type(chance).__name__)
    out = {"per_head": numbers(doc.get("per_head"), (L, H), source, "symmetry.per_head"),
           "per_layer": numbers(doc.get("per_layer"), (L,), source, "symmetry.per_layer"),
           "chance": {key: float(numbers(chance.get(key), (), source, f"symmetry.chance.{key}"))
                      for key in ("mean", "sd")}}
    for key in ("layer_score", "directionality"):
        out[key] = None if doc.get(key) is None else numbers(doc.get(key), (L,), source, f"symmetry.{key}")
    return out


def write_symmetry_figure(plt, meta, sym, path):
    """Left: ``s`` of every head, layer x head, diverging colours centred at the chance level (scale: the largest
    distance from it); right: each layer's head mean with the chance level ±2 s.e. of a mean of H heads, and the
    layer operator's ``s`` and directionality where measured."""
    L, H = meta["num_layers"], meta["num_heads"]
    center, sd = sym["chance"]["mean"], sym["chance"]["sd"]
    fig, (hm, ax) = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 2, FIGSIZE[1]), dpi=DPI)
    deviation = np.abs(sym["per_head"] - center)
    limit = float(np.nanmax(deviation)) if np.isfinite(deviation).any() and np.nanmax(deviation) > 0 else 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    image = hm.imshow(sym["per_head"], origin="lower", aspect="auto", cmap=cmap, vmin=center - limit,
                      vmax=center + limit, interpolation="none")
    colorbar(fig, image, ax=hm).set_label(f"s (centre: chance {center:.2g})")
    hm.set_xlabel("head h")
    hm.set_ylabel("layer L")
    hm.set_title(f"Each head's symmetry score s = <g, gᵀ>/‖g‖² ({L}×{H} heads)", fontsize=10)
    layers = np.arange(L)
    half = 2 * sd / np.sqrt(H)
    ax.axhspan(center - half, center + half, color="0.5", alpha=0.3, linewidth=0,
               label=f"chance {center:.2g} ± 2 s.e. of a mean of {H} unrelated heads")
    ax.plot(layers, sym["per_layer"], marker="o", markersize=3, color="C0", label="mean over the layer's heads")
    ax.plot(layers, np.nanmin(sym["per_head"], axis=1), color="C0", linestyle=":", linewidth=1, label="min, max")
    ax.plot(layers, np.nanmax(sym["per_head"], axis=1), color="C0", linestyle=":", linewidth=1)
    if sym["layer_score"] is not None:
        ax.plot(layers, sym["layer_score"], marker="s", markersize=3, color="C1",
                label="the layer's whole operator (Saponati et al.)")
    if sym["directionality"] is not None:
        ax.plot(layers, sym["directionality"], marker="^", markersize=3, color="C2",
                label="its directionality (< 0: key columns stand out)")
    ax.axhline(0.0, color="0.3", linestyle=":", linewidth=1)
    ax.set_xlabel("layer L")
    ax.set_ylabel("score in [−1, 1] (s: 1 symmetric, −1 skew)")
    ax.set_title("Per layer, against chance", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.suptitle(caption(meta, "symmetric or directional: each head's and layer's symmetry score"), fontsize=11)
    fig.tight_layout()
    save_figure(plt, fig, path)
    return path


def checked_split(result, meta, source):
    """The drawn parts of ``result["symmetry_split"]`` checked (None when absent): ``cos_S``, ``cos_A`` (L, L),
    ``to_anchor_per_layer`` {S, A: (L,)}, ``chance`` {S, A: {mean, sd}}; one error line for anything else."""
    doc = result.get("symmetry_split")
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise InputError(source, "symmetry_split", "an object", type(doc).__name__)
    L = meta["num_layers"]
    per_layer, chance = doc.get("to_anchor_per_layer"), doc.get("chance")
    if not isinstance(per_layer, dict) or not isinstance(chance, dict):
        raise InputError(source, "symmetry_split", "to_anchor_per_layer and chance objects", repr(doc)[:60])
    out = {"to_anchor_per_layer": {}, "chance": {}}
    for part, _ in PARTS:
        out[f"cos_{part}"] = numbers(doc.get(f"cos_{part}"), (L, L), source, f"symmetry_split.cos_{part}")
        out["to_anchor_per_layer"][part] = numbers(per_layer.get(part), (L,), source,
                                                   f"symmetry_split.to_anchor_per_layer.{part}")
        level = chance.get(part)
        if not isinstance(level, dict):
            raise InputError(source, f"symmetry_split.chance.{part}", "an object", type(level).__name__)
        out["chance"][part] = {key: float(numbers(level.get(key), (), source, f"symmetry_split.chance.{part}.{key}"))
                               for key in ("mean", "sd")}
    return out


def write_split_figure(plt, meta, split, path):
    """cos_S and cos_A between layers (head means, diagonal masked, diverging colours centred at chance 0 on one
    scale fitted to both), and each layer's cosine to the anchor per half with its chance band (±2 s.e. of a mean
    of H heads)."""
    L, H, anchor = meta["num_layers"], meta["num_heads"], meta["anchor"]
    fig, axes = plt.subplots(1, 3, figsize=(FIGSIZE[0] * 3, FIGSIZE[1]), dpi=DPI)
    off = ~np.eye(L, dtype=bool)
    values = np.concatenate([np.abs(split[f"cos_{part}"][off]) for part, _ in PARTS])
    values = values[np.isfinite(values)]
    limit = float(values.max()) if values.size and values.max() > 0 else 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    for ax, (part, name) in zip(axes[:2], PARTS):
        matrix = np.where(off, split[f"cos_{part}"], np.nan)  # the diagonal is 1 by construction
        image = ax.imshow(matrix, origin="lower", cmap=cmap, vmin=-limit, vmax=limit, interpolation="none")
        colorbar(fig, image, ax=ax).set_label(f"cos_{part} (centre: chance 0; diagonal grey)")
        ax.set_xlabel("layer L'")
        ax.set_ylabel("layer L")
        ax.set_title(f"{name}: cosine between layers,\nmean over {H} heads", fontsize=10)
    ax = axes[2]
    layers = np.arange(L)
    for i, (part, name) in enumerate(PARTS):
        level = split["chance"][part]
        half = 2 * level["sd"] / np.sqrt(H)
        ax.axhspan(level["mean"] - half, level["mean"] + half, color=f"C{i}", alpha=0.15, linewidth=0,
                   label=f"{part}: chance ±2 s.e. of a mean of {H} heads")
        curve = split["to_anchor_per_layer"][part].copy()
        curve[anchor] = np.nan  # 1 by construction
        ax.plot(layers, curve, marker="o", markersize=3, color=f"C{i}", label=f"cos_{part} to the anchor L={anchor}")
    ax.axhline(0.0, color="0.3", linestyle=":", linewidth=1)
    ax.set_xlabel("layer L")
    ax.set_ylabel("head-mean cosine")
    ax.set_title("Each half to the anchor", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.suptitle(caption(meta, "what layers share, in the symmetric and the skew half"), fontsize=10)
    fig.tight_layout()
    save_figure(plt, fig, path)
    return path
