"""Outputs written whole or not at all: paths checked before any work, files replaced atomically.

Every file qkalign writes is first written to a temporary file in the same folder and then
renamed over its target (``os.replace``, atomic on POSIX and Windows), so a reader sees the
old file or the new one, never a half-written one; a failed or interrupted write removes its
temporary file. :func:`check_output_file` and :func:`check_output_prefix` refuse an unusable
path with one line before a long computation starts rather than after it.
"""

import contextlib
import os
import signal
import stat
import tempfile
import threading
from pathlib import Path

from ..errors import InputError


def check_output_file(path, option):
    """``path`` as a Path, or one error line when a file cannot be written there.

    The name must be non-empty and not a directory; its folder (a symlink's, followed) must
    exist as a writable folder, or be creatable under the nearest existing one. An existing
    device or FIFO (``/dev/stdout``) that may be written is fine: it is written directly.
    """
    text = str(path)
    path = Path(text)
    if not _names_a_file(text):
        raise InputError(option, "", "a file path (FOLDER/NAME)", repr(text))
    try:
        if path.is_dir():
            raise InputError(path, option, "a file path", "a directory")
        if _is_special(path):
            if not os.access(path, os.W_OK):
                raise InputError(path, option, "a writable file", "no write permission")
            return path
        check_output_folder(Path(os.path.realpath(path)).parent, option)
    except OSError as exc:  # a name too long, a loop of symlinks, ...
        raise InputError(path, option, "a usable file path", exc.strerror or str(exc)) from None
    return path


def check_output_folder(folder, option):
    """One error line unless ``folder`` is, or can be created as, a writable folder."""
    if not str(folder):
        raise InputError(option, "", "a folder path", "''")
    folder = Path(folder)
    existing = folder
    try:
        while not existing.exists():  # the nearest existing ancestor decides whether mkdir can work
            if existing.parent == existing:
                break
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            raise InputError(existing, option, "a folder for the output", "a file")
    except OSError as exc:
        raise InputError(folder, option, "a usable folder path", exc.strerror or str(exc)) from None
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(existing, option, "a writable folder for the output", "no write permission")
    return folder


def _names_a_file(text):
    """``text`` ends in a file name: not empty, no trailing separator, not ``.`` or ``..``."""
    return bool(text) and not text.endswith(("/", os.sep)) and Path(text).name not in ("", ".", "..")


def _is_special(path):
    """An existing file that is not a regular file or a folder (a device, a FIFO): written in place."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there yet (the folder checks say why not)
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def check_output_prefix(prefix, option, suffixes):
    """The paths ``PREFIX + suffix`` for each suffix, each checked by :func:`check_output_file`."""
    text = str(prefix)
    if not _names_a_file(text):
        raise InputError(option, "", "an output prefix FOLDER/NAME (files NAME.json ... are written)", repr(text))
    try:
        is_dir = Path(text).is_dir()
    except OSError as exc:
        raise InputError(text, option, "a usable output prefix", exc.strerror or str(exc)) from None
    if is_dir:
        raise InputError(text, option, "an output prefix FOLDER/NAME, not a folder (files NAME.json ... "
                         "are written)", "a directory")
    return [check_output_file(text + suffix, option) for suffix in suffixes]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any failure
    (an exception, Ctrl-C) it is removed and ``path`` is left as it was."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths):
    """Like :func:`atomic_path` for files that belong together: each is written to a temporary
    file first, then all are renamed in order with Ctrl-C held back, so an interrupt leaves
    every old file or every new one.

    A symlink is followed (its target is replaced, the link stays); an existing file keeps its
    permissions; a device or FIFO (``/dev/stdout``) is written in place, not replaced.
    """
    targets = [Path(os.path.realpath(p)) for p in paths]
    with contextlib.ExitStack() as temps:
        tmps = []
        for target in targets:
            if _is_special(target):
                tmps.append(target)
                continue
            tmps.append(_temporary_beside(target))
            temps.callback(tmps[-1].unlink, missing_ok=True)
        yield tmps
        for tmp, target in zip(tmps, targets):
            if tmp != target:  # after the writer: some writers replace the file they were given
                os.chmod(tmp, _mode_for(target))
        with _signals_held():
            for tmp, target in zip(tmps, targets):
                if tmp != target:
                    os.replace(tmp, target)


def _temporary_beside(path):
    """A new empty file in ``path``'s folder (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _mode_for(target):
    """The permissions of the file being replaced, else what ``open(path, "w")`` would give
    (mkstemp's files are private to the owner)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask():
    """This process's umask, read without changing it where the system says it (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM (delivered when the block ends) around a few renames, where Python can.

    A Python-level handler records them: blocking the signal in this thread alone would not do, as
    the kernel hands a process's signal to any thread that does not block it (BLAS's, torch's).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = [s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None))
            if s is not None and signal.getsignal(s) is not None]  # None: a handler set outside Python
    received = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            signal.raise_signal(received[0])  # now, to the handler that was in place
