"""Opening a GGUF file (llama.cpp, Ollama, LM Studio) with the ``gguf`` package's reader, safely.

``gguf.GGUFReader`` parses the header (metadata key/values, then the tensor directory) from a
memory map of the file and gives each tensor a numpy view of its bytes. Its reads past the end
of the file come back *short* rather than failing, so a truncated or hostile header makes it
loop (an array length of 2^60 is read element by element) or build views of the wrong size.
:class:`BoundedGGUFReader` is that reader with every read checked against the bytes at hand,
and each count checked against the bytes left before its loop starts: a bad file ends in one
:class:`~qkalign.errors.InputError` line, in time proportional to the file. It parses with gguf's
own code, one entry at a time, so that the line names the key or tensor at fault, and refuses
what llama.cpp refuses but gguf would misread or let through (nested arrays, more than 4
dimensions, 2^63 elements or more, duplicate keys, tensors that share bytes or start misaligned).

The bytes at hand are the whole file, or for a file read remotely only its header so far
(``header_bytes``): a read beyond them raises :class:`HeaderPastFetched`, with the offset
needed, so that the caller fetches more and parses again.
"""

import contextlib
import math
import os
import stat
import struct
import sys

import numpy as np

from ..checks import file_kind
from ..errors import InputError, first_line

GGUF_MAGIC = b"GGUF"
# GGUFValueType codes (the gguf spec): the fixed sizes of the scalar types, 8 for a string's length,
# 12 for a nested array's type and length: the least bytes one array element takes.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
# The least bytes of one metadata entry (key length, type, a one-byte value) and of one tensor's
# directory entry (name length, dimension count, type, offset).
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8
# Arrays longer than this are read at once (numbers) or walked over (strings), not element by element.
_ELEMENTWISE_LIMIT = 4096
# llama.cpp's limits (ggml's gguf.cpp): at most 4 dimensions, fewer than 2^63 elements (int64_t counts).
_MAX_DIMS = 4
_MAX_ELEMENTS = 2**63 - 1
# The versions gguf reads (gguf.gguf_reader.READER_SUPPORTED_VERSIONS; llama.cpp reads the same).
_VERSIONS = (2, 3)
# The fields of the fixed header by their offsets (after the magic): version, then the two counts.
_HEADER_FIELDS = {4: "GGUF.version", 8: "GGUF.tensor_count, GGUF.kv_count"}
# Removed from ggml (2023): their codes are gaps in GGMLQuantizationType.
_REMOVED_TYPES = {4: "Q4_2", 5: "Q4_3"}


class HeaderPastFetched(Exception):
    """A read of the header beyond the bytes fetched so far: ``needed`` is the end offset it asked for."""

    def __init__(self, needed):
        super().__init__(needed)
        self.needed = needed


class _Refused(ValueError):
    """A part of the file refused: ``field`` (None: the entry being parsed, named by the reader), what was
    ``expected`` there and what was ``found``; :func:`open_gguf` makes it one :class:`InputError` line."""

    def __init__(self, field, expected, found):
        super().__init__(f"{field}: expected {expected}, found {found}")
        self.field, self.expected, self.found = field, expected, found


class _PastEnd(_Refused):
    """A read beyond the end of the file (a truncated file, or an offset or count past its end) from ``offset``."""

    def __init__(self, offset, end, size):
        super().__init__(None, f"bytes {offset}:{end} within the file",
                         f"it ends at byte {size} (truncated, or a length, count or offset too large)")
        self.offset = offset


class Unreadable:
    """A metadata value gguf cannot decode (a string that is not UTF-8): an error line quoting it says so."""

    def __init__(self, why):
        self.why = why

    def __repr__(self):
        return f"a value that does not decode ({self.why})"


