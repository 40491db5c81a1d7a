"""The notebook view: a compact HTML summary of an analysis (``AnalysisResult._repr_html_`` in Jupyter).

The verdict and the operator cosine to the anchor against chance, with one small figure: each layer's
operator cosine to the anchor and the chance band (±2 s.e. of a mean of H unrelated heads).
"""

import html

import numpy as np

from ..stats.chance import ChanceLevel, z_score

#: Inches of the summary's figure (small: it sits beside the table in a notebook cell).
SUMMARY_FIGSIZE = (4.2, 2.2)


def summary_html(result):
    """A ``<div>`` summarising ``result`` (an :class:`~qkalign.stats.result.AnalysisResult`): model, shape and
    operator, the verdict, the operator cosine to the anchor (anchor excluded) with its chance level and z, and
    an inline SVG of the cosine to the anchor per layer."""
    meta, verdict = result.meta, result.verdict
    L, H, anchor = meta["num_layers"], meta["num_heads"], meta["anchor"]
    rows = [("model", meta.get("grams_path") or "in memory"),
            ("shape", f"{L} layers × {H} heads, n={meta.get('hidden_size')}, d={meta.get('head_dim')}"),
            ("operator", meta.get("operator", "raw")), ("backend", meta.get("backend")),
            ("verdict", f"{verdict['label']}: {verdict['text']}")]
    others = np.arange(L) != anchor
    level = (result.chance or {}).get("operator_cos")
    if L > 1:
        observed = float(np.mean(result.rescale["mean_cos"][others]))
        text = f"{observed:+.4f}"
        if level is not None:
            z = float(z_score(observed, ChanceLevel(**level), H * (L - 1)))
            text += f" (chance {level['mean']:+.4f}, z = {z:+.1f} over {H * (L - 1)} layer-heads)"
        rows.append((f"operator cosine to the anchor L={anchor}, anchor excluded", text))
    table = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(key))}</th>"
                    f"<td style='text-align:left'>{html.escape(str(value))}</td></tr>" for key, value in rows)
    return (f"<div class='qkalign-summary'><b>qkalign analysis</b><table>{table}</table>"
            f"{_to_anchor_svg(result, level)}</div>")


def _to_anchor_svg(result, level):
    """The small figure as inline SVG text (matplotlib is imported here, only when a notebook shows a result)."""
    from .figure_files import figure_style, pyplot, svg_text

    plt = pyplot()
    meta = result.meta
    L, H, anchor = meta["num_layers"], meta["num_heads"], meta["anchor"]
    layers = np.arange(L)
    others = layers != anchor
    with figure_style():
        fig, ax = plt.subplots(figsize=SUMMARY_FIGSIZE, dpi=100)
    ax.plot(layers[others], result.to_anchor["cos"][others], marker="o", markersize=2.5, color="C0")
    if level is not None and level.get("sd") is not None:
        half = 2 * level["sd"] / np.sqrt(H)
        ax.axhspan(level["mean"] - half, level["mean"] + half, color="C1", alpha=0.3, linewidth=0)
    ax.axvline(anchor, color="0.6", linestyle="--", linewidth=0.8)
    ax.set_xlabel(f"layer L (dashed: anchor {anchor})", fontsize=7)
    ax.set_ylabel("operator cosine", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_title(f"to the anchor, mean over {H} heads; band: chance", fontsize=7)
    fig.tight_layout()
    svg = svg_text(fig)
    plt.close(fig)
    return svg
