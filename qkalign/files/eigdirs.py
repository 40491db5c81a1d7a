"""Eigen-direction files: ``PREFIX-eigdirs.safetensors`` (native) and the seed's ``PREFIX-eigdirs.pt``.

Both hold two tensors: ``eig_dirs`` (L, H, topk, n), the top-|lambda| eigenvectors of the
symmetric parts as rows, and ``sym_eigs`` (L, H, 2 d), their nonzero eigenvalues sorted by
``|lambda|`` descending.

- safetensors is read memory-mapped, without torch: ``eig_dirs`` stored as float32 or
  float64 is used in place (pages are read as the kernels reach them); float16 and bfloat16
  are widened to float32 one layer at a time.
- ``.pt``: a ``torch.save`` of a dict of tensors in torch's zip format is read without torch
  (importing torch costs a fresh process ~2 s): its pickle is read by an unpickler that knows
  only the names such a file uses, and the tensors are mapped from the zip, which stores them
  uncompressed. Anything else (another layout, another dtype, a pickled object, a damaged
  file) goes to ``torch.load(weights_only=True)``, which reads it or refuses it; pickled code
  is never run either way. Writing a ``.pt``, and that fallback, need torch (the ``torch``
  extra): without it they end in one line that says so.

``eig_dirs`` keeps its storage precision (float32, or float64 when stored so): every
computation reads it and accumulates in float64, and a product of two float32 numbers is
exact in float64, so no number depends on the file format.
"""

import collections
import json
import math
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..checks import regular_file
from ..errors import InputError, first_line
from ..extras import import_torch
from ..memory import check_fits

TENSORS = ("eig_dirs", "sym_eigs")
#: The key under which a file holds the id of the run that wrote it (and its grams JSON).
RUN_ID = "run_id"
#: File formats by suffix, the native one first.
SUFFIXES = {"safetensors": "-eigdirs.safetensors", "pt": "-eigdirs.pt"}
FORMATS = tuple(SUFFIXES)
#: Storage types of eig_dirs a file may hold.
EIG_DIRS_DTYPES = ("float32", "float64", "float16", "bfloat16")
_SAFETENSORS_DTYPES = {"F16": np.float16, "BF16": np.uint16, "F32": np.float32, "F64": np.float64}
_SAFETENSORS_NAMES = {"float16": "F16", "float32": "F32", "float64": "F64"}
_TORCH_DTYPES = ("torch.float16", "torch.bfloat16", "torch.float32", "torch.float64")


def file_format(path):
    """``"pt"`` for a ``.pt`` file, else ``"safetensors"``: the suffix, for a file to write."""
    return "pt" if Path(path).suffix == ".pt" else "safetensors"


