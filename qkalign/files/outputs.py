"""Outputs written whole or not at all: paths checked before any work, files replaced atomically.

Every file qkalign writes is first written to a temporary file in the same folder and then
renamed over its target (``os.replace``, atomic on POSIX and Windows), so a reader sees the
old file or the new one, never a half-written one; a failed or interrupted write removes its
temporary file. :func:`check_output_file` and :func:`check_output_prefix` refuse an unusable
path with one line before a long computation starts rather than after it, and that includes a
file the write would remove (:func:`check_output_prefix`'s ``removed``): a folder, a FIFO or a
file this process may not remove is refused before anything is written.
"""

import contextlib
import errno
import os
import signal
import stat
import sys
import tempfile
import threading
from pathlib import Path

from ..checks import file_kind
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


def check_output_folder(folder, option, files=()):
    """One error line unless ``folder`` is, or can be created as, a writable folder, and each name
    in ``files`` (the files that will be written there) passes :func:`check_output_file`."""
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
    for name in files:
        check_output_file(folder / name, option)
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


def check_output_prefix(prefix, option, suffixes, removed=()):
    """The paths ``PREFIX + suffix`` for each suffix, each checked by :func:`check_output_file`.

    ``PREFIX + suffix`` for each suffix of ``removed`` is a file the write removes (an earlier run's
    eig-dirs file of the other format): nothing, or a file or symlink this process may remove and
    that no output writes through a symlink. A folder, a FIFO or a device is not what a run leaves:
    it is refused, never removed.
    """
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
    outputs = [check_output_file(text + suffix, option) for suffix in suffixes]
    for suffix in removed:
        _check_removable(Path(text + suffix), option, outputs)
    return outputs


def _check_removable(path, option, outputs):
    """One error line unless ``path`` is nothing or a file (or symlink) that may be removed without
    touching what ``outputs`` write."""
    expected = "nothing, or a file qkalign may remove (an earlier run's eig-dirs file of the other format)"
    try:
        entry_path = Path(os.path.realpath(path.parent)) / path.name
        for output in outputs:  # removing it would remove the new output, there or not yet
            if Path(os.path.realpath(output)) == entry_path:
                raise InputError(path, option, expected, f"the file the symlink {output} writes")
        entry = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # nothing to remove (the outputs' checks judge the folder)
        return
    except OSError as exc:
        raise InputError(path, option, "a usable file path", exc.strerror or str(exc)) from None
    if not (stat.S_ISREG(entry.st_mode) or stat.S_ISLNK(entry.st_mode)):
        raise InputError(path, option, expected, file_kind(entry.st_mode))
    if not _may_remove(entry, path.parent):
        raise InputError(path, option, expected, "no permission to remove it from its folder")


def _may_remove(entry, folder):
    """Whether this process may remove a name of ``os.lstat`` result ``entry`` from ``folder``.

    The folder must be writable; in a sticky folder (``/tmp``) only the owner of the file or of the
    folder, or root, may remove another user's file, whatever the folder's write permission says.
    """
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    folder_stat = os.stat(folder)
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    if uid is None or uid == 0 or not folder_stat.st_mode & stat.S_ISVTX:
        return True
    return uid in (entry.st_uid, folder_stat.st_uid)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any failure
    (an exception, Ctrl-C) it is removed and ``path`` is left as it was."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths, remove=()):
    """Like :func:`atomic_path` for files that belong together: each is written to a temporary
    file first, then all are renamed in order with Ctrl-C held back, so an interrupt leaves
    every old file or every new one.

    A symlink is followed (its target is replaced, the link stays); an existing file keeps its
    permissions; a device or FIFO (``/dev/stdout``) is written in place, not replaced. Each file
    (or symlink) in ``remove`` is removed with the renames; see :func:`_commit`.
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
            _commit([(tmp, target) for tmp, target in zip(tmps, targets) if tmp != target], remove)


def _commit(renames, remove):
    """Rename each ``(temporary, target)`` of ``renames``, the files of ``remove`` gone with them.

    The files to remove are first renamed aside (which can be undone, unlike a removal): one that
    cannot be moved despite the checks (a folder made there since, an immutable file) fails the
    write before any new file is in place, and a rename that fails puts them back. So a failed
    removal leaves everything as it was, and a failed rename does not lose the old files too.
    """
    aside = []
    try:
        for path in remove:
            aside.append((path, _moved_aside(Path(path))))
        for tmp, target in renames:
            os.replace(tmp, target)
    except BaseException:
        for path, moved in reversed(aside):
            if moved is not None:
                os.replace(moved, path)
        raise
    for path, moved in aside:
        if moved is not None:
            try:
                moved.unlink()
            except OSError as exc:  # the new files are in place: failing now would report a write that happened
                print(f"qkalign: warning: {path} was moved to {moved} but not removed ({exc.strerror or exc}); "
                      "remove it by hand", file=sys.stderr)


def _moved_aside(path):
    """``path`` (a file or a symlink, never a folder) renamed to a new temporary name beside it, or
    None when nothing is there."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    except FileNotFoundError:
        return None
    aside = _temporary_beside(path)
    try:
        os.replace(path, aside)  # a folder made there since cannot replace a file: refused, not moved
    except FileNotFoundError:
        aside.unlink()
        return None
    except BaseException:
        aside.unlink(missing_ok=True)
        raise
    return aside


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
