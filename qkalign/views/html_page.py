"""The report as one HTML page: every section as a table, the verdicts with their chance levels, the provenance and
every figure, in one file that opens offline.

The page is static: figures are inline SVG (matplotlib's; heatmap cells stay embedded raster images), the style is
inline, and there is no script, font, stylesheet or image from elsewhere, so opening it makes no network request and
the same result gives the same bytes. ``qkalign analyze --report FILE`` and ``qkalign report RESULT.json FILE``
write it; :mod:`.sweep_page` is the sweep's.

Elements a reader (or a test) can find: every figure is ``<figure class="qk-figure" data-name="NAME.png">`` holding
one ``<svg>``; key numbers carry ``data-key`` (``verdict.label``, ``verdict.mean_cos_to_anchor_excluding_anchor``,
``chance.operator_cos.z``, ...).
"""

import html
import math

import numpy as np

from ..errors import InputError
from ..files.outputs import atomic_path
from ..stats.result import AnalysisResult
from .figure_files import FigureCollection, numbers, part

#: The page's style: system fonts, tables that fit their numbers, figures as wide as the page allows.
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 72em;
       padding: 0 1em; color: #1b1b1b; line-height: 1.35; }
h1 { font-size: 1.45em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em;
     border-bottom: 1px solid #ccc; padding-bottom: 0.15em; }
p.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
th, td { padding: 0.15em 0.6em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
tr.anchor td { background: #fff6d8; }
td { font-variant-numeric: tabular-nums; }
.verdict { border-left: 4px solid #3465a4; background: #f4f7fb; padding: 0.5em 1em; margin: 0.8em 0; }
.verdict .label { font-weight: 600; font-size: 1.1em; }
tr.above td, tr.below td { font-weight: 600; }
figure.qk-figure { margin: 1em 0; } figure.qk-figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.85em; }
p.note { color: #555; font-size: 0.85em; max-width: 60em; }
details pre { font-size: 0.78em; overflow-x: auto; background: #f8f8f8; padding: 0.8em; }
"""

#: Which figures sit under which section (the rest go to the end).
SECTION_FIGURES = {
    "layers": ("to_anchor.png", "per_head.png"),
    "pairs": ("pairs_operator_cos.png", "pairs_operator_cos_heads.png", "pairs_resid_frac.png",
              "pairs_pa_mean_cos.png", "pairs_pa_min_cos.png", "pairs_top1_overlap.png", "pairs_spectral_cos.png",
              "pairs_spectral_abs_cos.png", "pairs_sign_agreement.png"),
    "rope": ("rope_distance_cos.png", "rope_head_norms.png"),
    "bands": ("rope_bands.png",),
    "symmetry": ("symmetry.png",),
    "split": ("symmetry_split.png",),
}


def write_html_page(result, path, source="result", report_text=None, workers=1):
    """Write the page of ``result`` (a result dict: ``AnalysisResult.to_dict()`` or a ``--json`` file) to ``path``,
    whole or not at all; returns ``path``. See :func:`page_html`."""
    text = page_html(result, source, report_text, workers)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def page_html(result, source="result", report_text=None, workers=1):
    """The page of ``result`` as one HTML document (str).

    Parameters
    ----------
    result : dict
        ``AnalysisResult.to_dict()`` or a loaded ``analyze --json`` file.
    source : str
        What the result came from, for error lines and the provenance.
    report_text : str, optional
        The text report to include (folded); by default it is made from ``result``.
    workers : int or None
        Processes drawing the figures side by side (:mod:`.figure_jobs`; None: one per core). More than one
        re-imports the main script in each worker, as :mod:`multiprocessing` does: from a script, only under
        ``if __name__ == "__main__":`` (the ``qkalign`` command passes None).
    """
    from .analysis_figures import figure_jobs
    from .figure_files import caption
    from .figure_jobs import run_jobs

    jobs = figure_jobs(result, source)  # checks every part the figures draw (the shape the tables rely on too)
    analysis = _checked_tables(result, source)  # before any figure is drawn: an error costs nothing
    collection = FigureCollection()
    run_jobs(jobs, collection, workers)
    meta = analysis.meta
    if report_text is None:
        from .text_report import format_report

        report_text = format_report(analysis)
    figures = dict(collection.figures)
    model = _model(meta)
    title = caption({**meta, "model": model}, "inter-layer alignment of the QK operators").split("\n")
    body = [f"<h1>qkalign report: {_e(model)}</h1>", f"<p class='sub'>{_e(title[0])}<br>{_e(title[1])}</p>",
            _verdict_block(analysis), "<h2>Provenance</h2>", _provenance_table(meta, source)]
    for key, heading, section in _sections(analysis):
        body += [f"<h2 id='{key}'>{_e(heading)}</h2>", *section]
        body += [_figure(name, figures.pop(name)) for name in SECTION_FIGURES.get(key, ()) if name in figures]
    if figures:
        body.append("<h2 id='figures'>More figures</h2>")
        body += [_figure(name, svg) for name, svg in figures.items()]
    body += ["<h2 id='text'>The text report</h2>",
             "<details><summary>as <code>qkalign analyze</code> prints it</summary><pre>"
             f"{_e(report_text)}</pre></details>"]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>qkalign report: {_e(model)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _checked_tables(result, source):
    """``result`` as an :class:`AnalysisResult`, with the per-layer parts the tables read checked (the figures
    check the rest they share); one error line for anything malformed."""
    meta = part(result, "meta", source)
    L = meta["num_layers"]  # checked by the figures
    layer_parts = (("to_anchor", ("t_opt", "resid_frac")), ("rescale", ("mean_cos", "mean_resid")),
                   ("principal_angles", ("min_cos",)))
    for name, keys in layer_parts:
        for key in keys:
            numbers(part(result, name, source).get(key), (L,), source, f"{name}.{key}")
    numbers(result.get("frac_positive"), (L,), source, "frac_positive")
    signs = part(result, "sign_agreement", source)
    ks = signs.get("k")
    if not isinstance(ks, list) or not ks or not all(isinstance(k, int) and not isinstance(k, bool) for k in ks):
        raise InputError(source, "sign_agreement.k", "a list of integers", repr(ks)[:60])
    for key in ("mean", "early", "mid", "late"):
        numbers(signs.get(key), (len(ks),), source, f"sign_agreement.{key}")
    verdict = part(result, "verdict", source)
    for key in ("label", "text"):
        if not isinstance(verdict.get(key), str):
            raise InputError(source, f"verdict.{key}", "a string", repr(verdict.get(key))[:60])
    for key in ("mean_cos_to_anchor", "mean_cos_adjacent", "mean_cos_to_anchor_excluding_anchor"):
        numbers(verdict.get(key), (), source, f"verdict.{key}")
    return AnalysisResult.from_dict(result)


# ---------------------------------------------------------------------------------------------- cells and tables

def _e(text):
    return html.escape(str(text), quote=True)


def _num(value, fmt):
    """``value`` formatted with ``fmt``, or an en dash for a missing or nan value."""
    if value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        return "–"
    return format(value, fmt)


def _table(columns, rows, row_classes=None):
    """An HTML table: ``columns`` (str; a leading ``<`` left-aligns the column; all ``<`` alone: no header row),
    ``rows`` of cells, each a str or ``(text, data_key)``."""
    left = [c.startswith("<") for c in columns]
    head = "".join(f"<th class='text'>{_e(c[1:])}</th>" if is_left else f"<th>{_e(c)}</th>"
                   for c, is_left in zip(columns, left))
    header = "" if all(c == "<" for c in columns) else f"<thead><tr>{head}</tr></thead>"
    lines = [f"<table>{header}<tbody>"]
    for i, row in enumerate(rows):
        cls = f" class='{row_classes[i]}'" if row_classes and row_classes[i] else ""
        cells = []
        for cell, is_left in zip(row, left):
            text, key = cell if isinstance(cell, tuple) else (cell, None)
            attrs = (" class='text'" if is_left else "") + (f" data-key='{_e(key)}'" if key else "")
            cells.append(f"<td{attrs}>{_e(text)}</td>")
        lines.append(f"<tr{cls}>{''.join(cells)}</tr>")
    lines.append("</tbody></table>")
    return "".join(lines)


def _note(text):
    return f"<p class='note'>{_e(text)}</p>"


def _figure(name, svg):
    return (f"<figure class='qk-figure' data-name='{_e(name)}'>{svg}"
            f"<figcaption>{_e(name)}</figcaption></figure>")


def _state(z):
    """``(words, css class)`` of a z-score (|z| > 3 is away from chance, as the text report says)."""
    from .text_report import chance_state

    words = chance_state(z) if math.isfinite(z) else "no chance level"
    return words, {"above chance": "above", "below chance": "below"}.get(words, "at")


def _model(meta):
    from .analysis_figures import _model_name

    source = (meta.get("provenance") or {}).get("model_dir") or meta.get("grams_path")
    return _model_name(source) if source else "model in memory"


# ---------------------------------------------------------------------------------------------- sections

def _verdict_block(result):
    """The seed's verdict, and where the operators stand against unrelated ones."""
    from .text_report import chance_verdict

    verdict, meta = result.verdict, result.meta
    lines = [f"<div class='verdict'><div class='label' data-key='verdict.label'>{_e(verdict['label'])}</div>",
             f"<div data-key='verdict.text'>{_e(verdict['text'])}</div>"]
    against = chance_verdict(result)
    observed = (_num(verdict["mean_cos_to_anchor_excluding_anchor"], "+.4f"),
                "verdict.mean_cos_to_anchor_excluding_anchor")
    rows, classes = [], []
    if against is not None:
        for key, what in (("operator_cos", "operator cosine to the anchor, anchor excluded"),
                          ("pa_mean_cos", f"top-{meta['topk']} eigensubspace mean cosine to the anchor")):
            value, level, se, z = against[key]
            words, cls = _state(z)
            rows.append((what, observed if key == "operator_cos" else _num(value, "+.4f"), _num(level["mean"], "+.4f"),
                         _num(se, ".4f"), (_num(z, "+.1f"), f"chance.{key}.z"), words))
            classes.append(cls)
    else:
        rows.append(("operator cosine to the anchor, anchor excluded", observed, "", "", "", ""))
        classes.append(None)
    rows += [("the seed's mean to the anchor (its own 1.0 included)", _num(verdict["mean_cos_to_anchor"], "+.4f"),
              "", "", "", ""),
             ("mean operator cosine of adjacent layers", _num(verdict["mean_cos_adjacent"], "+.4f"), "", "", "", "")]
    classes += [None, None]
    symmetry = result.symmetry
    if symmetry is not None:
        level = symmetry["chance"]
        count = int(np.isfinite(symmetry["per_head"]).sum())
        words, cls = _state(symmetry["z"])
        rows.append(("symmetry score s of every head (mean)", _num(symmetry["mean"], "+.4f"),
                     _num(level["mean"], "+.4f"), _num(level["sd"] / math.sqrt(max(count, 1)), ".4f"),
                     (_num(symmetry["z"], "+.1f"), "chance.symmetry.z"), words))
        classes.append(cls)
    split = result.symmetry_split
    if split is not None:
        for part, what in (("S", "symmetric parts S across layers: mean off-diagonal cos_S"),
                           ("A", "skew parts A across layers: mean off-diagonal cos_A")):
            words, cls = _state(split[part]["z_offdiag"])
            rows.append((what, _num(split[part]["offdiag"], "+.4f"), _num(split["chance"][part]["mean"], "+.4f"), "",
                         (_num(split[part]["z_offdiag"], "+.1f"), f"chance.symmetry_split.{part}.z"), words))
            classes.append(cls)
    lines.append(_table(["<statistic", "observed", "chance", "s.e.", "z", "<where"], rows, classes))
    if against is not None:
        words = _state(against["operator_cos"][3])[0]
        lines.append(_note(f"The label above is the seed's, from fixed thresholds on the mean cosine; against "
                           f"unrelated operators of this shape the cosine to the anchor is {words} "
                           f"(z = {against['operator_cos'][3]:+.1f})."))
        lines.append(_note(f"chance: unrelated operators of this shape (Gaussian factors); s.e. of a mean over "
                           f"{against['count']} layer-heads; |z| > 3 is away from chance. {against['layers_above']} "
                           f"of {meta['num_layers'] - 1} layers are above chance at z > 3 on their own."))
    lines.append("</div>")
    return "\n".join(lines)


def _provenance_table(meta, source):
    prov = dict(meta.get("provenance") or {})
    rows = [("model", prov.pop("model_dir", meta.get("grams_path") or "in memory")),
            ("operator", meta.get("operator", "raw")),
            ("layers × heads", f"{meta['num_layers']} × {meta['num_heads']}"),
            ("hidden size n, head dim d, top-k", f"{meta.get('hidden_size')}, {meta.get('head_dim')}, {meta['topk']}"),
            ("anchor layer", meta["anchor"]), ("backend", meta.get("backend")),
            ("grams", meta.get("grams_path") or "in memory"), ("eigen-directions", meta.get("eigdirs_path") or "–"),
            ("result", source)]
    rows += [(key.replace("_", " "), value) for key, value in prov.items()]
    return _table(["<", "<"], [(str(k), str(v)) for k, v in rows])


def _sections(result):
    """``(anchor id, heading, html parts)`` of every section the result holds, in the text report's order."""
    out = [("layers", "Every layer against the anchor (seed sections a–d)", _layer_section(result)),
           ("signs", "Curvature-sign agreement with the anchor (c)", _signs_section(result))]
    if result.pairs is not None:
        out.append(("pairs", "All layer pairs (e)", _pairs_section(result)))
        out.append(("distance", "By layer distance (f)", _distance_section(result)))
    if result.chance is not None:
        out.append(("chance", "Chance levels: unrelated operators of this shape", _chance_section(result)))
    if result.matched is not None:
        out.append(("matched", "Head matching", _matched_section(result)))
    if result.rope_profile is not None:
        out.append(("rope", "Rotary distance profile (h)", _rope_section(result)))
    if result.rope_bands is not None:
        out.append(("bands", "Rotary frequency bands (i)", _bands_section(result)))
    if result.symmetry is not None:
        out.append(("symmetry", "Symmetry of the operators (j)", _symmetry_section(result)))
    if result.symmetry_split is not None:
        out.append(("split", "Symmetric and skew parts across layers (k)", _split_section(result)))
    return out


def _layer_section(result):
    meta, ta, rs, pa = result.meta, result.to_anchor, result.rescale, result.principal_angles
    anchor, L = meta["anchor"], meta["num_layers"]
    rows = [(str(layer), _num(ta["cos"][layer], "+.4f"), _num(ta["t_opt"][layer], "+.3f"),
             _num(ta["resid_frac"][layer], ".4f"), _num(rs["mean_cos"][layer], "+.4f"),
             _num(rs["mean_resid"][layer], ".4f"), _num(result.frac_positive[layer], ".3f"),
             _num(pa["mean_cos"][layer], ".4f"), _num(pa["min_cos"][layer], ".4f"),
             _num(pa["top1_overlap"][layer], ".4f")) for layer in range(L)]
    columns = ["L", "cos (heads' mean g)", "T_opt", "resid_frac", "mean cos (per head)", "mean resid", "frac+",
               "mean cos PA", "min cos PA", "top-1 overlap"]
    return [_table(columns, rows, ["anchor" if layer == anchor else None for layer in range(L)]),
            _note(f"Anchor L={anchor} (highlighted). (a) cosine of the head-averaged operators, the optimal scalar T_opt "
                  f"and the residual sqrt(1 - cos²); (b) per-head cosine and residual after the best rescale, averaged "
                  f"over heads; frac+: fraction of positive eigenvalues of (g + gᵀ)/2; (d) principal-angle cosines "
                  f"of the top-{meta['topk']} eigensubspaces and the overlap of the top eigenvectors.")]


def _signs_section(result):
    sa = result.sign_agreement
    rows = [(str(k), _num(sa["mean"][i], ".3f"), _num(sa["early"][i], ".3f"), _num(sa["mid"][i], ".3f"),
             _num(sa["late"][i], ".3f")) for i, k in enumerate(sa["k"])]
    ranges = ", ".join(f"{name} {start}–{stop - 1}" if stop > start else f"{name} (none)"
                       for name, (start, stop) in result.layer_ranges.items())
    return [_table(["top-k", "mean agreement", "early", "mid", "late"], rows),
            _note(f"Agreement of the signs of the top-k eigenvalues of (g + gᵀ)/2 with the anchor's; layer ranges: "
                  f"{ranges}.")]


def _pairs_section(result):
    from .text_report import pairs_summary

    rows, far_from = pairs_summary(result)
    return [_table(["<statistic", "off-diagonal", "adjacent", "far", "chance", "sd (one head)"],
                   [(name, *(_num(v, ".4f") for v in values)) for name, *values in rows]),
            _note(f"Means over the heads and the layer pairs; far: layer distance ≥ {far_from}; chance: unrelated "
                  "operators of this shape. The heatmaps mask the diagonal and centre their colours at chance.")]


def _distance_section(result):
    prof = result.by_distance
    k = prof["sign_agreement_k"]
    keys = ("operator_cos", "spectral_cos", "spectral_abs_cos", "pa_mean_cos", "top1_overlap", "sign_agreement")
    rows = [(str(dist), *(_num(prof[key][i], "+.4f" if key in ("operator_cos", "spectral_cos") else ".4f")
                          for key in keys)) for i, dist in enumerate(prof["distance"])]
    return [_table(["distance", "operator cos", "spectral cos", "|λ| spectral cos", "mean cos PA", "top-1 overlap",
                    f"sign agreement @{k}"], rows)]


def _chance_section(result):
    from .text_report import _exactness

    rows = []
    for name, level in result.chance.items():
        mean, sd = level["mean"], level.get("sd")
        if isinstance(mean, (list, np.ndarray)):
            mean, sd = mean[-1], (None if sd is None else sd[-1])
            name = f"{name}@top{result.sign_agreement['k'][-1]}"
        how = level.get("method", "")
        if level.get("seed") is not None:
            how += f" (seed {level['seed']}, {level.get('samples')} samples)"
        rows.append((name, _num(mean, ".4g"), _num(sd, ".4g"), how + _exactness(level)))
    return [_table(["<statistic", "mean", "sd (one head)", "<method"], rows)]


def _matched_section(result):
    m, pa, meta = result.matched, result.principal_angles, result.meta
    ta = m["to_anchor"]
    rows = [(str(layer), _num(pa["mean_cos"][layer], ".4f"), _num(ta["pa_mean_cos"][layer], ".4f"),
             _num(pa["top1_overlap"][layer], ".4f"), _num(ta["top1_overlap"][layer], ".4f"),
             str(int(ta["heads_moved"][layer]))) for layer in range(meta["num_layers"])]
    out = [_table(["L", "mean cos PA (index)", "matched", "top-1 (index)", "matched", "heads moved"], rows)]
    level = (result.chance or {}).get("matched_pa_mean_cos")
    if level:
        out.append(_note(f"Matching alone lifts random heads to a mean cos PA of {level['mean']:.4f} ± "
                         f"{level['sd']:.4f} (index-matched chance {result.chance['pa_mean_cos']['mean']:.4f})."))
    return out


def _rope_section(result):
    from .text_report import _z

    profile, meta = result.rope_profile, result.meta
    L, H = meta["num_layers"], meta["num_heads"]
    level = (result.chance or {}).get("operator_cos")
    has_symmetry = "symmetry" in profile
    rows = []
    for t, delta in enumerate(profile["deltas"]):
        ratio = np.asarray(profile["norm_ratio"][t], dtype=float)
        z = _z(profile["to_anchor"][t], level, (L - 1) * H) if level and L > 1 else float("nan")
        row = [str(delta), _num(profile["adjacent"][t], "+.4f"), _num(profile["to_anchor"][t], "+.4f"),
               _num(z, "+.1f"), _num(profile["offdiag"][t], "+.4f"), _num(np.nanmedian(ratio), ".3f")]
        if has_symmetry:
            row.append(_num(profile["symmetry"][t], "+.4f"))
        rows.append(row)
    columns = ["Δ", "adjacent", "to anchor", "z (to anchor)", "off-diagonal", "head norm / Δ=0 (median)"]
    return [_table(columns + (["mean s"] if has_symmetry else []), rows),
            _note("g(Δ) = W_Kᵀ R(Δ) W_Q at query − key distance Δ; operator cosines across layers, means over heads; "
                  f"to anchor: anchor L={meta['anchor']} excluded; chance as for the operator cosine.")]


def _bands_section(result):
    from .text_report import _group_pairs, _z

    bands, meta = result.rope_bands, result.meta
    L, H = meta["num_layers"], meta["num_heads"]
    level = (result.chance or {}).get("operator_cos")
    shares, cos = np.asarray(bands["group_share"], dtype=float), bands["group_cos"]
    rows = []
    for g, name in enumerate(bands["groups"]):
        pairs, wavelengths = _group_pairs(bands, g)
        z = _z(cos["to_anchor"][g], level, (L - 1) * H) if level and L > 1 else float("nan")
        rows.append((name, pairs, wavelengths, _num(np.nanmean(shares[:, g]), ".3f"),
                     _num(bands["cross_share"][g], ".3f"), _num(cos["adjacent"][g], "+.4f"),
                     _num(cos["to_anchor"][g], "+.4f"), _num(z, "+.1f"), _num(cos["offdiag"][g], "+.4f")))
    return [_table(["<group", "pairs", "wavelengths", "energy share", "share of cross-layer", "adjacent",
                    "to anchor", "z", "off-diagonal"], rows),
            _note(f"Means over Δ = 0..C−1, C = {bands['window']}: high: wavelength ≤ √C, mid ≤ C, low > C. "
                  "Cosines of each group's operator across layers.")]


def _symmetry_section(result):
    sym, meta = result.symmetry, result.meta
    whole = "layer_score" in sym
    leveled = whole and "directionality_z" in sym  # a result of an earlier qkalign has no level for d
    rows = []
    for layer in range(meta["num_layers"]):
        heads = sym["per_head"][layer]
        row = [str(layer), _num(sym["per_layer"][layer], "+.4f"), _num(np.nanmin(heads), "+.4f"),
               _num(np.nanmax(heads), "+.4f"), _num(sym["z_per_layer"][layer], "+.1f")]
        if whole:
            row += [_num(sym["layer_score"][layer], "+.4f"), _num(sym["layer_z"][layer], "+.1f"),
                    _num(sym["directionality"][layer], "+.4f")]
            row += [_num(sym["directionality_z"][layer], "+.1f")] if leveled else []
        rows.append(row)
    columns = ["L", "mean s", "min s", "max s", "z (mean)"]
    if whole:
        columns += ["layer's s", "z", "directionality"] + (["z (directionality)"] if leveled else [])
    chance = sym["chance"]
    notes = [f"s = <g, gᵀ>/‖g‖² = (‖S‖² − ‖A‖²)/‖g‖²: 1 symmetric, −1 skew. All heads: mean {sym['mean']:+.4f}, "
             f"median {sym['median']:+.4f}; chance {chance['mean']:+.4f} ± {chance['sd']:.4f} per head, "
             f"z = {sym['z']:+.1f}."]
    if whole:
        notes.append(f"Each layer's whole operator (heads summed), as Saponati et al. (ICML 2025) score it: median s "
                     f"{sym['layer_score_median']:+.4f}, median directionality {sym['directionality_median']:+.4f} "
                     "(< 0: key-side columns stand out).")
    if leveled:
        level = sym["directionality_chance"]
        notes.append(f"Directionality of unrelated operators of this shape: {level['mean']:+.4f} ± {level['sd']:.4f} "
                     f"per layer; the layers' mean {sym['directionality_mean']:+.4f}, z = "
                     f"{sym['directionality_mean_z']:+.1f}.")
    return [_table(columns, rows)] + [_note(n) for n in notes]


def _split_section(result):
    split, meta = result.symmetry_split, result.meta
    rows = [(part, _num(split[part]["adjacent"], "+.4f"), _num(split[part]["to_anchor"], "+.4f"),
             _num(split[part]["offdiag"], "+.4f"), _num(split[part]["z_adjacent"], "+.1f"),
             _num(split[part]["z_to_anchor"], "+.1f"), _num(split[part]["z_offdiag"], "+.1f")) for part in ("S", "A")]
    chance = split["chance"]
    return [_table(["<part", "adjacent", "to anchor", "off-diagonal", "z (adjacent)", "z (to anchor)",
                    "z (off-diagonal)"], rows),
            _note(f"cos_S, cos_A: cosines across layers of S = (g + gᵀ)/2 and A = (g − gᵀ)/2, means over heads. "
                  f"Fraction of the cross-layer agreement carried by S {split['frac_S']:.3f}, by A "
                  f"{split['frac_A']:.3f}. Chance per head: cos_S {chance['S']['mean']:+.4f} ± "
                  f"{chance['S']['sd']:.4f}, cos_A {chance['A']['mean']:+.4f} ± {chance['A']['sd']:.4f}; anchor "
                  f"L={meta['anchor']} excluded from to-anchor means.")]
