"""Figures drawn side by side: matplotlib draws one figure on one core, so a page of a dozen figures is drawn by a
few processes at once, each filling its own :class:`~.figure_files.FigureCollection`.

A job is ``(function, args)``: ``function(plt, *args, out_dir)`` draws into ``out_dir`` and returns what it wrote
(module-level functions and plain data, so a job pickles). The figures, and their order, are the same for any number
of workers: each job's SVG text does not depend on the process that drew it (:func:`~.figure_files.svg_text`).
"""

import multiprocessing
import os
import sys
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..linalg.blas_threads import core_count
from .figure_files import FigureCollection, figure_style
from .figure_files import pyplot as _pyplot

#: Modules the worker processes import once, before their first job (the fork server preloads them).
PRELOAD = ("qkalign.views.analysis_figures", "matplotlib.pyplot")


class FigureWorkersUnavailable(UserWarning):
    """Worker processes could not draw: the figures were drawn in this process (the same figures, slower)."""


def default_workers(jobs):
    """Processes worth starting for ``jobs``: one per core this process may run on, at most one per two jobs (a
    worker's start-up, about a figure's time, must pay for itself)."""
    return max(1, min(core_count(), len(jobs) // 2))


def run_jobs(jobs, out_dir, workers=1):
    """Run ``jobs`` into ``out_dir``; returns what they wrote, in job order.

    A folder is always drawn in this process (its files are written by name); a collection by ``workers``
    processes (``None``: :func:`default_workers`). Where processes cannot be started (a sandbox without
    semaphores, a worker killed), the jobs run here instead.
    """
    if workers is None:
        workers = default_workers(jobs)
    if not isinstance(out_dir, FigureCollection) or workers <= 1 or len(jobs) < 2 or not _main_importable():
        plt = _pyplot()
        with figure_style():
            return [target for function, args in jobs for target in function(plt, *args, out_dir)]
    global _started
    _wait_for_start()
    try:
        pool, _started = _started or _pool(workers), None
        with pool:
            # the costliest first, so that no worker is left with one long figure at the end; results in job order
            order = sorted(range(len(jobs)), key=lambda i: -_cost(jobs[i]))
            futures = {i: pool.submit(_draw_in_worker, jobs[i]) for i in order}
            drawn = [futures[i].result() for i in range(len(jobs))]
    except (OSError, BrokenProcessPool, ValueError) as exc:
        warnings.warn(f"qkalign: figures drawn in this process instead ({type(exc).__name__}: {exc})",
                      FigureWorkersUnavailable, stacklevel=2)
        return run_jobs(jobs, out_dir, workers=1)
    written = []
    for figures in drawn:
        for name, svg in figures.items():
            out_dir.figures[name] = svg
            written.append(out_dir / name)
    return written


#: A pool started ahead of its jobs by :func:`start_workers` (None: none waiting), and the thread starting it.
_started = None
_starting = None


def start_workers(workers=None):
    """Start the drawing processes now, e.g. while ``analyze`` computes, so that their start-up (importing
    matplotlib) is not on the page's clock; the next :func:`run_jobs` into a collection uses them. Returns at once:
    a thread starts them (the fork server answers only once it has imported matplotlib, most of a second). Nothing
    happens where they could not be used (one core, no importable main script, no fork server)."""
    global _starting
    workers = core_count() if workers is None else workers
    if _started is not None or _starting is not None or workers <= 1 or not _main_importable():
        return
    _starting = threading.Thread(target=_start, args=(workers,), name="qkalign-figure-workers", daemon=True)
    _starting.start()


def _start(workers):
    global _started
    try:
        pool = _pool(workers)
        for _ in range(workers):
            pool.submit(_warm_up)
    except (OSError, ValueError, RuntimeError):  # run_jobs draws in its own process then
        return
    _started = pool


def _wait_for_start():
    """Wait until a :func:`start_workers` thread has done (its pool, or none, is then in ``_started``)."""
    global _starting
    if _starting is not None:
        _starting.join()
        _starting = None


def _pool(workers):
    context = multiprocessing.get_context("forkserver")  # not fork: this process may hold threads (BLAS, numba)
    context.set_forkserver_preload(list(PRELOAD))
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def _cost(job):
    """A rough order of a job's drawing time: a figure of many panels costs more than a heatmap pair."""
    function, args = job
    return {"_one_figure_job": 2, "_rope_job": 3}.get(function.__name__, 1)


def _main_importable():
    """Whether a worker can start: it re-imports the main script by its path (``python -`` has none)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path is None or os.path.isfile(path)


def _warm_up():
    """In a worker: matplotlib imported and its fonts found, before the first figure."""
    _pyplot()


def _draw_in_worker(job):
    """One job in a worker process: its figures as ``{name: svg text}``."""
    function, args = job
    collection = FigureCollection()
    with figure_style():
        function(_pyplot(), *args, collection)
    return collection.figures
