"""The results table of a benchmark run, every target met or missed.

    python benchmarks/summary.py RUN.json                              # markdown to stdout
    python benchmarks/summary.py RUN.json --readme benchmarks/README.md  # replace the README's table

RUN.json is pytest-benchmark's ``--benchmark-json`` output (or a file that
``--benchmark-save`` wrote to ``.benchmarks/``). With ``--readme`` the lines between
``<!-- results:start -->`` and ``<!-- results:end -->`` are replaced and the rest of the
file is left as it is. Benchmarks absent from the run (a ``-k`` subset, the small preset,
no ``QKALIGN_BENCH_SLOW``) give "not run" rows. Times are minima over rounds: the
figure other processes on the machine disturb least.
"""

import argparse
import json
import sys
from pathlib import Path

START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"
#: The preset the targets are set for.
TARGET_PRESET = "qwen3-4b"

# The targets (issues 3-5), checked by the rows below.
D_LIMIT_S = 0.050  # (d) to the anchor
D_SEED_SPEEDUP = 25.0  # (d) against the seed's loop
SEED_PART_LIMIT_S = 0.080  # analyze, the seed's (a)-(d)
EVERYTHING_LIMIT_S = 1.0  # analyze() with everything
MATCH_HEADS_LIMIT_S = 5.0  # what match_heads=True adds
ALL_PAIRS_LIMIT_S = 0.5  # all-pairs principal angles
ROW_SPEEDUP = 3.0  # every comparison row, numba against numpy
COLD_OVERHEAD_LIMIT_S = 5.0  # first analyze in a new process, empty numba cache
WARM_OVERHEAD_LIMIT_S = 0.3  # the same, warm cache
THREAD_SPEEDUP = 1.7  # all-pairs principal angles, 2 threads against 1
MEASURE_RATIO_LIMIT = 1.5  # measure against the machine's SGEMM
MEASURE_24_LAYERS_RATIO_LIMIT = 1.3  # the same at the 24-layer shape of issue 21.7
MEASURE_MEMORY_LIMIT_BYTES = 3 * 2**30  # measure's peak memory beyond the mapped file
REPORT_PAGE_LIMIT_S = 3.0  # what analyze --report adds to analyze, whole processes (issue 25.5)

MET, MISSED, NOT_RUN = "met", "missed", "not run"
DASH = "–"


class Run:
    """A pytest-benchmark JSON: benchmarks by name, machine and commit."""

    def __init__(self, run):
        self.raw = run
        self.by_name = {bench["name"]: bench for bench in run.get("benchmarks", [])}

    def min_s(self, name):
        """Minimum over rounds of benchmark ``name`` in seconds, None if it is not in the run."""
        bench = self.by_name.get(name)
        return bench["stats"]["min"] if bench else None

    def extra(self, name):
        """``extra_info`` of benchmark ``name`` ({} if it is not in the run)."""
        bench = self.by_name.get(name)
        return bench.get("extra_info", {}) if bench else {}

    def comparison_rows(self):
        """The comparison table's rows in the run: ``(label, numba bench, numpy bench or None)``, in run order."""
        rows = []
        for name, bench in self.by_name.items():
            if name.startswith("test_function[") and name.endswith("-numba]"):
                rows.append((bench.get("group") or name[len("test_function["):-len("-numba]")], bench,
                             self.by_name.get(name[:-len("-numba]")] + "-numpy]")))
        return rows


def seconds(s, unit=None):
    """``s`` seconds as text, in ``unit`` ("ms" or "s", milliseconds anyway below 0.1 s) or one that suits its size."""
    if s is None:
        return DASH
    if unit is None:
        unit = "ms" if s < 1.0 else "s"
    if unit == "ms" or s < 0.1:
        ms = s * 1e3
        return f"{ms:.3f} ms" if ms < 1 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"
    return f"{s:.2f} s"


def verdict(value, limit, at_most=True):
    """"met" / "missed" for ``value`` against ``limit`` (an upper bound, or a lower one), "not run" for None."""
    if value is None:
        return NOT_RUN
    return MET if (value <= limit if at_most else value >= limit) else MISSED


