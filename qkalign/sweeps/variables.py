"""The variables of a sweep: ``analyze``'s JSON flattened into named arrays with named dimensions.

Every leaf of ``AnalysisResult.to_dict()`` becomes one variable, named after its key path
joined by dots (``pairs.operator_cos.mean``): numbers (and nested lists of numbers) as float64
arrays, ``null`` as NaN; strings (``verdict.label``, ``meta.backend``, ``chance.*.method``) as
strings. Dimension names come from :data:`DIMENSIONS`, matched on the key path; a key the
table does not know (the JSON only ever gains keys) gets dimensions of its own,
``<name>.dim0``, ``<name>.dim1``, ..., so a newer analyze never breaks a sweep.
"""

from fnmatch import fnmatchcase

import numpy as np

#: Key-path pattern -> dimension names of the leaf's axes (first match wins).
#: layer, layer2: L; head: H; k: the sign-agreement k values; topk: eigen-directions kept;
#: distance: layer distances 1..L-1; adjacent: the L-1 adjacent-layer pairs; bound: [start, stop);
#: delta: the rotary distances Δ of ``rope_profile`` (their values: ``rope_profile.deltas``, per run, as the
#: distances measured differ between models); band: the rotary pairs by pair index, then the unrotated
#: dimensions (``rope_bands.wavelengths``, ``rope_bands.group_of_pair`` fill the pairs, NaN beyond; per kind
#: of layer ``rope_bands.wavelengths.<kind>``); group: ``rope_bands.groups`` (their names per run, a JSON list).
DIMENSIONS = (
    ("operator_cos", ("layer", "layer2")),
    ("operator_cos_per_head", ("layer", "layer2", "head")),
    ("to_anchor.*", ("layer",)),
    ("rescale.*", ("layer",)),
    ("sign_agreement.per_layer_head", ("k", "layer", "head")),
    ("sign_agreement.*", ("k",)),
    ("frac_positive", ("layer",)),
    ("principal_angles.cosines", ("layer", "head", "topk")),
    ("principal_angles.*", ("layer",)),
    ("layer_ranges.*", ("bound",)),
    ("pairs.sign_agreement.k", ("k",)),
    ("pairs.sign_agreement.mean", ("k", "layer", "layer2")),
    ("pairs.sign_agreement.per_head", ("k", "layer", "layer2", "head")),
    ("pairs.*.mean", ("layer", "layer2")),
    ("pairs.*.per_head", ("layer", "layer2", "head")),
    ("by_distance.*", ("distance",)),
    ("signed_mass", ("layer", "head")),
    ("frac_positive_topk", ("layer", "head")),
    ("chance.sign_agreement.*", ("k",)),
    ("matched.to_anchor.assignment", ("layer", "head")),
    ("matched.to_anchor.sign_agreement", ("layer", "k")),
    ("matched.to_anchor.*", ("layer",)),
    ("matched.adjacent.assignment", ("adjacent", "head")),
    ("matched.adjacent.sign_agreement", ("adjacent", "k")),
    ("matched.adjacent.*", ("adjacent",)),
    ("rope_profile.to_anchor_per_layer", ("delta", "layer")),
    ("rope_profile.norm_ratio", ("delta", "layer", "head")),
    ("rope_profile.symmetry_per_layer", ("delta", "layer")),
    ("rope_profile.*", ("delta",)),  # deltas, adjacent, to_anchor, offdiag
    ("rope_bands.share", ("layer", "head", "band")),
    ("rope_bands.share_mean", ("layer", "band")),
    ("rope_bands.group_share", ("layer", "group")),
    ("rope_bands.dominant_heads", ("layer", "group")),
    ("rope_bands.band_sum_ratio", ("layer", "head")),
    ("rope_bands.wavelengths*", ("band",)),  # (P,), or one per kind of layer: wavelengths.<kind>
    ("rope_bands.group_of_pair*", ("band",)),
    ("rope_bands.group_cos.to_anchor_per_layer", ("group", "layer")),
    ("rope_bands.group_cos.*", ("group",)),
    ("symmetry.per_head", ("layer", "head")),
    ("symmetry.*", ("layer",)),  # per_layer, z_per_layer, layer_score, layer_z, directionality (scalars: no dims)
    ("symmetry_split.*_per_head", ("layer", "layer2", "head")),
    ("symmetry_split.to_anchor_per_layer.*", ("layer",)),
    ("symmetry_split.cos_*", ("layer", "layer2")),
    ("symmetry_split.agreement_*", ("layer", "layer2")),
)


def dimensions_of(name, ndim):
    """Dimension names of variable ``name`` with ``ndim`` axes (the run axis not counted)."""
    for pattern, dims in DIMENSIONS:
        if fnmatchcase(name, pattern) and len(dims) == ndim:
            return dims
    return tuple(f"{name}.dim{axis}" for axis in range(ndim))


def flatten(result_dict, prefix=""):
    """``{name: value}`` of every leaf of a result dict: float64 arrays, or ``str`` for strings.

    Lists of strings (none today) are kept as one string, their JSON text.
    """
    out = {}
    for key, value in result_dict.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, str):
            out[name] = value
        elif _has_strings(value):
            import json

            out[name] = json.dumps(value)
        else:
            out[name] = np.asarray(value if value is not None else np.nan, dtype=np.float64)
    return out


def _has_strings(value):
    if isinstance(value, str):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_strings(v) for v in value)
    return False
