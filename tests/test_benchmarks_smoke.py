"""The benchmark suite runs (tiny preset, timing disabled), so it cannot rot unnoticed."""

import pytest

from qkalign.testing.processes import REPO_ROOT, run_python


@pytest.mark.slow
def test_benchmarks_run_on_the_small_preset():
    proc = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable", "benchmarks"],
                      cwd=REPO_ROOT, QKALIGN_BENCH_PRESET="small")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "34 passed" in proc.stdout
