"""The text report: the seed's sections, line layouts and number formats, plus marked additions.

Every line the seed printed is printed here with the same layout, so parsers of
the seed's output keep working. Lines that are new start with ``  [qkalign]``
(or are the header line); the two fixed labels are the thirds of the layers and
the middle layer's index instead of ``L=midish``.
"""

import numpy as np

from ..stats.chance import ChanceLevel, z_score


def format_report(result, input_description=None):
    """The report of an :class:`~qkalign.stats.result.AnalysisResult` as one string (ends in a newline).

    Parameters
    ----------
    result : AnalysisResult
    input_description : str, optional
        First line's account of the input; by default the input paths.
    """
    meta = result.meta
    if input_description is None:
        input_description = f"{meta['grams_path']} + {meta['eigdirs_path']}"
    out = [f"qkalign analyze: input {input_description} (backend {meta['backend']})"]
    if meta.get("operator", "raw") != "raw":
        out.append(f"  operator {meta['operator']}: {_operator_definition(meta['operator'])}; every number below is "
                   "of this operator")
    for section in (_operator_section, _rescale_section, _signs_section, _principal_angles_section, _verdict_section):
        out += section(result)
    return "\n".join(out) + "\n" + format_extended_report(result)


def _operator_definition(name):
    """The formula of an operator recorded by measure (its name as the JSON holds it)."""
    from ..errors import InputError
    from ..weights.rotary_operator import parse_operator

    try:
        return parse_operator(name).definition
    except InputError:  # a JSON written by a newer qkalign
        return "an operator this version does not know"


def _operator_section(result):
    """(a): head-averaged operator cosines, the adjacent layers, every layer to the anchor, long range."""
    meta, cos, adj, ta = result.meta, result.operator_cos, result.adjacent, result.to_anchor
    out = [f"=== (a) Operator cos-sim between layers, averaged over {meta['num_heads']} heads ===",
           f"  diagonal (should be 1.0): mean {cos.diagonal().mean():.4f}",
           f"  adjacent layers cos-sim: mean {adj['mean']:.4f}  min {adj['min']:.4f}  max {adj['max']:.4f}",
           f"  layer -> anchor L={meta['anchor']} cos-sim:"]
    out += _layer_table(meta, f"{'cos':>7} {'T_opt':>7} {'resid_frac':>10}",
                        lambda layer: f"{ta['cos'][layer]:+.4f} {ta['t_opt'][layer]:+7.3f} {ta['resid_frac'][layer]:>10.4f}")
    mid = meta["num_layers"] // 2
    out += ["", f"  long-range: cos(L=0, last) = {cos[0, -1]:+.3f}   cos(L={mid}, last) = {cos[mid, -1]:+.3f}"]
    return out


def _rescale_section(result):
    """(b): the head means of the cosine and of the residual after the best scalar rescale."""
    meta, rs = result.meta, result.rescale
    return ["", f"=== (b) Operator-level scalar rescale to anchor L={meta['anchor']} ==="] + _layer_table(
        meta, f"{'mean_cos':>9} {'mean_resid':>10}",
        lambda layer: f"{rs['mean_cos'][layer]:>+9.4f} {rs['mean_resid'][layer]:>10.4f}")


def _signs_section(result):
    """(c): top-k sign agreement with the anchor, by layer range, and the positive fraction per layer."""
    meta, sa = result.meta, result.sign_agreement
    out = ["", f"=== (c) Curvature-sign alignment vs anchor L={meta['anchor']} ==="]
    for i, k in enumerate(sa["k"]):
        out.append(f"  top-{k:>3} signs: mean agree = {sa['mean'][i]:.3f}   "
                   f"by layer range: early {sa['early'][i]:.3f}  mid {sa['mid'][i]:.3f}  late {sa['late'][i]:.3f}")
    ranges = "  ".join(f"{name} {start}-{stop - 1}" if stop > start else f"{name} (none)"
                       for name, (start, stop) in result.layer_ranges.items())
    out += [f"  [qkalign] layer ranges are thirds of the {meta['num_layers']} layers: {ranges}", "",
            "  fraction positive eigenvalues per layer:"]
    for layer in range(meta["num_layers"]):
        out.append(f"    L={layer:2}  frac+ = {result.frac_positive[layer]:.3f}")
    return out


