"""The files of a remote model folder, read by byte ranges through fsspec, with retries.

:class:`RemoteFiles` names each file by a URL (``url_of(name)``) on an fsspec filesystem
(HTTP for ``https://`` URLs and the Hugging Face Hub, s3fs, gcsfs, ...). Every read asks for
exact byte ranges and checks that exactly those bytes came back (a server ignoring ``Range``
is an error, not a silently whole shard). Transient failures (HTTP 408/425/429/5xx, a dropped
connection, a timeout) are retried with exponential back-off; anything else (a 404, access
denied, a refused connection, an unknown host) is one :class:`~qkalign.errors.InputError` line.
A file's ranges are read from where its URL redirects (the Hub sends weights to a CDN), learnt
once with its size; when that location stops answering (an expired signed URL) the file's own
URL is asked again.
"""

import asyncio
import time

from ..checks import parse_json_object
from ..errors import InputError

#: Attempts of one read before a transient failure is reported, and the first wait (doubled each time).
ATTEMPTS = 5
FIRST_WAIT_SECONDS = 0.5
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Exceptions of aiohttp, fsspec and httpx that mean "try again", by name (their modules are optional).
TRANSIENT_NAMES = frozenset({"ServerDisconnectedError", "ClientPayloadError", "ServerTimeoutError",
                             "ClientConnectionResetError", "FSTimeoutError", "ReadTimeout", "RemoteProtocolError",
                             "ReadError", "ConnectTimeout", "PoolTimeout"})
ACCESS_HINT = "a private or gated model needs a token: set HF_TOKEN or run `hf auth login`"


