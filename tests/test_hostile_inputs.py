"""Files that are not what they claim, sizes that would exhaust memory, a read-only numba cache.

Each is refused with one ``qkalign: error:`` line and exit 2 (never a hang, a traceback or an
allocation that kills the machine), or, for the numba cache, handled with one warning line.
"""

import json
import os
import signal
import zipfile

import numpy as np
import pytest
import torch

import qkalign
from qkalign.files.seed_format import save
from qkalign.testing.model_folders import write_model
from qkalign.testing.processes import run_python
from qkalign.testing.refusals import one_error_line
from qkalign.weights.synthetic import SyntheticSpec, make_qkdata


@pytest.fixture()
def no_hang():
    """Fail (instead of blocking the suite) if a reader waits on a FIFO."""
    def give_up(*_):
        raise TimeoutError("blocked on a FIFO")
    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture()
def pair(tmp_path):
    return save(make_qkdata(SyntheticSpec(4, 2, 1, 4, 16, topk=3)), tmp_path / "m")


@pytest.fixture()
def sharded(tmp_path):
    return write_model(tmp_path / "model", "llama", shards=2).folder


# --- files that are not regular files ---------------------------------------------------------

def _fifo_instead_of(path):
    path.unlink()
    os.mkfifo(path)


def test_a_fifo_shard_is_refused_not_read(cli, sharded, tmp_path, no_hang):
    _fifo_instead_of(sharded / "model-00002-of-00002.safetensors")
    one_error_line(cli("measure", sharded, "-o", tmp_path / "out", "--quiet"), "model-00002-of-00002", "a FIFO")


def test_a_fifo_config_is_refused_not_read(cli, sharded, tmp_path, no_hang):
    _fifo_instead_of(sharded / "config.json")
    one_error_line(cli("measure", sharded, "-o", tmp_path / "out"), "config.json", "a FIFO")


def test_a_fifo_eigdirs_or_grams_file_is_refused_not_read(cli, pair, no_hang):
    json_path, eig_path = pair
    _fifo_instead_of(eig_path)
    one_error_line(cli("analyze", json_path), eig_path.name, "a FIFO")
    _fifo_instead_of(json_path)
    one_error_line(cli("analyze", json_path), json_path.name, "a FIFO")


@pytest.mark.parametrize("entry", ["../outside.safetensors", "/etc/passwd", "sub/model.safetensors", ".."])
def test_index_entries_must_name_files_in_the_folder(cli, sharded, tmp_path, entry):
    index_path = sharded / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = sorted(index["weight_map"])[0]
    index["weight_map"][name] = entry
    index_path.write_text(json.dumps(index))
    one_error_line(cli("measure", sharded, "-o", tmp_path / "out", "--quiet"), "weight_map", "a file name in the model "
                   "folder", repr(entry))


def test_symlinked_shards_as_in_a_hub_cache_still_work(tmp_path, sharded):
    """A Hugging Face cache snapshot links each file to a blob outside the snapshot folder."""
    before = qkalign.measure(sharded, progress=False)
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    snapshot.mkdir()
    for i, path in enumerate(sorted(sharded.iterdir())):
        blob = blobs / f"blob{i}"
        path.rename(blob)
        (snapshot / path.name).symlink_to(blob)
    np.testing.assert_array_equal(qkalign.measure(snapshot, progress=False).gram, before.gram)


# --- JSON that Python's reader cannot take ------------------------------------------------------

def test_a_5000_digit_integer_is_one_line(cli, pair, sharded, tmp_path):
    json_path, _ = pair
    text = json_path.read_text().replace('"num_layers": 4', '"num_layers": ' + "9" * 5000)
    json_path.write_text(text)
    one_error_line(cli("analyze", json_path), json_path.name, "numbers of sensible size")
    config = sharded / "config.json"
    config.write_text(config.read_text().replace("{", '{"huge": ' + "7" * 5000 + ", ", 1))
    one_error_line(cli("measure", sharded, "-o", tmp_path / "out"), "config.json", "numbers of sensible size")


def test_a_5000_digit_integer_in_an_eigdirs_header_is_one_line(cli, pair):
    json_path, eig_path = pair
    header = b'{"eig_dirs": ' + b"9" * 5000 + b"}"
    eig_path.write_bytes(len(header).to_bytes(8, "little") + header)
    one_error_line(cli("analyze", json_path), eig_path.name, "a corrupt header", "4300 digits")


