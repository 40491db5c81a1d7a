"""``qkalign measure`` / ``qkalign analyze MODEL_DIR`` end to end, and every bad model folder.

Each case is a real ``python -m qkalign`` process; they start together in one fixture
(each spends seconds importing torch), then each test checks its own.
"""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from qkalign import load
from qkalign.testing.model_folders import write_model
from qkalign.testing.processes import run_concurrently
from qkalign.weights.measure import measure

pytestmark = pytest.mark.slow


def _tiny(folder, model_type="qwen3", **kwargs):
    return write_model(folder, model_type, seed=21, **kwargs).folder


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    (folder / "config.json").write_text(json.dumps(config))


def _edit_tensors(path, edit):
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def _bad_cases(root):
    """{name: (args, fragments the one error line must contain)}, with the folders written under ``root``."""
    cases = {}

    def folder(name, **kwargs):
        return _tiny(root / name, **kwargs)

    cases["no_directory"] = (["measure", root / "nope", "-o", root / "out"], ["nope", "no such directory"])
    f = folder("no_config")
    (f / "config.json").unlink()
    cases["no_config"] = (["measure", f, "-o", root / "out"], ["config.json", "no such file"])
    f = folder("no_weights")
    (f / "model.safetensors").unlink()
    cases["no_weights"] = (["measure", f, "-o", root / "out"], ["model.safetensors", "no weights file"])
    f = folder("pickle_weights")
    (f / "model.safetensors").rename(f / "pytorch_model.bin")
    cases["pickle_weights"] = (["measure", f, "-o", root / "out"], ["pytorch_model.bin", "safetensors"])
    f = folder("not_in_index", shards=2)
    index = json.loads((f / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.2.self_attn.k_proj.weight"]
    (f / "model.safetensors.index.json").write_text(json.dumps(index))
    cases["tensor_not_in_index"] = (["measure", f, "-o", root / "out"],
                                    ["model.safetensors.index.json", "model.layers.2.self_attn.k_proj.weight", "missing"])
    f = folder("not_in_shard", shards=2)
    index = json.loads((f / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["model.layers.1.self_attn.q_proj.weight"]
    _edit_tensors(f / shard, lambda t: t.pop("model.layers.1.self_attn.q_proj.weight"))
    cases["tensor_not_in_shard"] = (["measure", f, "-o", root / "out"],
                                    [shard, "model.layers.1.self_attn.q_proj.weight", "missing"])
    f = folder("shard_file_gone", shards=2)
    (f / "model-00002-of-00002.safetensors").unlink()
    cases["shard_file_missing"] = (["measure", f, "-o", root / "out"], ["model-00002-of-00002.safetensors", "no such file"])
    f = folder("shape")
    _edit_config(f, num_key_value_heads=4)
    cases["shape_disagrees_with_config"] = (["measure", f, "-o", root / "out"],
                                            ["model.layers.0.self_attn.k_proj.weight", "expected shape (32, 24)",
                                             "found (16, 24)"])
    f = folder("truncated")
    data = (f / "model.safetensors").read_bytes()
    (f / "model.safetensors").write_bytes(data[: len(data) - 500])
    cases["truncated_safetensors"] = (["measure", f, "-o", root / "out"], ["model.safetensors", "corrupt or truncated"])
    f = folder("corrupt")
    (f / "model.safetensors").write_bytes(b"\x00\x01not a safetensors file" * 40)
    cases["corrupt_safetensors"] = (["measure", f, "-o", root / "out"], ["model.safetensors", "corrupt or truncated"])
    f = folder("ok")
    cases["topk_beyond_spectrum"] = (["measure", f, "-o", root / "out", "--topk", "17"], ["--topk", "1..16", "17"])
    cases["topk_zero"] = (["measure", f, "-o", root / "out", "--topk", "0"], ["--topk", "1..16"])
    f = folder("mamba")
    _edit_config(f, model_type="mamba")
    cases["unknown_layout"] = (["measure", f, "-o", root / "out"],
                               ["config.json", "model_type", "'mamba'", "llama-style", "gpt-neox", "bert"])
    f = folder("no_model_type")
    _edit_config(f, model_type=None)
    cases["no_model_type"] = (["measure", f, "-o", root / "out"], ["config.json", "model_type", "None"])
    f = folder("no_layers")
    _edit_config(f, num_hidden_layers=None)
    cases["config_key_missing"] = (["measure", f, "-o", root / "out"], ["config.json", "num_hidden_layers", "missing"])
    f = folder("bad_json")
    (f / "config.json").write_text('{"model_type": "llama",')
    cases["config_malformed"] = (["measure", f, "-o", root / "out"], ["config.json", "malformed JSON"])
    f = folder("int8")
    _edit_tensors(f / "model.safetensors", lambda t: t.update({"model.layers.0.self_attn.q_proj.weight":
                                                               torch.ones(32, 24, dtype=torch.int8)}))
    cases["quantised_dtype"] = (["measure", f, "-o", root / "out"], ["model.layers.0.self_attn.q_proj.weight", "I8"])
    f = folder("nan")
    _edit_tensors(f / "model.safetensors", lambda t: t["model.layers.1.self_attn.q_proj.weight"].__setitem__(
        (0, 0), float("nan")))
    cases["nan_weight"] = (["measure", f, "-o", root / "out"],
                           ["model.safetensors", "model.layers.1.self_attn.q_proj.weight", "NaN or Inf in rows 0:8"])
    f = folder("no_norm")
    _edit_tensors(f / "model.safetensors", lambda t: t.pop("model.layers.1.input_layernorm.weight"))
    cases["fold_norms_gain_missing"] = (["measure", f, "-o", root / "out", "--fold-norms"],
                                        ["model.layers.1.input_layernorm.weight", "missing"])
    (root / "a_file").write_text("")
    cases["unwritable_output"] = (["measure", root / "ok", "-o", root / "a_file" / "out", "--quiet"], ["a_file", "-o", "a folder for the output, found a file"])
    cases["measure_option_on_a_json"] = (["analyze", "--fold-norms"], ["--fold-norms", "model folder"])
    return cases


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case of this module started at once; {name: (CompletedProcess-like, expected fragments)}."""
    root = tmp_path_factory.mktemp("measure_cli")
    good = _tiny(root / "good")
    cases = {name: (args, fragments) for name, (args, fragments) in _bad_cases(root).items()}
    cases["measure_quiet"] = (["measure", good, "-o", root / "res" / "tiny", "--quiet"], None)
    cases["measure_progress"] = (["measure", good, "-o", root / "res2" / "tiny", "--precision", "float64"], None)
    cases["measure_layer_progress"] = (["measure", good, "-o", root / "res4" / "tiny", "--layer-symmetry"], None)
    cases["measure_pt"] = (["measure", good, "-o", root / "res3" / "tiny", "--format", "pt", "--quiet"], None)
    cases["analyze_folder"] = (["analyze", good, "--quiet", "--json", root / "folder.json"], None)
    procs = run_concurrently({name: args for name, (args, _) in cases.items()})
    results = {name: (procs[name], fragments) for name, (_, fragments) in cases.items()}
    results["root"] = root
    results["good"] = good
    return results


BAD_CASES = ["no_directory", "no_config", "no_weights", "pickle_weights", "tensor_not_in_index",
             "tensor_not_in_shard", "shard_file_missing", "shape_disagrees_with_config", "truncated_safetensors",
             "corrupt_safetensors", "topk_beyond_spectrum", "topk_zero", "unknown_layout", "no_model_type",
             "config_key_missing", "config_malformed", "quantised_dtype", "nan_weight", "fold_norms_gain_missing",
             "unwritable_output", "measure_option_on_a_json"]


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_is_one_line_and_exit_2(runs, name):
    proc, fragments = runs[name]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    # What a terminal shows: each line as its last carriage return left it (a progress bar is cleared).
    lines = [line.rsplit("\r", 1)[-1] for line in proc.stderr.split("\n")]
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("qkalign: error: ") and "Traceback" not in proc.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    assert proc.stdout == ""


def test_every_bad_case_is_checked(tmp_path):
    assert sorted(_bad_cases(tmp_path)) == sorted(BAD_CASES)


@pytest.mark.parametrize("case, suffix", [("measure_quiet", "-eigdirs.safetensors"), ("measure_pt", "-eigdirs.pt")])
def test_measure_writes_the_grams_json_and_eigdirs(runs, case, suffix):
    proc, _ = runs[case]
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet: no progress bar
    prefix = runs["root"] / {"measure_quiet": "res", "measure_pt": "res3"}[case] / "tiny"
    assert "tiny.json" in proc.stdout and f"tiny{suffix}" in proc.stdout
    assert sorted(p.name for p in prefix.parent.iterdir()) == sorted(["tiny.json", f"tiny{suffix}"])
    loaded = load(prefix.with_name("tiny.json"))
    assert loaded.eigdirs_path.endswith(suffix) and loaded.eig_dirs.dtype == np.float32
    direct = measure(runs["good"], progress=False)
    np.testing.assert_array_equal(loaded.gram, direct.gram)
    np.testing.assert_array_equal(loaded.fro_sq, direct.fro_sq)
    np.testing.assert_array_equal(loaded.sym_eigs, direct.sym_eigs)
    np.testing.assert_allclose(loaded.eig_dirs, direct.eig_dirs, atol=1e-7)  # stored as float32
    doc = json.loads(prefix.with_name("tiny.json").read_text())
    for key in ("layout", "model_type", "precision", "fold_norms", "biases", "rope", "num_kv_heads"):
        assert key in doc
    assert doc["precision"] == "float32" and doc["fold_norms"] is False


def test_measure_shows_progress_on_stderr(runs):
    proc, _ = runs["measure_progress"]
    assert proc.returncode == 0, proc.stderr
    assert "measure" in proc.stderr and "100%" in proc.stderr
    doc = json.loads((runs["root"] / "res2" / "tiny.json").read_text())
    assert doc["precision"] == "float64"


def test_the_per_layer_symmetry_has_its_own_progress(runs):
    """After the heads, the layers' products (seconds at a 4B shape) count layers, not a bar resting at 100 %."""
    proc, _ = runs["measure_layer_progress"]
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((runs["root"] / "res4" / "tiny.json").read_text())
    heads, layers = doc["num_heads"], doc["num_layers"]
    heads_done = re.search(rf"measure: 100%[^\r\n]*? {heads}/{heads} [^\r\n]*?head", proc.stderr)
    layers_done = re.search(rf"measure: layer symmetry: 100%[^\r\n]*? {layers}/{layers} [^\r\n]*?layer/s", proc.stderr)
    assert heads_done and layers_done and heads_done.start() < layers_done.start(), proc.stderr[-500:]


def test_analyze_measures_a_model_folder(runs):
    proc, _ = runs["analyze_folder"]
    assert proc.returncode == 0, proc.stderr
    assert f"model folder {runs['good']}" in proc.stdout.splitlines()[0]
    result = json.loads((runs["root"] / "folder.json").read_text())
    expected = measure(runs["good"], progress=False)
    cos = expected.gram / np.sqrt(np.einsum("llh->lh", expected.gram)[:, None] * np.einsum("llh->lh", expected.gram)[None])
    np.testing.assert_allclose(result["operator_cos"], cos.mean(axis=-1), rtol=1e-12)