def stored_format(path):
    """The format of an existing file by its first bytes: torch's zip (``PK``) or legacy pickle
    (``0x80``) is ``"pt"`` whatever its name (``.pth``, ``.bin``); else by suffix."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return file_format(path)  # the reader names the problem
    return "pt" if magic.startswith((b"PK\x03\x04", b"\x80")) else file_format(path)


def read_eigdirs(path):
    """``{"eig_dirs": ..., "sym_eigs": ..., "run_id": ...}`` from an eigen-direction file of either format.

    eig_dirs comes back float32 or float64 as stored (float16/bfloat16 widened to float32),
    read-only; sym_eigs as float64; run_id is the writer's run id, or None.
    """
    regular_file(path, "eig-dirs file")
    return _read_pt(path) if stored_format(path) == "pt" else _read_safetensors(path)


def write_eigdirs(path, eig_dirs, sym_eigs, eig_dirs_dtype="float32", run_id=None, fmt=None):
    """Write ``eig_dirs`` (stored as ``eig_dirs_dtype``) and ``sym_eigs`` (float64) to ``path``.

    ``fmt`` (``"pt"`` or ``"safetensors"``) defaults to what the suffix names. ``run_id``, when
    given, is stored with the tensors (safetensors metadata, or a string entry of the .pt's
    dict, which the seed ignores) so that the grams JSON of the same run can be matched to it.
    """
    if eig_dirs_dtype not in EIG_DIRS_DTYPES:
        raise InputError("eig_dirs_dtype", "", " or ".join(EIG_DIRS_DTYPES), repr(eig_dirs_dtype))
    fmt = fmt or file_format(path)
    metadata = None if run_id is None else {RUN_ID: str(run_id)}
    try:
        _write(path, fmt, eig_dirs, sym_eigs, eig_dirs_dtype, metadata)
    except RuntimeError as exc:  # how torch reports a failed write
        raise OSError(f"the write failed ({first_line(exc, 160)})") from None


def _write(path, fmt, eig_dirs, sym_eigs, eig_dirs_dtype, metadata):
    if fmt == "pt":
        torch = writer_module(path, fmt)
        tensors = {"eig_dirs": torch.from_numpy(np.array(eig_dirs)).to(getattr(torch, eig_dirs_dtype)),
                   "sym_eigs": torch.from_numpy(np.array(sym_eigs, dtype=np.float64))}
        torch.save({**tensors, **(metadata or {})}, path)
        return
    if eig_dirs_dtype == "bfloat16":  # numpy has none: its bits, under safetensors' name for them
        eig_dirs = ("BF16", bfloat16_bits(eig_dirs))
    else:
        eig_dirs = (_SAFETENSORS_NAMES[eig_dirs_dtype], np.asarray(eig_dirs, dtype=eig_dirs_dtype))
    write_safetensors(path, {"eig_dirs": eig_dirs, "sym_eigs": ("F64", np.asarray(sym_eigs, dtype=np.float64))},
                      metadata)


def write_safetensors(path, tensors, metadata=None):
    """Write ``{name: (safetensors dtype, array)}`` as a safetensors file.

    The format (an 8-byte little-endian header length, the JSON header padded with spaces to a
    multiple of 8 bytes, then the C-ordered little-endian data) written here rather than by the
    safetensors package, which has no bfloat16 without torch and whose low-level writer changed
    its arguments between versions.
    """
    header, arrays, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    # Larger items first, then by name, as the safetensors package orders them: every tensor's data
    # starts aligned to its item size.
    for name, (dtype, values) in sorted(tensors.items(), key=lambda kv: (-kv[1][1].dtype.itemsize, kv[0])):
        array = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array)
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for array in arrays:
            f.write(memoryview(array.reshape(-1)).cast("B"))


def writer_module(path, fmt):
    """torch for a ``.pt`` (a one-line :class:`~qkalign.errors.MissingDependency` without it), else None.

    Called before the work whose result goes to ``path``, and by the writer itself.
    """
    return import_torch(path, "to write a .pt file") if fmt == "pt" else None


def bfloat16_bits(values):
    """``values`` rounded to bfloat16 as torch rounds (to float32, then to nearest even), as uint16 bits.

    A bfloat16 is the top half of a float32: the low 16 bits are rounded off, ties to even (a value
    beyond the largest bfloat16 becomes inf; a NaN the quiet NaN ``0x7FC0``).
    """
    single = np.ascontiguousarray(values, dtype=np.float32)
    bits = single.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    rounded[np.isnan(single)] = 0x7FC0
    return rounded


def _safetensors_header(path):
    """The JSON header of a safetensors file, the offset where its data begins, and the file size.

    The format: an 8-byte little-endian header length N, N bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}``, then the data. Read here
    rather than through the safetensors package, whose Python API copies every tensor it
    returns: the offsets let numpy map ``eig_dirs`` in place.
    """
    expected = "a safetensors file (an 8-byte header length, a JSON header, the tensor data)"
    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
            if length is None or length > size - 8:
                raise InputError(path, "", expected, f"a truncated or corrupt file of {size} bytes")
            header = json.loads(f.read(length))
    except InputError:  # the truncation found above (an InputError is a ValueError too)
        raise
    except FileNotFoundError:
        raise InputError(path, "", "an existing eig-dirs file", "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "", "an eig-dirs file", "a directory") from None
    except OSError as exc:
        raise InputError(path, "", "a readable eig-dirs file", exc.strerror or first_line(exc, 160)) from None
    except (ValueError, RecursionError) as exc:  # malformed JSON, undecodable bytes, a 5,000-digit integer
        raise InputError(path, "", expected, f"a corrupt header ({first_line(exc, 160)})") from None
    if not isinstance(header, dict):
        raise InputError(path, "", expected, "a header that is not a JSON object")
    return header, 8 + length, size


def _read_safetensors(path):
    header, data_start, size = _safetensors_header(path)
    arrays = {}
    for key in TENSORS:
        entry = header.get(key)
        if entry is None:
            raise InputError(path, key, "this tensor to be present", "it missing")
        arrays[key] = _mapped_tensor(path, key, entry, data_start, size)
    metadata = header.get("__metadata__")
    return _as_read(arrays["eig_dirs"], arrays["sym_eigs"], metadata.get(RUN_ID) if isinstance(metadata, dict) else None)


def _as_read(eig_dirs, sym_eigs, run_id):
    """What a reader returns from the stored arrays (bfloat16 as its uint16 bits): eig_dirs in float32
    or float64 (float16 and bfloat16 widened to float32), sym_eigs in float64, the run id (a str or None)."""
    if eig_dirs.dtype in (np.float16, np.uint16):
        eig_dirs = _widened_to_float32(eig_dirs)
    if sym_eigs.dtype == np.uint16:
        sym_eigs = _widened_to_float32(sym_eigs)
    return {"eig_dirs": eig_dirs, "sym_eigs": np.array(sym_eigs, dtype=np.float64),
            RUN_ID: run_id if isinstance(run_id, str) else None}


def _mapped_tensor(path, key, entry, data_start, size):
    """The tensor ``key`` of a safetensors header entry as a read-only memory map, every field checked."""
    try:
        dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        shape_ok = all(isinstance(d, int) and d >= 0 for d in shape)
        offsets_ok = isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end
    except (TypeError, KeyError, ValueError):
        raise InputError(path, key, "a header entry with dtype, shape and data_offsets", repr(entry)[:160]) from None
    if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPES:
        raise InputError(path, key, "a F16, BF16, F32 or F64 tensor", repr(dtype)[:80])
    itemsize = np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize
    # Python integers: a hostile shape cannot overflow the byte count.
    if not (shape_ok and offsets_ok) or end - begin != itemsize * math.prod(shape):
        raise InputError(path, key, f"data_offsets spanning shape x {itemsize} bytes",
                         f"shape {list(shape)}, data_offsets {entry['data_offsets']}")
    if data_start + end > size:
        raise InputError(path, key, f"data up to byte {data_start + end}", f"a truncated file of {size} bytes")
    if 0 in shape:
        return np.empty(shape, dtype=_SAFETENSORS_DTYPES[dtype])
    try:
        return np.memmap(path, dtype=_SAFETENSORS_DTYPES[dtype], mode="r", offset=data_start + begin, shape=shape)
    except (OSError, ValueError) as exc:
        raise InputError(path, key, "tensor data that can be mapped", first_line(exc, 160)) from None


def _widened_to_float32(stored):
    """float16, or bfloat16 as its uint16 bit patterns, to float32: exact, one layer at a time."""
    out = np.empty(stored.shape, dtype=np.float32)
    for layer in range(stored.shape[0] if stored.ndim else 0):
        if stored.dtype == np.uint16:  # bfloat16 is the top half of a float32
            out[layer] = (stored[layer].astype(np.uint32) << 16).view(np.float32)
        else:
            out[layer] = stored[layer]
    out.setflags(write=False)
    return out


def _read_pt(path):
    try:
        return _read_plain_pt(path)
    except Exception:  # noqa: BLE001 - whatever stops the fast path, torch reads the file or refuses it
        return _read_pt_with_torch(path)


class _NotPlain(Exception):
    """The .pt is not a plain dict of float tensors in torch's zip format: torch must read it."""


