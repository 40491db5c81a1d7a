"""Whole commands, as a user runs them: ``qkalign analyze`` against the seed script, wall time and peak memory.

Run from the repository root (the seed script in ``../shared/seed`` or ``$QKALIGN_SEED_DIR``)::

    python benchmarks/end_to_end.py                          # prints the table
    python benchmarks/end_to_end.py --readme benchmarks/README.md   # and writes it there

Each measurement is a new process (start-up, imports, reading the files and loading the
kernels included), timed from outside; peak memory is the process's maximum resident set
(``wait4``), memory-mapped pages included. The commands of a round run one after the other,
alternating qkalign with the seed, for ``--rounds`` rounds (default 4); the table gives medians.

- ``qwen3-4b``: the preset of the other benchmarks (``conftest.preset_json``, or
  ``QKALIGN_BENCH_PRESET``; its ``.pt`` as the seed reads it, and the same data converted to
  safetensors);
- first run after an install: the bundled example with an empty numba cache and no bytecode cache;
- ``llama-3-70b``: a Llama-3-70B-shaped input (L=80, H=64, head_dim 128, hidden 8192, topk 16;
  random unit rows, 2.7 GB of float32 eig_dirs), written once to the cache (``--skip-large``
  leaves it out). The seed is not run on it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import PRESET, cache_dir, preset_json  # noqa: E402
from summary import replace_block, verdict  # noqa: E402

from qkalign.testing.processes import SEED_SCRIPT, checkout_env  # noqa: E402

MARKERS = ("<!-- end-to-end:start -->", "<!-- end-to-end:end -->")
LARGE_SHAPE = dict(num_layers=80, num_heads=64, head_dim=128, hidden_size=8192, topk=16)

#: (name, target ratio or limit) of each target of the table.
TARGETS = {
    "safetensors_wall": 0.5,  # qkalign on safetensors, wall time / the seed's on the .pt
    "safetensors_rss": 0.7,  # peak RSS / the seed's
    "pt_wall": 0.8,  # qkalign on the .pt, wall time / the seed's
    "first_run_s": 4.0,  # bundled example, empty numba cache, seconds
    "large_rss_over_file": 1.3,  # peak RSS / the eig_dirs file's size
}


def run_measured(args, **env):
    """``(wall seconds, peak RSS bytes)`` of one process running ``args``; raises on failure."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty child cannot block on it
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=checkout_env(**env))
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: this child's own peak memory
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{err.read().decode()}")
    return wall, usage.ru_maxrss * 1024  # kilobytes on Linux


def preset_inputs():
    """(json with .pt, json with safetensors) of the benchmark preset; the safetensors pair is made once."""
    pt_json = preset_json()
    native = cache_dir() / f"{PRESET}-safetensors"
    if not native.with_name(native.name + "-eigdirs.safetensors").exists():
        subprocess.run([sys.executable, "-m", "qkalign", "convert", pt_json, "-o", native], check=True,
                       env=checkout_env(), stdout=subprocess.DEVNULL)
    return pt_json, native.with_suffix(".json")


def large_input():
    """The Llama-3-70B-shaped input in the cache, written once (random unit rows, a true Gram)."""
    import numpy as np

    from qkalign.files.eigdirs import write_eigdirs

    prefix = cache_dir() / "llama-3-70b-shape"
    json_path = prefix.with_suffix(".json")
    eigdirs = prefix.parent / (prefix.name + "-eigdirs.safetensors")
    if json_path.exists() and eigdirs.exists():
        return json_path, eigdirs
    s = LARGE_SHAPE
    L, H, d, n, k = s["num_layers"], s["num_heads"], s["head_dim"], s["hidden_size"], s["topk"]
    rng = np.random.default_rng(0)
    eig = np.empty((L, H, k, n), dtype=np.float32)
    for layer in range(L):
        rows = rng.standard_normal((H, k, n), dtype=np.float32)
        eig[layer] = rows / np.linalg.norm(rows, axis=-1, keepdims=True)
    lam = rng.standard_normal((L, H, 2 * d))
    lam = np.take_along_axis(lam, np.argsort(-np.abs(lam), axis=-1), axis=-1)
    v = rng.standard_normal((H, L, L + 2))
    gram = np.einsum("hli,hmi->lmh", v, v)
    write_eigdirs(eigdirs, eig, lam)
    json_path.write_text(json.dumps({**{key: s[key] for key in ("num_layers", "num_heads", "head_dim", "hidden_size")},
                                     "gram": gram.tolist(), "fro_sq": np.einsum("llh->lh", gram).tolist()}))
    return json_path, eigdirs