def target_rows(run):
    """Rows ``(measurement, numba, numpy reference, seed script, target, met?)`` of the main table."""
    rows = []
    d_numba = run.min_s("test_section_d_to_anchor[numba]")
    d_numpy = run.min_s("test_section_d_to_anchor[numpy]")
    d_seed = run.min_s("test_section_d_to_anchor[seed]")
    d_label = "(d) principal angles + top-1 overlap to the anchor"
    rows.append((d_label, seconds(d_numba, "ms"), seconds(d_numpy, "ms"), seconds(d_seed, "ms"),
                 f"≤ {D_LIMIT_S * 1e3:g} ms", verdict(d_numba, D_LIMIT_S)))
    speedup = d_seed / d_numba if d_numba and d_seed else None
    rows.append(("(d): speed-up over the seed script's loop", f"{speedup:.1f}x" if speedup else DASH,
                 f"{d_seed / d_numpy:.1f}x" if d_numpy and d_seed else DASH, "1x",
                 f"≥ {D_SEED_SPEEDUP:g}x", verdict(speedup, D_SEED_SPEEDUP, at_most=False)))

    part = run.min_s("test_analyze[numba]")
    rows.append(("`analyze(pairs=False, chance=False)`: the seed's (a)-(d)", seconds(part, "ms"),
                 seconds(run.min_s("test_analyze[numpy]"), "ms"), DASH,
                 f"≤ {SEED_PART_LIMIT_S * 1e3:g} ms", verdict(part, SEED_PART_LIMIT_S)))
    everything = run.min_s("test_analyze_everything")
    rows.append(("`analyze()`: everything (all pairs, spectra, signs, chance levels)", seconds(everything, "s"),
                 DASH, DASH, f"≤ {EVERYTHING_LIMIT_S:g} s", verdict(everything, EVERYTHING_LIMIT_S)))
    matched = run.min_s("test_analyze_match_heads")
    added = matched - everything if matched is not None and everything is not None else None
    rows.append(("`analyze(match_heads=True)`: time added", f"+{seconds(added, 's')}" if added is not None else DASH,
                 DASH, DASH, f"≤ +{MATCH_HEADS_LIMIT_S:g} s", verdict(added, MATCH_HEADS_LIMIT_S)))
    all_pairs = run.min_s("test_function[principal_cosines_all_pairs-numba]")
    all_pairs_numpy = run.min_s("test_function[principal_cosines_all_pairs-numpy]")
    rows.append(("all-pairs principal angles", seconds(all_pairs, "s"),
                 seconds(all_pairs_numpy, "s") if all_pairs_numpy else "only with `QKALIGN_BENCH_SLOW=1`",
                 DASH, f"≤ {ALL_PAIRS_LIMIT_S:g} s", verdict(all_pairs, ALL_PAIRS_LIMIT_S)))

    all_rows = run.comparison_rows()
    comparisons = [(label, numba["stats"]["min"], numpy["stats"]["min"]) for label, numba, numpy in all_rows if numpy]
    if comparisons:
        slowest = min(comparisons, key=lambda c: c[2] / c[1])
        fastest = max(comparisons, key=lambda c: c[2] / c[1])
        met = sum(numpy / numba >= ROW_SPEEDUP for _, numba, numpy in comparisons)
        numba_cell = (f"{met} of {len(comparisons)} rows; {slowest[2] / slowest[1]:.1f}x (`{slowest[0]}`) "
                      f"to {fastest[2] / fastest[1]:.1f}x (`{fastest[0]}`)")
        if len(all_rows) > len(comparisons):
            numba_cell += f" ({len(all_rows) - len(comparisons)} more without a numpy run)"
        row_verdict = MET if met == len(comparisons) else MISSED
    else:
        numba_cell, row_verdict = DASH, NOT_RUN
    rows.append(("every comparison row (table below): numba over numpy", numba_cell, "1x", DASH,
                 f"≥ {ROW_SPEEDUP:g}x each", row_verdict))

    for cache, limit in (("empty", COLD_OVERHEAD_LIMIT_S), ("warm", WARM_OVERHEAD_LIMIT_S)):
        for options, what in (("default", "`analyze()`"), ("seed-part", "the seed's (a)-(d)")):
            info = run.extra(f"test_first_call_in_a_new_process[{cache}-{options}]")
            overhead = info.get("jit_overhead_s")
            cell = DASH if overhead is None else (
                f"{seconds(overhead, 's')} (import + load {seconds(info['import_and_load_s'], 's')}, "
                f"first call {seconds(info['first_analyze_s'], 's')}, second {seconds(info['second_analyze_s'], 's')})")
            rows.append((f"new process, {cache} numba cache, {what}: first call's JIT overhead", cell, DASH, DASH,
                         f"≤ {limit:g} s", verdict(overhead, limit)))

    one, two = (run.extra(f"test_all_pairs_threads[{t}]") for t in (1, 2))
    if one.get("all_pairs_s") and two.get("all_pairs_s"):
        threads = one["all_pairs_s"] / two["all_pairs_s"]
        parts = ", ".join(f"{name} {one[key] / two[key]:.2f}x"
                          for name, key in (("pair kernel", "pair_kernel_s"), ("SYRKs", "grams_blas_s"))
                          if one.get(key) and two.get(key))
        cell = (f"{threads:.2f}x ({seconds(one['all_pairs_s'], 's')} → {seconds(two['all_pairs_s'], 's')}; "
                f"{parts})")
    else:
        threads, cell = None, DASH
    rows.append(("all-pairs principal angles: 2 threads over 1", cell, DASH, DASH,
                 f"≥ {THREAD_SPEEDUP:g}x", verdict(threads, THREAD_SPEEDUP, at_most=False)))

    info = run.extra("test_measure_vs_sgemm")
    rows.append(measure_ratio_row("`measure` against the machine's SGEMM of the issue's flop count", info,
                                  MEASURE_RATIO_LIMIT))
    rows.append(measure_ratio_row("`measure` against SGEMM, 24 layers x 16 heads (4 kv), d 128, n 2048",
                                  run.extra("test_measure_vs_sgemm_24_layers"), MEASURE_24_LAYERS_RATIO_LIMIT))
    peak = info.get("peak_bytes_beyond_file")
    rows.append(("`measure`: peak memory beyond the mapped weight file",
                 DASH if peak is None else f"{peak / 2**30:.2f} GiB", DASH, DASH,
                 f"≤ {MEASURE_MEMORY_LIMIT_BYTES / 2**30:g} GiB", verdict(peak, MEASURE_MEMORY_LIMIT_BYTES)))

    info = run.extra("test_report_page_cost")
    added = info.get("page_added_s")
    cell = DASH if added is None else (
        f"{added:+.2f} s ({seconds(min(info['analyze_wall']), 's')} → {seconds(min(info['report_wall']), 's')}; "
        f"the page alone from the result JSON: first {seconds(info['first_page_s'], 's')}, "
        f"second {seconds(info['second_page_s'], 's')})")
    rows.append(("`analyze --report`: the HTML page's time beyond `analyze` (whole processes)", cell, DASH, DASH,
                 f"≤ +{REPORT_PAGE_LIMIT_S:g} s", verdict(added, REPORT_PAGE_LIMIT_S)))
    return rows


