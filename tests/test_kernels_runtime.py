"""The kernels under other runtimes, each in a fresh subprocess: 1 vs 2 threads, and no JIT."""

import numba
import numpy as np
import pytest

from qkalign.testing.processes import REPO_ROOT, run_python

pytestmark = pytest.mark.slow

# Computes every row of the comparison table on one input and saves the results.
# Every prange loop has many iterations per thread.
_RUN_ALL_KERNELS = """
import sys, numba, numpy as np
from qkalign.testing.comparisons import COMPARISONS, random_inputs
from qkalign.kernels import thread_count
thread_count.PARALLEL_MIN_WORK = 0  # every kernel uses all threads, however small the input
inputs = random_inputs(9, 5, 6, 40, 16, seed=21, eig_dirs_kind=sys.argv[2], eig_dirs_dtype=sys.argv[3])
results = {}
for c in COMPARISONS:
    out = c.kernel(*c.args(inputs))
    for i, arr in enumerate(out if isinstance(out, tuple) else (out,)):
        results[f"{c.label}.{i}"] = arr
np.savez(sys.argv[1], num_threads=numba.get_num_threads(), **results)
"""


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="threads only exist with the JIT")
# The Cholesky-QR path on float32 storage and the Householder path on float64.
@pytest.mark.parametrize("kind, dtype", [("float16", "float32"), ("gaussian", "float64")])
def test_results_are_bit_identical_for_one_and_two_threads(tmp_path, kind, dtype):
    results = []
    for threads in ("1", "2"):
        path = tmp_path / f"threads{threads}.npz"
        proc = run_python(["-W", "error", "-c", _RUN_ALL_KERNELS, path, kind, dtype], cwd=REPO_ROOT, NUMBA_NUM_THREADS=threads)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""  # no numba or OpenBLAS warnings
        results.append(np.load(path))
    one, two = results
    assert int(one["num_threads"]) == 1 and int(two["num_threads"]) == 2
    assert sorted(one.files) == sorted(two.files)
    for name in set(one.files) - {"num_threads"}:
        assert one[name].tobytes() == two[name].tobytes(), name


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="already running without the JIT")
def test_kernel_tests_pass_without_jit():
    # The interpreted kernels run the same source as Python, so coverage tools see it.
    proc = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_kernels.py",
                       "tests/test_small_linalg.py"], cwd=REPO_ROOT, NUMBA_DISABLE_JIT="1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
