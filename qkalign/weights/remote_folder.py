"""A model folder on a remote filesystem (HTTP, the Hub, object stores), read by byte ranges.

:class:`RemoteFolder` has the interface of :class:`~qkalign.weights.model_folder.ModelFolder`
(``source``, ``names``, ``shape_of``, ``check``, ``read_block``, ``read_gain``) over
:class:`~qkalign.weights.remote_files.RemoteFiles`: the index (if any), each shard's header
(8 bytes, then the JSON header) when a tensor of that shard is first asked for, then exactly
the bytes of each head block. Nothing but the small norm-gain vectors is kept between reads.
"""

import threading

from ..errors import InputError
from .model_folder import INDEX_NAME, READABLE_DTYPES, SINGLE_FILE_NAME
from .safetensors_ranges import read_columns, read_header, read_rows


class RemoteFolder:
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
        index = files.read_json(INDEX_NAME, "safetensors index", missing_ok=True)
        if index is not None:
            self.source = files.url_of(INDEX_NAME)
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not all(_plain_name(v) for v in weight_map.values()):
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
        if entry.dtype not in READABLE_DTYPES:
            raise InputError(self.files.url_of(shard), name, "dtype " + ", ".join(READABLE_DTYPES), entry.dtype)
        return entry.dtype

    def shape_of(self, name):
        """Shape of tensor ``name`` as stored."""
        return self._entry(name)[1].shape

    def read_block(self, source):
        """The ``(d, n)`` block a :class:`~qkalign.weights.layouts.BlockSource` names, in its stored dtype."""
        shard, entry = self._entry(source.tensor)
        label = self.files.url_of(shard)
        if source.transposed:  # a Conv1D (in, out) weight: one byte range per row
            block = read_columns(self.files, shard, entry, source.start, source.stop, label, source.tensor).T
        else:
            block = read_rows(self.files, shard, entry, source.start, source.stop, label, source.tensor)
        if not block.isfinite().all():
            where = "columns" if source.transposed else "rows"
            raise InputError(label, source.tensor, "finite weights", f"NaN or Inf in {where} {source.start}:"
                             f"{source.stop}")
        return block

    def read_gain(self, source, dtype):
        """``offset + w[start:stop]`` for a :class:`~qkalign.weights.layouts.GainSource`, as a ``dtype`` tensor."""
        shard, entry = self._entry(source.tensor)
        with self._lock:  # a small vector that every head asks for: read once
            gain = self._gains.get(source.tensor)
            if gain is None:
                gain = read_rows(self.files, shard, entry, 0, entry.shape[0], self.files.url_of(shard), source.tensor)
                self._gains[source.tensor] = gain
        # The offset is added in the compute precision: 1 + w in bfloat16 would round.
        return gain[source.start:source.stop].to(dtype) + source.offset


def _plain_name(name):
    """A file name inside the folder: no separators, not ``.`` or ``..`` (a URL must not leave the folder)."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\?#")
