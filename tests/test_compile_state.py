"""The first run after an install: what is compiled, what the user is told, and the background compile."""

import time

import pytest

import qkalign
from qkalign.stats import backends
from qkalign.testing.processes import run_python, run_qkalign

# Prints, in a fresh process, whether numba's cache holds the kernels of a default analyze.
_COMPILED = "from qkalign.kernels.compile_state import kernels_compiled; print(kernels_compiled())"


@pytest.fixture()
def empty_cache(tmp_path):
    """Environment of a fresh install: an empty numba cache, background compiles allowed."""
    return {"NUMBA_CACHE_DIR": tmp_path / "numba-cache", "QKALIGN_BACKGROUND_COMPILE": "1", "TMPDIR": tmp_path}


@pytest.mark.slow
def test_first_run_on_the_bundled_example_compiles_nothing_and_says_nothing(empty_cache, tmp_path):
    proc = run_qkalign("analyze", **empty_cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].endswith("(backend numpy)") and proc.stderr == ""
    assert not list(tmp_path.glob("qkalign-compile-*.lock"))  # no background compile was started either
    assert run_python(["-c", _COMPILED], **empty_cache).stdout.strip() == "False"


@pytest.mark.slow
def test_the_background_compile_fills_the_cache_that_later_runs_find(empty_cache, tmp_path):
    assert run_python(["-c", _COMPILED], **empty_cache).stdout.strip() == "False"
    start = "from qkalign.kernels.compile_state import compile_in_background as c; print(c(), c())"
    assert run_python(["-c", start], **empty_cache).stdout.split() == ["True", "False"]  # one at a time
    locks = list(tmp_path.glob("qkalign-compile-*.lock"))
    assert len(locks) == 1
    deadline = time.monotonic() + 300
    while locks[0].exists() and time.monotonic() < deadline:  # the detached process removes it when done
        time.sleep(0.5)
    assert not locks[0].exists()
    assert run_python(["-c", _COMPILED], **empty_cache).stdout.strip() == "True"


@pytest.fixture()
def cold_kernels(monkeypatch):
    """Kernels reported uncompiled; background compiles recorded instead of started."""
    from qkalign.kernels import compile_state

    started = []
    monkeypatch.setattr(compile_state, "kernels_compiled", lambda: False)
    monkeypatch.setattr(compile_state, "compile_in_background", lambda: started.append(True) or True)
    monkeypatch.setattr(backends, "_told", set())
    return started


def test_a_mid_sized_input_is_answered_by_numpy_while_the_kernels_compile(data_small, cold_kernels, capsys,
                                                                        monkeypatch):
    monkeypatch.setattr(backends, "NUMPY_FASTER_WORK", 0)  # data_small counts as mid-sized
    assert qkalign.analyze(data_small, chance=False).meta["backend"] == "numpy"
    assert cold_kernels == [] and capsys.readouterr().err == ""  # the library starts no process by itself
    result = qkalign.analyze(data_small, chance=False, background_compile=True)  # as the command line does
    assert result.meta["backend"] == "numpy" and cold_kernels == [True]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("qkalign: the Numba kernels are not compiled yet")
    qkalign.analyze(data_small, chance=False, background_compile=True)
    assert capsys.readouterr().err == ""  # told once


def test_a_large_input_waits_for_the_compile_and_is_told_how_long(data_small, cold_kernels, capsys, monkeypatch):
    monkeypatch.setattr(backends, "NUMPY_FASTER_WORK", 0)
    monkeypatch.setattr(backends, "NUMPY_FASTER_THAN_COMPILING_WORK", 0)
    result = qkalign.analyze(data_small, chance=False)
    assert result.meta["backend"] == "numba" and cold_kernels == []
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "compiling the Numba kernels: about 15 s" in err[0]
