"""Costs that need a fresh process: the first call (JIT compile or cache load) and the thread count."""

import json

import pytest
from conftest import SMOKE, preset_json

from qkalign.testing.processes import run_timed

# Times import, then the first and second ``analyze`` in one new process; the
# difference of the two calls is the JIT cost (compile with an empty cache, load with a warm one).
_FIRST_CALL = """
import json, sys, time
start = time.perf_counter()
import qkalign
data = qkalign.load(sys.argv[1])
loaded = time.perf_counter()
options = json.loads(sys.argv[2])
qkalign.analyze(data, backend="numba", **options)
first = time.perf_counter()
qkalign.analyze(data, backend="numba", **options)
second = time.perf_counter()
print(json.dumps({"import_and_load_s": loaded - start, "first_analyze_s": first - loaded,
                  "second_analyze_s": second - first, "jit_overhead_s": (first - loaded) - (second - first)}))
"""

# Best of 3 of the all-pairs principal angles and of its parts, with one thread count.
_ALL_PAIRS = """
import json, sys, time
import numba, numpy as np, qkalign
from qkalign.kernels import pair_lists, principal_angles as pa
data = qkalign.load(sys.argv[1])
def best(f):
    f()
    times = []
    for _ in range(3):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return min(times)
e = data.eig_dirs
total = best(lambda: pa.principal_cosines_all_pairs(e))
grams = best(lambda: pa._all_pairs_grams(e))
_, cross, p, _ = pa._all_pairs_grams(e)
first, second = pair_lists.all_unordered(e.shape[0])
out = np.empty((first.size, e.shape[1], e.shape[2]))
kernel = best(lambda: pa._principal_cosines(cross, first, second, p, out))
print(json.dumps({"threads": numba.get_num_threads(), "all_pairs_s": total,
                  "grams_blas_s": grams, "pair_kernel_s": kernel}))
"""

pytestmark = pytest.mark.skipif(SMOKE, reason="subprocess timings only at the benchmark preset")


#: ``analyze`` options of the first-call runs: the default (everything), and the seed's (a)-(d) only.
ANALYZE_OPTIONS = {"default": {}, "seed-part": {"pairs": False, "chance": False}}


@pytest.mark.parametrize("options", list(ANALYZE_OPTIONS))
@pytest.mark.parametrize("cache", ["empty", "warm"])
def test_first_call_in_a_new_process(benchmark, tmp_path_factory, cache, options):
    benchmark.group = "first analyze in a new process (numba)"
    json_path = preset_json()
    arguments = json.dumps(ANALYZE_OPTIONS[options])
    cache_dir = tmp_path_factory.mktemp(f"numba-cache-{cache}")
    if cache == "warm":
        run_timed(_FIRST_CALL, json_path, arguments, NUMBA_CACHE_DIR=cache_dir)  # fills the cache
    rounds = 1 if cache == "empty" else 3
    results = []

    def run():
        # an empty cache must stay empty for every round
        directory = tmp_path_factory.mktemp("numba-cache-empty") if cache == "empty" else cache_dir
        results.append(run_timed(_FIRST_CALL, json_path, arguments, NUMBA_CACHE_DIR=directory))
    benchmark.pedantic(run, rounds=rounds, iterations=1)
    for key in results[0]:
        benchmark.extra_info[key] = min(r[key] for r in results)


@pytest.mark.parametrize("threads", [1, 2])
def test_all_pairs_threads(benchmark, threads):
    benchmark.group = "all-pairs principal angles: threads"
    results = []
    benchmark.pedantic(lambda: results.append(run_timed(_ALL_PAIRS, preset_json(), NUMBA_NUM_THREADS=threads,
                                                        OPENBLAS_NUM_THREADS=threads)),
                       rounds=1, iterations=1)
    benchmark.extra_info.update(results[0])