def measure_all(rounds, skip_large):
    """Every measurement of the table: {name: [(wall, rss), ...]} plus file sizes."""
    pt_json, native_json = preset_inputs()
    qkalign = [sys.executable, "-m", "qkalign", "analyze"]
    runs = {"seed": [], "qkalign_safetensors": [], "qkalign_pt": [], "first_run": [], "large": []}
    for _ in range(rounds):  # alternated, so that a slow minute of the machine hits all alike
        runs["seed"].append(run_measured([sys.executable, SEED_SCRIPT, pt_json]))
        runs["qkalign_safetensors"].append(run_measured([*qkalign, native_json]))
        runs["seed"].append(run_measured([sys.executable, SEED_SCRIPT, pt_json]))
        runs["qkalign_pt"].append(run_measured([*qkalign, pt_json]))
        with tempfile.TemporaryDirectory() as numba_cache, tempfile.TemporaryDirectory() as bytecode:
            # as after an install: no compiled kernels, and no bytecode of any module (a harsher start
            # than pip's, which precompiles the libraries' .pyc)
            runs["first_run"].append(run_measured([*qkalign], NUMBA_CACHE_DIR=numba_cache,
                                                  PYTHONPYCACHEPREFIX=bytecode, QKALIGN_BACKGROUND_COMPILE=0))
    sizes = {"preset_eigdirs": native_json.with_name(native_json.stem + "-eigdirs.safetensors").stat().st_size}
    if not skip_large:
        large_json, eigdirs = large_input()
        sizes["large_eigdirs"] = eigdirs.stat().st_size
        for _ in range(2):
            runs["large"].append(run_measured([*qkalign, large_json]))
    return runs, sizes


def table(runs, sizes):
    """The markdown table of the targets, from :func:`measure_all`'s results (medians)."""
    def med(name, i):
        return statistics.median(r[i] for r in runs[name]) if runs[name] else float("nan")

    seed_wall, seed_rss = med("seed", 0), med("seed", 1)
    rows = []

    def row(what, wall, rss, target, ratio):
        met = verdict(ratio, TARGETS[target])
        rows.append(f"| {what} | {wall} | {rss} | ≤ {TARGETS[target]}{'x' if target != 'first_run_s' else ' s'} "
                    f"| {ratio:.2f}{'x' if target != 'first_run_s' else ' s'} | {met} |")

    gib = 2.0**30
    rows.append(f"| seed script on the `.pt` | {seed_wall:.2f} s | {seed_rss / gib:.2f} GiB | | | |")
    st_wall, st_rss = med("qkalign_safetensors", 0), med("qkalign_safetensors", 1)
    row("`qkalign analyze` on safetensors: wall / seed", f"{st_wall:.2f} s", f"{st_rss / gib:.2f} GiB",
        "safetensors_wall", st_wall / seed_wall)
    row("`qkalign analyze` on safetensors: peak RSS / seed", f"{st_wall:.2f} s", f"{st_rss / gib:.2f} GiB",
        "safetensors_rss", st_rss / seed_rss)
    pt_wall, pt_rss = med("qkalign_pt", 0), med("qkalign_pt", 1)
    row("`qkalign analyze` on the `.pt`: wall / seed", f"{pt_wall:.2f} s", f"{pt_rss / gib:.2f} GiB", "pt_wall",
        pt_wall / seed_wall)
    first_wall, first_rss = med("first_run", 0), med("first_run", 1)
    row("first run after an install (bundled example, no numba or bytecode cache)", f"{first_wall:.2f} s",
        f"{first_rss / gib:.2f} GiB", "first_run_s", first_wall)
    if runs["large"]:
        l_wall, l_rss = med("large", 0), med("large", 1)
        row(f"Llama-3-70B shape ({sizes['large_eigdirs'] / 1e9:.2f} GB eig_dirs): peak RSS / file", f"{l_wall:.1f} s",
            f"{l_rss / gib:.2f} GiB", "large_rss_over_file", l_rss / sizes["large_eigdirs"])
    counts = {name: len(r) for name, r in runs.items() if r}
    head = ["| command | wall | peak RSS | target | measured | met? |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    foot = (f"Medians of {counts.get('qkalign_safetensors', 0)} rounds ({counts.get('seed', 0)} seed runs, "
            f"{counts.get('large', 0)} of the 70B shape); `{PRESET}` preset, eig_dirs "
            f"{sizes['preset_eigdirs'] / 1e6:.0f} MB float32. Command: `python benchmarks/end_to_end.py`.")
    return "\n".join(head + rows + ["", foot])


def machine_line():
    import platform

    import numba
    import numpy

    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    return (f"Run of {time.strftime('%Y-%m-%d')} on {cpu}, {len(os.sched_getaffinity(0))} cores; python "
            f"{platform.python_version()}, numpy {numpy.__version__}, numba {numba.__version__}; commit {commit}"
            + (" with uncommitted changes" if dirty else "") + ".")


def write_between_markers(path, text):
    path = Path(path)
    path.write_text(replace_block(path.read_text(), text.splitlines(), MARKERS))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--skip-large", action="store_true", help="leave out the Llama-3-70B shape")
    ap.add_argument("--readme", action="append", default=[],
                    help="write the table between the end-to-end markers of this file (repeatable)")
    ap.add_argument("--json", help="also write the raw measurements here")
    args = ap.parse_args(argv)
    runs, sizes = measure_all(args.rounds, args.skip_large)
    text = machine_line() + "\n\n" + table(runs, sizes)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "sizes": sizes}, indent=1))
    for page in args.readme:
        write_between_markers(page, text)


if __name__ == "__main__":
    main()
