"""The rotary figures of ``qkalign plot`` / ``analyze --plot`` and the rotary sweep variables.

A tiny Llama (RoPE) is measured and analysed, so its ``rope_profile`` is the real one; ``rope_bands`` is built
by hand in analyze's layout (qkalign.testing.fake_rope), with known group edges.
"""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
from matplotlib.image import imread  # noqa: E402

from qkalign.stats.analyze import analyze  # noqa: E402
from qkalign.sweeps.variables import dimensions_of, flatten  # noqa: E402
from qkalign.testing.fake_rope import fake_rope_bands  # noqa: E402
from qkalign.testing.model_folders import write_model  # noqa: E402
from qkalign.testing.refusals import one_error_line  # noqa: E402
from qkalign.views.analysis_figures import FIGURE_NAMES, ROPE_FIGURE_NAMES, checked_result  # noqa: E402
from qkalign.views.figure_files import pyplot as _pyplot  # noqa: E402
from qkalign.views.rope_figures import band_order, group_boundaries, write_rope_figures  # noqa: E402
from qkalign.weights.measure import measure  # noqa: E402

L, H, KV, D_HEAD, N = 4, 4, 2, 8, 24
PAIRS = D_HEAD // 2


@pytest.fixture(scope="module")
def rotary(tmp_path_factory):
    """(model folder, result dict with the measured rope_profile and a hand-built rope_bands)."""
    folder = write_model(tmp_path_factory.mktemp("llama"), "llama", shape=(L, H, KV, D_HEAD, N), seed=4).folder
    doc = analyze(measure(folder, topk=2, deltas=(0, 1, 3, 16, 100), progress=False), backend="numpy").to_dict()
    assert doc["rope_profile"]["deltas"] == [0, 1, 3, 16, 100]
    doc["rope_bands"] = fake_rope_bands(L, H, PAIRS, edges=[1, 3], unrotated=True)
    return folder, doc


def copy(doc):
    return json.loads(json.dumps(doc))


def test_rotary_figures_are_drawn_and_counted_like_the_others(rotary, cli, tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(rotary[1]))
    proc = cli("plot", tmp_path / "r.json", tmp_path / "figs")
    expected = [name for name in FIGURE_NAMES if name != "symmetry_split.png"]  # measured without --symmetry-split
    assert proc.returncode == 0 and proc.stderr == f"wrote {len(expected)} figures to {tmp_path / 'figs'}\n"
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(expected)
    for name in ROPE_FIGURE_NAMES:
        image = imread(tmp_path / "figs" / name)
        assert image.shape[0] > 500 and image.std() > 0.05  # drawn, not blank


def rope_figures(doc, out_dir):
    """Only the rotary figures of ``doc``, as write_figures draws them (the others are tests/test_beyond_seed.py's)."""
    meta, _, _, chance, (profile, bands) = checked_result(doc, "r.json")
    out_dir.mkdir()
    return [p.name for p in write_rope_figures(_pyplot(), meta, profile, bands, chance.get("operator_cos"), out_dir)]


@pytest.mark.parametrize("absent", [
    lambda d: (d.pop("rope_profile"), d.pop("rope_bands")),  # an older JSON, or no RoPE
    lambda d: d.update(rope_profile=None, rope_bands=None),
])
def test_without_rotary_data_no_rotary_figure(rotary, tmp_path, absent):
    doc = copy(rotary[1])
    absent(doc)
    assert rope_figures(doc, tmp_path / "figs") == [] and not any((tmp_path / "figs").iterdir())


def test_bands_of_several_kinds_of_layers_are_drawn(rotary, tmp_path):
    """Gemma 3's layout: wavelengths and groups per kind of layer ({kind: (P,)}, with layer_kinds)."""
    doc = copy(rotary[1])
    doc["rope_profile"] = None
    doc["rope_bands"] = fake_rope_bands(L, H, PAIRS, edges=[1, 3], kinds=["local", "local", "local", "global"], seed=3)
    meta, _, _, _, (_, bands) = checked_result(doc, "r.json")
    wavelengths = np.array(doc["rope_bands"]["wavelengths"]["local"])
    np.testing.assert_array_equal(bands["wavelengths"], [wavelengths] * 3 + [2 * wavelengths])
    assert bands["kind"] == "local" and bands["group_of_pair"].tolist() == [[0, 1, 1, 2]] * 3 + [[0, 0, 1, 1]]
    assert rope_figures(doc, tmp_path / "figs") == [ROPE_FIGURE_NAMES[2]]