def test_deep_nesting_is_one_line(cli, pair, sharded, tmp_path):
    json_path, _ = pair
    json_path.write_text('{"gram": ' + "[" * 100_000 + "]" * 100_000 + "}")
    one_error_line(cli("analyze", json_path), json_path.name, "nesting depth")
    (sharded / "config.json").write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    one_error_line(cli("measure", sharded, "-o", tmp_path / "out"), "config.json", "nesting depth")


def test_an_integer_beyond_float64_is_one_line(cli, pair):
    json_path, _ = pair
    doc = json.loads(json_path.read_text())
    doc["gram"][0][0][0] = 10**400
    json_path.write_text(json.dumps(doc))
    one_error_line(cli("analyze", json_path), json_path.name, "gram", "float64's range")


# --- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["analyze", "--anchor", "x"], "argument --anchor: invalid int value: 'x'"),
    (["measure", "m", "-o", "x", "--topk", "x"], "argument --topk: invalid int value: 'x'"),
    (["analyze", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    ([], "the following arguments are required: command"),
    (["synthetic", "tiny", "-o", "x"], "invalid choice: 'tiny'"),
])
def test_argument_errors_are_one_line(cli, args, fragment):
    one_error_line(cli(*args), fragment, "--help")


# --- qkalign plot on a result JSON that is not one ------------------------------------------------

@pytest.fixture(scope="module")
def result_doc(tmp_path_factory):
    from qkalign.stats.analyze import analyze

    return analyze(make_qkdata(SyntheticSpec(6, 2, 1, 4, 16, topk=3)), backend="numpy").to_dict()


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d.update(meta={}), "meta.num_layers"),
    (lambda d: d["meta"].update(num_layers=10**12), "to_anchor.cos"),
    (lambda d: d["meta"].update(anchor=99), "meta.anchor"),
    (lambda d: d["meta"].update(num_heads="8"), "meta.num_heads"),
    (lambda d: d["pairs"]["operator_cos"].update(mean="x"), "pairs.operator_cos.mean"),
    (lambda d: d["pairs"]["pa_min_cos"].update(mean=[[0.5] * 5] * 6), "pairs.pa_min_cos.mean"),
    (lambda d: d["chance"].update(operator_cos=3), "chance.operator_cos"),
    (lambda d: d["principal_angles"].update(mean_cos=None), "principal_angles.mean_cos"),
    (lambda d: d.update(pairs=[1]), "pairs"),
])
def test_plot_checks_the_whole_result_before_drawing(cli, result_doc, tmp_path, change, fragment):
    doc = json.loads(json.dumps(result_doc))
    change(doc)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    one_error_line(cli("plot", path, tmp_path / "figs"), "r.json", fragment)
    assert not (tmp_path / "figs").exists()  # no figure drawn before the error


# --- memory ---------------------------------------------------------------------------------------

def test_a_synthetic_model_too_big_for_memory_is_refused(cli, tmp_path):
    one_error_line(cli("synthetic", "small", "-o", tmp_path / "x", "--num-layers", 10**8), "--num-layers",
                   "GiB needed", "GiB available")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_a_chance_seed_out_of_range_is_one_line(cli, seed):
    one_error_line(cli("analyze", "--chance-seed", seed), "--chance-seed")


def test_a_model_too_big_for_memory_is_refused_before_allocating(cli, sharded, tmp_path, monkeypatch):
    from qkalign import memory
    from qkalign.weights.measure import open_model, peak_bytes

    monkeypatch.setattr(memory, "available_bytes", lambda: 10_000)
    needed = peak_bytes(open_model(sharded)[2], 16, "float32") / memory.GIB
    one_error_line(cli("measure", sharded, "-o", tmp_path / "out", "--quiet"), "config.json", "3 layers x 4 heads",
                   f"{needed:,.1f} GiB needed", "0.0 GiB available")
    assert not (tmp_path / "out.json").exists()


