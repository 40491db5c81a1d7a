"""Print the issue's targets from a pytest-benchmark JSON: ``python benchmarks/summary.py RUN.json``.

Times are the minimum over rounds (the least disturbed by other processes).
"""

import json
import sys


def _min_ms(benchmarks, name):
    for bench in benchmarks:
        if bench["name"] == name:
            return bench["stats"]["min"] * 1e3, bench["extra_info"]
    return None, {}


def main(path):
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    benchmarks = run["benchmarks"]
    print(f"{run['machine_info'].get('cpu', {}).get('brand_raw', '?')}, {run['datetime']}")
    rows = []
    d_numba, _ = _min_ms(benchmarks, "test_section_d_to_anchor[numba]")
    d_seed, _ = _min_ms(benchmarks, "test_section_d_to_anchor[seed]")
    analyze, _ = _min_ms(benchmarks, "test_analyze[numba]")
    all_pairs, _ = _min_ms(benchmarks, "test_function[principal_cosines_all_pairs-numba]")
    if d_numba and d_seed:
        rows.append(("(d) to anchor <= 50 ms", f"{d_numba:.1f} ms"))
        rows.append(("(d) >= 25x the seed's loop", f"{d_seed / d_numba:.1f}x (seed {d_seed:.0f} ms)"))
    if analyze:
        rows.append(("analyze (a)-(d) <= 80 ms", f"{analyze:.1f} ms"))
    everything, _ = _min_ms(benchmarks, "test_analyze_everything")
    matched, _ = _min_ms(benchmarks, "test_analyze_match_heads")
    if everything:
        rows.append(("analyze, everything (issue 5) <= 1 s", f"{everything / 1e3:.2f} s"))
    if everything and matched:
        rows.append(("--match-heads adds <= 5 s", f"{(matched - everything) / 1e3:.2f} s"))
    if all_pairs:
        rows.append(("all-pairs principal angles <= 0.5 s", f"{all_pairs / 1e3:.2f} s"))
    for bench in benchmarks:
        name = bench["name"]
        if name.startswith("test_function[") and name.endswith("-numba]"):
            reference, _ = _min_ms(benchmarks, name.replace("-numba]", "-numpy]"))
            if reference:
                rows.append((f"{bench['group']}: numba >= 3x numpy",
                             f"{reference / (bench['stats']['min'] * 1e3):.1f}x "
                             f"({bench['stats']['min'] * 1e3:.3f} vs {reference:.3f} ms)"))
    for cache in ("empty", "warm"):
        for options in ("default", "seed-part"):
            _, info = _min_ms(benchmarks, f"test_first_call_in_a_new_process[{cache}-{options}]")
            if not info:
                continue
            limit = "<= 5 s (first analyze)" if cache == "empty" else "JIT overhead <= 0.3 s"
            rows.append((f"new process, {cache} cache, {options}: {limit}",
                         f"first analyze {info['first_analyze_s']:.2f} s, second {info['second_analyze_s']:.2f} s, "
                         f"overhead {info['jit_overhead_s']:.2f} s"))
    threads = {t: _min_ms(benchmarks, f"test_all_pairs_threads[{t}]")[1] for t in (1, 2)}
    if threads[1] and threads[2]:
        for part in ("all_pairs_s", "pair_kernel_s", "grams_blas_s"):
            rows.append((f"threads 2 vs 1, {part[:-2]} >= 1.7x",
                         f"{threads[1][part] / threads[2][part]:.2f}x ({threads[1][part]:.2f} s -> {threads[2][part]:.2f} s)"))
    width = max(len(r[0]) for r in rows)
    for target, value in rows:
        print(f"{target:<{width}}  {value}")


if __name__ == "__main__":
    main(sys.argv[1])
