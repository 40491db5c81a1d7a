"""A GGUF model's tensors, read as measure reads a folder: one head's rows at a time, dequantised.

A model is one GGUF file or a split set ``NAME-00001-of-0000N.gguf`` (``gguf-split``, the
converter's ``--split-max-*``): every split holds a part of the tensors and ``split.no``,
``split.count``; the first holds the model's metadata. Tensor data is memory-mapped; a read
dequantises only the rows asked for (``gguf.quants.dequantize``: F16, BF16, the legacy quants
Q4_0 .. Q8_0, the K-quants, the IQ types, MXFP4, ... as float32), so memory stays as for a
safetensors folder. A type gguf cannot dequantise is refused by name before any work.
"""

import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from .fp8 import DequantizingFolder
from .gguf_reader import field_value, gguf_module, metadata, open_gguf, shown

#: ``NAME-00001-of-00003.gguf``: llama.cpp's split naming (``llama_split_path``).
SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
#: Types read as stored, by numpy (which honours a big-endian file's byte order; gguf's F16 dequantiser
#: views the bytes as native float16), widened exactly to the dtype given; others go through gguf's dequantiser.
_PLAIN = {"F32": np.float32, "F16": np.float32, "F64": np.float64}


def split_paths(path):
    """The files of the model ``path`` belongs to: all splits of a split set, else ``[path]``."""
    path = Path(path)
    match = SPLIT_NAME.match(path.name)
    if match is None:
        return [path]
    count = int(match["count"])
    if count < 1 or int(match["no"]) < 1 or int(match["no"]) > count:
        raise InputError(path, "", "a split file NAME-0000i-of-0000N.gguf with 1 <= i <= N", path.name)
    return [path.with_name(f"{match['stem']}-{no:05d}-of-{count:05d}.gguf") for no in range(1, count + 1)]


