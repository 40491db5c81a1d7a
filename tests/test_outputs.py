"""Outputs are written whole or not at all, and a grams JSON is read only with its own eig-dirs file.

Failed writes (a full disk, simulated by a file-size limit on the process), unusable output
paths (checked before the work), Ctrl-C in the middle of a run (one line, exit 130, nothing
left behind) and pairs mixed from two runs.
"""

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import qkalign
from qkalign.files.outputs import atomic_paths
from qkalign.files.seed_format import save
from qkalign.testing.model_folders import write_model
from qkalign.testing.processes import checkout_env
from qkalign.testing.refusals import one_error_line
from qkalign.weights.synthetic import PRESETS, SyntheticSpec, make_qkdata


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture()
def two_runs(tmp_path):
    """Two different models saved at two prefixes: ((json, eigdirs), (json, eigdirs))."""
    first = save(make_qkdata(SyntheticSpec(4, 2, 1, 4, 16, topk=3, seed=1)), tmp_path / "a")
    second = save(make_qkdata(SyntheticSpec(4, 2, 1, 4, 16, topk=3, seed=2)), tmp_path / "b")
    return first, second


@pytest.mark.parametrize("file_format", ["safetensors", "pt"])
def test_a_pair_from_two_runs_is_refused(two_runs, cli, file_format, tmp_path):
    (json_a, _), _ = two_runs
    json_a, eig_a = save(qkalign.load(json_a), tmp_path / "fmt", file_format=file_format)
    _, eig_b = save(qkalign.load(two_runs[1][0]), tmp_path / "other", file_format=file_format)
    assert cli("analyze", json_a).returncode == 0
    shutil.copy(eig_b, eig_a)  # what an interrupted or mixed copy leaves: same shapes, another model
    line = one_error_line(cli("analyze", json_a))
    assert "run_id" in line and "two different runs" in line and eig_a.name in line
    with pytest.raises(qkalign.InputError, match="two different runs"):
        qkalign.load(json_a)


def test_files_without_a_run_id_are_read_as_before(two_runs, tmp_path):
    """The seed's files (and earlier qkalign's) have no run id: nothing to match, read as they are."""
    (json_a, eig_a), _ = two_runs
    doc = json.loads(json_a.read_text())
    del doc["run_id"]
    json_a.write_text(json.dumps(doc))
    np.testing.assert_array_equal(qkalign.load(json_a).gram, np.array(doc["gram"]))


def test_convert_links_the_new_file_to_the_json(cli, tmp_path):
    from qkalign.files.eigdirs import read_eigdirs

    json_path, _ = save(make_qkdata(SyntheticSpec(4, 2, 1, 4, 16, topk=3)), tmp_path / "c", file_format="pt")
    assert cli("convert", json_path).returncode == 0
    native = tmp_path / "c-eigdirs.safetensors"
    assert read_eigdirs(native)["run_id"] == json.loads(json_path.read_text())["run_id"]
    assert qkalign.load(json_path).eigdirs_path == str(native)  # found first, and accepted as the same run


def test_a_failed_write_leaves_the_previous_pair_and_no_temporary_file(two_runs):
    (json_a, eig_a), _ = two_runs
    before = {p: p.read_bytes() for p in (json_a, eig_a)}

    class DiskFull(Exception):
        pass

    with pytest.raises(DiskFull):
        with atomic_paths([eig_a, json_a]) as (eig_tmp, json_tmp):
            eig_tmp.write_bytes(b"partial")
            raise DiskFull
    assert {p: p.read_bytes() for p in before} == before
    assert listing(json_a.parent) == ["a-eigdirs.safetensors", "a.json", "b-eigdirs.safetensors", "b.json"]


