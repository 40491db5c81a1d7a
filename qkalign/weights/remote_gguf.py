"""A GGUF model at a URL or in a Hub repo, read by byte ranges: the header and the rows measure reads.

:class:`RemoteGGUFModel` is :class:`~qkalign.weights.gguf_model.GGUFModel` over a *sparse* temporary
copy of each remote file: a file of the remote file's size (``ftruncate``: its holes take no disk)
into which only the bytes read are written. gguf's reader, the layout and the dequantiser then run
unchanged on the same bytes, so the numbers equal those of a local measure of the file, bit for bit.

- The header (metadata, then the tensor directory) is read from the start of the file: 2 MiB, then
  up to the larger of the offset the parser asked for and twice as much, parsed again each time
  until it parses (:class:`~qkalign.weights.gguf_reader.HeaderPastFetched`; a tokenizer makes
  headers of 2 to 10 MB).
- Tensor rows are read by :meth:`RemoteGGUFModel._fetch`, which the model calls before each read,
  in *waves*: the rows asked for, and the same fraction of the rows of every tensor that measure
  checked before its compute (it will read them all), at least :data:`WAVE_BYTES` of them when that
  many are left; small tensors (norm gains) whole. A model whose Q/K tensors take at most
  :data:`WAVE_BYTES` is read in one wave of concurrent requests (one per tensor; neighbours closer
  than :data:`COALESCE_GAP` in one); a larger one a band of heads at a time, in the order measure
  reads its heads, so that a Ctrl-C waits for one wave and not for the whole download.
- The temporary files live in a folder of their own under ``TMPDIR`` and are unlinked as soon as
  their header parses: the memory map and the descriptor keep them until the model is dropped, so
  nothing is left on disk after an error or a Ctrl-C, nor after a kill once the header is read (a
  kill during the header reads may leave the folder; where the platform cannot unlink an open file,
  the folder is removed when the model is garbage-collected or at exit).

Reads go through :class:`~qkalign.weights.remote_files.RemoteFiles` (retries, error lines, the
Hub's redirects). An HTTP server that ignores ``Range`` is refused after one small request whose
body is not read, before anything else is (a plain range read would take the whole file first).
"""

import itertools
import math
import os
import shutil
import tempfile
import threading
import weakref
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import InputError, first_line
from .gguf_model import GGUFModel, open_gguf_model
from .gguf_reader import HeaderPastFetched, open_gguf
from .remote_files import is_http_filesystem, plain_file_name, with_retries

#: Bytes of the first read of a header; each further read at least doubles what was read.
FIRST_HEADER_BYTES = 2 * 2**20
#: Bytes of tensor rows a wave reads (when that many are left), and the most held in memory at once.
WAVE_BYTES = 64 * 2**20
#: The largest range read in one request (larger ones are read in parts, concurrently).
REQUEST_BYTES = 8 * 2**20
#: Ranges this close are read as one (a QK-norm gain next to its weight).
COALESCE_GAP = 32 * 2**10
#: Tensors this small are read whole by the first wave that reads any of their rows.
WHOLE_TENSOR_BYTES = 64 * 2**10
#: The range the probe for Range support asks for (the GGUF version): not at 0, where fsspec would stream.
PROBE_RANGE = (4, 8)
_UNREAD = -1