#: torch's typed storages of the accepted dtypes, as pickled by torch.save (bfloat16 as its bits).
_PT_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                "BFloat16Storage": np.uint16}


class _MappedStorage:
    def __init__(self, array):
        self.array = array


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2 for a C-contiguous tensor: a view of its mapped storage."""
    size, stride = tuple(size), tuple(stride)
    contiguous = tuple(int(np.prod(size[i + 1:], dtype=np.int64)) for i in range(len(size)))
    count = int(np.prod(size, dtype=np.int64))
    if not isinstance(storage, _MappedStorage) or stride != contiguous or offset + count > storage.array.size:
        raise _NotPlain("a strided or offset tensor")
    return storage.array[offset:offset + count].reshape(size)


class _PlainTensorUnpickler(pickle.Unpickler):
    """Reads torch's pickle of a dict of tensors: only the names that pickle uses resolve (to the
    functions above); any other name, a pickled object, stops it before anything runs."""

    def __init__(self, file, archive, path):
        super().__init__(file)
        self.archive, self.path = archive, path
        self.prefix = next(name for name in archive.namelist() if name.endswith("data.pkl"))[: -len("data.pkl")]

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _PT_STORAGES:
            return name
        raise _NotPlain(f"{module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or storage_type not in _PT_STORAGES:
            raise _NotPlain(repr(pid))
        info = self.archive.getinfo(f"{self.prefix}data/{key}")
        dtype = np.dtype(_PT_STORAGES[storage_type])
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != numel * dtype.itemsize:
            raise _NotPlain("a compressed or mis-sized storage")
        with open(self.path, "rb") as f:  # the member's data follows its local header
            f.seek(info.header_offset)
            header = f.read(30)
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_length + extra_length
        if numel == 0:
            return _MappedStorage(np.empty(0, dtype=dtype))
        return _MappedStorage(np.memmap(self.path, dtype=dtype, mode="r", offset=start, shape=(numel,)))


def _read_plain_pt(path):
    """A .pt holding a dict of float tensors, mapped without torch (see the module docstring)."""
    with zipfile.ZipFile(path) as archive:
        byteorder = [n for n in archive.namelist() if n.endswith("/byteorder")]
        if byteorder and archive.read(byteorder[0]) != b"little":
            raise _NotPlain("big-endian storages")
        with archive.open(next(n for n in archive.namelist() if n.endswith("data.pkl"))) as pkl:
            obj = _PlainTensorUnpickler(pkl, archive, path).load()
    if not isinstance(obj, dict) or any(not isinstance(obj.get(key), np.ndarray) for key in TENSORS):
        raise _NotPlain("not a dict of the two tensors")
    return _as_read(obj["eig_dirs"], obj["sym_eigs"], obj.get(RUN_ID))


def _check_declared_sizes(path):
    """Refuse a .pt whose stored data, as its zip directory declares it, would not fit in memory
    (a deflate bomb declares its true size), or that is not a zip (legacy torch files allocate
    what their pickle declares before reading it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as exc:
        with open(path, "rb") as f:
            legacy = f.read(1) == b"\x80"
        raise InputError(path, "", "a readable .pt in torch's zip format (torch.save since torch 1.6)",
                         "torch's legacy format (re-save it with a current torch)" if legacy else
                         f"an unreadable file ({first_line(exc, 160)})") from None
    except OSError as exc:
        raise InputError(path, "", "a readable eig-dirs .pt file", exc.strerror or first_line(exc, 160)) from None
    check_fits(declared, path, "", "its tensors, as the zip directory declares them")


def _check_views(path, obj):
    """Refuse tensors that claim more elements than their storage holds (zero or overlapping
    strides), and tensors whose float64 copy would not fit in memory: before anything copies them."""
    for key in TENSORS:
        value = obj.get(key)
        if not hasattr(value, "untyped_storage"):
            continue
        stored = value.untyped_storage().nbytes() // max(value.element_size(), 1)
        if value.numel() > stored:
            raise InputError(path, key, "a tensor backed by its own data",
                             f"a view of {value.numel():,} elements on a storage of {stored:,} "
                             "(zero or overlapping strides)")
        check_fits(8 * value.numel(), path, key, "its float64 copy")


def _read_pt_with_torch(path):
    _check_declared_sizes(path)
    # imported here: torch takes a fresh process ~2 s to import and only this path needs it
    torch = import_torch(path, "to read this .pt (not a plain dict of float tensors: only torch.load reads it)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "", "an existing eig-dirs .pt file", "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "", "an eig-dirs .pt file", "a directory") from None
    except pickle.UnpicklingError as exc:
        raise InputError(path, "", "a .pt holding only tensors (loaded with weights_only=True; "
                         "pickled code is never run)", f"a pickled object that was refused ({first_line(exc, 160)})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise InputError(path, "", "a readable torch .pt file", f"an unreadable file ({first_line(exc, 160)})") from None
    if not isinstance(obj, dict):
        raise InputError(path, "", "a dict with the tensors eig_dirs and sym_eigs", type(obj).__name__)
    _check_views(path, obj)
    arrays = {}
    for key in TENSORS:
        if key not in obj:
            raise InputError(path, key, "this tensor to be present", "it missing")
        value = obj[key]
        if not isinstance(value, torch.Tensor) or str(value.dtype) not in _TORCH_DTYPES:
            found = str(value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(path, key, "a float16, bfloat16, float32 or float64 tensor", found)
        if key == "sym_eigs":
            arrays[key] = value.detach().to(torch.float64).numpy()
        elif value.dtype in (torch.float16, torch.bfloat16):
            arrays[key] = value.detach().to(torch.float32).numpy()  # exact
        else:
            arrays[key] = value.detach().numpy()
        arrays[key].setflags(write=False)  # private to this reader: QKData need not copy it
    arrays[RUN_ID] = obj.get(RUN_ID) if isinstance(obj.get(RUN_ID), str) else None
    return arrays