def shown(value, limit=80):
    """``repr(value)`` as an error line quotes it: at most ``limit`` characters (a hostile file's strings
    and arrays can be megabytes), without building the repr of a long list, whose length it gives."""
    if isinstance(value, list) and len(value) > 8:
        head, tail = repr(value[:8])[:-1], f", ... ({len(value)} items)]"
        room = limit - len(tail)
        return (head if len(head) <= room else head[:room - 3] + "...") + tail
    text = repr(value[:limit]) if isinstance(value, str) and len(value) > limit else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Shown:
    """``value`` in place of a metadata value that is no integer: checks that quote ``repr`` quote :func:`shown`."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return shown(self.value)


def gguf_module():
    """The ``gguf`` package (a core dependency; imported only when a GGUF file is read)."""
    import gguf

    return gguf


def is_gguf_file(path):
    """Whether ``path`` is a regular file (symlinks followed) whose first 4 bytes are ``b"GGUF"``.

    The name does not matter: Ollama's blobs are named by digest only. Never raises (a missing,
    unreadable or non-path argument is ``False``) and reads at most 4 bytes.

    Parameters
    ----------
    path : str, bytes or os.PathLike
    """
    try:
        return mode_and_magic(path)[1] == GGUF_MAGIC
    except (OSError, TypeError, ValueError):  # ValueError: a NUL in the path
        return False


def mode_and_magic(path, count=len(GGUF_MAGIC)):
    """``(st_mode, first bytes)`` of ``path``: at most ``count`` bytes, None when it is not a regular file.

    Only a regular file is opened: opening a FIFO would block and a device may act on being opened.
    The mode is checked again on the open descriptor in case the file was swapped in between.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"not a path: {type(path).__name__}")  # an int would be taken as a descriptor
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        return mode, None
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        return mode, os.read(fd, count) if stat.S_ISREG(mode) else None
    finally:
        os.close(fd)


def _check_start(head):
    """Refuse the first 8 bytes ``head`` unless they are the magic and a version gguf reads.

    gguf's own refusals say "Sorry, file appears to be version 4 ...": this names the field. A
    version whose low 16 bits are 0 is read byte-swapped, as gguf reads a big-endian file.
    """
    if len(head) >= len(GGUF_MAGIC) and head[:4] != GGUF_MAGIC:
        raise _Refused("", "a GGUF file (its first 4 bytes b'GGUF')", shown(bytes(head[:4])))
    if len(head) < 8:
        return  # the reader's bounded reads say where the file ends
    version = int.from_bytes(head[4:8], sys.byteorder)
    if version & 0xFFFF == 0:
        version = int.from_bytes(head[4:8], "big" if sys.byteorder == "little" else "little")
    if version not in _VERSIONS:
        raise _Refused("GGUF.version", " or ".join(map(str, _VERSIONS)) + " (the versions gguf and llama.cpp "
                       "read)", version)