def _principal_angles_section(result):
    """(d): principal-angle cosines and top-1 overlap of every layer's top-k subspace with the anchor's."""
    meta, pa = result.meta, result.principal_angles
    title = f"=== (d) Top-{meta['topk']} eigensubspace principal angles vs anchor L={meta['anchor']} ==="
    return ["", title] + _layer_table(
        meta, f"{'meanCosPA':>10} {'minCosPA':>10} {'max_top1':>10}",
        lambda layer: f"{pa['mean_cos'][layer]:>10.4f} {pa['min_cos'][layer]:>10.4f} {pa['top1_overlap'][layer]:>10.4f}")


def _verdict_section(result):
    """The seed's verdict, then (with chance levels) how far it is from chance."""
    v = result.verdict
    out = ["", "=== Verdict ===",
           f"  mean operator cos-sim to anchor: {v['mean_cos_to_anchor']:+.4f}",
           f"  mean operator cos-sim adjacent layers: {v['mean_cos_adjacent']:+.4f}",
           f"  {v['label']}: {v['text']}",
           f"  [qkalign] mean operator cos-sim to anchor, anchor itself excluded: "
           f"{v['mean_cos_to_anchor_excluding_anchor']:+.4f}"]
    if result.chance is not None:
        out += _chance_verdict_lines(result)
    return out


def _layer_table(meta, header, row):
    """A table with one line per layer: ``header`` and ``row(layer)`` after the layer column."""
    return [f"    {'L':>3} {header}"] + [f"    {layer:>3} {row(layer)}" for layer in range(meta["num_layers"])]


def chance_state(z):
    """Where a statistic stands, from its z-score against chance: above, at or below chance (|z| > 3)."""
    if z > 3:
        return "above chance"
    if z < -3:
        return "below chance"
    return "at chance"


def _se(level, count):
    """Standard error of a mean of ``count`` independent chance draws (nan when sd is unknown or 0)."""
    sd = level.get("sd") if level else None
    return sd / np.sqrt(count) if sd else float("nan")


def _z(observed, level, count):
    """:func:`qkalign.stats.chance.z_score` of a mean of ``count`` heads, for a level as stored in the result (a dict)."""
    return float(z_score(observed, ChanceLevel(**level), count))


def chance_verdict(result):
    """The verdict against chance: the means over the ``H (L - 1)`` layer-heads to the anchor (anchor excluded) of the
    operator cosine and of the subspace cosine, each as ``(observed, chance level dict, s.e., z)``, and how many layers
    are above chance at z > 3 on their own. None for one layer or without chance levels."""
    meta, chance = result.meta, result.chance
    L, H, anchor = meta["num_layers"], meta["num_heads"], meta["anchor"]
    if L < 2 or chance is None:
        return None
    others = np.arange(L) != anchor
    count = H * (L - 1)
    out = {"count": count}
    for key, values, level in (("operator_cos", result.rescale["mean_cos"], chance["operator_cos"]),
                               ("pa_mean_cos", result.principal_angles["mean_cos"], chance["pa_mean_cos"])):
        observed = float(values[others].mean())
        out[key] = (observed, level, _se(level, count), _z(observed, level, count))
    out["layers_above"] = int(sum(_z(float(result.rescale["mean_cos"][layer]), chance["operator_cos"], H) > 3
                                  for layer in range(L) if layer != anchor))
    return out


def _chance_verdict_lines(result):
    """The verdict measured against chance: lines placed right below the seed's verdict."""
    meta, verdict = result.meta, chance_verdict(result)
    L, k = meta["num_layers"], meta["topk"]
    if verdict is None:
        return ["  [qkalign] vs chance: one layer, nothing to compare"]
    count = verdict["count"]
    op, op_level, op_se, z_op = verdict["operator_cos"]
    pa, pa_level, pa_se, z_pa = verdict["pa_mean_cos"]
    return [
        f"  [qkalign] vs chance: operator cos-sim to anchor (anchor excluded) {op:+.4f}, chance "
        f"{op_level['mean']:+.4f} ± {op_se:.4f} (s.e. over {count} layer-heads): z = {z_op:+.1f}",
        f"  [qkalign] vs chance: top-{k} eigensubspace mean cos to anchor {pa:.4f}, chance "
        f"{pa_level['mean']:.4f} ± {pa_se:.4f}: z = {z_pa:+.1f}",
        f"  [qkalign] {chance_state(z_op).upper()}: the operators are {z_op:+.1f} standard errors from unrelated operators; "
        f"{verdict['layers_above']} of {L - 1} layers are above chance at z > 3 on their own",
    ]


