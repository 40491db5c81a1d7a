"""The CLI and the Python API: bundled example, JSON output, dtypes, eig-dirs path resolution."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import qkalign
from qkalign.files.seed_format import default_eigdirs_path, save
from qkalign.testing.processes import run_qkalign

JSON_KEYS = {"meta", "operator_cos", "operator_cos_per_head", "adjacent", "to_anchor", "rescale",
             "sign_agreement", "frac_positive", "principal_angles", "verdict"}


@pytest.mark.slow
def test_main_job_on_the_bundled_example_subprocess():
    proc = run_qkalign("analyze")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("qkalign analyze: input bundled example ") and "example.json" in lines[0]
    assert lines[1] == "=== (a) Operator cos-sim between layers, averaged over 8 heads ==="
    assert "=== Verdict ===" in lines
    assert proc.stderr == ""


def test_report_labels_the_middle_layer_by_index(cli, written36):
    out = cli("analyze", written36[0]).stdout
    assert "cos(L=18, last) = " in out and "midish" not in out
    assert "[qkalign] layer ranges are thirds of the 36 layers: early 0-11  mid 12-23  late 24-35" in out


def test_json_output_has_every_key_and_the_api_numbers(cli, written36, tmp_path, data36):
    out_path = tmp_path / "result.json"
    proc = cli("analyze", written36[0], "--anchor", "-2", "--backend", "numpy", "--json", out_path)
    assert proc.returncode == 0
    doc = json.loads(out_path.read_text())
    assert JSON_KEYS <= set(doc)
    meta = doc["meta"]
    assert (meta["num_layers"], meta["num_heads"], meta["head_dim"], meta["hidden_size"], meta["topk"]) == (36, 4, 8, 40, 6)
    assert meta["anchor"] == 34 and meta["backend"] == "numpy"
    assert meta["grams_path"] == str(written36[0]) and meta["eigdirs_path"] == str(written36[1])
    expected = qkalign.analyze(data36, anchor=-2, backend="numpy")
    np.testing.assert_array_equal(doc["operator_cos"], expected.operator_cos)
    np.testing.assert_array_equal(np.array(doc["operator_cos_per_head"]).shape, (36, 36, 4))
    for group, keys in {"to_anchor": ("cos", "t_opt", "resid_frac"), "rescale": ("mean_cos", "mean_resid"),
                        "principal_angles": ("mean_cos", "min_cos", "top1_overlap")}.items():
        for key in keys:
            np.testing.assert_allclose(doc[group][key], getattr(expected, group)[key], rtol=1e-15)
            assert len(doc[group][key]) == 36
    assert doc["sign_agreement"]["k"] == [2, 4, 8, 16]
    assert set(doc["adjacent"]) == {"mean", "min", "max"}
    assert {"mean_cos_to_anchor", "mean_cos_adjacent", "label"} <= set(doc["verdict"])
    assert doc["verdict"]["label"] in {"STRONG", "MEDIUM", "WEAK", "REJECTED"}
    assert f"{doc['verdict']['mean_cos_to_anchor']:+.4f}" in proc.stdout


@pytest.mark.parametrize("file_format", ["safetensors", "pt"])
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float16", 2e-3), ("bfloat16", 2e-2)])
def test_low_precision_eig_dirs_are_accepted(data36, tmp_path, dtype, tol, file_format):
    exact = qkalign.analyze(data36, backend="numpy").principal_angles
    json_path, _ = save(data36, tmp_path / "m", eig_dirs_dtype=dtype, file_format=file_format)
    loaded = qkalign.load(json_path)
    assert loaded.eig_dirs.dtype == np.float32  # widened exactly from float16/bfloat16, never to float64
    got = qkalign.analyze(loaded, backend="numpy").principal_angles
    for key in ("mean_cos", "min_cos", "top1_overlap"):
        np.testing.assert_allclose(got[key], exact[key], atol=tol)


def test_eigdirs_path_resolution(written36, tmp_path, monkeypatch, cli):
    src_json, src_pt = written36
    doc = json.loads(Path(src_json).read_text())
    (tmp_path / "a").mkdir()
    (tmp_path / "cwd").mkdir()
    json_path = tmp_path / "a" / "grams.json"
    doc["eigdirs_path"] = "dirs.pt"
    json_path.write_text(json.dumps(doc))
    monkeypatch.chdir(tmp_path / "cwd")
    # Only in the current directory (where the seed looked): found there.
    shutil.copy(src_pt, tmp_path / "cwd" / "dirs.pt")
    assert qkalign.load(json_path).eigdirs_path == "dirs.pt"
    # Next to the JSON as well: that one wins.
    shutil.copy(src_pt, tmp_path / "a" / "dirs.pt")
    assert Path(qkalign.load(json_path).eigdirs_path) == tmp_path / "a" / "dirs.pt"
    # --eigdirs overrides both.
    shutil.copy(src_pt, tmp_path / "other.pt")
    assert Path(qkalign.load(json_path, eigdirs=tmp_path / "other.pt").eigdirs_path) == tmp_path / "other.pt"
    assert cli("analyze", json_path, "--eigdirs", tmp_path / "other.pt").returncode == 0


def test_default_eigdirs_path_replaces_only_the_suffix():
    # The seed's str.replace(".json", ...) would also rewrite the folder name here.
    assert default_eigdirs_path(Path("runs.json/qwen.json")) == Path("runs.json/qwen-eigdirs.pt")


def test_qkdata_is_read_only_float64(data36):
    assert data36.gram.dtype == np.float64 and data36.eig_dirs.dtype == np.float64
    with pytest.raises(ValueError):
        data36.gram[0, 0, 0] = 1.0


def test_result_json_round_trip(data_small):
    result = qkalign.analyze(data_small, backend="numpy")
    doc = json.loads(result.to_json())
    assert doc == result.to_dict()
    assert len(doc["operator_cos"]) == data_small.num_layers


def test_one_layer_model_reports_nan_for_adjacent(tmp_path, data_small):
    one = qkalign.QKData(1, 4, 8, 48, gram=data_small.gram[:1, :1], fro_sq=data_small.fro_sq[:1],
                         eig_dirs=data_small.eig_dirs[:1], sym_eigs=data_small.sym_eigs[:1])
    result = qkalign.analyze(one, backend="numpy")
    assert np.isnan(result.adjacent["mean"]) and result.to_dict()["adjacent"]["mean"] is None
    assert result.operator_cos[0, 0] == pytest.approx(1.0, abs=1e-15)
    assert "late (none)" in qkalign.format_report(result)