def measure_ratio_row(label, info, limit):
    """The row of one measure-against-SGEMM benchmark (its ``extra_info``): best against best."""
    ratio = info.get("ratio_wall")
    cell = DASH if ratio is None else (f"{ratio:.2f}x ({seconds(min(info['measure_wall']), 's')} against "
                                       f"{seconds(min(info['sgemm_wall']), 's')})")
    return label, cell, DASH, DASH, f"≤ {limit:g}x", verdict(ratio, limit)


def comparison_table(run):
    """Rows ``(row, numba, numpy reference, speed-up, met?)`` of the per-row table."""
    rows = []
    for label, numba, numpy in run.comparison_rows():
        t_numba = numba["stats"]["min"]
        t_numpy = numpy["stats"]["min"] if numpy else None
        speedup = t_numpy / t_numba if t_numpy else None
        rows.append((f"`{label}`", seconds(t_numba), seconds(t_numpy), f"{speedup:.1f}x" if speedup else DASH,
                     verdict(speedup, ROW_SPEEDUP, at_most=False)))
    return rows


def markdown_table(header, rows, align):
    """A markdown table; ``align`` holds one of "l"/"r" per column."""
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def header_line(run):
    """Date, machine, versions and commit of the run, in one line."""
    raw = run.raw
    machine = raw.get("machine_info", {})
    extra = machine.get("qkalign_bench", {})
    cpu = machine.get("cpu", {})
    parts = []
    date = str(raw.get("datetime", ""))[:10]
    where = [cpu.get("brand_raw") or machine.get("processor") or "unknown CPU"]
    cores = extra.get("usable_cores") or cpu.get("count")
    if cores:
        where.append(f"{cores} cores")
    if extra.get("ram_bytes"):
        where.append(f"{extra['ram_bytes'] / 2**30:.0f} GiB RAM")
    parts.append(f"Run of {date or 'unknown date'} on {', '.join(where)}")

    versions = dict(extra.get("versions", {}))
    blas = extra.get("blas")
    source = ""
    if not versions:  # a run without the conftest hook: what is installed now
        versions, blas = installed_versions()
        source = " (installed when summarised; the run did not record them)"
    versions.setdefault("python", machine.get("python_version"))
    text = ", ".join(f"{name} {versions[name]}" for name in ("python", "numpy", "numba", "scipy") if versions.get(name))
    openblas = sorted({openblas_text(lib) for lib in blas or [] if lib.get("internal_api") == "openblas"})
    if openblas:
        text += ", OpenBLAS " + " and ".join(openblas)
    parts.append(text + source)

    commit = raw.get("commit_info", {})
    if commit.get("id"):
        parts.append(f"commit {commit['id'][:10]}" + (" with uncommitted changes" if commit.get("dirty") else ""))
    parts.append(f"preset `{extra.get('preset', 'unknown')}`")
    return "; ".join(parts) + "."


