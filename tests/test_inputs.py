"""Bad input: one clear error line naming the file and the field, exit code 2, never a traceback.

Most cases call the CLI's ``main`` in-process (the ``cli`` fixture); a few run the
real ``python -m qkalign`` subprocess to check the process exit code end to end.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import qkalign
from qkalign import InputError
from qkalign.testing.processes import run_qkalign


@pytest.fixture()
def case(written36, tmp_path):
    """A private copy of the 36-layer input: (json_path, pt_path, json document, pt dict)."""
    src_json, src_pt = written36
    json_path, pt_path = tmp_path / "m.json", tmp_path / "m-eigdirs.pt"
    shutil.copy(src_json, json_path)
    shutil.copy(src_pt, pt_path)
    return json_path, pt_path, json.loads(json_path.read_text()), torch.load(pt_path, weights_only=True)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("qkalign: error: ") and "Traceback" not in proc.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    assert proc.stdout == ""


def write_json(path, doc):
    path.write_text(json.dumps(doc))


@pytest.mark.slow
def test_missing_file_subprocess_exit_code(tmp_path):
    assert_one_line_error(run_qkalign("analyze", tmp_path / "nope.json"), "nope.json", "no such file")


def test_missing_pt(case, cli):
    json_path, pt_path, _, _ = case
    pt_path.unlink()
    assert_one_line_error(cli("analyze", json_path), "m-eigdirs.pt", "no such file")


def test_malformed_json(tmp_path, cli):
    path = tmp_path / "bad.json"
    path.write_text('{"num_layers": 3, "gram": [1, 2,')
    assert_one_line_error(cli("analyze", path), "bad.json", "malformed JSON", "line 1")


@pytest.mark.parametrize("key", ["num_layers", "num_heads", "head_dim", "hidden_size", "gram", "fro_sq"])
def test_missing_key(case, key, cli):
    json_path, _, doc, _ = case
    del doc[key]
    write_json(json_path, doc)
    assert_one_line_error(cli("analyze", json_path), "m.json", key, "missing")


def test_layer_count_disagrees_with_eig_dirs(case, cli):
    json_path, pt_path, _, pt = case
    torch.save({**pt, "eig_dirs": pt["eig_dirs"][:-1]}, pt_path)  # the same run id: only the shape is wrong
    assert_one_line_error(cli("analyze", json_path), "m-eigdirs.pt", "eig_dirs", "num_layers=36", "(35, ")


def test_spectrum_length_disagrees_with_head_dim(case, cli):
    json_path, pt_path, _, pt = case
    torch.save({**pt, "sym_eigs": pt["sym_eigs"][..., :-2]}, pt_path)
    assert_one_line_error(cli("analyze", json_path), "m-eigdirs.pt", "sym_eigs", "2*head_dim")


def test_gram_shape_disagrees_with_num_heads(case, cli):
    json_path, _, doc, _ = case
    doc["num_heads"] = 5
    write_json(json_path, doc)
    assert_one_line_error(cli("analyze", json_path), "m.json", "gram", "(36, 36, 5)")


def test_ragged_gram(case, cli):
    json_path, _, doc, _ = case
    doc["gram"][3][4] = doc["gram"][3][4][:-1]
    write_json(json_path, doc)
    assert_one_line_error(cli("analyze", json_path), "m.json", "gram", "ragged")


def test_nan_in_gram(case, cli):
    json_path, _, doc, _ = case
    doc["gram"][2][5][1] = float("nan")
    write_json(json_path, doc)
    assert_one_line_error(cli("analyze", json_path), "m.json", "gram[2, 5, 1]", "finite", "nan")


def test_inf_in_eig_dirs(case, cli):
    json_path, pt_path, _, pt = case
    pt["eig_dirs"][4, 1, 0, 7] = float("inf")
    torch.save(pt, pt_path)
    assert_one_line_error(cli("analyze", json_path), "m-eigdirs.pt", "eig_dirs[4, 1, 0, 7]", "inf")


def test_zero_norm_head(case, cli):
    json_path, _, doc, _ = case
    gram = np.array(doc["gram"])
    gram[6, :, 2] = gram[:, 6, 2] = 0.0
    doc["gram"] = gram.tolist()
    write_json(json_path, doc)
    assert_one_line_error(cli("analyze", json_path), "m.json", "gram[6, 6, 2]", "zero-norm head")


def test_gram_breaking_cauchy_schwarz(case, cli):
    json_path, _, doc, _ = case
    doc["gram"][0][9][1] = doc["gram"][9][0][1] = 10 * doc["gram"][0][0][1] + 10 * doc["gram"][9][9][1]
    write_json(json_path, doc)
    assert_one_line_error(cli("analyze", json_path), "m.json", "gram[0, 9, 1]", "Gram")


def test_zero_eigenvector_row(case, cli):
    json_path, pt_path, _, pt = case
    pt["eig_dirs"][1, 0, 2] = 0.0
    torch.save(pt, pt_path)
    assert_one_line_error(cli("analyze", json_path), "m-eigdirs.pt", "eig_dirs[1, 0, 2]", "zero row")


@pytest.mark.parametrize("anchor", ["36", "-37"])
def test_anchor_out_of_range(case, anchor, cli):
    json_path = case[0]
    assert_one_line_error(cli("analyze", json_path, f"--anchor={anchor}"), "--anchor", "[-36, 35]", anchor)


def test_unknown_backend(case, cli):
    assert_one_line_error(cli("analyze", case[0], "--backend", "fortran"), "--backend", "'fortran'")


def test_integer_tensor_refused(case, cli):
    json_path, pt_path, _, pt = case
    torch.save({"eig_dirs": pt["eig_dirs"].to(torch.int32), "sym_eigs": pt["sym_eigs"]}, pt_path)
    assert_one_line_error(cli("analyze", json_path), "m-eigdirs.pt", "eig_dirs", "torch.int32")


class _Payload:
    """Unpickling this would create a marker file: the loader must refuse before running it."""

    marker = None

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.slow
def test_pickled_object_is_refused_and_never_run(case, tmp_path):
    json_path, pt_path, _, pt = case
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    torch.save({"eig_dirs": pt["eig_dirs"], "sym_eigs": pt["sym_eigs"], "extra": _Payload()}, pt_path)
    proc = run_qkalign("analyze", json_path)
    assert_one_line_error(proc, "m-eigdirs.pt", "weights_only=True")
    assert not marker.exists()


def test_pt_that_is_not_a_dict(case, cli):
    json_path, pt_path, _, pt = case
    torch.save(pt["eig_dirs"], pt_path)
    assert_one_line_error(cli("analyze", json_path), "m-eigdirs.pt", "a dict", "Tensor")


def test_corrupt_pt(case, cli):
    json_path, pt_path, _, _ = case
    pt_path.write_bytes(pt_path.read_bytes()[:1000])
    assert_one_line_error(cli("analyze", json_path), "m-eigdirs.pt", "unreadable")


def test_unwritable_json_output_is_refused_before_the_analysis(case, tmp_path, cli):
    (tmp_path / "a_file").write_text("")
    # the folder cannot be created under a file: refused before any number is computed or printed
    assert_one_line_error(cli("analyze", case[0], "--json", tmp_path / "a_file" / "out.json"), "a_file", "--json",
                          "a folder for the output, found a file")
    assert_one_line_error(cli("analyze", case[0], "--json", tmp_path), "--json", "a directory")
    # a folder that does not exist yet is created
    assert cli("analyze", case[0], "--json", tmp_path / "new" / "out.json").returncode == 0
    assert json.loads((tmp_path / "new" / "out.json").read_text())["meta"]["num_layers"] == 36


def test_api_raises_input_error_naming_the_file(case):
    json_path, _, doc, _ = case
    doc["fro_sq"] = doc["fro_sq"][:-1]
    write_json(json_path, doc)
    with pytest.raises(InputError, match=r"m\.json: fro_sq: expected shape"):
        qkalign.load(json_path)