class RemoteGGUFModel(GGUFModel):
    """The tensors of a remote GGUF model (a single file or a split set), read by ranges.

    Parameters
    ----------
    files : RemoteFiles
        The folder holding the file (the other splits of a split set are found in it by name).
    name : str
        The GGUF file's name in ``files`` (no path separators).
    label : str, optional
        How errors and the result name the model (default: the file's URL).

    Attributes
    ----------
    file_bytes, bytes_read, range_requests : int
        Size of the remote file(s), bytes read from them and range requests made (header and rows).
    """

    def __init__(self, files, name, label=None):
        if not plain_file_name(name):
            raise InputError(files.url_of(name), "", "a GGUF file name without path separators", repr(name))
        self.files = files
        self.file_bytes = self.bytes_read = self.range_requests = 0
        self._lock = threading.Lock()
        self._rows = {}  # tensor name -> (rows,) int64: the wave that reads each row, or _UNREAD
        self._waves, self._wave_ids = {}, itertools.count()  # wave id -> Future, set when its bytes are in
        self._wanted = {}  # the tensors measure checked (an ordered set): read in the waves
        self._fds = {}  # temporary path -> descriptor the fetched bytes are written through
        self._headers = {}  # temporary path -> bytes read from its start (the header reads)
        self._dir = Path(tempfile.mkdtemp(prefix="qkalign-gguf-"))
        self._cleanup = weakref.finalize(self, _remove, self._fds, self._dir)
        try:
            with self._labelled():
                super().__init__(self._dir / name, label=label or files.url_of(name))
        except BaseException:
            self._cleanup()
            raise
        try:
            self._dir.rmdir()  # empty once every split is unlinked (POSIX)
        except OSError:
            pass  # left for the finalizer

    @contextmanager
    def _labelled(self):
        """Errors that name a temporary file name its URL instead."""
        try:
            yield
        except InputError as exc:
            prefix = str(self._dir) + os.sep
            if not exc.source.startswith(prefix):
                raise
            raise InputError(self.files.url_of(exc.source[len(prefix):]), exc.field, exc.expected, exc.found) \
                from None

    def _open_split(self, path, index):
        """Split ``index`` at ``path``: a sparse file of the remote file's size, its header read into it, parsed."""
        try:
            size = self.files.size(path.name)
        except InputError as exc:
            if index == 0:
                raise
            raise InputError(exc.source, "", f"split {index + 1} of {len(self.paths)} next to {self.paths[0].name}",
                             exc.found) from None
        if index == 0:
            _refuse_servers_ignoring_ranges(self.files, path.name, size)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
            self._fds[str(path)] = fd
            os.ftruncate(fd, size)  # holes: the bytes never read take no disk
        except OSError as exc:
            raise InputError(self._dir.parent, "", f"a temporary folder (TMPDIR) that can hold a sparse file of "
                             f"{size} bytes", first_line(exc)) from None
        self.file_bytes += size
        reader = self._read_header(path, fd, size)
        try:
            os.unlink(path)  # the memory map and the descriptor keep it: nothing is left behind
        except OSError:
            pass  # Windows: removed with the folder by the finalizer
        return reader

    def _read_header(self, path, fd, size):
        """The reader of ``path`` once enough of its start is read for the header to parse."""
        fetched, wanted = 0, min(size, FIRST_HEADER_BYTES)
        while True:
            self._download(path, fd, [(fetched, wanted)])
            fetched = self._headers[str(path)] = wanted
            try:
                return open_gguf(path, header_bytes=fetched)
            except HeaderPastFetched as more:
                wanted = min(size, max(int(more.needed), 2 * fetched))
                if wanted <= fetched:  # never (the reader says "past the end" then): no loop without progress
                    raise InputError(path, "", "a GGUF header within the file", f"a read up to {more.needed}") \
                        from None

    def check(self, name, shape):
        """As :meth:`GGUFModel.check`; the tensor is then read with the others, in waves."""
        with self._labelled():
            type_name = super().check(name, shape)
        with self._lock:
            self._wanted[name] = None
        return type_name

    def shape_of(self, name):
        """As :meth:`GGUFModel.shape_of` (an error names the URL)."""
        with self._labelled():
            return super().shape_of(name)

    def dtype_of(self, name):
        """As :meth:`GGUFModel.dtype_of` (an error names the URL)."""
        with self._labelled():
            return super().dtype_of(name)

    def read_block(self, source):
        """As :meth:`GGUFModel.read_block`: its rows read first (:meth:`_fetch`); an error names the URL."""
        with self._labelled():
            return super().read_block(source)

    def read_gain(self, source, dtype):
        """As :meth:`GGUFModel.read_gain`: its rows read first (:meth:`_fetch`); an error names the URL."""
        with self._labelled():
            return super().read_gain(source, dtype)

    def describe(self):
        """:meth:`GGUFModel.describe`, with the bytes read of the remote file(s)."""
        record = super().describe()
        record["gguf"]["read_remotely"] = {"file_bytes": self.file_bytes, "bytes_read": self.bytes_read,
                                           "range_requests": self.range_requests, "waves": len(self._waves)}
        return record

    def _fetch(self, path, tensor, start, stop):
        """Rows ``start:stop`` of ``tensor`` into its sparse copy: a new wave reads those still unread, and
        this thread waits for every wave that reads them (another thread's, perhaps)."""
        with self._lock:
            rows = self._row_waves(tensor)
            wave = self._plan_wave(tensor, start, stop) if (rows[start:stop] == _UNREAD).any() else None
            waits = [self._waves[int(w)] for w in np.unique(rows[start:stop])]
        if wave is not None:
            self._run_wave(*wave)
        for done in waits:
            done.result()

    def _row_waves(self, tensor):
        """The wave of each row of ``tensor`` (``_UNREAD``: none yet); under the lock."""
        if tensor.name not in self._rows:
            self._rows[tensor.name] = np.full(_row_count(tensor), _UNREAD, dtype=np.int64)
        return self._rows[tensor.name]

    def _plan_wave(self, tensor, start, stop):
        """``(wave id, [(path, start byte, end byte)])`` of a new wave; its rows are marked as its own.

        measure reads a head's rows in every layer, the heads in order, so the rows of the other
        tensors at the same fraction of their length are read next: the wave takes a band of that
        fraction of each (whole tensors when they all fit in :data:`WAVE_BYTES`).
        """
        wanted = dict.fromkeys([tensor.name, *self._wanted])
        total = sum(self._tensor(name)[1].data.nbytes for name in wanted)
        rows = self._rows[tensor.name]
        first = start + int(np.argmax(rows[start:stop] == _UNREAD))
        fraction = max(WAVE_BYTES / max(total, 1), (stop - first) / len(rows))
        at = first / len(rows)
        wave = next(self._wave_ids)
        self._waves[wave] = Future()
        plan = []
        for name in wanted:
            path, other = self._tensor(name)
            other_rows = self._row_waves(other)
            count = len(other_rows)
            low, high = (0, count) if other.data.nbytes <= WHOLE_TENSOR_BYTES else \
                (math.floor(at * count), min(count, math.ceil((at + fraction) * count)))
            if name == tensor.name:
                low, high = min(low, first), max(high, stop)
            plan.extend(_claim(path, other, other_rows, low, high, wave))
        return wave, plan

    def _run_wave(self, wave, plan):
        """Read the byte ranges of ``plan`` into the sparse copies, then set the wave's future (or its error)."""
        done = self._waves[wave]
        try:
            by_path = {}
            for path, start, end in plan:
                read = self._headers[str(path)]  # a small file's rows may have come with its header
                if end > read:
                    by_path.setdefault(path, []).append((max(start, read), end))
            self._check_room(sum(end - start for ranges in by_path.values() for start, end in ranges))
            for path, ranges in by_path.items():
                self._download(path, self._fds[str(path)], _coalesced(ranges))
        except BaseException as exc:
            done.set_exception(exc)
            raise
        done.set_result(None)

    def _download(self, path, fd, ranges):
        """Bytes ``ranges`` of the remote file of ``path`` into its sparse copy: large ranges in parts of at most
        :data:`REQUEST_BYTES`, read concurrently, at most :data:`WAVE_BYTES` held in memory at once."""
        parts = [(at, min(at + REQUEST_BYTES, end)) for start, end in ranges for at in range(start, end, REQUEST_BYTES)]
        for batch in _batches(parts, WAVE_BYTES):
            chunks = self.files.read_ranges(path.name, batch)
            for (start, _), chunk in zip(batch, chunks):
                self._write(fd, chunk, start)
            with self._lock:
                self.bytes_read += sum(len(chunk) for chunk in chunks)
                self.range_requests += len(batch)

    def _write(self, fd, data, offset):
        """``data`` into the sparse copy ``fd`` at ``offset`` (a full disk is one line)."""
        view = memoryview(data)
        try:
            while view:
                written = _pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as exc:
            raise InputError(self._dir.parent, "", "room in the temporary folder (TMPDIR) for the bytes read",
                             first_line(exc)) from None

    def _check_room(self, nbytes):
        """One line, before a wave, when the temporary folder has no room for its bytes (rather than a failed write)."""
        if not hasattr(os, "fstatvfs") or not self._fds:
            return
        stats = os.fstatvfs(next(iter(self._fds.values())))
        free = stats.f_bavail * stats.f_frsize
        if nbytes > free:
            raise InputError(self._dir.parent, "", f"{nbytes} bytes free in the temporary folder (TMPDIR) for the "
                             "tensor rows read", f"{free} bytes free")


