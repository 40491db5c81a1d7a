"""The benchmark suite runs (tiny preset, timing disabled), so it cannot rot unnoticed."""

import pytest

from qkalign.testing.processes import REPO_ROOT, SEED_SCRIPT, run_python


@pytest.mark.slow
def test_benchmarks_run_on_the_small_preset():
    proc = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable", "benchmarks"],
                      cwd=REPO_ROOT, QKALIGN_BENCH_PRESET="small")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "52 passed" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(not SEED_SCRIPT.exists(), reason=f"the seed script is not at {SEED_SCRIPT}")
def test_end_to_end_script_runs_on_the_small_preset(tmp_path):
    proc = run_python(["benchmarks/end_to_end.py", "--rounds", "1", "--skip-large"], cwd=REPO_ROOT,
                      QKALIGN_BENCH_PRESET="small", QKALIGN_BENCH_CACHE=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| `qkalign analyze`")]
    assert len(rows) == 3 and all(row.endswith(("| met |", "| missed |")) for row in rows)
