"""Figures drawn side by side: matplotlib draws one figure on one core, so a page of a dozen figures is drawn by a
few processes at once, each filling its own :class:`~.figure_files.FigureCollection`.

A job is ``(function, args)``: ``function(plt, *args, out_dir)`` draws into ``out_dir`` and returns what it wrote
(module-level functions and plain data, so a job pickles). The figures, and their order, are the same for any number
of workers: each job's SVG text does not depend on the process that drew it (:func:`~.figure_files.svg_text`).
"""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .figure_files import FigureCollection
from .figure_files import pyplot as _pyplot

#: Modules the worker processes import once, before their first job (the fork server preloads them).
PRELOAD = ("qkalign.views.analysis_figures", "matplotlib.pyplot")


def default_workers(jobs):
    """Processes worth starting for ``jobs``: one per core this process may run on, at most one per two jobs (a
    worker's start-up, about a figure's time, must pay for itself)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, len(jobs) // 2))


def run_jobs(jobs, out_dir, workers=1):
    """Run ``jobs`` into ``out_dir``; returns what they wrote, in job order.

    A folder is always drawn in this process (its files are written by name); a collection by ``workers``
    processes (``None``: :func:`default_workers`). Where processes cannot be started (a sandbox without
    semaphores, a worker killed), the jobs run here instead.
    """
    if workers is None:
        workers = default_workers(jobs)
    if not isinstance(out_dir, FigureCollection) or workers <= 1 or len(jobs) < 2:
        plt = _pyplot()
        return [target for function, args in jobs for target in function(plt, *args, out_dir)]
    try:
        context = multiprocessing.get_context("forkserver")  # not fork: this process may hold threads (BLAS, numba)
        context.set_forkserver_preload(list(PRELOAD))
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            drawn = list(pool.map(_draw_in_worker, jobs))
    except (OSError, BrokenProcessPool, ValueError):
        return run_jobs(jobs, out_dir, workers=1)
    written = []
    for figures in drawn:
        for name, svg in figures.items():
            out_dir.figures[name] = svg
            written.append(out_dir / name)
    return written


def _draw_in_worker(job):
    """One job in a worker process: its figures as ``{name: svg text}``."""
    function, args = job
    collection = FigureCollection()
    function(_pyplot(), *args, collection)
    return collection.figures