#: The statistics of the all-pairs summary, in its order.
PAIR_SUMMARY_KEYS = ("operator_cos", "resid_frac", "pa_mean_cos", "pa_min_cos", "top1_overlap", "spectral_cos",
                     "spectral_abs_cos", "sign_agreement")


def pairs_summary(result):
    """The all-pairs summary: per statistic ``(name, offdiag, adjacent, far, chance mean, chance sd of one head)``,
    means over the heads and over the off-diagonal, adjacent and far (layer distance >= L // 2) pairs; and that
    distance."""
    pairs, chance, meta = result.pairs, result.chance or {}, result.meta
    L = meta["num_layers"]
    k = result.by_distance["sign_agreement_k"]
    far_from = max(L // 2, 1)
    far = np.abs(np.subtract.outer(np.arange(L), np.arange(L))) >= far_from
    offdiag = ~np.eye(L, dtype=bool)
    rows = []
    for key in PAIR_SUMMARY_KEYS:
        if key == "sign_agreement":
            i = pairs[key]["k"].index(k)
            matrix, level = pairs[key]["mean"][i], chance.get(key)
            level = level and {"mean": level["mean"][i], "sd": level["sd"][i]}
            name = f"sign_agree@top{k}"
        else:
            matrix, level, name = pairs[key]["mean"], chance.get(key), key
        values = [matrix[offdiag].mean() if L > 1 else np.nan, np.diagonal(matrix, 1).mean() if L > 1 else np.nan,
                  matrix[far].mean() if far.any() else np.nan]
        mean = level["mean"] if level else np.nan
        sd = level["sd"] if level and level.get("sd") is not None else np.nan
        rows.append((name, *values, mean, sd))
    return rows, far_from


def _pairs_section(result):
    H = result.meta["num_heads"]
    rows, far_from = pairs_summary(result)
    out = ["", f"=== [qkalign] (e) All layer pairs, mean over {H} heads ==="]
    out.append(f"    {'statistic':<18} {'offdiag':>8} {'adjacent':>8} {'far':>8} {'chance':>8} {'sd(head)':>9}")
    for name, offdiag, adjacent, far, mean, sd in rows:
        out.append(f"    {name:<18} {offdiag:>8.4f} {adjacent:>8.4f} {far:>8.4f} {mean:>8.4f} {sd:>9.4f}")
    out.append(f"  [qkalign] far = layer distance >= {far_from}; chance = unrelated operators of this shape, "
               "sd(head) = sd of one head's value")
    return out


def _distance_section(result):
    prof, chance, meta = result.by_distance, result.chance or {}, result.meta
    H, k = meta["num_heads"], prof["sign_agreement_k"]
    out = ["", "=== [qkalign] (f) Operator vs spectral vs eigenvector similarity by layer distance ==="]
    out.append(f"    {'dist':>4} {'op_cos':>7} {'spec_cos':>8} {'|spec|cos':>9} {'pa_mean':>7} {'top1':>7} "
               f"{'sign@' + str(k):>8}")
    for i, dist in enumerate(prof["distance"]):
        out.append(f"    {dist:>4} {prof['operator_cos'][i]:>+7.4f} {prof['spectral_cos'][i]:>+8.4f} "
                   f"{prof['spectral_abs_cos'][i]:>9.4f} {prof['pa_mean_cos'][i]:>7.4f} "
                   f"{prof['top1_overlap'][i]:>7.4f} {prof['sign_agreement'][i]:>8.3f}")
    if chance:
        ks = result.pairs["sign_agreement"]["k"]
        out.append(f"  {'chance':>6} {chance['operator_cos']['mean']:>+7.4f} {chance['spectral_cos']['mean']:>+8.4f} "
                   f"{chance['spectral_abs_cos']['mean']:>9.4f} {chance['pa_mean_cos']['mean']:>7.4f} "
                   f"{chance['top1_overlap']['mean']:>7.4f} {chance['sign_agreement']['mean'][ks.index(k)]:>8.3f}")
        far = [i for i, dist in enumerate(prof["distance"]) if dist >= max((len(prof["distance"]) + 1) // 2, 1)]
        if far:
            count = H * len(far)

            def verdict(key):
                level = chance[key]
                obs = float(np.mean([prof[key][i] for i in far]))
                z = _z(obs, level, count)
                return obs, level["mean"], z, chance_state(z)

            spec, pa = verdict("spectral_abs_cos"), verdict("pa_mean_cos")
            out.append(f"  [qkalign] far layers (distance >= {prof['distance'][far[0]]}): spectral shape |lambda| cos "
                       f"{spec[0]:.4f} vs chance {spec[1]:.4f} (z = {spec[2]:+.1f}, {spec[3]}); eigenvector subspaces "
                       f"{pa[0]:.4f} vs chance {pa[1]:.4f} (z = {pa[2]:+.1f}, {pa[3]})")
            out.append("  [qkalign] note: unrelated operators of this shape already have a |lambda| spectral cosine of "
                       f"{chance['spectral_abs_cos']['mean']:.4f}: spectral shape alone says little about shared operators")
    return out


def _inertia_section(result):
    meta, chance = result.meta, result.chance or {}
    L, k = meta["num_layers"], meta["topk"]
    out = ["", "=== [qkalign] (g) Inertia-aware sign statistics ==="]
    fp = result.frac_positive
    out.append(f"  full-spectrum fraction positive (0.5 for every full-rank head by Sylvester's law of inertia, "
               f"a check): min {fp.min():.3f}  max {fp.max():.3f}")
    extra = ""
    if chance:
        extra = (f"   chance: frac+ {chance['frac_positive_topk']['mean']:.3f} ± {chance['frac_positive_topk']['sd']:.3f}, "
                 f"mass {chance['signed_mass']['mean']:+.3f} ± {chance['signed_mass']['sd']:.3f} (one head)")
    out.append(f"    {'L':>3} {'frac+top' + str(k):>11} {'signed_mass':>11}{extra}")
    for layer in range(L):
        out.append(f"    {layer:>3} {result.frac_positive_topk[layer].mean():>11.3f} "
                   f"{result.signed_mass[layer].mean():>+11.4f}")
    return out


def _chance_section(result):
    out = ["", "=== [qkalign] Chance levels: unrelated operators of this shape (one head) ==="]
    out.append(f"    {'statistic':<22} {'mean':>9} {'sd':>9}  method")
    for name, level in result.chance.items():
        mean, sd = level["mean"], level["sd"]
        if isinstance(mean, (list, np.ndarray)):  # one level per k (a result read back from JSON: an array)
            mean, sd = mean[-1], sd[-1]
            name = f"{name}@top{result.sign_agreement['k'][-1]}"
        sd_text = f"{sd:>9.4g}" if sd is not None else f"{'-':>9}"
        how = level["method"] + (f" (seed {level['seed']}, {level['samples']} samples)" if level.get("seed") is not None else "")
        out.append(f"    {name:<22} {mean:>9.4g} {sd_text}  {how}{_exactness(level)}")
    out.append("  [qkalign] exact = holds by construction (a symmetry such as Q -> -Q, or a closed form), "
               "not a sample mean or an approximation")
    return out


def _exactness(level):
    """``", mean exact"``-style words for the numbers of a chance level that are exact by construction."""
    exact = [part for part in ("mean", "sd") if level.get(f"exact_{part}")]
    return f", {' and '.join(exact)} exact" if exact else ""


def _matched_section(result):
    m, pa = result.matched, result.principal_angles
    meta = result.meta
    out = ["", f"=== [qkalign] Head matching: heads paired by best assignment vs anchor L={meta['anchor']} ==="]
    out.append(f"    {'L':>3} {'pa_index':>8} {'pa_match':>8} {'top1_idx':>8} {'top1_mat':>8} {'moved':>5}")
    ta = m["to_anchor"]
    for layer in range(meta["num_layers"]):
        out.append(f"    {layer:>3} {pa['mean_cos'][layer]:>8.4f} {ta['pa_mean_cos'][layer]:>8.4f} "
                   f"{pa['top1_overlap'][layer]:>8.4f} {ta['top1_overlap'][layer]:>8.4f} {int(ta['heads_moved'][layer]):>5}")
    level = (result.chance or {}).get("matched_pa_mean_cos")
    if level:
        out.append(f"  [qkalign] matching alone lifts random heads to pa_mean {level['mean']:.4f} ± {level['sd']:.4f} "
                   f"(index-matched chance {result.chance['pa_mean_cos']['mean']:.4f})")
    adj = m["adjacent"]
    if len(adj["pa_mean_cos"]):
        out.append(f"  [qkalign] adjacent layers: pa_mean index {np.mean(np.diagonal(result.pairs['pa_mean_cos']['mean'], 1)) if result.pairs else float('nan'):.4f}"
                   f" vs matched {adj['pa_mean_cos'].mean():.4f}; heads moved per layer pair: {adj['heads_moved'].mean():.1f}")
    return out


def format_extended_report(result):
    """The sections beyond the seed (all pairs, distance profile, inertia, chance, matching)."""
    out = []
    if result.pairs is not None:
        out += _pairs_section(result)
        out += _distance_section(result)
        out += _inertia_section(result)
    if result.chance is not None:
        out += _chance_section(result)
    if result.matched is not None:
        out += _matched_section(result)
    if result.rope_profile is not None:
        out += _rope_section(result)
    if result.rope_bands is not None:
        out += _bands_section(result)
    if result.symmetry is not None:
        out += _symmetry_section(result)
    if result.symmetry_split is not None:
        out += _symmetry_split_section(result)
    return "\n".join(out) + "\n" if out else ""


def _symmetry_section(result):
    """(j) how symmetric each head's operator is: s = <g, g^T> / ||g||^2 per layer (head mean, range) against chance;
    with the layers' whole operators, their s and directionality d, each with its z against chance."""
    sym, meta = result.symmetry, result.meta
    chance, whole = sym["chance"], "layer_score" in sym
    out = ["", f"=== [qkalign] (j) Symmetry of each head's operator: s = <g, g^T>/||g||^2 = (||S||^2 - ||A||^2)/||g||^2, "
               f"{meta['num_heads']} heads ===",
           "   layer   mean s     min s     max s   z(mean)   layer s  z(layer)  directionality"
           + ("    z(dir)" if whole else "")]
    for layer, (mean, z) in enumerate(zip(sym["per_layer"], sym["z_per_layer"])):
        row = sym["per_head"][layer]
        line = f"  {layer:6d}  {mean:+.4f}   {np.nanmin(row):+.4f}   {np.nanmax(row):+.4f}  {z:+8.1f}"
        if whole:
            line += (f"   {sym['layer_score'][layer]:+.4f}  {sym['layer_z'][layer]:+8.1f}        "
                     f"{sym['directionality'][layer]:+.4f}  {sym['directionality_z'][layer]:+8.1f}")
        out.append(line)
    out.append(f"  [qkalign] all heads: mean s {sym['mean']:+.4f}, median {sym['median']:+.4f}; chance (unrelated "
               f"operators) {chance['mean']:+.4f} ± {chance['sd']:.4f} per head: z = {sym['z']:+.1f}")
    if whole:
        level = sym["directionality_chance"]
        out.append(f"  [qkalign] each layer's whole operator (heads summed), as Saponati et al. score it: median s "
                   f"{sym['layer_score_median']:+.4f} (chance as per head), median directionality "
                   f"{sym['directionality_median']:+.4f} (< 0: key-side columns stand out)")
        out.append(f"  [qkalign] directionality chance (unrelated Gaussian factors of this shape) {level['mean']:+.4f} "
                   f"± {level['sd']:.4f} per layer ({level['method']}, {level['samples']} draws); mean over layers "
                   f"{sym['directionality_mean']:+.4f}: z = {sym['directionality_mean_z']:+.1f}")
    out.append("  [qkalign] s = 1 symmetric, -1 skew (directional), ~0 unrelated Q and K; Saponati et al.'s symmetry "
               "score (ICML 2025), per head")
    return out


def _rope_section(result):
    """(h) the operator the model applies at each rotary distance: cosines across layers, head norms."""
    profile, meta = result.rope_profile, result.meta
    L, H = meta["num_layers"], meta["num_heads"]
    level = (result.chance or {}).get("operator_cos")
    out = ["", f"=== [qkalign] (h) Rotary distance profile: g(D) = W_K^T R(D) W_Q, mean over {H} heads ===",
           "       D  adjacent  to_anchor  z(to_anchor)  offdiag   head norm / D=0 (median, min, max)"
           + ("   mean s" if "symmetry" in profile else "")]
    for t, delta in enumerate(profile["deltas"]):
        ratio = profile["norm_ratio"][t]
        z = f"{_z(profile['to_anchor'][t], level, (L - 1) * H):+12.1f}" if level and L > 1 else f"{'':>12}"
        symmetry = f"    {profile['symmetry'][t]:+.4f}" if "symmetry" in profile else ""
        out.append(f"  {delta:6d}   {profile['adjacent'][t]:+.4f}    {profile['to_anchor'][t]:+.4f}  {z}  "
                   f"{profile['offdiag'][t]:+.4f}   {np.nanmedian(ratio):.3f} {np.nanmin(ratio):.3f} "
                   f"{np.nanmax(ratio):.3f}{symmetry}")
    out.append(f"  [qkalign] D = query position - key position; to_anchor: anchor L={meta['anchor']} excluded; "
               "chance as for the operator cosine (a rotation of unrelated operators is unrelated)")
    if "symmetry" in profile:
        out.append("  [qkalign] mean s: the heads' symmetry score <g(D), g(D)^T>/||g(D)||^2 at each distance "
                   "(section (j)); the rotation moves energy between the symmetric and skew parts")
    return out


def _bands_section(result):
    """(i) the rotary frequency bands: each group's energy share and the cross-layer cosines of its operator."""
    bands, meta = result.rope_bands, result.meta
    L, H, groups = meta["num_layers"], meta["num_heads"], bands["groups"]
    level = (result.chance or {}).get("operator_cos")
    shares, cos = np.asarray(bands["group_share"]), bands["group_cos"]
    out = ["", f"=== [qkalign] (i) Rotary frequency bands: mean over D = 0..C-1, C = {bands['window']}, "
               f"mean over {H} heads ===",
           f"    {'group':<9} {'pairs':>5} {'wavelength':>17}  {'share':>5} {'min':>5} {'max':>5}  {'adjacent':>8} "
           f"{'to_anchor':>9} {'z':>7} {'offdiag':>8}"]
    for g, name in enumerate(groups):
        pairs, wavelengths = _group_pairs(bands, g)
        z = f"{_z(cos['to_anchor'][g], level, (L - 1) * H):+7.1f}" if level and L > 1 else f"{'':>7}"
        out.append(f"    {name:<9} {pairs:>5} {wavelengths:>17}  {np.nanmean(shares[:, g]):.3f} "
                   f"{np.nanmin(shares[:, g]):.3f} {np.nanmax(shares[:, g]):.3f}  {cos['adjacent'][g]:+8.4f} "
                   f"{cos['to_anchor'][g]:+9.4f} {z} {cos['offdiag'][g]:+8.4f}")
    ratio = np.asarray(bands["band_sum_ratio"])
    out.append("  [qkalign] high: wavelength <= sqrt(C), mid: <= C, low: > C; share: of the band energies "
               "mean_D ||g_p(D)||^2, layer min and max of the head mean")
    out.append(f"  [qkalign] interference left out: sum of band energies / mean_D ||g(D)||^2 = {np.nanmedian(ratio):.3f} "
               f"(median; min {np.nanmin(ratio):.3f}, max {np.nanmax(ratio):.3f})")
    out.append(f"  [qkalign] cosines of the group operators g_G across layers; to_anchor: anchor L={meta['anchor']} "
               "excluded, z against the operator cosine's chance level")
    out.append("  [qkalign] part of the cross-layer inner products (sum over L != L' and heads): " + "  ".join(
        f"{name} {share:.3f}" for name, share in zip(groups, bands["cross_share"])))
    share_mean, dominant = np.asarray(bands["share_mean"]), np.asarray(bands["dominant_heads"])
    out.append(f"    {'L':>3} " + " ".join(f"{name[:9]:>9}" for name in groups)
               + f"   heads led by {'/'.join(name[0] for name in groups)}   top band (share)")
    for layer in range(L):
        top = int(np.nanargmax(share_mean[layer])) if np.isfinite(share_mean[layer]).any() else 0
        label = "unrotated" if top == share_mean.shape[1] - 1 else f"pair {top}"
        out.append(f"    {layer:>3} " + " ".join(f"{shares[layer, g]:>9.3f}" for g in range(len(groups)))
                   + f"   {'/'.join(str(int(c)) for c in dominant[layer]):>{14 + len(groups)}}   "
                   f"{label} ({share_mean[layer, top]:.3f})")
    return out


def _group_pairs(bands, group):
    """``(pairs, wavelengths)`` texts of one group: its pair count and wavelength range (per kind of layer, "/")."""
    if bands["groups"][group] == "unrotated":
        return "-", "none"
    recorded, wavelengths = bands["group_of_pair"], bands["wavelengths"]
    if not isinstance(recorded, dict):
        recorded, wavelengths = {"all": recorded}, {"all": wavelengths}
    counts, chosen = [], []
    for kind, of_pair in recorded.items():
        members = [w for g, w in zip(of_pair, wavelengths[kind]) if g == group]
        counts.append(str(len(members)))
        chosen += [np.inf if w is None else w for w in members]
    span = f"{min(chosen):.3g}-{max(chosen):.3g}" if chosen else "none"
    return "/".join(counts), span


def _symmetry_split_section(result):
    """(k) the cross-layer operator cosine split into the symmetric and skew parts: each half's cosines across layers,
    and the share of the agreement it carries."""
    split, meta = result.symmetry_split, result.meta
    L, H, anchor = meta["num_layers"], meta["num_heads"], meta["anchor"]
    out = ["", f"=== [qkalign] (k) Symmetric and skew parts across layers: cos_S = <S_L, S_L'>/(||S_L|| ||S_L'||), "
               f"S = (g + g^T)/2, cos_A likewise for A = (g - g^T)/2, mean over {H} heads ===",
           f"    {'part':<4} {'adjacent':>8} {'to_anchor':>9} {'offdiag':>8} {'z(adj)':>8} {'z(anchor)':>9} "
           f"{'z(offdiag)':>10}"]
    for part in ("S", "A"):
        s = split[part]
        out.append(f"    {part:<4} {s['adjacent']:>+8.4f} {s['to_anchor']:>+9.4f} {s['offdiag']:>+8.4f} "
                   f"{s['z_adjacent']:>+8.1f} {s['z_to_anchor']:>+9.1f} {s['z_offdiag']:>+10.1f}")
    others = np.arange(L) != anchor
    cos = result.operator_cos
    off = ~np.eye(L, dtype=bool)
    g = [result.adjacent["mean"], float(cos[others, anchor].mean()) if L > 1 else np.nan,
         float(cos[off].mean()) if L > 1 else np.nan]
    out.append(f"    {'g':<4} {g[0]:>+8.4f} {g[1]:>+9.4f} {g[2]:>+8.4f}   (the operator cosine, for comparison)")
    shares = split["offdiag_agreement"]
    out.append(f"  [qkalign] cross-layer agreement, the mean off-diagonal operator cosine {shares['operator_cos']:+.4f} = "
               f"{shares['S']:+.4f} (S) {shares['A']:+.4f} (A): fraction carried by S {split['frac_S']:.3f}, by A "
               f"{split['frac_A']:.3f} (weighted by the operators' norms: S {split['frac_S_weighted']:.3f})")
    out.append(f"    {'L':>3} {'cos_S->anchor':>13} {'cos_A->anchor':>13} {'cos_S(L,L+1)':>12} {'cos_A(L,L+1)':>12}")
    for layer in range(L):
        nxt = [f"{split[f'cos_{part}'][layer, layer + 1]:>+12.4f}" if layer + 1 < L else f"{'':>12}"
               for part in ("S", "A")]
        out.append(f"    {layer:>3} {split['to_anchor_per_layer']['S'][layer]:>+13.4f} "
                   f"{split['to_anchor_per_layer']['A'][layer]:>+13.4f} {nxt[0]} {nxt[1]}".rstrip())
    chance = split["chance"]
    out.append(f"  [qkalign] to_anchor: anchor L={anchor} excluded; chance (unrelated operators): cos_S "
               f"{chance['S']['mean']:+.4f} ± {chance['S']['sd']:.4f}, cos_A {chance['A']['mean']:+.4f} ± "
               f"{chance['A']['sd']:.4f} per head; z of the means over heads and layer pairs")
    return out