def test_only_the_part_present_is_drawn(rotary, tmp_path):
    doc = copy(rotary[1])
    doc.pop("rope_bands")
    assert rope_figures(doc, tmp_path / "p") == list(ROPE_FIGURE_NAMES[:2])
    doc = copy(rotary[1])
    doc["rope_profile"] = None
    assert rope_figures(doc, tmp_path / "b") == [ROPE_FIGURE_NAMES[2]]


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d.update(rope_profile=[1, 2]), "rope_profile: expected an object (or null), found list"),
    (lambda d: d["rope_profile"].update(deltas=[]), "rope_profile.deltas"),
    (lambda d: d["rope_profile"].update(deltas=[0, -1, 3, 16, 100]), "rope_profile.deltas: expected non-negative"),
    (lambda d: d["rope_profile"].update(deltas=[0, 1.5, 3, 16, 100]), "rope_profile.deltas"),
    (lambda d: d["rope_profile"].pop("deltas"), "rope_profile.deltas"),
    (lambda d: d["rope_profile"].update(adjacent=[0.1] * 4), "rope_profile.adjacent: expected numbers of shape (5,)"),
    (lambda d: d["rope_profile"].update(to_anchor="x"), "rope_profile.to_anchor"),
    (lambda d: d["rope_profile"]["to_anchor_per_layer"].pop(), "rope_profile.to_anchor_per_layer"),
    (lambda d: d["rope_profile"].update(norm_ratio=[[[1.0] * (H + 1)] * L] * 5), "rope_profile.norm_ratio"),
    (lambda d: d.update(rope_bands="bands"), "rope_bands: expected an object (or null), found str"),
    (lambda d: d["rope_bands"].update(window=0), "rope_bands.window"),
    (lambda d: d["rope_bands"].update(groups=["high", "high", "low", "unrotated"]), "rope_bands.groups"),
    (lambda d: d["rope_bands"].update(groups=[]), "rope_bands.groups"),
    (lambda d: d["rope_bands"].update(wavelengths=[[[1.0]]]), "rope_bands.wavelengths"),
    (lambda d: d["rope_bands"].update(wavelengths=[1.0, -2.0, 3.0, 4.0]), "rope_bands.wavelengths"),
    (lambda d: d["rope_bands"].update(wavelengths=[]), "rope_bands.wavelengths: expected one value per rotary pair"),
    (lambda d: d["rope_bands"].update(wavelengths={"a": [1.0] * PAIRS}), "rope_bands.layer_kinds"),
    (lambda d: d["rope_bands"].update(wavelengths={"all": [1.0] * PAIRS, "b": [1.0]}, layer_kinds=["all"] * 3 + ["b"]),
     "rope_bands.wavelengths: expected one value per rotary pair, as many for every kind"),
    (lambda d: d["rope_bands"].update(group_of_pair=[0, 1, 2]), "rope_bands.group_of_pair: expected one group per"),
    (lambda d: d["rope_bands"].update(group_of_pair=[0, 1, 2, 4]), "rope_bands.group_of_pair: expected indices"),
    (lambda d: d["rope_bands"].update(group_of_pair=[0, 1, None, 2]), "rope_bands.group_of_pair: expected indices"),
    (lambda d: d["rope_bands"].update(share_mean=[[0.2] * PAIRS] * L), "rope_bands.share_mean: expected numbers "
                                                                      f"of shape ({L}, {PAIRS + 1})"),
    (lambda d: d["rope_bands"].update(group_share=[[0.5] * 3] * L), "rope_bands.group_share"),
    (lambda d: d["rope_bands"].pop("group_cos"), "rope_bands.group_cos: expected an object, found it missing"),
    (lambda d: d["rope_bands"]["group_cos"].update(offdiag=[0.1, "a", 0.2, 0.3]), "rope_bands.group_cos.offdiag"),
])
def test_malformed_rotary_parts_are_one_error_line(rotary, cli, tmp_path, change, fragment):
    doc = copy(rotary[1])
    change(doc)
    (tmp_path / "r.json").write_text(json.dumps(doc))
    one_error_line(cli("plot", tmp_path / "r.json", tmp_path / "figs"), "r.json", fragment)
    assert not (tmp_path / "figs").exists()  # checked before anything is drawn


def test_bands_are_ordered_by_wavelength_and_split_where_the_group_changes():
    assert band_order(np.array([5.0, np.nan, 1.0, 5.0, 3.0])).tolist() == [2, 4, 0, 3, 1]  # null: never turns
    assert group_boundaries(np.array([[0, 0, 1, 1, 2], [0, 1, 1, 1, 1], [2, 2, 2, 2, 2], [0, 1, 0, 2, 2]])) == \
        [[2, 4], [1], [], [1, 2, 3]]


def test_rotary_sweep_variables_have_designed_dimensions(rotary):
    expected = {
        "rope_profile.deltas": ("delta",), "rope_profile.adjacent": ("delta",), "rope_profile.to_anchor": ("delta",),
        "rope_profile.offdiag": ("delta",), "rope_profile.to_anchor_per_layer": ("delta", "layer"),
        "rope_profile.norm_ratio": ("delta", "layer", "head"), "rope_profile.symmetry": ("delta",),
        "rope_profile.symmetry_per_layer": ("delta", "layer"),
        "rope_bands.window": (), "rope_bands.wavelengths": ("band",), "rope_bands.group_of_pair": ("band",),
        "rope_bands.share": ("layer", "head", "band"), "rope_bands.band_sum_ratio": ("layer", "head"),
        "rope_bands.dominant_heads": ("layer", "group"),
        "rope_bands.share_mean": ("layer", "band"), "rope_bands.group_share": ("layer", "group"),
        "rope_bands.group_cos.adjacent": ("group",), "rope_bands.group_cos.to_anchor": ("group",),
        "rope_bands.group_cos.offdiag": ("group",), "rope_bands.group_cos.to_anchor_per_layer": ("group", "layer"),
    }
    flat = flatten(rotary[1])
    rotary_names = {name for name in flat if name.startswith("rope_")}
    assert rotary_names == set(expected) | {"rope_bands.groups", "rope_bands.layer_kinds"}
    assert json.loads(flat["rope_bands.groups"]) == ["high", "mid", "low", "unrotated"]
    for name, dims in expected.items():
        assert dimensions_of(name, flat[name].ndim) == dims, name
    kinds = flatten({"rope_bands": fake_rope_bands(L, H, PAIRS, kinds=["local"] * 3 + ["global"])})
    for name in ("rope_bands.wavelengths.local", "rope_bands.wavelengths.global", "rope_bands.group_of_pair.local"):
        assert dimensions_of(name, kinds[name].ndim) == ("band",), name
    # the seed's to-anchor keys keep theirs
    assert dimensions_of("to_anchor.cos", 1) == ("layer",) and dimensions_of("matched.to_anchor.cos", 1) == ("layer",)
