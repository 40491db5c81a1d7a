"""A model folder on a remote filesystem (HTTP, the Hub, object stores), read by byte ranges.

:class:`RemoteFolder` has the interface of :class:`~qkalign.weights.model_folder.ModelFolder`
(``source``, ``names``, ``shape_of``, ``check``, ``read_block``, ``read_gain``) over
:class:`~qkalign.weights.remote_files.RemoteFiles`: the index (if any), each shard's header
(8 bytes, then the JSON header) when a tensor of that shard is first asked for, then the bytes
of the head blocks (of Conv1D weights, a chunk of neighbouring heads at once). Kept between reads: the small norm-gain vectors, and the column
chunks of Conv1D weights (:class:`ColumnChunks`, at most :data:`COLUMN_CACHE_BYTES`).
FP8 block-scaled weights are dequantised as they are read, as in the local folder
(:class:`~qkalign.weights.fp8.DequantizingFolder`): a head block's FP8 bytes, then the rows
(of a Conv1D weight, the columns) of its ``<name>_scale_inv`` grid that cover the block.
"""

import threading
from collections import OrderedDict
from concurrent.futures import Future

from ..errors import InputError
from .fp8 import DequantizingFolder
from .model_folder import INDEX_NAME, READABLE_DTYPES, SINGLE_FILE_NAME
from .remote_files import plain_file_name
from .safetensors_ranges import read_columns, read_header, read_rows

#: Memory for the column chunks of Conv1D weights kept between head reads.
COLUMN_CACHE_BYTES = 256 * 2 ** 20


class RemoteFolder(DequantizingFolder):
    """The tensors of a remote model folder.

    Parameters
    ----------
    files : RemoteFiles
        The folder's files.
    """

    def __init__(self, files):
        self.files = files
        self._headers, self._gains = {}, {}
        self._lock = threading.Lock()
        self._columns = ColumnChunks(self)
        index = files.read_json(INDEX_NAME, "safetensors index", missing_ok=True)
        if index is not None:
            self.source = files.url_of(INDEX_NAME)
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not all(plain_file_name(v) for v in weight_map.values()):
                raise InputError(self.source, "weight_map", "an object mapping tensor names to shard file names "
                                 "in the folder", repr(weight_map)[:200])
            self._file_of = dict(weight_map)
        else:
            self.source = files.url_of(SINGLE_FILE_NAME)
            try:
                header = self._header(SINGLE_FILE_NAME)
            except InputError as exc:
                if exc.found and exc.found.startswith(("HTTP 404", "no such file")):
                    raise InputError(files.url_of(""), "", f"safetensors weights ({SINGLE_FILE_NAME} or "
                                     f"{INDEX_NAME})", "neither file") from None
                raise
            self._file_of = dict.fromkeys(header, SINGLE_FILE_NAME)

    def _header(self, shard):
        with self._lock:  # measure's threads ask at once; each header is read once
            if shard not in self._headers:
                self._headers[shard] = read_header(self.files, shard, self.files.url_of(shard))
            return self._headers[shard]

    def names(self):
        """All tensor names of the checkpoint (from the index, without reading the shards)."""
        return self._file_of.keys()

    def _entry(self, name):
        shard = self._file_of.get(name)
        if shard is None:
            raise InputError(self.source, name, "this tensor to be present", "it missing")
        entry = self._header(shard).get(name)
        if entry is None:
            raise InputError(self.files.url_of(shard), name, f"this tensor to be present (as {INDEX_NAME} says)",
                             "it missing")
        return shard, entry

    def check(self, name, shape):
        """Raise unless tensor ``name`` exists with ``shape`` and a readable float dtype; return the dtype."""
        shard, entry = self._entry(name)
        if entry.shape != tuple(shape):
            raise InputError(self.files.url_of(shard), name, f"shape {tuple(shape)} (from config.json)",
                             f"{entry.shape}")
        return self._check_dtype(name, shape, entry.dtype, READABLE_DTYPES, self.files.url_of(shard))

    def shape_of(self, name):
        """Shape of tensor ``name`` as stored."""
        return self._entry(name)[1].shape

    def dtype_of(self, name):
        """safetensors' name of the dtype of tensor ``name`` (``"BF16"``, ...)."""
        return self._entry(name)[1].dtype

    def _read(self, name, index):
        """Rows ``index`` (a slice) of tensor ``name``, or with ``index = (slice(None), columns)`` its columns."""
        shard, entry = self._entry(name)
        label = self.files.url_of(shard)
        if isinstance(index, tuple):
            columns = index[1]
            return read_columns(self.files, shard, entry, columns.start, columns.stop, label, name)
        return read_rows(self.files, shard, entry, index.start, index.stop, label, name)

    def read_block(self, source):
        """The ``(d, n)`` block a :class:`~qkalign.weights.layouts.BlockSource` names, a numpy array of its
        stored values (bfloat16 as float32, FP8 dequantised exactly to float64)."""
        shard, entry = self._entry(source.tensor)
        label = self.files.url_of(shard)
        if source.transposed:  # a Conv1D (in, out) weight: one byte range per row
            block = self._columns.read(shard, entry, source.start, source.stop, source.tensor)
        else:
            block = read_rows(self.files, shard, entry, source.start, source.stop, label, source.tensor)
        block = self._dequantized(block, source)
        if source.transposed:
            block = block.T
        self._check_finite(block, source, label)
        return block

    def read_gain(self, source, dtype):
        """``offset + w[start:stop]`` for a :class:`~qkalign.weights.layouts.GainSource`, a new ``dtype`` array."""
        shard, entry = self._entry(source.tensor)
        with self._lock:  # a small vector that every head asks for: read once
            gain = self._gains.get(source.tensor)
            if gain is None:
                gain = read_rows(self.files, shard, entry, 0, entry.shape[0], self.files.url_of(shard), source.tensor)
                self._gains[source.tensor] = gain
        # The offset is added in the compute precision: 1 + w in bfloat16 would round.
        return gain[source.start:source.stop].astype(dtype) + source.offset