def _file_size_limit(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes beyond the limit fail with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
@pytest.mark.parametrize("file_format", ["safetensors", "pt"])
def test_a_full_disk_is_one_line_and_leaves_the_previous_run(tmp_path, file_format):
    prefix = tmp_path / "m"
    old = save(make_qkdata(SyntheticSpec(4, 2, 1, 4, 16, topk=3)), prefix, file_format=file_format)
    before = {p.name: p.read_bytes() for p in old}
    proc = subprocess.run([sys.executable, "-m", "qkalign", "synthetic", "small", "-o", prefix, "--format", file_format],
                          env=checkout_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=_file_size_limit(20_000))  # the small preset's eig-dirs file is ~100 kB
    assert "-o" in one_error_line(proc) and "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in old} == before
    assert listing(tmp_path) == sorted(before)


@pytest.mark.parametrize("prefix, found", [(".", "'.'"), ("", "''"), ("out/", "'out/'")])
def test_unusable_prefixes_are_refused_before_the_work(cli, prefix, found, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(cli("synthetic", "small", "-o", prefix))
    assert "-o" in line and found in line
    assert listing(tmp_path) == []


def test_an_output_path_that_is_a_directory_is_refused_before_measuring(cli, tmp_path):
    model = write_model(tmp_path / "model", "llama")
    (tmp_path / "out-eigdirs.safetensors").mkdir()
    line = one_error_line(cli("measure", model.folder, "-o", tmp_path / "out", "--quiet"))
    assert "out-eigdirs.safetensors" in line and "a directory" in line
    assert listing(tmp_path) == ["model", "out-eigdirs.safetensors"]  # no JSON written beside it


def test_plot_folder_under_a_file_is_refused_before_the_analysis(cli, written_small, tmp_path):
    (tmp_path / "f").write_text("")
    proc = cli("analyze", written_small[0], "--plot", tmp_path / "f" / "figs")
    assert "--plot" in one_error_line(proc) and proc.stdout == ""


def _sigint_default():
    """A terminal's Ctrl-C: a child of a background job would otherwise inherit SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when(proc, marker, collected):
    """Read ``proc``'s stderr; send SIGINT shortly after ``marker`` shows (the work has started)."""
    def read():
        buffer = b""
        while chunk := proc.stderr.read1(4096):
            buffer += chunk
            if marker in buffer and not collected:
                collected.append(time.monotonic())
                # at once: measure of the model below takes ~0.3 s after its bar appears (2 cores)
                threading.Timer(0.02, proc.send_signal, (signal.SIGINT,)).start()
        collected.append(buffer.decode())
    reader = threading.Thread(target=read)
    reader.start()
    return reader


@pytest.mark.slow
def test_ctrl_c_during_measure_is_one_line_exit_130_and_leaves_nothing(tmp_path):
    # big enough that measure is still running when the signal arrives, 20 ms after its progress bar
    model = write_model(tmp_path / "model", "llama", shape=(24, 16, 4, 32, 512))
    out = tmp_path / "out"
    out.mkdir()
    collected = []
    with subprocess.Popen([sys.executable, "-m", "qkalign", "measure", model.folder, "-o", out / "m"],
                          env=checkout_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          preexec_fn=_sigint_default) as proc:
        reader = _interrupt_when(proc, b"measure:", collected)
        proc.wait(timeout=300)
        reader.join()
    stderr = collected[-1]
    assert len(collected) == 2, ("the run ended before it could be interrupted", stderr)
    # what a terminal shows: each line as its last carriage return left it (the bar is cleared)
    lines = [line.rsplit("\r", 1)[-1] for line in stderr.split("\n")]
    lines = [line for line in lines if line.strip()]
    assert proc.returncode == 130 and lines == ["qkalign: interrupted (no output was left half-written)"], stderr
    assert listing(out) == []


@pytest.mark.slow
def test_ctrl_c_between_the_pair_writes_keeps_the_old_pair_or_the_new(tmp_path):
    """SIGINT arriving while the files are renamed into place is held until both are."""
    code = (
        "import os, signal, sys, threading, time\n"
        "from qkalign.files import outputs as output_files\n"
        "# another thread, as BLAS and torch start: the kernel may hand it the process's signal\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "real = os.replace\n"
        "def replace(a, b):\n"
        "    real(a, b)\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # delivered after the renames, not between them\n"
        "output_files.os.replace = replace\n"
        "from qkalign.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    prefix = tmp_path / "m"
    save(make_qkdata(SyntheticSpec(4, 2, 1, 4, 16, topk=3)), prefix)
    proc = subprocess.run([sys.executable, "-c", code, "synthetic", "small", "-o", prefix], env=checkout_env(),
                          capture_output=True, text=True, timeout=300, preexec_fn=_sigint_default)
    assert proc.returncode == 130, proc.stderr
    data = qkalign.load(tmp_path / "m.json")  # the new pair, whole and linked
    assert data.num_layers == PRESETS["small"].num_layers != 4
    assert listing(tmp_path) == ["m-eigdirs.safetensors", "m.json"]


def test_written_files_have_the_usual_permissions(tmp_path):
    json_path, eig_path = save(make_qkdata(SyntheticSpec(4, 2, 1, 4, 16, topk=3)), tmp_path / "m")
    mask = os.umask(0)
    os.umask(mask)
    assert {oct(p.stat().st_mode & 0o777) for p in (json_path, eig_path)} == {oct(0o666 & ~mask)}


def test_a_symlinked_output_replaces_its_target_and_keeps_permissions(cli, written_small, tmp_path):
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    link.symlink_to(target)
    assert cli("analyze", written_small[0], "--json", link).returncode == 0
    assert link.is_symlink() and json.loads(target.read_text())["meta"]["num_layers"] == 10
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)


def test_a_fifo_output_is_written_in_place_not_replaced(cli, written_small, tmp_path):
    """``--json /dev/stdout`` and the like: a device or FIFO is written, never replaced by a file."""
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    proc = cli("analyze", written_small[0], "--json", fifo)
    reader.join(timeout=60)
    assert proc.returncode == 0 and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert json.loads(received[0])["meta"]["num_layers"] == 10


@pytest.mark.parametrize("args", [["--json", ""], ["--plot", ""]])
def test_empty_output_paths_are_refused(cli, written_small, args):
    assert one_error_line(cli("analyze", written_small[0], *args)).startswith("qkalign: error: --")


def test_a_name_too_long_is_one_line(cli, tmp_path):
    one_error_line(cli("synthetic", "small", "-o", tmp_path / ("x" * 300)))