class _BoundedReads:
    """What :class:`BoundedGGUFReader` adds to ``gguf.GGUFReader``: reads that never come back short (see the
    module docstring). A mixin before ``gguf.GGUFReader`` in the reader's bases (``super()`` is gguf's
    reader), so that ``gguf`` is imported only when a GGUF file is read.

    Beyond bounded reads, it refuses what llama.cpp refuses and gguf would misread or let through:
    nested arrays, more than 4 dimensions, element counts of 2^63 or more, unknown type codes, rows
    that are no whole number of blocks, duplicate keys, and tensor data that does not follow the
    directory (each tensor at the aligned end of the one before, within the file).

    Parameters
    ----------
    path : str or Path
        The GGUF file (memory-mapped read-only).
    header_bytes : int, optional
        Bytes of the file at hand while the header is parsed (default: all of it).
    """

    def __init__(self, path, header_bytes=None):
        self._header_bytes = header_bytes
        self._in_header = True
        if header_bytes is None or header_bytes >= 8:
            mode, head = mode_and_magic(path, 8)
            if head is None:
                raise _Refused("", "a GGUF file (a regular file)", file_kind(mode))
            _check_start(head)
        super().__init__(path, "r")

    def _limit(self):
        size = len(self.data)
        return min(size, self._header_bytes) if self._in_header and self._header_bytes is not None else size

    def _get(self, offset, dtype, count=1, override_order=None):
        end = int(offset) + np.dtype(dtype).itemsize * int(count)
        if end > self._limit():
            if end <= len(self.data) and self._in_header:
                raise HeaderPastFetched(end)
            raise _PastEnd(int(offset), end, len(self.data))
        return super()._get(offset, dtype, count, override_order)

    def _check_count(self, offset, count, least_bytes, field, what):
        """Refuse ``count`` items of at least ``least_bytes`` each unless the bytes left can hold them:
        checked before gguf's loop over them starts (a count of 2^62 would loop for ever)."""
        if int(count) * least_bytes > self._limit() - int(offset):
            if self._in_header and self._header_bytes is not None and \
                    int(offset) + int(count) * least_bytes <= len(self.data):
                raise HeaderPastFetched(int(offset) + int(count) * least_bytes)
            left = max(len(self.data) - int(offset), 0)
            raise _Refused(field, f"at most {left // least_bytes} {what} (all that the {left} bytes to the "
                           f"end of the file at byte {len(self.data)} could hold)", int(count))

    @contextlib.contextmanager
    def _entry(self, what, offset):
        """Parse one metadata entry or tensor directory entry (starting at ``offset``): a refusal or
        a gguf error inside it names it by its key or tensor name (else by ``what``)."""
        try:
            yield
        except _Refused as exc:
            if exc.field is None:
                exc.field = self._entry_name(what, offset)
            raise
        except UnicodeDecodeError:  # gguf decodes the keys and tensor names only
            raise _Refused(what, "a name in UTF-8", f"bytes that are not: {shown(self._raw_name(offset))}") \
                from None
        except (ValueError, KeyError, IndexError, OverflowError) as exc:
            raise _Refused(self._entry_name(what, offset), f"a valid {what.split(' ')[0]} entry",
                           first_line(exc, 160)) from None

    def _raw_name(self, offset):
        """The bytes of the key or tensor name at ``offset``; None if unreadable or longer than a name
        can sensibly be (after a misread length they are other bytes of the file)."""
        try:
            length = int(self._get(offset, np.uint64)[0])
            return bytes(self._get(offset + 8, np.uint8, length)) if length <= 200 else None
        except (_Refused, HeaderPastFetched):
            return None

    def _entry_name(self, what, offset):
        """The key or tensor name at ``offset`` as an error line names its entry; ``what`` if it is unreadable."""
        raw = self._raw_name(offset)
        try:
            return raw.decode("utf-8") if raw else what
        except UnicodeDecodeError:
            return what

    def _push_field(self, field, skip_sum=False):
        if field.name in self.fields:  # gguf raises KeyError; llama.cpp refuses a repeated key too
            raise _Refused(field.name, "each metadata key once", f"it again at byte {field.offset}")
        return super()._push_field(field, skip_sum)

    def _build_fields(self, offs, count):
        self._check_count(offs, count, _MIN_KV_BYTES, "GGUF.kv_count", "metadata entries")
        for index in range(int(count)):  # gguf's own loop, one entry at a time: errors name the entry
            with self._entry(f"metadata entry {index}", offs):
                offs = super()._build_fields(offs, 1)
        self._check_alignment()
        return offs

    def _check_alignment(self):
        """``general.alignment``: a UINT32 power of two (gguf refuses others too, without naming the key)."""
        field = self.fields.get("general.alignment")
        if field is None:
            return
        value = int(field.parts[-1][0]) if field.types == [gguf_module().GGUFValueType.UINT32] else 0
        if value == 0 or value & (value - 1):
            raise _Refused("general.alignment", "a power of two of type UINT32",
                           shown(field_value(self, "general.alignment")))

    def _get_field_parts(self, orig_offs, raw_type):
        _check_value_type(raw_type, "value")
        if raw_type != _ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        item_type = int(self._get(orig_offs, np.uint32)[0])
        length = int(self._get(orig_offs + 4, np.uint64)[0])
        _check_value_type(item_type, "array's items")
        if item_type == _ARRAY:  # gguf recurses into them (a deep nest is a RecursionError)
            raise _Refused(None, "an array of numbers or strings (llama.cpp reads no nested arrays)",
                           "an array of arrays")
        self._check_count(orig_offs + 12, length, _SCALAR_SIZES.get(item_type, 8), None, "array items")
        if item_type == _STRING and length > _ELEMENTWISE_LIMIT:
            return self._skipped_strings(orig_offs, length)
        if item_type in _SCALAR_SIZES and length > _ELEMENTWISE_LIMIT:
            return self._scalar_array(orig_offs, item_type, length)
        return super()._get_field_parts(orig_offs, raw_type)

    def _scalar_array(self, orig_offs, item_type, length):
        """A long array of numbers as one part: gguf reads it element by element (seconds for a vocabulary)."""
        value_type = gguf_module().GGUFValueType(item_type)
        values = self._get(orig_offs + 12, self.gguf_scalar_to_np[value_type], length)
        parts = [self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64), values]
        return 12 + int(values.nbytes), parts, [2], [gguf_module().GGUFValueType.ARRAY, value_type]

    def _skipped_strings(self, orig_offs, length):
        """A long array of strings (the tokenizer's, never read by measure) walked over, not decoded:
        its field keeps no values. Each string is a uint64 length and its bytes."""
        fmt = ">Q" if self.byte_order == "S" else "<Q"
        offs, limit = orig_offs + 12, self._limit()
        for _ in range(length):
            if offs + 8 > limit:
                self._get(offs, np.uint64)  # raises the right error
            offs += 8 + struct.unpack_from(fmt, self.data, offs)[0]
        if offs > limit:
            self._get(offs - 1, np.uint8)
        parts = [self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64)]
        return offs - orig_offs, parts, [], [gguf_module().GGUFValueType.ARRAY, gguf_module().GGUFValueType.STRING]

    def _build_tensor_info(self, offs, count):
        self._check_count(offs, count, _MIN_TENSOR_INFO_BYTES, "GGUF.tensor_count", "tensors")
        fields = []
        for index in range(int(count)):  # gguf's own parsing, one entry at a time: errors name the tensor
            with self._entry(f"tensor {index} of the directory", offs):
                self._check_dimension_count(offs)
                offs, parsed = super()._build_tensor_info(offs, 1)
                _check_tensor_info(parsed[0])
            fields.append(parsed[0])
        return offs, fields

    def _check_dimension_count(self, offs):
        """Refuse more than 4 dimensions before gguf reads them (2^31 of them would be 16 GiB)."""
        name_length = int(self._get(offs, np.uint64)[0])
        n_dims = int(self._get(offs + 8 + name_length, np.uint32)[0])
        if n_dims > _MAX_DIMS:
            raise _Refused(None, f"at most {_MAX_DIMS} dimensions (llama.cpp's GGML_MAX_DIMS)", n_dims)

    def _build_tensors(self, start_offs, fields):
        self._in_header = False  # the tensors' data lies past the header: checked against the whole file
        _check_data_layout(fields, start_offs, int(self.alignment), len(self.data))
        return super()._build_tensors(start_offs, fields)


