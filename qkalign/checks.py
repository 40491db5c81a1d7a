"""Checks of user input shared by every reader: a JSON file holding an object, whole numbers in range.

Each failure is one :class:`~qkalign.errors.InputError` line naming the file (or option),
the field and what was expected.
"""

import json
import os
import stat

import numpy as np

from .errors import InputError


def read_json_object(path, what, required=()):
    """The JSON object stored in ``path``, as a dict.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file is, for the error line ("grams JSON", "model config", ...).
    required : sequence of str
        Keys that must be present.
    """
    regular_file(path, what)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise InputError(path, "", f"a readable {what}", exc.strerror or str(exc)) from None
    doc = parse_json_object(raw, path, what)
    for key in required:
        if key not in doc:
            raise InputError(path, key, "this key to be present", "it missing")
    return doc


def parse_json_object(raw, source, what, field=""):
    """``raw`` (bytes or str) parsed as a JSON object (a dict); one error line for anything else.

    Beyond malformed JSON, Python's reader refuses integers of more than 4,300 digits and
    nesting deeper than its recursion limit: those are one line too.
    """
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise InputError(source, field, f"a {what} in UTF-8 JSON", f"undecodable bytes ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise InputError(source, field, f"a {what} in JSON",
                         f"malformed JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise InputError(source, field, f"a {what} with numbers of sensible size", str(exc).split(";")[0]) from None
    except RecursionError:
        raise InputError(source, field, f"a {what} of sensible nesting depth",
                         "lists or objects nested too deeply") from None
    if not isinstance(doc, dict):
        raise InputError(source, field, f"a {what} holding a JSON object", type(doc).__name__)
    return doc


def regular_file(path, what):
    """Raise unless ``path`` is an existing regular file (symlinks followed).

    A FIFO, socket or device would block a reader forever or stream without end: refused
    before anything opens it.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(path, "", f"an existing {what}", "no such file") from None
    except OSError as exc:
        raise InputError(path, "", f"a readable {what}", exc.strerror or str(exc)) from None
    if stat.S_ISDIR(mode):
        raise InputError(path, "", f"a {what}", "a directory")
    if not stat.S_ISREG(mode):
        raise InputError(path, "", f"a {what} (a regular file)", file_kind(mode))


def file_kind(mode):
    """What a file of this ``st_mode`` is, for an error line: "a directory", "a FIFO", ..."""
    for test, kind in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a device or special file"


def is_integer(value):
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_int(value, source, field):
    """``value`` as an ``int >= 1``; else one error line naming ``source`` and ``field``."""
    if not is_integer(value) or value < 1:
        raise InputError(source, field, "a positive integer", repr(value))
    return int(value)


def int_in_range(value, low, high, source, field="", why=""):
    """``value`` as an int in ``low..high`` (both included); ``why`` explains the range in the error line."""
    if not is_integer(value) or not low <= value <= high:
        raise InputError(source, field, f"an integer in {low}..{high}" + (f" ({why})" if why else ""), repr(value))
    return int(value)