def openblas_text(lib):
    """"0.3.31 (numpy's)" for a BLAS entry of threadpoolctl: the version to its third part, and
    whose copy it is when the library sits in a wheel's ``<package>.libs`` folder."""
    version = ".".join(str(lib.get("version") or "?").split(".")[:3])
    path = Path(lib.get("library") or lib.get("filepath") or "")
    folder = path.parent.name
    return f"{version} ({folder[:-len('.libs')]}'s)" if folder.endswith(".libs") else version


def installed_versions():
    """Versions of the numerical stack installed now, and the BLAS libraries threadpoolctl finds."""
    import platform

    versions = {"python": platform.python_version()}
    for module in ("numpy", "numba", "scipy"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    try:
        import scipy.linalg  # noqa: F401  (loads scipy's BLAS)
        from threadpoolctl import threadpool_info
        blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    except ImportError:
        blas = []
    return versions, blas


def summary(run):
    """The markdown between the README's markers, as a list of lines."""
    lines = [header_line(run), ""]
    preset = run.raw.get("machine_info", {}).get("qkalign_bench", {}).get("preset")
    if preset and preset != TARGET_PRESET:
        lines += [f"**The targets are set for the `{TARGET_PRESET}` preset: on `{preset}` met / missed "
                  "says nothing about them.**", ""]
    lines += markdown_table(("measurement", "qkalign (numba)", "numpy reference", "seed script", "target", "met?"),
                            target_rows(run), "lrrrrl")
    lines += ["", "Times are minima over rounds (in-process benchmarks) or over runs (fresh processes); "
              "\"not run\": the benchmark is not in this run."]
    per_row = comparison_table(run)
    if per_row:
        lines += ["", "Every row of the comparison table (`qkalign.testing.comparisons.COMPARISONS`), "
                  "numba kernel against numpy reference:", ""]
        lines += markdown_table(("row", "numba", "numpy reference", "speed-up", f"≥ {ROW_SPEEDUP:g}x?"),
                                per_row, "lrrrl")
    return lines


def replace_block(text, block_lines, markers=(START_MARKER, END_MARKER)):
    """``text`` with the lines between the marker lines (each a line of its own) replaced by ``block_lines``."""
    start_marker, end_marker = markers
    lines = text.splitlines(keepends=True)
    stripped = [line.strip() for line in lines]
    if stripped.count(start_marker) != 1 or stripped.count(end_marker) != 1:
        raise ValueError(f"needs one line {start_marker} and one line {end_marker}")
    start, end = stripped.index(start_marker), stripped.index(end_marker)
    if end < start:
        raise ValueError(f"{end_marker} comes before {start_marker}")
    return "".join(lines[:start + 1]) + "".join(line + "\n" for line in block_lines) + "".join(lines[end:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_json", help="pytest-benchmark JSON of a run (--benchmark-json=RUN.json)")
    parser.add_argument("--readme", metavar="PATH",
                        help=f"write the table between {START_MARKER} and {END_MARKER} of this file "
                             "instead of printing it")
    args = parser.parse_args(argv)
    with open(args.run_json, encoding="utf-8") as f:
        run = Run(json.load(f))
    lines = summary(run)
    if args.readme is None:
        print("\n".join(lines))
        return 0
    path = Path(args.readme)
    try:
        path.write_text(replace_block(path.read_text(encoding="utf-8"), lines), encoding="utf-8")
    except ValueError as error:
        parser.exit(2, f"{path}: {error}\n")
    print(f"wrote the results table of {args.run_json} into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
