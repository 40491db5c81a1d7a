"""Optional dependencies: the packages of an extra, imported where a path needs them.

The core install (what ``measure``, ``analyze`` and ``plot`` need) has no torch; writing a
``.pt``, reading a ``.pt`` that only ``torch.load`` can read, and torch models in memory
need the ``torch`` extra. Without it such a path ends in one
:class:`~qkalign.errors.MissingDependency` line, before any work is done.
"""

from .errors import MissingDependency


def import_torch(source, purpose):
    """``torch``, or a :class:`~qkalign.errors.MissingDependency` naming ``source`` and ``purpose``.

    Parameters
    ----------
    source : str
        What needs torch (an option, a file), as error lines name it.
    purpose : str
        ``"to write a .pt file"``, ...: what torch is needed for.
    """
    try:
        import torch
    except ImportError as exc:  # not installed, or installed but broken (its message says which)
        raise MissingDependency(source, "torch", purpose, "torch", exc) from None
    return torch
