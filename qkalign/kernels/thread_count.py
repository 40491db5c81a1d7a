"""How many threads a kernel call gets: all of numba's, unless the work is too small to share.

Waking the worker threads of a ``prange`` costs ~0.05-0.4 ms on an idle machine and
several ms when other processes hold the cores (measured on this project's shared
2-core machine: 4-8 ms per call under load, for kernels doing 0.1-2 ms of work).
Below :data:`PARALLEL_MIN_WORK` the kernel runs on the calling thread alone; the
result does not change (kernels are bit-identical for any number of threads).
"""

from contextlib import contextmanager

import numba

#: Inner-loop iterations (roughly flops) below which a call stays on one thread (~2 ms of work).
PARALLEL_MIN_WORK = 5_000_000


@contextmanager
def threads_for(work):
    """Run the enclosed kernel calls on one thread when ``work`` < :data:`PARALLEL_MIN_WORK`."""
    if work >= PARALLEL_MIN_WORK:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)
