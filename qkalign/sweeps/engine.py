"""The Dask side of a sweep: a cluster to run on, and the loop that submits tasks and writes results.

By default a ``distributed.LocalCluster`` of worker processes (one Dask thread each) on this
machine, with numba's and the BLAS libraries' threads set per worker so that workers x
threads = cores; or a running cluster at a scheduler address (``dask scheduler`` /
``dask worker`` on other machines, dask-jobqueue on a batch system), whose workers keep the
threads they were started with.

Fault tolerance is Dask's: a worker that dies (killed, out of memory) has its task
rescheduled on another worker by the scheduler, up to ``distributed.scheduler.allowed-failures``
times; a task that raises is resubmitted ``retries`` times. A task whose input is bad returns
a failed :class:`~qkalign.sweeps.task.Outcome` instead of raising (no retry); anything that
still fails after the retries is recorded as failed with its one-line error. Results are
written by this process as they complete (``distributed.as_completed``).
"""

import os
import sys
import uuid
from contextlib import contextmanager

import distributed  # noqa: F401  (a missing sweep extra fails here, before any work)

from ..errors import InputError
from ..linalg.blas_threads import core_count
from .task import Outcome, one_line, run_task

#: Environment variables that set a library's thread count; each worker gets cores // workers.
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_RETRIES = 2


@contextmanager
def cluster_client(workers=None, scheduler=None, tasks=None, quiet=False):
    """A ``distributed.Client``: on a new LocalCluster of ``workers`` processes, or attached to ``scheduler``.

    ``workers`` defaults to min(cores, tasks); each worker gets max(1, cores // workers)
    numba and BLAS threads. The dashboard's address is printed on stderr when there is one.
    """
    import dask
    from distributed import Client, LocalCluster

    environment = dict(os.environ)
    cluster = client = None
    try:
        if scheduler is not None:
            client = Client(scheduler)
        else:
            cores = core_count()
            workers = workers or max(1, min(cores, tasks or cores))
            threads = {name: str(max(1, cores // workers)) for name in THREAD_VARIABLES}
            # Set before a worker process starts (numpy is loaded before any later setting could act);
            # the nanny sets them in this process's environment too, which is restored at the end.
            spawn_env = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **threads}
            # The scheduler's HTTP server (health, and the dashboard with bokeh) on a free port: its
            # default, 8787, may be another cluster's.
            with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_env}):
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
            client = Client(cluster)
        if not quiet and _has_dashboard() and "dashboard" in client.scheduler_info().get("services", {}):
            print(f"qkalign sweep: Dask dashboard at {client.dashboard_link}", file=sys.stderr)
        yield client
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        if scheduler is None:
            os.environ.clear()
            os.environ.update(environment)


def _has_dashboard():
    """Whether the scheduler's HTTP server serves the dashboard (it needs bokeh, here and there)."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def compute_runs(client, store, todo, options, retries=DEFAULT_RETRIES, progress=True, task=run_task):
    """Submit one task per ``(index, source, revision)`` of ``todo``; write each outcome into ``store``
    as it completes. Returns the number of runs computed."""
    from distributed import as_completed
    from tqdm import tqdm

    futures = {}
    for index, source, revision in todo:
        future = client.submit(task, _worker_path(source), revision, options, retries=retries, pure=False,
                               key=f"qkalign-run-{index}-{uuid.uuid4().hex}")
        futures[future] = index
    with tqdm(total=len(futures), desc="sweep", unit="run", disable=not progress, file=sys.stderr) as bar:
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # retries exhausted, a worker lost too often, a bug: recorded, not fatal
                outcome = Outcome("failed", error=one_line(exc), error_type=type(exc).__name__)
            try:
                store.write(futures[future], outcome)
            except OSError as exc:  # a full disk, a store removed under us
                raise InputError(store.path, "", "a writable Zarr store", exc.strerror or str(exc)) from None
            bar.update()
    return len(futures)


def _worker_path(source):
    """An existing local folder as an absolute path (workers may run elsewhere); other sources as given."""
    return os.path.abspath(source) if os.path.isdir(source) else source
