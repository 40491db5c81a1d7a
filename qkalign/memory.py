"""Memory a request needs, checked against what the machine has before anything is allocated.

A file's declared sizes (a config's layer count, a tensor's shape) decide how much memory a
computation takes. A request that cannot fit is refused with one line that says how much
it would need, instead of the process swapping or being killed part-way.
"""

import os

from .errors import InputError

GIB = 2.0**30


def available_bytes():
    """Memory this process can still take: the smaller of the machine's (``MemAvailable`` of
    ``/proc/meminfo``, else the physical memory) and a container's or job's cgroup limit less its
    usage; None when neither is known."""
    machine = _meminfo_available()
    if machine is None:
        try:
            machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            machine = None
    limits = [v for v in (machine, _cgroup_headroom()) if v is not None]
    return min(limits) if limits else None


def _meminfo_available():
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


#: (limit, usage) files of cgroup v2 and v1; a limit of "max" (or a huge v1 number) means none.
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _cgroup_headroom():
    """The cgroup memory limit less current usage (SLURM jobs, containers), or None without a limit."""
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            with open(limit_file, encoding="ascii") as f:
                limit = f.read().strip()
            with open(usage_file, encoding="ascii") as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:
            return None
        return max(int(limit) - usage, 0)
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
