"""A safetensors file read by byte ranges: its header, then only the rows or columns asked for.

A safetensors file is ``u64 N`` (little-endian), ``N`` bytes of JSON mapping each tensor name
to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data that follows the
header), then the data, C-ordered. :func:`read_header` reads the 8 bytes and the header and checks
every entry against the file size; :func:`read_rows` reads rows ``start:stop`` of a tensor as one
range, :func:`read_columns` columns ``start:stop`` as one range per row (a Conv1D head block), so
the bytes read are the bytes of the block. ``files`` is any object with ``size(path)`` and
``read_ranges(path, [(start, end), ...]) -> [bytes, ...]``
(:class:`~qkalign.weights.remote_files.RemoteFiles`).
"""

import math
from dataclasses import dataclass

import numpy as np

from ..checks import parse_json_object
from ..errors import InputError

#: Bytes per element of every safetensors dtype (sub-byte float formats are left out: not checked).
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}
#: The dtypes decoded (:func:`decode`) and the numpy type of their values: the float ones, and FP8 E4M3
#: (dequantised by the caller with its block scales, :mod:`qkalign.weights.fp8`); other ones are refused.
#: numpy has neither bfloat16 nor FP8: their values are float32, which holds every one of them exactly.
DECODED_DTYPES = {"BF16": np.float32, "F16": np.float16, "F32": np.float32, "F64": np.float64,
                  "F8_E4M3": np.float32}


def _e4m3_values():
    """The float32 value of each of the 256 E4M3 ("fn": no infinities) bit patterns."""
    bits = np.arange(256)
    sign = np.where(bits & 0x80, -1.0, 1.0)
    exponent, mantissa = (bits >> 3) & 0xF, bits & 0x7
    magnitude = np.where(exponent == 0, mantissa / 8 * 2.0**-6, (1 + mantissa / 8) * 2.0 ** (exponent - 7))
    values = sign * magnitude
    values[(exponent == 0xF) & (mantissa == 0x7)] = np.nan  # S.1111.111: the only NaNs
    return values.astype(np.float32)


#: E4M3 bit pattern -> value (4-bit significands, exponents 2^-9..2^8: exact in float32).
E4M3_VALUES = _e4m3_values()
# safetensors' own bound on the header: a larger length is a corrupt file, not a reason to read 2**64 bytes.
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorEntry:
    """A tensor in a safetensors file: ``dtype``, ``shape`` and its bytes ``begin:end`` in the file."""

    dtype: str
    shape: tuple
    begin: int
    end: int

    @property
    def itemsize(self):
        return DTYPE_SIZES[self.dtype]


def read_header(files, path, label):
    """``{name: TensorEntry}`` of the safetensors file ``path``, checked against the file's size.

    ``label`` names the file in error lines (a URL). Offsets in the entries are absolute.
    """
    size = files.size(path)
    if size < 8:
        raise InputError(label, "", "a safetensors file (8-byte header length, JSON header, data)",
                         f"a file of {size} bytes")
    (length_bytes,) = files.read_ranges(path, [(0, 8)])
    header_len = int.from_bytes(length_bytes, "little")
    if header_len > min(size - 8, MAX_HEADER_BYTES):
        raise InputError(label, "header length", f"at most {min(size - 8, MAX_HEADER_BYTES)} bytes (file size "
                         f"{size})", f"{header_len} (a truncated or corrupt file)")
    (raw,) = files.read_ranges(path, [(8, 8 + header_len)])
    header = parse_json_object(raw, label, "safetensors header", "header")
    data_start = 8 + header_len
    return {name: _entry(label, name, value, data_start, size)
            for name, value in header.items() if name != "__metadata__"}


def _entry(label, name, value, data_start, size):
    if not isinstance(value, dict):
        raise InputError(label, name, "an object with dtype, shape and data_offsets", type(value).__name__)
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if not isinstance(dtype, str):
        raise InputError(label, f"{name}.dtype", "a dtype name", repr(dtype))
    if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
        raise InputError(label, f"{name}.shape", "a list of non-negative integers", repr(shape))
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] and data_start + offsets[1] <= size):
        raise InputError(label, f"{name}.data_offsets", f"[begin, end] with 0 <= begin <= end <= "
                         f"{size - data_start} (the data's size)", f"{offsets!r} (a truncated or corrupt file)")
    if dtype in DTYPE_SIZES and offsets[1] - offsets[0] != math.prod(shape) * DTYPE_SIZES[dtype]:
        raise InputError(label, f"{name}.data_offsets", f"{math.prod(shape) * DTYPE_SIZES[dtype]} bytes "
                         f"(shape {shape} of {dtype})", f"{offsets[1] - offsets[0]} bytes")
    return TensorEntry(dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])


def decode(raw, dtype, shape, label, name):
    """The little-endian bytes ``raw`` (bytes, or a contiguous uint8 array) as a numpy array of ``shape``.

    F16, F32 and F64 come back as such (a read-only view of ``raw``); BF16 and F8_E4M3, which numpy
    has no type for, as float32 (exact: a bfloat16 is the top half of a float32).
    """
    if dtype not in DECODED_DTYPES:
        raise InputError(label, name, "dtype " + ", ".join(DECODED_DTYPES), dtype)
    data = np.frombuffer(raw, dtype=np.uint8)
    if dtype == "BF16":
        values = (data.view("<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype == "F8_E4M3":
        values = E4M3_VALUES[data]
    else:  # safetensors (and x86, ARM) are little-endian
        values = data.view(np.dtype(DECODED_DTYPES[dtype]).newbyteorder("<"))
    return values.reshape(shape)


def read_rows(files, path, entry, start, stop, label, name):
    """Rows ``start:stop`` (first axis) of the tensor ``entry``: one byte range."""
    row_bytes = math.prod(entry.shape[1:]) * entry.itemsize
    (raw,) = files.read_ranges(path, [(entry.begin + start * row_bytes, entry.begin + stop * row_bytes)])
    return decode(raw, entry.dtype, (stop - start, *entry.shape[1:]), label, name)


def read_columns(files, path, entry, start, stop, label, name):
    """Columns ``start:stop`` of the 2-D tensor ``entry``, ``(rows, stop - start)``: one range per row."""
    rows, cols = entry.shape
    size = entry.itemsize
    ranges = [(entry.begin + (r * cols + start) * size, entry.begin + (r * cols + stop) * size) for r in range(rows)]
    return decode(b"".join(files.read_ranges(path, ranges)), entry.dtype, (rows, stop - start), label, name)