class ColumnChunks:
    """Column blocks of ``(rows, cols)`` Conv1D weights, read ``c`` head blocks at a time and kept for the next heads.

    A head's block of a Conv1D weight is a column range, so each row is a separate byte range;
    reading the columns of ``c`` neighbouring heads at once divides the requests by ``c``. Chunks
    are aligned to ``c`` blocks and never cross a multiple of ``rows`` columns (GPT-2's ``c_attn``,
    ``(n, 3 n)``, holds Q, K and V as three parts of ``rows = n`` columns), so only the parts asked
    for are read. measure reads one head in every layer, then the next: ``c`` is the largest
    divisor of ``rows / width`` for which four chunks of every tensor of this shape (one tensor per
    layer; the K and Q chunks of the heads in work and of the next ones) fit in
    :data:`COLUMN_CACHE_BYTES`; the least recently used chunk goes first. ``c = 1`` reads each
    block alone.
    """

    def __init__(self, folder):
        self.folder = folder
        self._chunks = OrderedDict()  # (shard, tensor, first column) -> Future of the (rows, c width) block
        self._heads_per_chunk = {}  # (shape, dtype, width) -> c
        self._lock = threading.Lock()

    def _heads(self, entry, width):
        key = (entry.shape, entry.dtype, width)
        if key not in self._heads_per_chunk:
            rows = entry.shape[0]
            alike = sum(e.shape == entry.shape and e.dtype == entry.dtype
                        for header in list(self.folder._headers.values()) for e in header.values())
            per_head = rows * width * entry.itemsize
            fitting = [c for c in range(1, rows // width + 1)
                       if rows % (c * width) == 0 and 4 * max(alike, 1) * c * per_head <= COLUMN_CACHE_BYTES]
            self._heads_per_chunk[key] = max(fitting, default=1)
        return self._heads_per_chunk[key]

    def read(self, shard, entry, start, stop, name):
        """Columns ``start:stop`` of ``entry`` (in ``shard``): ``(rows, stop - start)``."""
        label = self.folder.files.url_of(shard)
        span = (stop - start) * self._heads(entry, stop - start)
        first = start - start % span
        if span == stop - start or first + span > entry.shape[1] or (stop - 1) // span != start // span:
            return read_columns(self.folder.files, shard, entry, start, stop, label, name)
        key = (shard, name, first)
        with self._lock:
            chunk = self._chunks.get(key)
            owner = chunk is None
            if owner:  # one thread reads, the others wait for its result
                chunk = self._chunks[key] = Future()
                capacity = max(1, COLUMN_CACHE_BYTES // (entry.shape[0] * span * entry.itemsize))
                while len(self._chunks) > capacity:
                    self._chunks.popitem(last=False)
            else:
                self._chunks.move_to_end(key)
        if owner:
            try:
                chunk.set_result(read_columns(self.folder.files, shard, entry, first, first + span, label, name))
            except BaseException as exc:
                chunk.set_exception(exc)
                with self._lock:
                    self._chunks.pop(key, None)
                raise
        return chunk.result()[:, start - first:stop - first]
