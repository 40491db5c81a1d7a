"""Numba kernels, the numpy reference and the seed's loop, side by side at one preset.

The numpy side (reference and seed) runs with OpenBLAS limited to one thread: its
many small QR/SVD calls are its best that way (measured on the 2-core machine:
3.8 s vs 60 s for the reference's (d), 1.1 s vs 150 s for the seed's loop, under load).
"""

import time

import pytest
from conftest import SLOW, SMOKE
from seed_loop import seed_principal_angles
from threadpoolctl import threadpool_limits

import qkalign
from qkalign.stats.backends import get_backend
from qkalign.testing.comparisons import COMPARISONS

#: Reference functions too slow for every run at the qwen3-4b preset (see QKALIGN_BENCH_SLOW): the
#: all-pairs principal angles (~2 minutes a round), the rotary Grams (~20 s a round, 5 calls), the rotary
#: bands (~7 s a call).
SLOW_REFERENCES = {"principal_cosines_all_pairs", "rotary_layer_grams", "rotary_bands"}


def _timed(benchmark, function, *args, blas_threads=None, budget=3.0):
    """Benchmark ``function(*args)`` after a warm-up call, with enough rounds to fill ~``budget`` s."""
    with threadpool_limits(blas_threads):
        function(*args)  # compiles or loads the kernels, warms the caches
        start = time.perf_counter()
        function(*args)
        once = max(time.perf_counter() - start, 1e-6)
        rounds = 1 if SMOKE else max(3, min(100, int(budget / once)))
        benchmark.extra_info["blas_threads"] = blas_threads or "default"
        return benchmark.pedantic(function, args, rounds=rounds, iterations=1)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("comparison", COMPARISONS, ids=lambda c: c.label)
def test_function(benchmark, inputs, comparison, backend):
    benchmark.group = comparison.label
    if backend == "numpy" and comparison.name in SLOW_REFERENCES and not (SLOW or SMOKE):
        pytest.skip(f"the numpy reference of {comparison.name} takes minutes: set QKALIGN_BENCH_SLOW=1")
    function = comparison.kernel if backend == "numba" else comparison.reference
    _timed(benchmark, function, *comparison.args(inputs), blas_threads=None if backend == "numba" else 1)


def _section_d(backend):
    """What ``analyze`` computes for section (d): principal cosines and top-1 overlap to the anchor."""
    impl = get_backend(backend)

    def run(eig_dirs, anchor):
        return impl.principal_cosines_to_anchor(eig_dirs, anchor), impl.top1_overlap(eig_dirs, anchor)
    return run


@pytest.mark.parametrize("approach", ["numba", "numpy", "seed"])
def test_section_d_to_anchor(benchmark, inputs, approach):
    benchmark.group = "(d) principal angles + top-1 overlap to the anchor"
    function = seed_principal_angles if approach == "seed" else _section_d(approach)
    _timed(benchmark, function, inputs.eig_dirs, inputs.anchor, blas_threads=None if approach == "numba" else 1)


def _analyze(**options):
    """``qkalign.analyze(data, anchor, backend)`` with ``options``."""
    def run(data, anchor, backend):
        return qkalign.analyze(data, anchor, backend, **options)
    return run


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_analyze(benchmark, data, backend):
    benchmark.group = "analyze: the seed's (a)-(d) (pairs=False, chance=False)"
    _timed(benchmark, _analyze(pairs=False, chance=False), data, -1, backend,
           blas_threads=None if backend == "numba" else 1)


def test_analyze_everything(benchmark, data):
    """The default ``analyze``: (a)-(d), all layer pairs, spectral and sign statistics, chance levels."""
    benchmark.group = "analyze: everything (default)"
    _timed(benchmark, _analyze(), data, -1, "numba")


def test_analyze_match_heads(benchmark, data):
    benchmark.group = "analyze: everything + --match-heads"
    _timed(benchmark, _analyze(match_heads=True), data, -1, "numba", budget=20.0)
