"""BLAS threads for batched numpy linear algebra: one BLAS thread per call, the batch on all cores.

OpenBLAS's own threads do not speed up products and factorisations of small matrices
(k x k, k x n, 2d x 2d) and, on a loaded machine, slow them down badly; a batch of them
runs fastest split across Python threads (numpy releases the GIL), each on one BLAS thread.
"""

import functools
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

#: Chunks per core in :func:`on_cores`: more than one keeps both cores busy when another
#: process slows one of them down.
CHUNKS_PER_CORE = 2


def core_count():
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.cache
def _blas_controller(scipy_linalg_loaded):
    # Inspecting the loaded libraries costs ~0.5-4 ms, a limit from it ~35 us, so this is built
    # once per set of BLAS libraries: numpy's, then scipy's own OpenBLAS once scipy.linalg is
    # imported (often after the first limit). A controller built before that misses scipy's
    # BLAS, whose calls then run on all cores beside the other threads' (issue 21.7: measure's
    # triangular solves took it from 1.5x to 1.9x SGEMM, and up to 3x on a busy machine).
    return ThreadpoolController()


def one_blas_thread():
    """Context manager: BLAS and LAPACK calls on one thread, in every BLAS library loaded so far.

    For batches of small products and factorisations (k x k, k x n, 2d x 2d), which
    OpenBLAS's threads do not speed up and, on a loaded machine, slow down.
    """
    return _blas_controller("scipy.linalg" in sys.modules).limit(limits=1, user_api="blas")


def on_cores(function, *batches):
    """``function(*batches)``, computed in chunks along the first axis on all cores, one BLAS thread each.

    For batched numpy linear algebra on many small or mid-sized matrices (k x k, 2d x 2d),
    which OpenBLAS's own threads do not speed up (a 256 x 256 ``eigvalsh`` takes 2.8 ms
    with one thread or two) but which runs side by side in threads (numpy releases the
    GIL). ``function`` must treat the rows independently: each matrix is then computed as
    in one single-threaded call, whatever the number of cores.
    """
    workers = core_count()
    chunks = min(CHUNKS_PER_CORE * workers, len(batches[0]))
    with one_blas_thread():
        if workers <= 1 or chunks <= 1:
            return function(*batches)
        with ThreadPoolExecutor(workers) as pool:
            parts = pool.map(lambda args: function(*args), zip(*(np.array_split(b, chunks) for b in batches)))
            return np.concatenate(list(parts))