def _row_count(tensor):
    """Rows of ``tensor`` as :class:`GGUFModel` indexes them: its first axis of a vector, else all but the last."""
    data = tensor.data
    return data.shape[0] if data.ndim == 1 else data.size // max(data.shape[-1], 1)


def _claim(path, tensor, rows, low, high, wave):
    """``[(path, start byte, end byte)]`` of the unread runs of rows ``low:high`` of ``tensor``, marked as ``wave``'s."""
    unread = np.flatnonzero(rows[low:high] == _UNREAD) + low
    if not len(unread):
        return []
    rows[unread] = wave
    row_bytes = tensor.data.nbytes // len(rows)
    breaks = np.flatnonzero(np.diff(unread) != 1)
    starts = np.concatenate(([unread[0]], unread[breaks + 1])).tolist()
    stops = (np.concatenate((unread[breaks], [unread[-1]])) + 1).tolist()
    offset = int(tensor.data_offset)
    return [(path, offset + a * row_bytes, offset + b * row_bytes) for a, b in zip(starts, stops)]


def _coalesced(ranges):
    """``ranges`` sorted, those less than :data:`COALESCE_GAP` apart merged (one request instead of two)."""
    out = []
    for start, end in sorted(ranges):
        if out and start - out[-1][1] <= COALESCE_GAP:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _batches(parts, limit):
    """``parts`` (start, end) in consecutive groups of at most ``limit`` bytes (a larger part alone)."""
    batch, size = [], 0
    for start, end in parts:
        if end <= start:
            continue
        if batch and size + end - start > limit:
            yield batch
            batch, size = [], 0
        batch.append((start, end))
        size += end - start
    if batch:
        yield batch