def _chain(exc):
    """``exc`` and the exceptions it was raised from (fsspec re-raises HTTP failures as FileNotFoundError)."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def http_status(exc):
    """The HTTP status behind ``exc`` (aiohttp, httpx or huggingface_hub), or None."""
    for e in _chain(exc):
        status = getattr(e, "status", None)
        if not isinstance(status, int):
            status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
    return None


def is_transient(exc):
    """Whether a retry of the request that raised ``exc`` may succeed."""
    status = http_status(exc)
    if status is not None:
        return status in TRANSIENT_STATUS
    chain = _chain(exc)
    if any(isinstance(e, ConnectionRefusedError) or isinstance(getattr(e, "os_error", None), ConnectionRefusedError)
           for e in chain):
        return False
    return any(isinstance(e, (TimeoutError, asyncio.TimeoutError, ConnectionResetError, BrokenPipeError))
               or type(e).__name__ in TRANSIENT_NAMES for e in chain)


def describe_failure(exc):
    """What went wrong, in a few words, for the ``found ...`` part of an error line."""
    status = http_status(exc)
    if status == 404:
        return "HTTP 404 (no such file)"
    if status in (401, 403):
        return f"HTTP {status} (access denied; {ACCESS_HINT})"
    if status is not None:
        return f"HTTP {status}"
    chain = _chain(exc)
    if any(isinstance(e, ConnectionRefusedError) or isinstance(getattr(e, "os_error", None), ConnectionRefusedError)
           or "connection refused" in str(e).lower() for e in chain):
        return "connection refused (no server answers at that address)"
    if any(isinstance(e, FileNotFoundError) for e in chain):
        return "no such file"
    root = chain[-1]
    return f"{type(root).__name__}: {root}".strip().rstrip(":").replace("\n", " ")


def with_retries(call, label, expected):
    """``call()``, retried on transient failures; any failure becomes one InputError naming ``label``."""
    for attempt in range(ATTEMPTS):
        try:
            return call()
        except (InputError, TypeError, AttributeError, NameError):  # ours, or a bug: not a remote failure
            raise
        except Exception as exc:  # noqa: BLE001 - each library (aiohttp, httpx, s3fs, ...) has its own errors
            if is_transient(exc) and attempt + 1 < ATTEMPTS:
                time.sleep(FIRST_WAIT_SECONDS * 2 ** attempt)
                continue
            tries = f" after {attempt + 1} attempts" if attempt else ""
            error = InputError(label, "", expected, describe_failure(exc) + tries)
            error.http_status = http_status(exc)
            raise error from None


def _host(url):
    """``scheme://host:port`` of a URL (an origin, as browsers compare them for credentials)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class RemoteFiles:
    """Byte-range access to the files of one remote folder.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
    url_of : callable
        File name in the folder (``"config.json"``) -> its URL (or path) on ``fs``.
    redirect_fs : fsspec.AbstractFileSystem, optional
        Reads a file where it redirects to on another host (the Hub's CDN): without ``fs``'s
        headers, so a token is never sent beyond the host it was meant for. Default ``fs``.
    """

    def __init__(self, fs, url_of, redirect_fs=None):
        self.fs = fs
        self.redirect_fs = redirect_fs or fs
        self.url_of = url_of
        self._sizes = {}
        self._located = {}  # file name -> the URL its own redirects to

    def size(self, name):
        """Size in bytes of the file ``name``."""
        if name not in self._sizes:
            url = self.url_of(name)
            info = with_retries(lambda: self.fs.info(url), url, "a readable file")
            if not isinstance(info.get("size"), int):
                raise InputError(url, "", "a server that reports the file's size (Content-Length)",
                                 repr(info.get("size")))
            located = info.get("url")
            if isinstance(located, str) and located != url and located.startswith(("http://", "https://")):
                self._located[name] = located
            self._sizes[name] = info["size"]
        return self._sizes[name]

    def read_ranges(self, name, ranges):
        """The bytes ``start:end`` of the file ``name`` for each ``(start, end)`` in ``ranges`` (read concurrently
        where the filesystem can)."""
        url = self.url_of(name)
        starts, ends = [s for s, _ in ranges], [e for _, e in ranges]

        def read(target):
            fs = self.fs if _host(target) == _host(url) else self.redirect_fs
            if len(ranges) == 1:
                return [fs.cat_file(target, start=starts[0], end=ends[0])]
            return fs.cat_ranges([target] * len(ranges), starts, ends, on_error="raise")

        located = self._located.get(name)
        try:
            parts = with_retries(lambda: read(located or url), url, "a readable file")
        except InputError as exc:
            if located is None or getattr(exc, "http_status", None) not in (401, 403, 404, 410):
                raise
            # An expired signed URL: the file's own URL redirects afresh.
            self._located.pop(name, None)
            self._sizes.pop(name, None)
            self.size(name)
            parts = with_retries(lambda: read(self._located.get(name) or url), url, "a readable file")
        for (start, end), part in zip(ranges, parts):
            if len(part) != end - start:
                why = "a truncated file" if len(part) < end - start else "the server ignored the Range request"
                raise InputError(url, "", f"bytes {start}:{end} ({end - start} bytes)", f"{len(part)} bytes ({why})")
        return parts

    def read_json(self, name, what, missing_ok=False):
        """The JSON object in the file ``name`` (``what`` it is, for errors); None if missing and ``missing_ok``."""
        url = self.url_of(name)
        if missing_ok:
            try:
                raw = with_retries(lambda: self.fs.cat_file(url), url, f"a readable {what}")
            except InputError as exc:
                if exc.found and exc.found.startswith(("HTTP 404", "no such file")):
                    return None
                raise
        else:
            raw = with_retries(lambda: self.fs.cat_file(url), url, f"an existing {what}")
        doc = parse_json_object(raw, url, what)
        return doc


def plain_file_name(name):
    """A file name inside a folder: no separators, NUL or URL delimiters (``?``, ``#``), not ``.`` or ``..``
    (a URL built from it must not leave the folder)."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0?#")


def is_http_filesystem(fs):
    """Whether ``fs`` is fsspec's HTTP filesystem (its protocol ``("http", "https")``)."""
    protocol = getattr(fs, "protocol", ())
    return bool({"http", "https"} & set((protocol,) if isinstance(protocol, str) else protocol))
