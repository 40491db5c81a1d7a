"""Opening a GGUF file (llama.cpp, Ollama, LM Studio) with the ``gguf`` package's reader, safely.

``gguf.GGUFReader`` parses the header (metadata key/values, then the tensor directory) from a
memory map of the file and gives each tensor a numpy view of its bytes. Its reads past the end
of the file come back *short* rather than failing, so a truncated or hostile header makes it
loop (an array length of 2^60 is read element by element) or build views of the wrong size.
:class:`BoundedGGUFReader` is that reader with every read checked against the bytes at hand,
and each count checked against the bytes left before its loop starts: a bad file ends in one
:class:`~qkalign.errors.InputError` line, in time proportional to the file.

The bytes at hand are the whole file, or for a file read remotely only its header so far
(``header_bytes``): a read beyond them raises :class:`HeaderPastFetched`, with the offset
needed, so that the caller fetches more and parses again.
"""

import os
import stat
import struct

import numpy as np

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


class HeaderPastFetched(Exception):
    """A read of the header beyond the bytes fetched so far: ``needed`` is the end offset it asked for."""

    def __init__(self, needed):
        super().__init__(needed)
        self.needed = needed


class _PastEnd(ValueError):
    """A read beyond the end of the file (a truncated file, or an offset or count past its end)."""


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


def mode_and_magic(path):
    """``(st_mode, first bytes)`` of ``path``: at most 4 bytes, None when it is not a regular file.

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
        return mode, os.read(fd, len(GGUF_MAGIC)) if stat.S_ISREG(mode) else None
    finally:
        os.close(fd)


def _reader_class():
    """:class:`BoundedGGUFReader`, defined on first use so that ``gguf`` is imported only then."""
    global BoundedGGUFReader
    if "BoundedGGUFReader" in globals():
        return BoundedGGUFReader
    gguf = gguf_module()

    class BoundedGGUFReader(gguf.GGUFReader):
        """``gguf.GGUFReader`` whose reads never come back short (see the module docstring).

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
            super().__init__(path, "r")

        def _limit(self):
            size = len(self.data)
            return min(size, self._header_bytes) if self._in_header and self._header_bytes is not None else size

        def _get(self, offset, dtype, count=1, override_order=None):
            end = int(offset) + np.dtype(dtype).itemsize * int(count)
            if end > self._limit():
                if end <= len(self.data) and self._in_header:
                    raise HeaderPastFetched(end)
                raise _PastEnd(f"a read of bytes {int(offset)}:{end} past the end of the file ({len(self.data)} "
                               "bytes): truncated, or a count or offset too large")
            return super()._get(offset, dtype, count, override_order)

        def _check_count(self, offset, count, least_bytes, what):
            if int(count) * least_bytes > self._limit() - int(offset):
                if self._in_header and self._header_bytes is not None and \
                        int(offset) + int(count) * least_bytes <= len(self.data):
                    raise HeaderPastFetched(int(offset) + int(count) * least_bytes)
                raise _PastEnd(f"{what} {int(count)}, more than the {len(self.data) - int(offset)} bytes left "
                               "could hold")

        def _build_fields(self, offs, count):
            self._check_count(offs, count, _MIN_KV_BYTES, "a metadata count of")
            return super()._build_fields(offs, count)

        def _build_tensor_info(self, offs, count):
            self._check_count(offs, count, _MIN_TENSOR_INFO_BYTES, "a tensor count of")
            return super()._build_tensor_info(offs, count)

        def _get_field_parts(self, orig_offs, raw_type):
            if raw_type != _ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            item_type = int(self._get(orig_offs, np.uint32)[0])
            length = int(self._get(orig_offs + 4, np.uint64)[0])
            least = _SCALAR_SIZES.get(item_type, 8 if item_type == _STRING else 12)
            self._check_count(orig_offs + 12, length, least, "an array length of")
            if item_type == _STRING and length > _ELEMENTWISE_LIMIT:
                return self._skipped_strings(orig_offs, length)
            if item_type in _SCALAR_SIZES and length > _ELEMENTWISE_LIMIT:
                return self._scalar_array(orig_offs, item_type, length)
            return super()._get_field_parts(orig_offs, raw_type)

        def _scalar_array(self, orig_offs, item_type, length):
            """A long array of numbers as one part: gguf reads it element by element (seconds for a vocabulary)."""
            value_type = gguf.GGUFValueType(item_type)
            values = self._get(orig_offs + 12, self.gguf_scalar_to_np[value_type], length)
            parts = [self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64), values]
            return 12 + int(values.nbytes), parts, [2], [gguf.GGUFValueType.ARRAY, value_type]

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
            return offs - orig_offs, parts, [], [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING]

        def _build_tensors(self, start_offs, fields):
            self._in_header = False  # the tensors' data lies past the header: checked against the whole file
            return super()._build_tensors(start_offs, fields)

    return BoundedGGUFReader


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
    except (OSError, ValueError, KeyError, IndexError, TypeError, OverflowError, MemoryError) as exc:
        # ValueError covers gguf's own refusals (bad magic, version, type code, duplicate tensor) and
        # UnicodeDecodeError; KeyError a duplicate metadata key; IndexError a count gguf indexes past.
        raise InputError(path, "", "a readable GGUF file (version 2 or 3)", f"{first_line(exc, 200)}") from None


def metadata(reader):
    """``{key: value}`` of the GGUF metadata: scalars as Python numbers or str, arrays as lists.

    Long arrays of strings (the tokenizer's vocabulary and merges) are left out: measure reads none.
    """
    values = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or not field.types:
            continue
        if int(field.types[0]) == _ARRAY and len(field.types) > 1 and int(field.types[-1]) == _STRING \
                and len(field.data) > _ELEMENTWISE_LIMIT or (int(field.types[0]) == _ARRAY and not field.data):
            continue
        try:
            values[key] = field.contents()
        except (UnicodeDecodeError, ValueError, IndexError):
            values[key] = None  # a value measure never reads may be malformed; one that it reads is checked
    return values
