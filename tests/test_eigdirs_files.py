"""Eigen-direction files: the native safetensors format against the seed's .pt, storage precision
kept end to end, imports on demand, `qkalign convert`, and every bad safetensors file."""

import json
import struct

import numpy as np
import pytest

import qkalign
from qkalign.files.seed_format import save
from qkalign.testing.processes import run_python

ML_DTYPES = {"float32": np.float32, "float64": np.float64}


@pytest.fixture()
def pair(data36, tmp_path):
    """The 36-layer model saved as safetensors with float32 eig_dirs: (json_path, safetensors_path)."""
    return save(data36, tmp_path / "m", eig_dirs_dtype="float32")


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qkalign: error: "), proc.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_safetensors_is_memory_mapped_in_its_storage_precision(data36, tmp_path, dtype):
    json_path, path = save(data36, tmp_path / "m", eig_dirs_dtype=dtype)
    assert path.name == "m-eigdirs.safetensors" and not (tmp_path / "m-eigdirs.pt").exists()
    loaded = qkalign.load(json_path)
    assert loaded.eig_dirs.dtype == ML_DTYPES[dtype] and not loaded.eig_dirs.flags.writeable
    assert isinstance(loaded.eig_dirs, np.memmap)  # mapped, not read into memory
    np.testing.assert_array_equal(loaded.eig_dirs, data36.eig_dirs.astype(dtype))
    np.testing.assert_array_equal(loaded.sym_eigs, data36.sym_eigs)
    np.testing.assert_array_equal(loaded.gram, data36.gram)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_json_is_bit_identical_from_pt_and_safetensors(data36, tmp_path, backend):
    outputs = []
    for file_format in ("pt", "safetensors"):
        json_path, _ = save(data36, tmp_path / file_format / "m", eig_dirs_dtype="float32", file_format=file_format)
        doc = qkalign.analyze(qkalign.load(json_path), backend=backend, match_heads=True).to_dict()
        del doc["meta"]["grams_path"], doc["meta"]["eigdirs_path"]
        outputs.append(json.dumps(doc))
    assert outputs[0] == outputs[1]


def test_float32_storage_gives_the_numbers_of_its_float64_values(data36, tmp_path):
    # Products of float32 numbers are exact in float64: reading float32 and accumulating in float64
    # is the same as widening the whole array first, on either backend.
    json_path, _ = save(data36, tmp_path / "m", eig_dirs_dtype="float32")
    stored = qkalign.load(json_path)
    widened = qkalign.QKData(36, 4, 8, 40, gram=stored.gram, fro_sq=stored.fro_sq,
                             eig_dirs=stored.eig_dirs.astype(np.float64), sym_eigs=stored.sym_eigs)
    for backend in ("numpy", "numba"):
        a = qkalign.analyze(stored, backend=backend, chance=False).to_dict()
        b = qkalign.analyze(widened, backend=backend, chance=False).to_dict()
        assert a.pop("meta")["backend"] == b.pop("meta")["backend"] == backend
        assert a == b