class GGUFModel(DequantizingFolder):
    """The tensors of a GGUF model, by name (``names``, ``check``, ``read_block``, ``read_gain``).

    Parameters
    ----------
    path : str or Path
        The GGUF file, or any split of a split set (all splits are read).
    label : str, optional
        How errors name the model (default: the path; an Ollama source gives its name).
    """

    def __init__(self, path, label=None):
        self.paths = split_paths(path)
        self.source = Path(path) if label is None else label
        self._readers = [self._open_split(p, i) for i, p in enumerate(self.paths)]
        self.metadata = metadata(self._readers[0])
        self._check_splits()
        self._tensors = {}
        for path_, reader in zip(self.paths, self._readers):
            for tensor in reader.tensors:
                if tensor.name in self._tensors:
                    raise InputError(path_, tensor.name, "each tensor in one split only",
                                     f"it also in {self._tensors[tensor.name][0].name}")
                self._tensors[tensor.name] = (path_, tensor)
        self.types_read = {}
        self.rotary_dims = None  # set by open_gguf_model

    def _open_split(self, path, index):
        if not path.is_file():
            what = f"split {index + 1} of {len(self.paths)} next to {self.paths[0].name}" if len(self.paths) > 1 \
                else "a GGUF file"
            raise InputError(path, "", what, "no such file" if not path.exists() else "not a regular file")
        return open_gguf(path)

    def _check_splits(self):
        """Split ``i`` of a set of ``N`` says ``split.no = i - 1``, ``split.count = N``; a single file says
        ``split.count`` 1 or nothing (a split found under another name is refused: its other parts are missing)."""
        count = len(self.paths)
        for index, (path, reader) in enumerate(zip(self.paths, self._readers)):
            found = tuple(field_value(reader, key) for key in ("split.no", "split.count"))
            if count > 1 and found != (index, count):
                raise InputError(path, "split.no, split.count", f"({index}, {count}): split {index + 1} of {count} "
                                 "as its name says", f"({shown(found[0])}, {shown(found[1])})")
            if count == 1 and found[1] not in (None, 1):
                raise InputError(path, "split.count", "1 or none (a split set is read by its "
                                 "NAME-0000i-of-0000N.gguf file names)", shown(found[1]))

    def describe(self):
        """What ``QKData.extra["gguf"]`` records of the file: its version, architecture, name and files."""
        version = self._readers[0].fields.get("GGUF.version")
        return {"gguf": {"version": int(version.contents()) if version is not None else None,
                         "architecture": self.metadata.get("general.architecture"),
                         "name": _scalar(self.metadata.get("general.name")),
                         "file_type": _scalar(self.metadata.get("general.file_type")),
                         "files": [p.name for p in self.paths]}}

    def names(self):
        """All tensor names of the model."""
        return self._tensors.keys()

    def _tensor(self, name):
        entry = self._tensors.get(name)
        if entry is None:
            raise InputError(self.paths[0], name, "this tensor to be present", "it missing")
        return entry

    def shape_of(self, name):
        """Shape of tensor ``name`` as numpy orders it (GGUF lists dimensions innermost first)."""
        return tuple(int(x) for x in reversed(self._tensor(name)[1].shape.tolist()))

    def dtype_of(self, name):
        """The GGML type name of tensor ``name`` (``"Q4_K"``, ``"F16"``, ...)."""
        return self._tensor(name)[1].tensor_type.name

    def check(self, name, shape):
        """Raise unless tensor ``name`` exists with ``shape`` and a type gguf dequantises; return the type."""
        path, tensor = self._tensor(name)
        found = self.shape_of(name)
        if found != tuple(shape):
            raise InputError(path, name, f"shape {tuple(shape)} (from the GGUF metadata)", f"{found}")
        type_name = tensor.tensor_type.name
        if type_name not in _PLAIN and not _dequantizable(tensor.tensor_type):
            raise InputError(path, name, "a tensor type the gguf package dequantises (F32, F16, BF16, Q4_0 .. Q8_0, "
                             "the K-quants, IQ types, MXFP4, ...)", f"{type_name}, which it does not")
        if type_name not in _PLAIN and self._readers[self.paths.index(path)].byte_order == "S":
            # gguf's dequantisers read little-endian blocks; gguf_convert_endian.py byte-swaps their scales
            raise InputError(path, name, "F32, F16 or F64 in a big-endian GGUF file (gguf dequantises "
                             "little-endian blocks only)", type_name)
        self.types_read[name] = type_name
        return type_name

    def _read(self, name, index):
        """Rows ``index`` (a slice) of tensor ``name``, as float32 (float64 for F64)."""
        path, tensor = self._tensor(name)
        plain = _PLAIN.get(tensor.tensor_type.name)
        if len(tensor.shape) == 1:  # a gain: dequantised whole, as a quantised vector's bytes do not slice by element
            self._fetch(path, tensor, 0, 1)
            whole = np.array(tensor.data, dtype=plain) if plain is not None else \
                gguf_module().quants.dequantize(np.ascontiguousarray(tensor.data), tensor.tensor_type)
            return whole[index]
        self._fetch(path, tensor, index.start, index.stop)
        rows = tensor.data.reshape(-1, tensor.data.shape[-1])[index]
        if plain is not None:
            return np.array(rows, dtype=plain)
        return gguf_module().quants.dequantize(np.ascontiguousarray(rows), tensor.tensor_type)

    def _fetch(self, path, tensor, start, stop):
        """Bring rows ``start:stop`` of ``tensor`` (a vector: its one row, 0:1) into the mapped file before they
        are read (local: nothing)."""

    def read_rope(self, layout, shape):
        """The model's :class:`~qkalign.weights.rope.ModelRope` from the metadata (and the ``rope_freqs`` /
        ``rope_factors_short`` tensors where the file has them)."""
        from .rope import rope_from_gguf

        return rope_from_gguf(self.metadata, layout.arch, shape.head_dim, self.rotary_dims, layout.spec.pairing,
                              rope_freqs=self.read_vector("rope_freqs.weight"),
                              rope_factors_short=self.read_vector("rope_factors_short.weight"), source=self.paths[0])

    def read_vector(self, name):
        """The whole 1-D tensor ``name`` (``rope_freqs.weight``, say) as float64, or None when the model has none;
        refused in one line unless finite."""
        if name not in self._tensors:
            return None
        path, tensor = self._tensor(name)
        if len(tensor.shape) != 1:
            raise InputError(path, name, "a vector (1 dimension)", f"shape {self.shape_of(name)}")
        values = self._read(name, slice(None)).astype(np.float64)
        if not np.isfinite(values).all():
            raise InputError(path, name, "finite values", "NaN or Inf")
        return values

    def read_block(self, source):
        """The ``(d, n)`` block a :class:`~qkalign.weights.layouts.BlockSource` names, dequantised to float32."""
        block = self._read(source.tensor, slice(source.start, source.stop))
        self._check_finite(block, source, self._tensor(source.tensor)[0])
        return block

    def read_gain(self, source, dtype):
        """``offset + w[start:stop]`` of a :class:`~qkalign.weights.layouts.GainSource`, a new ``dtype`` array."""
        gain = self._read(source.tensor, slice(source.start, source.stop)).astype(dtype) + source.offset
        if not np.isfinite(gain).all():
            raise InputError(self._tensor(source.tensor)[0], source.tensor, "a finite norm gain", "NaN or Inf")
        return gain


def _scalar(value):
    """``value`` if it is a str or an int, else None: what the output JSON records of a free-form metadata value
    (an array or an undecodable string would not serialise, or bloat it)."""
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _dequantizable(tensor_type):
    """Whether gguf's dequantiser knows ``tensor_type`` (tried on one zero block: its public API says no more)."""
    gguf = gguf_module()
    block_size, type_size = gguf.GGML_QUANT_SIZES[tensor_type]
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), tensor_type)
    except (NotImplementedError, ValueError, TypeError):
        return False
    return True


def open_gguf_model(source, model=None):
    """``(GGUFModel, GGUFLayout, AttentionShape)`` of a GGUF :class:`~qkalign.weights.sources.ModelSource`
    (``model``: its model when already open, as :mod:`.remote_gguf` opens a remote file's; else the local file)."""
    from .gguf_layout import GGUFLayout, architecture_of

    if model is None:
        model = GGUFModel(source.gguf_path, label=source.given if source.kind == "ollama" else None)
    arch, _ = architecture_of(model.metadata, model.paths[0])
    layout = GGUFLayout(arch, model.names(), model.shape_of)
    shape = layout.shape(model.metadata, model.paths[0])
    layout.check_layers(model.names(), shape, model.paths[0])
    model.rotary_dims = layout.rotary_dims(model.metadata, shape, model.paths[0])

    for name in layout.weight_shapes(shape, 0):
        if name not in model.names():
            raise InputError(model.paths[0], name, f"the attention weights of a GGUF {arch} model (blk.N.attn_q and "
                             "attn_k, or a fused attn_qkv)", "no such tensor")
    return model, layout, shape
