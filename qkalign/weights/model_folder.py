"""A Hugging Face model folder, read lazily and checked: ``config.json`` and safetensors weights.

Weights come from ``model.safetensors`` or from the shards listed in
``model.safetensors.index.json`` (in any order). Each file is checked by
``safetensors.safe_open``, then memory-mapped by numpy and decoded by
:func:`~qkalign.weights.safetensors_ranges.decode` (bfloat16 and FP8, which numpy has no type
for, included: no torch); a read touches only the rows (or columns) asked for.
Every problem (a missing file or tensor, a corrupt or truncated file, a wrong shape
or dtype) is an :class:`~qkalign.errors.InputError` naming the file and the tensor.
FP8 block-scaled weights are dequantised as they are read (:mod:`qkalign.weights.fp8`).
"""

import math
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from ..checks import read_json_object, regular_file
from ..errors import InputError
from . import fp8
from .safetensors_ranges import decode, read_header

CONFIG_NAME = "config.json"
SINGLE_FILE_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
# Checkpoint dtypes read (and widened exactly to float32/float64); quantised ones are refused.
READABLE_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}


def read_config(model_dir):
    """``MODEL_DIR/config.json`` as a dict."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(model_dir, "", "a model folder (config.json plus safetensors weights) or a GGUF file",
                         "no such directory" if not model_dir.exists() else "a file")
    return read_json_object(model_dir / CONFIG_NAME, "model config")


def _plain_file_name(index_path, tensor, shard):
    """``shard`` when it names a file in the folder itself: an index may not reach outside it.

    (Symlinks in the folder may point elsewhere, as a Hugging Face cache snapshot's do.)
    """
    if shard in ("", ".", "..") or Path(shard).name != shard or "\\" in shard:
        raise InputError(index_path, f"weight_map[{tensor!r}]", "a file name in the model folder",
                         repr(shard)[:120])
    return shard


class ModelFolder(fp8.DequantizingFolder):
    """The tensors of a model folder, opened lazily.

    Parameters
    ----------
    model_dir : str or Path
        Folder holding ``model.safetensors`` or ``model.safetensors.index.json`` and its shards.
    """

    def __init__(self, model_dir):
        self.model_dir = Path(model_dir)
        index_path = self.model_dir / INDEX_NAME
        single_path = self.model_dir / SINGLE_FILE_NAME
        self._handles = {}
        if index_path.exists():
            self.source = index_path
            weight_map = read_json_object(index_path, "safetensors index").get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise InputError(index_path, "weight_map", "an object mapping tensor names to shard files",
                                 type(weight_map).__name__)
            self._file_of = {name: self.model_dir / _plain_file_name(index_path, name, shard)
                             for name, shard in weight_map.items()}
        elif single_path.exists():
            self.source = single_path
            self._file_of = {name: single_path for name in self._open(single_path).keys()}
        else:
            others = sorted(p.name for p in self.model_dir.glob("*") if p.suffix in (".bin", ".pt", ".safetensors",
                                                                                       ".pth", ".gguf"))
            raise InputError(self.model_dir, "", f"safetensors weights ({SINGLE_FILE_NAME} or {INDEX_NAME})",
                             ", ".join(others) if others else "no weights file")

    def _open(self, path):
        """``{name: _MappedTensor}`` of the safetensors file ``path``, checked by safetensors, then mapped."""
        handle = self._handles.get(path)
        if handle is None:
            regular_file(path, f"safetensors shard listed in {INDEX_NAME}" if path != self.source else "safetensors file")
            try:
                with safe_open(str(path), framework="numpy"):  # its checks of the header and the file size
                    pass
                mapped = np.memmap(path, dtype=np.uint8, mode="r")
            except FileNotFoundError:
                raise InputError(path, "", f"the safetensors shard listed in {INDEX_NAME}", "no such file") from None
            except (SafetensorError, OSError, ValueError) as exc:
                raise InputError(path, "", "a readable safetensors file", f"a corrupt or truncated file ({exc})") from None
            entries = read_header(_MappedFile(mapped), path, path)
            handle = self._handles[path] = {name: _MappedTensor(mapped, entry, path, name)
                                            for name, entry in entries.items()}
        return handle

    def names(self):
        """All tensor names of the checkpoint (from the index, without opening the shards)."""
        return self._file_of.keys()

    def _slice(self, name):
        path = self._file_of.get(name)
        if path is None:
            raise InputError(self.source, name, "this tensor to be present", "it missing")
        tensor = self._open(path).get(name)
        if tensor is None:
            raise InputError(path, name, f"this tensor to be present (as {self.source.name} says)", "it missing")
        return path, tensor

    def check(self, name, shape):
        """Raise unless tensor ``name`` exists with ``shape`` and a readable float dtype; return the dtype."""
        path, sl = self._slice(name)
        found = tuple(sl.get_shape())
        if found != tuple(shape):
            raise InputError(path, name, f"shape {tuple(shape)} (from config.json)", f"{found}")
        return self._check_dtype(name, shape, sl.get_dtype(), READABLE_DTYPES, path)

    def shape_of(self, name):
        """Shape of tensor ``name`` as stored."""
        return tuple(self._slice(name)[1].get_shape())

    def dtype_of(self, name):
        """safetensors' name of the dtype of tensor ``name`` (``"BF16"``, ...)."""
        return self._slice(name)[1].get_dtype()

    def _read(self, name, index):
        path, sl = self._slice(name)
        try:
            return sl[index]
        except (SafetensorError, RuntimeError, OSError) as exc:
            raise InputError(path, name, "readable tensor data", f"an unreadable slice ({exc})") from None

    def read_block(self, source):
        """The ``(d, n)`` block a :class:`~qkalign.weights.layouts.BlockSource` names, a numpy array of its
        stored values (bfloat16 as float32, FP8 dequantised exactly to float64)."""
        rows = slice(source.start, source.stop)
        index = (slice(None), rows) if source.transposed else rows
        block = self._dequantized(self._read(source.tensor, index), source)
        if source.transposed:
            block = block.T
        self._check_finite(block, source, self._file_of[source.tensor])
        return block

    def read_gain(self, source, dtype):
        """``offset + w[start:stop]`` for a :class:`~qkalign.weights.layouts.GainSource`, a new ``dtype`` array."""
        # The offset is added in the compute precision: 1 + w in bfloat16 would round.
        return self._read(source.tensor, slice(source.start, source.stop)).astype(dtype) + source.offset


class _MappedFile:
    """A mapped file as :func:`~qkalign.weights.safetensors_ranges.read_header` reads files."""

    def __init__(self, mapped):
        self.mapped = mapped

    def size(self, path):
        return len(self.mapped)

    def read_ranges(self, path, ranges):
        return [self.mapped[start:end].tobytes() for start, end in ranges]


class _MappedTensor:
    """A tensor of a mapped safetensors file: ``get_shape``, ``get_dtype`` and ``[rows]`` or
    ``[:, columns]`` (decoded numpy arrays), as a safetensors slice has them."""

    def __init__(self, mapped, entry, path, name):
        self.mapped, self.entry, self.path, self.name = mapped, entry, path, name

    def get_shape(self):
        return list(self.entry.shape)

    def get_dtype(self):
        return self.entry.dtype

    def __getitem__(self, index):
        entry = self.entry
        data = self.mapped[entry.begin:entry.end]
        if isinstance(index, tuple):  # (slice(None), columns) of a 2-D tensor
            columns = index[1]
            rows, size = entry.shape[0], entry.itemsize
            raw = np.ascontiguousarray(data.reshape(rows, -1)[:, columns.start * size:columns.stop * size])
            return decode(raw, entry.dtype, (rows, columns.stop - columns.start), self.path, self.name)
        row_bytes = math.prod(entry.shape[1:]) * entry.itemsize
        raw = data[index.start * row_bytes:index.stop * row_bytes]
        return decode(raw, entry.dtype, (index.stop - index.start, *entry.shape[1:]), self.path, self.name)
