"""An HTTP file server on 127.0.0.1 that honours ``Range`` and counts what it sends, for remote-source tests.

:class:`RangeServer` serves the files under a folder (``GET``/``HEAD``, single ``bytes=a-b``
ranges answered ``206 Partial Content``), counts the body bytes it sent per path, and can
fail the next requests on purpose (``fail_next``) to exercise retries. ``routes`` maps extra
URL paths to bytes (a fake Hub API answer), to other files (a Hub ``resolve`` URL) or to a whole
answer ``(status, headers, body)`` (an error the Hub gives).
"""

import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class RangeServer:
    """Serve ``root`` on ``http://127.0.0.1:PORT/``; use as a context manager.

    Attributes
    ----------
    url : str
        ``http://127.0.0.1:PORT``.
    bytes_sent : collections.Counter
        Body bytes sent per URL path (GET only; failed requests send none).
    requests : list of (method, path, range header or None, status)
    """

    def __init__(self, root, routes=None):
        self.root = Path(root).resolve()
        self.routes = dict(routes or {})
        self.bytes_sent = Counter()
        self.requests = []
        self._failures = []  # (status, path prefix or None) of the next requests to fail
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, count=1, status=503, path=None):
        """Answer the next ``count`` GET requests (to paths starting with ``path``, if given) with ``status``
        (a transient failure by default)."""
        with self._lock:
            self._failures.extend([(status, path)] * count)

    @property
    def total_sent(self):
        """Body bytes sent over all paths."""
        return sum(self.bytes_sent.values())

    def _content(self, path):
        """Bytes (or a file Path) served at URL ``path``, or None."""
        target = self.routes.get(path)
        if isinstance(target, bytes):
            return target
        file = Path(target) if target is not None else (self.root / path.lstrip("/")).resolve()
        if file.is_file() and (target is not None or file.is_relative_to(self.root)):
            return file
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # fsspec's HTTP client opens up to 100 connections at once (a column read is one range per row): with
    # socketserver's listen backlog of 5 the kernel drops some, and the client waits for TCP retransmits
    # (seconds, at times minutes: a test that hangs).
    request_queue_size = 1024


def _read(content, start, stop):
    """Bytes ``start:stop`` of ``content`` (bytes, or a file read from ``start`` on)."""
    if isinstance(content, bytes):
        return content[start:stop]
    with open(content, "rb") as f:
        f.seek(start)
        return f.read(stop - start)


class _Handler(BaseHTTPRequestHandler):
    """Answers for the :class:`RangeServer` at ``self.server.owner``: its files, routes and planned failures."""

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections for many small ranges
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        status = self._planned_failure(urlparse(self.path).path)
        if status is not None:
            self._finish(status, b"", "GET")
            return
        self._serve(body=True)

    def _planned_failure(self, path):
        """The status of the first planned failure (:meth:`RangeServer.fail_next`) that applies to ``path``, used up."""
        owner = self.server.owner
        with owner._lock:
            due = [i for i, (_, prefix) in enumerate(owner._failures) if prefix is None or path.startswith(prefix)]
            return owner._failures.pop(due[0])[0] if due else None

    def _serve(self, body):
        method = "GET" if body else "HEAD"
        path = unquote(urlparse(self.path).path)
        answer = self.server.owner.routes.get(path)
        if isinstance(answer, tuple):  # a whole answer: (status, headers, payload)
            status, headers, payload = answer
            self._finish(status, payload, method, headers, send_body=body, path=path)
            return
        content = self.server.owner._content(path)
        if content is None:
            self._finish(404, b"", method)
            return
        size = len(content) if isinstance(content, bytes) else content.stat().st_size
        byte_range = self._requested_range(size)
        if byte_range is None:
            self._finish(416, b"", method, {"Content-Range": f"bytes */{size}"})
            return
        start, stop = byte_range
        extra = {"Accept-Ranges": "bytes"}
        if self.headers.get("Range") is not None:
            extra["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        status = 206 if "Content-Range" in extra else 200
        self._finish(status, _read(content, start, stop), method, extra, send_body=body, path=path)

    def _requested_range(self, size):
        """``(start, stop)`` of the ``Range`` header (the whole file without one), or None when unsatisfiable."""
        header = self.headers.get("Range")
        if header is None:
            return 0, size
        match = RANGE.match(header.strip())
        if match is None or int(match.group(1)) >= size:
            return None
        return int(match.group(1)), min(int(match.group(2)) + 1, size) if match.group(2) else size

    def _finish(self, status, payload, method, extra=None, send_body=True, path=None):
        owner = self.server.owner
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "application/octet-stream")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if send_body and method == "GET" and payload:
            self.wfile.write(payload)
            with owner._lock:
                owner.bytes_sent[path] += len(payload)
        with owner._lock:
            owner.requests.append((method, self.path, self.headers.get("Range"), status))


def record_authorization(monkeypatch):
    """A list that every HTTP request served in this process (any ``http.server`` handler) appends
    ``(server port, its Authorization header or None)`` to: which hosts a token went to.
    ``monkeypatch``: pytest's, undone after the test."""
    import http.server

    seen = []
    parse = http.server.BaseHTTPRequestHandler.parse_request

    def logged(handler):
        ok = parse(handler)
        seen.append((handler.server.server_address[1], handler.headers.get("Authorization")))
        return ok

    monkeypatch.setattr(http.server.BaseHTTPRequestHandler, "parse_request", logged)
    return seen