def test_the_peak_estimate_bounds_what_measure_allocates(tmp_path, monkeypatch):
    """tracemalloc sees numpy's allocations: past the fixed base, the estimate bounds the traced peak
    from above and stays within a factor 3 of it (a model whose arrays dominate)."""
    import tracemalloc

    import qkalign.weights.measure as measure_module
    from qkalign.weights.measure import BASE_BYTES, open_model, peak_bytes

    monkeypatch.setattr(measure_module, "core_count", lambda: 2)  # the same worker count for the run and estimate
    folder = write_model(tmp_path / "mid", "llama", shape=(16, 8, 4, 64, 512)).folder
    qkalign.measure(folder, progress=False)  # imports and compiles outside the traced run
    tracemalloc.start()
    qkalign.measure(folder, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    estimate = peak_bytes(open_model(folder)[2], 16, "float32")
    assert peak <= estimate and estimate - BASE_BYTES <= 3 * peak, (peak, estimate)


def test_a_zero_stride_pt_is_refused_before_any_copy(cli, pair, tmp_path):
    json_path, _ = pair
    run_id = json.loads(json_path.read_text())["run_id"]
    huge = torch.zeros(1).as_strided((40_000, 2_000, 100, 100), (0, 0, 0, 0))  # 3 TB as float32, 4 bytes stored
    pt = tmp_path / "bomb-eigdirs.pt"
    torch.save({"eig_dirs": huge, "sym_eigs": torch.zeros(4, 2, 8, dtype=torch.float64), "run_id": run_id}, pt)
    one_error_line(cli("analyze", json_path, "--eigdirs", pt), "bomb-eigdirs.pt", "eig_dirs",
                   "zero or overlapping strides")


def test_a_pt_declaring_more_than_memory_is_refused_before_loading(cli, pair, tmp_path, monkeypatch):
    """A compressed .pt goes to torch.load, which inflates every member: the sizes its zip directory
    declares (a deflate bomb's is its true size) are checked against memory first."""
    from qkalign import memory

    json_path, eig_path = pair
    data = qkalign.load(json_path)
    plain = tmp_path / "plain-eigdirs.pt"
    torch.save({"eig_dirs": torch.from_numpy(np.array(data.eig_dirs)), "sym_eigs": torch.from_numpy(np.array(data.sym_eigs)),
                "run_id": json.loads(json_path.read_text())["run_id"]}, plain)
    deflated = tmp_path / "deflated-eigdirs.pt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    np.testing.assert_array_equal(qkalign.load(json_path, eigdirs=deflated).eig_dirs, data.eig_dirs)
    declared = sum(info.file_size for info in zipfile.ZipFile(deflated).infolist())
    monkeypatch.setattr(memory, "available_bytes", lambda: declared - 1)
    one_error_line(cli("analyze", json_path, "--eigdirs", deflated), "deflated-eigdirs.pt", "fits in memory",
                   "GiB available")


# --- numba without a writable cache ---------------------------------------------------------------

READ_ONLY_CACHES = """
import runpy, sys
import numba.core.caching as caching
original = caching._CacheLocator.ensure_cache_path
def read_only(self):  # what a read-only package folder and home give numba (root could write anyway)
    if "qkalign-numba-" not in self.get_cache_path():
        raise PermissionError(13, "Permission denied", self.get_cache_path())
    original(self)
caching._CacheLocator.ensure_cache_path = read_only
sys.argv = ["qkalign", *sys.argv[1:]]
runpy.run_module("qkalign", run_name="__main__")
"""


@pytest.mark.slow
def test_no_writable_numba_cache_is_one_warning_and_a_result(sharded, tmp_path):
    """measure (one small kernel to compile) in a process where numba can write no cache of its own."""
    out = tmp_path / "out"
    proc = run_python(["-c", READ_ONLY_CACHES, "measure", sharded, "-o", out / "m", "--quiet"], cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("qkalign: warning: no writable numba cache"), proc.stderr
    np.testing.assert_array_equal(qkalign.load(out / "m.json").gram, qkalign.measure(sharded, progress=False).gram)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]  # nothing else left behind


def test_an_error_quoting_hostile_text_stays_one_line(cli, sharded, tmp_path):
    """Found by tests/test_fuzz.py: safetensors quotes an unknown dtype as decoded, so a NEL (\\x85) in it
    made the error two lines. Newlines and terminal escapes in a file's text are printed as escapes."""
    header = json.dumps({"w": {"dtype": "NO\nPE\x85\x1b[2J", "shape": [1], "data_offsets": [0, 4]}}).encode()
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text((sharded / "config.json").read_text())
    (single / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    line = one_error_line(cli("measure", single, "-o", tmp_path / "out"), "model.safetensors")
    assert "\x1b" not in line and "\x85" not in line


def test_a_cgroup_limit_bounds_the_memory_available(tmp_path, monkeypatch):
    """In a container or a SLURM job the cgroup's limit, not the machine's memory, is what there is."""
    from qkalign import memory

    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    monkeypatch.setattr(memory, "_CGROUP_FILES", ((str(limit), str(usage)),))
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 64 * 2**30)
    limit.write_text(f"{2**30}\n")
    usage.write_text(f"{2**28}\n")
    assert memory.available_bytes() == 2**30 - 2**28
    limit.write_text("max\n")
    assert memory.available_bytes() == 64 * 2**30