def test_native_file_is_found_before_the_pt(data36, tmp_path):
    json_path, _ = save(data36, tmp_path / "m", file_format="pt")
    assert qkalign.load(json_path).eigdirs_path.endswith("m-eigdirs.pt")
    save(data36, tmp_path / "m")  # the same prefix again, natively: the older .pt is replaced
    assert qkalign.load(json_path).eigdirs_path.endswith("m-eigdirs.safetensors")
    assert not (tmp_path / "m-eigdirs.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("file_format", ["safetensors", "pt"])
def test_analyze_imports_neither_torch_nor_matplotlib(data36, tmp_path, file_format):
    json_path, _ = save(data36, tmp_path / "m", file_format=file_format)
    code = ("import sys, qkalign.cli; code = qkalign.cli.main(['analyze', sys.argv[1]]); "
            "print('loaded:', sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    proc = run_python(["-c", code, json_path])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "loaded: []"
    assert "=== Verdict ===" in proc.stdout


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_plain_pt_is_mapped_without_torch_as_torch_reads_it(data36, tmp_path, dtype):
    from qkalign.files.eigdirs import _read_plain_pt, _read_pt_with_torch

    _, path = save(data36, tmp_path / "m", eig_dirs_dtype=dtype, file_format="pt")
    fast, slow = _read_plain_pt(path), _read_pt_with_torch(path)
    for key in ("eig_dirs", "sym_eigs"):
        assert fast[key].dtype == slow[key].dtype
        np.testing.assert_array_equal(fast[key], slow[key])
    if dtype in ("float32", "float64"):
        assert isinstance(fast["eig_dirs"], np.memmap)


def _json_without_run_id(data, prefix):
    """A grams JSON as another tool (the seed's measure step) writes it: no run id to match."""
    json_path = save(data, prefix)[0]
    doc = json.loads(json_path.read_text())
    del doc["run_id"]
    json_path.write_text(json.dumps(doc))
    return json_path


def test_a_pt_the_fast_path_does_not_know_is_read_by_torch(data36, tmp_path):
    import torch

    from qkalign.files.eigdirs import _NotPlain, _read_plain_pt

    path = tmp_path / "strided-eigdirs.pt"
    eig = torch.from_numpy(np.ascontiguousarray(np.swapaxes(data36.eig_dirs, 0, 1)))
    # A transposed view: torch pickles the storage with strides, which the fast path leaves to torch.
    torch.save({"eig_dirs": eig.transpose(0, 1), "sym_eigs": torch.from_numpy(data36.sym_eigs.copy())}, path)
    with pytest.raises(_NotPlain):
        _read_plain_pt(path)
    loaded = qkalign.load(_json_without_run_id(data36, tmp_path / "m"), eigdirs=path)
    np.testing.assert_array_equal(loaded.eig_dirs, data36.eig_dirs)


def test_convert_writes_safetensors_beside_the_json(written36, tmp_path, cli):
    import shutil

    json_path, pt_path = (shutil.copy(p, tmp_path / p.name) for p in written36)
    proc = cli("convert", json_path)
    assert proc.returncode == 0, proc.stderr
    native = tmp_path / "model36-eigdirs.safetensors"
    assert native.exists() and (tmp_path / "model36-eigdirs.pt").exists()
    from_native, from_pt = qkalign.load(json_path), qkalign.load(json_path, eigdirs=pt_path)
    assert from_native.eigdirs_path == str(native)
    np.testing.assert_array_equal(from_native.eig_dirs, from_pt.eig_dirs)  # float64 stays float64
    assert from_native.eig_dirs.dtype == np.float64


def test_convert_refuses_a_json_that_names_its_eigdirs_and_writes_a_new_pair_with_o(written36, tmp_path, cli):
    doc = json.loads(written36[0].read_text())
    doc["eigdirs_path"] = str(written36[1])
    json_path = tmp_path / "named.json"
    json_path.write_text(json.dumps(doc))
    assert_one_line_error(cli("convert", json_path), "named.json", "eigdirs_path", "-o PREFIX")
    proc = cli("convert", json_path, "-o", tmp_path / "new")
    assert proc.returncode == 0, proc.stderr
    assert qkalign.load(tmp_path / "new.json").eigdirs_path == str(tmp_path / "new-eigdirs.safetensors")


def _rewrite_header(path, edit):
    """Replace the JSON header of a safetensors file by ``edit(header)``, keeping its data."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = edit(json.loads(data[8:8 + length]))
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])


BAD_FILES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-100]), ["eig_dirs", "truncated file"]),
    "tiny": (lambda p: p.write_bytes(b"\x01\x02"), ["truncated or corrupt"]),
    "garbage_header": (lambda p: p.write_bytes(struct.pack("<Q", 5) + b"{nope" + b"\0" * 64), ["corrupt header"]),
    "missing_tensor": (lambda p: _rewrite_header(p, lambda h: {k: v for k, v in h.items() if k != "sym_eigs"}),
                       ["sym_eigs", "it missing"]),
    "integer_dtype": (lambda p: _rewrite_header(p, lambda h: {**h, "eig_dirs": {**h["eig_dirs"], "dtype": "I32"}}),
                      ["eig_dirs", "I32"]),
    "shape_disagrees_with_offsets": (
        lambda p: _rewrite_header(p, lambda h: {**h, "eig_dirs": {**h["eig_dirs"], "shape": [36, 4, 6, 41]}}),
        ["eig_dirs", "data_offsets"]),
    "shape_disagrees_with_json": (
        lambda p: _rewrite_header(p, lambda h: {**h, "sym_eigs": {**h["sym_eigs"], "shape": [36, 8, 8],
                                                                  "data_offsets": h["sym_eigs"]["data_offsets"]}}),
        ["sym_eigs", "2*head_dim"]),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_safetensors_is_one_line_and_exit_2(pair, cli, name):
    json_path, path = pair
    damage, fragments = BAD_FILES[name]
    damage(path)
    assert_one_line_error(cli("analyze", json_path), path.name, *fragments)


def test_json_naming_a_missing_eigdirs_file(pair, cli, tmp_path):
    doc = json.loads(pair[0].read_text())
    doc["eigdirs_path"] = "gone-eigdirs.safetensors"
    pair[0].write_text(json.dumps(doc))
    assert_one_line_error(cli("analyze", pair[0]), "gone-eigdirs.safetensors", "no such file")


def test_bfloat16_and_float16_sym_eigs_in_safetensors_are_widened_not_reinterpreted(data36, tmp_path):
    import torch
    from safetensors.torch import save_file

    for dtype in (torch.bfloat16, torch.float16):
        path = tmp_path / f"{dtype}-eigdirs.safetensors"
        sym = torch.from_numpy(data36.sym_eigs.copy()).to(dtype)
        save_file({"eig_dirs": torch.from_numpy(data36.eig_dirs.astype(np.float32)), "sym_eigs": sym}, str(path))
        loaded = qkalign.load(_json_without_run_id(data36, tmp_path / "m"), eigdirs=path)
        np.testing.assert_array_equal(loaded.sym_eigs, sym.to(torch.float64).numpy())


def test_a_torch_file_is_recognised_by_its_bytes_not_its_name(data36, tmp_path):
    json_path, pt_path = save(data36, tmp_path / "m", file_format="pt")
    renamed = pt_path.rename(tmp_path / "weights.pth")
    np.testing.assert_array_equal(qkalign.load(json_path, eigdirs=renamed).eig_dirs, data36.eig_dirs.astype(np.float32))


def test_convert_keeps_the_stored_precision_into_a_new_pair(written36, tmp_path, cli):
    assert cli("convert", written36[0], "-o", tmp_path / "new").returncode == 0
    converted = qkalign.load(tmp_path / "new.json")
    assert converted.eig_dirs.dtype == np.float64  # written36 stores float64
    np.testing.assert_array_equal(converted.eig_dirs, qkalign.load(written36[0]).eig_dirs)


def test_bfloat16_is_rounded_as_torch_rounds():
    """Ties to even, the float32 step first (1 + 2^-8 + 2^-30 is a tie after it), overflow to inf, subnormals."""
    import torch

    from qkalign.files.eigdirs import bfloat16_bits

    rng = np.random.default_rng(0)
    edge = [1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-30, -(1 + 2**-8 + 2**-30), 3.4e38, -3.4e38, np.inf, -np.inf,
            np.nan, 0.0, -0.0, 1e-40, -1e-41, 2.0**-133, 65504.0, 1 / 3]
    values = np.concatenate([edge, rng.standard_normal(10_000) * np.exp(rng.uniform(-80, 80, 10_000))])
    with np.errstate(over="ignore"):
        ours = bfloat16_bits(values)
    theirs = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(ours[~nan], theirs[~nan])
    assert (ours[nan] == 0x7FC0).all()  # a NaN stays one (torch's bits for it vary with its code path)


def test_bfloat16_file_is_the_one_torch_writes(data36, tmp_path):
    """Written without torch: safetensors (with torch) reads the values torch's own conversion gives."""
    import torch
    from safetensors.torch import load_file

    _, path = save(data36, tmp_path / "m", eig_dirs_dtype="bfloat16")
    tensors = load_file(str(path))
    assert tensors["eig_dirs"].dtype == torch.bfloat16 and tensors["sym_eigs"].dtype == torch.float64
    expected = torch.from_numpy(np.array(data36.eig_dirs)).to(torch.bfloat16)
    assert torch.equal(tensors["eig_dirs"], expected)
    np.testing.assert_array_equal(qkalign.load(path.with_name("m.json")).eig_dirs, expected.float().numpy())
