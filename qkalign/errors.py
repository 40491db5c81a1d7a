"""The exception types that bad user input (and a missing optional dependency) raise.

Every check of user input ends in an :class:`InputError` whose message is a
single line naming the source (a file, or a command-line option), the field
and what was expected, so the CLI can print it and exit 2 without a traceback.
A path that needs a package of an extra (torch) ends in a :class:`MissingDependency`
line of the same form, which names what to install.
"""


def one_line(text):
    """``text`` with every unprintable character (newlines, ``\\x85``, terminal escapes) shown as an escape:
    a message quoting a hostile file stays one line and cannot drive the terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


def first_line(exc, limit=None):
    """The first line of an exception's message (its type name if it has none), cut at ``limit`` characters."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    return text if limit is None else text[:limit]


class QKAlignError(Exception):
    """Base class of the errors qkalign raises on purpose."""


class InputError(QKAlignError, ValueError):
    """Input that qkalign refuses: one line, ``SOURCE: FIELD: expected ..., found ...``.

    Parameters
    ----------
    source : str
        File path or option name the bad value came from.
    field : str
        Key, tensor name or option inside ``source`` (may be empty).
    expected : str
        What a valid value looks like.
    found : str, optional
        What was there instead.
    """

    def __init__(self, source, field, expected, found=None):
        self.source = str(source)
        self.field = field
        self.expected = expected
        self.found = found
        parts = [self.source]
        if field:
            parts.append(field)
        text = f"expected {expected}"
        if found is not None:
            text += f", found {found}"
        parts.append(text)
        super().__init__(one_line(": ".join(parts)))


class UsageError(QKAlignError):
    """A command line that does not parse (an unknown option, ``--topk x``): its one-line message."""


class MissingDependency(QKAlignError, ImportError):
    """A path that needs an optional package which is not installed: one line naming the extra to install.

    An ``ImportError`` too, so that Python callers can catch it as one.

    Parameters
    ----------
    source : str
        What asked for the package (``--format pt``, a file, a function).
    package : str
        The package that could not be imported.
    purpose : str
        What it is needed for.
    extra : str
        The extra of qkalign that installs it.
    cause : Exception
        The ``ImportError`` raised by importing it.
    """

    def __init__(self, source, package, purpose, extra, cause):
        super().__init__(one_line(f"{source}: expected {package} installed {purpose} "
                                  f"(pip install \"qkalign[{extra}]\"), found {first_line(cause, 120)}"))
