"""The text report: the seed's sections, line layouts and number formats, plus marked additions.

Every line the seed printed is printed here with the same layout, so parsers of
the seed's output keep working. Lines that are new start with ``  [qkalign]``
(or are the header line); the two fixed labels are the thirds of the layers and
the middle layer's index instead of ``L=midish``.
"""


def format_report(result, input_description=None):
    """The report of an :class:`~qkalign.analysis.AnalysisResult` as one string (ends in a newline).

    Parameters
    ----------
    result : AnalysisResult
    input_description : str, optional
        First line's account of the input; by default the input paths.
    """
    meta = result.meta
    L, H, anchor = meta["num_layers"], meta["num_heads"], meta["anchor"]
    if input_description is None:
        input_description = f"{meta['grams_path']} + {meta['eigdirs_path']}"
    out = [f"qkalign analyze: input {input_description} (backend {meta['backend']})"]

    cos = result.operator_cos
    out.append(f"=== (a) Operator cos-sim between layers, averaged over {H} heads ===")
    out.append(f"  diagonal (should be 1.0): mean {cos.diagonal().mean():.4f}")
    adj = result.adjacent
    out.append(f"  adjacent layers cos-sim: mean {adj['mean']:.4f}  min {adj['min']:.4f}  max {adj['max']:.4f}")
    out.append(f"  layer -> anchor L={anchor} cos-sim:")
    out.append(f"    {'L':>3} {'cos':>7} {'T_opt':>7} {'resid_frac':>10}")
    ta = result.to_anchor
    for layer in range(L):
        out.append(f"    {layer:>3} {ta['cos'][layer]:+.4f} {ta['t_opt'][layer]:+7.3f} {ta['resid_frac'][layer]:>10.4f}")
    mid = L // 2
    out.append("")
    out.append(f"  long-range: cos(L=0, last) = {cos[0, -1]:+.3f}   cos(L={mid}, last) = {cos[mid, -1]:+.3f}")

    out.append("")
    out.append(f"=== (b) Operator-level scalar rescale to anchor L={anchor} ===")
    out.append(f"    {'L':>3} {'mean_cos':>9} {'mean_resid':>10}")
    rs = result.rescale
    for layer in range(L):
        out.append(f"    {layer:>3} {rs['mean_cos'][layer]:>+9.4f} {rs['mean_resid'][layer]:>10.4f}")

    out.append("")
    out.append(f"=== (c) Curvature-sign alignment vs anchor L={anchor} ===")
    sa = result.sign_agreement
    for i, k in enumerate(sa["k"]):
        out.append(f"  top-{k:>3} signs: mean agree = {sa['mean'][i]:.3f}   "
                   f"by layer range: early {sa['early'][i]:.3f}  mid {sa['mid'][i]:.3f}  late {sa['late'][i]:.3f}")
    ranges = "  ".join(f"{name} {start}-{stop - 1}" if stop > start else f"{name} (none)"
                       for name, (start, stop) in result.layer_ranges.items())
    out.append(f"  [qkalign] layer ranges are thirds of the {L} layers: {ranges}")
    out.append("")
    out.append("  fraction positive eigenvalues per layer:")
    for layer in range(L):
        out.append(f"    L={layer:2}  frac+ = {result.frac_positive[layer]:.3f}")

    pa = result.principal_angles
    out.append("")
    out.append(f"=== (d) Top-{meta['topk']} eigensubspace principal angles vs anchor L={anchor} ===")
    out.append(f"    {'L':>3} {'meanCosPA':>10} {'minCosPA':>10} {'max_top1':>10}")
    for layer in range(L):
        out.append(f"    {layer:>3} {pa['mean_cos'][layer]:>10.4f} {pa['min_cos'][layer]:>10.4f} "
                   f"{pa['top1_overlap'][layer]:>10.4f}")

    v = result.verdict
    out.append("")
    out.append("=== Verdict ===")
    out.append(f"  mean operator cos-sim to anchor: {v['mean_cos_to_anchor']:+.4f}")
    out.append(f"  mean operator cos-sim adjacent layers: {v['mean_cos_adjacent']:+.4f}")
    out.append(f"  {v['label']}: {v['text']}")
    out.append(f"  [qkalign] mean operator cos-sim to anchor, anchor itself excluded: "
               f"{v['mean_cos_to_anchor_excluding_anchor']:+.4f}")
    return "\n".join(out) + "\n"