_seek_lock = threading.Lock()


def _pwrite(fd, data, offset):
    """``os.pwrite`` where there is one (POSIX), else a seek and a write under a lock."""
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, offset)
    with _seek_lock:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


def _remove(fds, folder):
    """Close the descriptors, remove the temporary folder (a finalizer: never raises)."""
    for fd in list(fds.values()):
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()
    shutil.rmtree(folder, ignore_errors=True)


def _refuse_servers_ignoring_ranges(files, name, size):
    """One line when an HTTP server answers a Range request with the whole file, before anything is read.

    :meth:`RemoteFiles.read_ranges` would take the whole body (the whole file) before seeing that it is
    not the range asked for; fsspec's ``HTTPFile`` looks at the status and the length first and leaves
    the body unread. Other filesystems (S3, GCS, ...) always honour ranges.
    """
    if not is_http_filesystem(files.fs) or size < PROBE_RANGE[1]:
        return
    url = files.url_of(name)
    expected = "a server that answers HTTP Range requests (206 Partial Content): a GGUF file is read in parts"

    def probe():
        try:
            with files.fs.open(url, "rb", block_size=PROBE_RANGE[1], cache_type="none", size=size) as f:
                f.seek(PROBE_RANGE[0])
                return f.read(PROBE_RANGE[1] - PROBE_RANGE[0])
        except ValueError as exc:
            if "range" not in str(exc).lower():
                raise
            raise InputError(url, "", expected, "an answer with the whole file") from None

    part = with_retries(probe, url, "a readable file")
    if len(part) != PROBE_RANGE[1] - PROBE_RANGE[0]:
        raise InputError(url, "", expected, f"{len(part)} bytes for bytes {PROBE_RANGE[0]}:{PROBE_RANGE[1]}")


def open_remote_gguf_model(source):
    """``(RemoteGGUFModel, GGUFLayout, AttentionShape)`` of a remote GGUF :class:`~.sources.ModelSource`."""
    model = RemoteGGUFModel(source.files, source.gguf_file, label=source.files.url_of(source.gguf_file))
    with model._labelled():
        return open_gguf_model(source, model)
