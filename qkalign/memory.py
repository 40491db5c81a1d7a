"""Memory a request needs, checked against what the machine has before anything is allocated.

A file's declared sizes (a config's layer count, a tensor's shape) decide how much memory a
computation takes. A request that cannot fit is refused with one line that says how much
it would need, instead of the process swapping or being killed part-way.
"""

import os

from .errors import InputError

GIB = 2.0**30


def available_bytes():
    """Memory this process can still take: ``MemAvailable`` of ``/proc/meminfo`` (Linux), else the
    physical memory (``sysconf``), else None when neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(needed_bytes, source, field, what):
    """One error line unless ``needed_bytes`` fit in the memory available now.

    Parameters
    ----------
    needed_bytes : int
        Estimated peak of the request (Python ints: a hostile size cannot overflow).
    source, field : str
        The file (or option) and the field whose declared size makes the request.
    what : str
        What would be allocated, e.g. ``"measuring 80 layers x 64 heads"``.
    """
    available = available_bytes()
    if available is not None and needed_bytes > available:
        raise InputError(source, field, f"a size that fits in memory ({what}: {needed_bytes / GIB:,.1f} GiB needed)",
                         f"{available / GIB:,.1f} GiB available")