def _reader_class():
    """:class:`BoundedGGUFReader`, defined on first use so that ``gguf`` is imported only then."""
    global BoundedGGUFReader
    if "BoundedGGUFReader" not in globals():
        class BoundedGGUFReader(_BoundedReads, gguf_module().GGUFReader):
            """``gguf.GGUFReader`` with the bounded reads and the checks of :class:`_BoundedReads`."""

    return BoundedGGUFReader


def _check_value_type(code, what):
    """Refuse a GGUFValueType code gguf does not know (it would raise a bare ValueError)."""
    if int(code) not in _SCALAR_SIZES and int(code) not in (_STRING, _ARRAY):
        raise _Refused(None, f"a GGUF value type code 0..12 for its {what}", int(code))


def _tensor_sizes(field):
    """``(name, GGMLQuantizationType, bytes of data, data offset)`` of a directory entry that
    :func:`_check_tensor_info` accepted."""
    _name_len, name, _n_dims, dims, raw_type, offset = field.parts
    gguf = gguf_module()
    ggml_type = gguf.GGMLQuantizationType(int(raw_type[0]))
    block_size, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
    n_bytes = math.prod(int(x) for x in dims) * type_size // block_size
    return bytes(name).decode("utf-8", "backslashreplace"), ggml_type, n_bytes, int(offset[0])


