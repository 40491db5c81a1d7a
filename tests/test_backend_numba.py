"""``analyze(backend="numba")`` gives the numpy backend's result, and is the default."""

import numpy as np
import pytest

import qkalign
from qkalign import kernels
from qkalign.stats.backends import BACKEND_FUNCTIONS, get_backend
from qkalign.testing.comparisons import DOT_ATOL, RTOL
from qkalign.testing.processes import run_qkalign
from qkalign.weights.synthetic import PRESETS, make_qkdata


def test_auto_backend_answers_small_inputs_with_numpy_and_large_ones_with_numba(data_small, cli, monkeypatch):
    from qkalign.stats import backends

    small = qkalign.analyze(data_small, chance=False)
    assert small.meta["backend"] == "numpy" and backends.analysis_work(data_small) < backends.NUMPY_FASTER_WORK
    assert cli("analyze").stdout.splitlines()[0].endswith("(backend numpy)")  # the bundled example is small
    qkalign.analyze(data_small, backend="numba", chance=False)  # compiled in this process: auto may use them
    monkeypatch.setattr(backends, "NUMPY_FASTER_WORK", 0)
    large = qkalign.analyze(data_small, chance=False)
    assert large.meta["backend"] == "numba"
    np.testing.assert_allclose(large.operator_cos, small.operator_cos, rtol=RTOL)
    assert get_backend("numba") is kernels
    assert all(callable(getattr(kernels, name)) for name in BACKEND_FUNCTIONS)


def _assert_same(numba_value, numpy_value, path="result"):
    if isinstance(numpy_value, dict):
        assert numba_value.keys() == numpy_value.keys(), path
        for key in numpy_value:
            _assert_same(numba_value[key], numpy_value[key], f"{path}.{key}")
    elif isinstance(numpy_value, list) and numpy_value and not isinstance(numpy_value[0], (int, float, list)):
        assert numba_value == numpy_value, path
    elif isinstance(numpy_value, (list, float)):
        np.testing.assert_allclose(np.array(numba_value, dtype=float), np.array(numpy_value, dtype=float),
                                   rtol=RTOL, atol=DOT_ATOL, err_msg=path)
    else:
        assert numba_value == numpy_value, path


@pytest.mark.parametrize("preset, anchor", [("small", -1), ("small", 3), ("example", -2)])
def test_analyze_numba_equals_numpy(preset, anchor):
    data = make_qkdata(PRESETS[preset])
    with_numba = qkalign.analyze(data, anchor=anchor, backend="numba").to_dict()
    with_numpy = qkalign.analyze(data, anchor=anchor, backend="numpy").to_dict()
    assert with_numba["meta"].pop("backend") == "numba"
    assert with_numpy["meta"].pop("backend") == "numpy"
    _assert_same(with_numba, with_numpy)


@pytest.mark.slow
def test_cli_backends_print_the_same_report():
    reports = {}
    for backend in ("numba", "numpy"):
        proc = run_qkalign("analyze", "--backend", backend)
        assert proc.returncode == 0, proc.stderr
        first, _, rest = proc.stdout.partition("\n")
        assert first.endswith(f"(backend {backend})")
        reports[backend] = rest
    assert reports["numba"] == reports["numpy"]
    assert reports["numba"].count("\n") > 100


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_to_anchor_numbers_without_pairs_equal_the_pair_columns(backend):
    # analyze(pairs=True) takes the to-anchor statistics from the all-pairs results;
    # pairs=False computes them with the to-anchor functions. Same numbers to rounding.
    data = make_qkdata(PRESETS["small"])
    with_pairs = qkalign.analyze(data, anchor=2, backend=backend).to_dict()
    alone = qkalign.analyze(data, anchor=2, backend=backend, pairs=False, chance=False).to_dict()
    for key in ("pairs", "by_distance", "signed_mass", "frac_positive_topk", "chance"):
        assert key in with_pairs and key not in alone
        del with_pairs[key]
    _assert_same(alone, with_pairs)
    pairs = qkalign.analyze(data, anchor=2, backend=backend).pairs
    cosines = np.array(with_pairs["principal_angles"]["cosines"])  # (L, H, k)
    np.testing.assert_allclose(pairs["pa_mean_cos"]["per_head"][:, 2], cosines.mean(axis=-1), rtol=1e-15)
    np.testing.assert_allclose(pairs["top1_overlap"]["per_head"][:, 2].mean(axis=1),
                               with_pairs["principal_angles"]["top1_overlap"], rtol=1e-15)


def test_analyze_without_pairs_numba_equals_numpy():
    data = make_qkdata(PRESETS["example"])
    with_numba = qkalign.analyze(data, backend="numba", pairs=False, chance=False).to_dict()
    with_numpy = qkalign.analyze(data, backend="numpy", pairs=False, chance=False).to_dict()
    assert with_numba["meta"].pop("backend") == "numba"
    assert with_numpy["meta"].pop("backend") == "numpy"
    _assert_same(with_numba, with_numpy)
