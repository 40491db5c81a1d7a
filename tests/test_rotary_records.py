"""A grams JSON whose rotary records (rope_profile, rope_bands) are malformed gets one error line from analyze."""

import json
import shutil

import pytest

pytest.importorskip("transformers")

from qkalign.files.seed_format import save  # noqa: E402
from qkalign.testing.gguf_files import build_model  # noqa: E402
from qkalign.testing.refusals import one_error_line  # noqa: E402
from qkalign.weights.measure import measure  # noqa: E402


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    build_model("llama", root / "model")
    save(measure(root / "model", topk=2, deltas=(0, 4), progress=False), str(root / "p"))
    return root, json.loads((root / "p.json").read_text())


def variant(root, doc, name, key, value):
    """A copy of the pair with ``doc[key]`` replaced (``value`` a function of the old one)."""
    changed = dict(doc)
    changed[key] = value(doc[key])
    (root / f"{name}.json").write_text(json.dumps(changed))
    shutil.copy(root / "p-eigdirs.safetensors", root / f"{name}-eigdirs.safetensors")
    return root / f"{name}.json"


CASES = [
    ("rope_profile", lambda p: "x", "rope_profile"),
    ("rope_profile", lambda p: dict(p, gram=[[1.0]]), "rope_profile.gram"),
    ("rope_profile", lambda p: dict(p, deltas=[0, -4]), "rope_profile.deltas"),
    ("rope_profile", lambda p: dict(p, transpose_inner=[1, 2]), "rope_profile.transpose_inner"),
    ("rope_bands", lambda b: dict(b, energy="x"), "rope_bands.energy"),
    ("rope_bands", lambda b: dict(b, energy=b["energy"][:1]), "rope_bands.energy"),
    ("rope_bands", lambda b: dict(b, groups=[]), "rope_bands.groups"),
    ("rope_bands", lambda b: dict(b, group_gram=b["group_gram"][:1]), "rope_bands.group_gram"),
    ("rope_bands", lambda b: dict(b, group_of_pair=[9] * len(b["group_of_pair"])), "rope_bands.group_of_pair"),
    ("rope_bands", lambda b: dict(b, group_of_pair={"x": b["group_of_pair"]}, layer_kinds=["y", "y"]),
     "rope_bands.layer_kinds"),
]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_malformed_rotary_records_are_one_line(measured, cli, index):
    root, doc = measured
    key, change, field = CASES[index]
    path = variant(root, doc, f"bad{index}", key, change)
    one_error_line(cli("analyze", path), field, path.name)


def test_well_formed_records_pass(measured, cli):
    root, doc = measured
    run = cli("analyze", root / "p.json")
    assert run.returncode == 0 and "(h) Rotary distance profile" in run.stdout and "(i) Rotary frequency" in run.stdout
