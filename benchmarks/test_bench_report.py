"""The HTML report page's cost (issue 25.5): ``qkalign analyze --report PAGE`` against ``qkalign analyze``, as
whole processes alternated, on the qwen3-4b preset. Target: the page adds at most 3 s.

Run: ``PYTHONPATH=. python -m pytest benchmarks/test_bench_report.py -p no:cacheprovider -s`` (``-s`` prints
the times).

Both commands read the preset as safetensors (``end_to_end.preset_inputs``: the pair ``end_to_end.py`` times)
and are timed from outside: start-up, imports, reading, ``analyze`` and the text report, and for the page's run
also matplotlib's import and every figure drawn as SVG into the page. One warm-up run of each (the numba
cache, the input in the page cache), then ``QKALIGN_BENCH_ROUNDS`` rounds (default 3) of analyze, then analyze
with the page; the figure is the best page run less the best plain run. The page's own parts are timed too, in
one more process, from the result JSON that ``analyze --json`` wrote: importing the page module, reading the
JSON, the first ``write_html_page`` (matplotlib's import and font set-up on first use) and a second one.
"""

import os
import re
import sys

import pytest
from conftest import PRESET, SMOKE
from end_to_end import preset_inputs, run_measured

from qkalign.files.seed_format import save
from qkalign.testing.processes import run_timed
from qkalign.weights.synthetic import PRESETS, make_qkdata

#: What ``--report`` may add to ``analyze`` (issue 25.5), seconds.
PAGE_ADDED_LIMIT_S = 3.0

# The page alone, from a result JSON: the parts of its cost.
_PAGE_FROM_RESULT = """
import json, sys, time
start = time.perf_counter()
from qkalign.views.html_page import write_html_page
imported = time.perf_counter()
with open(sys.argv[1], encoding="utf-8") as f:
    result = json.load(f)
read = time.perf_counter()
write_html_page(result, sys.argv[2])
first = time.perf_counter()
write_html_page(result, sys.argv[2])
second = time.perf_counter()
print(json.dumps({"import_s": imported - start, "read_json_s": read - imported,
                  "first_page_s": first - read, "second_page_s": second - first}))
"""


@pytest.fixture(scope="module")
def grams_json(tmp_path_factory):
    """The preset's grams JSON with safetensors eig_dirs: the cached one, or the small preset's in a temporary
    folder for a smoke run."""
    if SMOKE:
        return save(make_qkdata(PRESETS[PRESET]), tmp_path_factory.mktemp("report-bench") / PRESET)[0]
    return preset_inputs()[1]


def test_report_page_cost(benchmark, grams_json, tmp_path):
    benchmark.group = "qkalign analyze --report: the page beyond analyze (whole process)"
    rounds = 1 if SMOKE else int(os.environ.get("QKALIGN_BENCH_ROUNDS", "3"))
    analyze = [sys.executable, "-m", "qkalign", "analyze", grams_json]
    page, result = tmp_path / "report.html", tmp_path / "result.json"
    with_page = [*analyze, "--report", page]
    run_measured([*analyze, "--json", result])  # warm-up, and the result the page is timed from below
    run_measured(with_page)
    plain, report = [], []

    def analyze_first():  # pytest-benchmark's setup hook runs before every round: the two alternate
        plain.append(run_measured(analyze))

    benchmark.pedantic(lambda: report.append(run_measured(with_page)), setup=analyze_first, rounds=rounds,
                       iterations=1)
    parts = run_timed(_PAGE_FROM_RESULT, result, tmp_path / "from-result.html")
    # walls only: a child forked from this pytest process (which may hold the preset it just wrote) reports
    # the parent's size as its peak RSS
    plain_wall, report_wall = [w for w, _ in plain], [w for w, _ in report]
    added = min(report_wall) - min(plain_wall)
    text = page.read_text(encoding="utf-8")
    figures = len(re.findall(r"<figure class=[\"']qk-figure[\"']", text))
    print(f"\nqkalign analyze {PRESET}: " + ", ".join(f"{w:.2f}" for w in plain_wall) + " s; with --report: "
          + ", ".join(f"{w:.2f}" for w in report_wall) + f" s; the page adds {added:+.2f} s best/best "
          f"(target <= {PAGE_ADDED_LIMIT_S:g} s), pairs " + ", ".join(f"{b - a:+.2f}" for a, b in
                                                                        zip(plain_wall, report_wall)))
    print(f"the page: {figures} figures, {len(text.encode()) / 1e6:.2f} MB")
    print(f"the page from the result JSON in a new process: import {parts['import_s']:.2f} s, read "
          f"{parts['read_json_s']:.2f} s, first page {parts['first_page_s']:.2f} s, second {parts['second_page_s']:.2f} s")
    benchmark.extra_info.update(analyze_wall=plain_wall, report_wall=report_wall, page_added_s=added,
                                page_bytes=len(text.encode()), figures=figures, **parts)
    assert figures > 0 and (tmp_path / "from-result.html").is_file()
    if not SMOKE:  # a tiny preset's times say nothing about the target
        assert added <= PAGE_ADDED_LIMIT_S
