"""A sweep against a shell loop: ``qkalign sweep`` of 8 checkpoints on 2 workers vs ``qkalign analyze`` on each.

Run from the repository root (needs the ``sweep`` extra)::

    python benchmarks/sweep.py                 # prints the table
    python benchmarks/sweep.py --json run.json # and writes the raw times

Both sides are whole commands as a user runs them, timed from outside, alternated for
``--rounds`` rounds (default 2; the table gives medians):

- the loop: ``for m in ckpt*; do qkalign analyze $m; done``, one new process per checkpoint
  (Python, torch, numba and the kernels' cache loaded eight times);
- the sweep: ``qkalign sweep ckpt* -o OUT.zarr --workers 2`` into a new store (a LocalCluster
  of 2 worker processes, each loading the libraries once).

The checkpoints are 8 bf16 Llama-style model folders (L=12, H=8, 2 kv heads, d=64, n=512,
``qkalign.testing.model_folders.write_model``, seeds 0-7), written once to
``~/.cache/qkalign/sweep-bench`` (``QKALIGN_BENCH_CACHE`` moves it). Target: sweep <= 0.7x loop.

The engine's own cost per task is measured separately, in this process, on a warm LocalCluster
of 2 workers: tasks that return a stored result at once (no measure, no analyze), so the time
per task is Dask's scheduling and transfer plus writing the run into the Zarr store.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import cache_dir  # noqa: E402

from qkalign.testing.processes import checkout_env  # noqa: E402

SHAPE = (12, 8, 2, 64, 512)  # L, H, H_kv, d, n
CHECKPOINTS = 8
WORKERS = 2
TARGET = 0.7
OVERHEAD_TASKS = 32


def checkpoints():
    """The 8 model folders in the cache, written once."""
    import torch

    from qkalign.testing.model_folders import write_model

    root = cache_dir() / "sweep-bench"
    folders = [root / f"ckpt{i}" for i in range(CHECKPOINTS)]
    for seed, folder in enumerate(folders):
        if not (folder / "model.safetensors").exists():
            write_model(folder, "llama", shape=SHAPE, dtype=torch.bfloat16, seed=seed)
    return folders


def timed(args):
    """Wall seconds of one process running ``python -m qkalign ARGS``; raises on failure."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qkalign", *map(str, args)], env=checkout_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"qkalign {' '.join(map(str, args))} failed:\n{proc.stderr.decode()[-3000:]}")
    return wall


def loop_and_sweep(folders, rounds):
    """{"loop": [seconds per round], "sweep": [...], "task_seconds": [mean task time on a worker]}."""
    import xarray as xr

    runs = {"loop": [], "sweep": [], "task_seconds": []}
    for _ in range(rounds):
        runs["loop"].append(sum(timed(["analyze", folder, "--quiet"]) for folder in folders))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "sweep.zarr"
            runs["sweep"].append(timed(["sweep", *folders, "-o", out, "--workers", WORKERS, "--quiet"]))
            ds = xr.open_zarr(out, chunks=None)
            assert (ds["status"].values == "ok").all()
            runs["task_seconds"].append(float(ds["seconds"].values.mean()))
    return runs


def engine_overhead(folder):
    """Seconds per task of the engine alone: tasks that return a stored result, on a warm cluster."""
    from distributed import LocalCluster

    from qkalign.sweeps.run import run_sweep
    from qkalign.sweeps.task import run_task

    outcome = run_task(str(folder), None, _default_options())
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(n_workers=WORKERS, threads_per_worker=1, dashboard_address=":0") as cluster:
        def stored_result(source, revision, options):
            return outcome

        sources = [f"{folder}#{i}" for i in range(OVERHEAD_TASKS)]  # distinct runs, one result
        run_sweep(sources[:WORKERS], Path(tmp) / "warm.zarr", scheduler=cluster.scheduler_address,
                  progress=False, task=stored_result)
        start = time.perf_counter()
        run_sweep(sources, Path(tmp) / "sweep.zarr", scheduler=cluster.scheduler_address, progress=False,
                  task=stored_result)
        wall = time.perf_counter() - start
    return wall / OVERHEAD_TASKS, len(outcome.variables)


def _default_options():
    from qkalign.sweeps.run import sweep_options

    return sweep_options({})


def table(runs, overhead, variables):
    loop, sweep = statistics.median(runs["loop"]), statistics.median(runs["sweep"])
    ratio = sweep / loop
    met = "met" if ratio <= TARGET else "missed"
    rows = [
        "| command | wall | target | measured | met? |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| shell loop of `qkalign analyze` over {CHECKPOINTS} checkpoints | {loop:.1f} s | | | |",
        f"| `qkalign sweep` on {WORKERS} workers: wall / loop | {sweep:.1f} s | ≤ {TARGET}x | {ratio:.2f}x | {met} |",
        f"| one task on a worker (measure + analyze; mean) | {statistics.median(runs['task_seconds']):.2f} s | | | |",
        f"| engine overhead per task (Dask + Zarr write of {variables} variables) | {overhead * 1e3:.0f} ms | | | |",
    ]
    shape = dict(zip(("L", "H", "H_kv", "d", "n"), SHAPE))
    return "\n".join(rows + ["", f"Medians of {len(runs['loop'])} rounds; checkpoints bf16 Llama {shape}. "
                             "Command: `python benchmarks/sweep.py`."])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="also write the raw measurements here")
    args = ap.parse_args(argv)
    folders = checkpoints()
    runs = loop_and_sweep(folders, args.rounds)
    overhead, variables = engine_overhead(folders[0])
    from end_to_end import machine_line

    text = machine_line() + "\n\n" + table(runs, overhead, variables)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({**runs, "engine_overhead_s": overhead}, indent=1))


if __name__ == "__main__":
    main()
