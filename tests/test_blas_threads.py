"""BLAS thread limits: every BLAS library loaded, including one loaded after the first limit."""

import json

from qkalign.testing.processes import run_python

# A fresh process: scipy's own OpenBLAS is loaded only after the first limit was taken.
LATE_SCIPY = """
import json, sys
from threadpoolctl import threadpool_info
from qkalign.linalg.blas_threads import one_blas_thread
assert "scipy.linalg" not in sys.modules
with one_blas_thread():
    pass
import scipy.linalg  # noqa: F401  (loads scipy's BLAS)
with one_blas_thread():
    threads = {info["filepath"]: info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}
print(json.dumps(threads))
"""


def test_one_blas_thread_limits_a_blas_loaded_after_the_first_limit():
    proc = run_python(["-c", LATE_SCIPY])
    assert proc.returncode == 0, proc.stderr
    threads = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(threads) >= 1
    assert set(threads.values()) == {1}, threads