def _check_tensor_info(field):
    """Refuse a directory entry llama.cpp refuses: an unknown type code, 2^63 or more elements (gguf
    multiplies the dimensions in uint64, which wraps), a row that is no whole number of blocks."""
    gguf, code = gguf_module(), int(field.parts[4][0])
    try:
        ggml_type = gguf.GGMLQuantizationType(code)
        block_size, _ = gguf.GGML_QUANT_SIZES[ggml_type]
    except (ValueError, KeyError):
        removed = f" ({_REMOVED_TYPES[code]}, removed from ggml)" if code in _REMOVED_TYPES else ""
        raise _Refused(None, "a GGML tensor type gguf knows (F32, F16, BF16, Q4_0, Q8_0, Q4_K, ...)",
                       f"type code {code}{removed}") from None
    dims = [int(x) for x in field.parts[3]]
    if math.prod(dims) > _MAX_ELEMENTS:
        raise _Refused(None, "fewer than 2^63 elements (llama.cpp's limit)", f"dimensions {shown(dims)}")
    row = dims[0] if dims else 1  # GGUF lists the dimensions innermost first
    if row % block_size:
        raise _Refused(None, f"rows of whole {ggml_type.name} blocks ({block_size} elements each)",
                       f"rows of {row} elements")


def _check_data_layout(fields, start, alignment, file_size):
    """Refuse tensor data that is not laid out as llama.cpp requires: each tensor's offset (from ``start``,
    the data section) is where the one before ends, rounded up to ``alignment``, and its data ends
    within the file. So no two tensors share bytes (gguf would read overlapping views) and none
    starts misaligned; names are unique (gguf's own refusal does not name the tensor)."""
    names, expected = set(), 0
    for field in fields:
        name, ggml_type, n_bytes, offset = _tensor_sizes(field)
        if name in names:
            raise _Refused(name, "each tensor name once in the directory", "it again")
        names.add(name)
        if offset != expected:
            raise _Refused(name, f"its data at offset {expected} of the data section (where the tensor before "
                           f"it ends, aligned to {alignment}, as llama.cpp requires)", f"offset {offset}")
        if start + offset + n_bytes > file_size:
            raise _Refused(name, f"its {n_bytes} bytes of {ggml_type.name} data at bytes {start + offset}:"
                           f"{start + offset + n_bytes} within the file", f"it ends at byte {file_size} "
                           "(truncated, or a dimension or offset too large)")
        expected = offset + -(-n_bytes // alignment) * alignment


def open_gguf(path, header_bytes=None):
    """A :class:`BoundedGGUFReader` of ``path``; a file gguf cannot parse is one :class:`InputError` line.

    Raises :class:`HeaderPastFetched` when ``header_bytes`` is given and the header goes on past it.
    """
    reader_class = _reader_class()
    try:
        return reader_class(path, header_bytes)
    except HeaderPastFetched:
        raise
    except FileNotFoundError:
        raise InputError(path, "", "a GGUF file", "no such file") from None
    except _Refused as exc:  # the field None: a read of the fixed header, which no entry names
        field = _HEADER_FIELDS.get(getattr(exc, "offset", None), "GGUF header") if exc.field is None else exc.field
        raise InputError(path, field, exc.expected, exc.found) from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, OverflowError, MemoryError, RecursionError) as exc:
        # What the checks above do not foresee: gguf's own refusals (an invalid alignment, ...), an
        # unreadable file; ValueError covers UnicodeDecodeError.
        raise InputError(path, "", "a readable GGUF file (version 2 or 3)", f"{first_line(exc, 200)}") from None


def field_value(reader, key):
    """The value of metadata ``key`` (None if absent): a scalar as a Python number or str, an array as a
    list, a value gguf cannot decode as :class:`Unreadable` (so an error line quoting it says why)."""
    field = reader.fields.get(key)
    if field is None or not field.types:
        return None
    try:
        return field.contents()
    except (UnicodeDecodeError, ValueError, IndexError, TypeError) as exc:
        return Unreadable(first_line(exc, 100))  # a value measure never reads may be malformed


def metadata(reader):
    """``{key: value}`` of the GGUF metadata (see :func:`field_value`).

    Long arrays of strings (the tokenizer's vocabulary and merges) are left out: measure reads none.
    """
    values = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or not field.types:
            continue
        if int(field.types[0]) == _ARRAY and len(field.types) > 1 and int(field.types[-1]) == _STRING \
                and len(field.data) > _ELEMENTWISE_LIMIT or (int(field.types[0]) == _ARRAY and not field.data):
            continue
        values[key] = field_value(reader, key)
    return values
