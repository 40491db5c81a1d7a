"""GGUF files that are not what they claim: truncated or corrupt, hostile counts and sizes, metadata
that disagrees with the tensors, and the unusual but valid (big-endian files, split sets).

Each bad file is refused by ``qkalign measure FILE -o PREFIX`` with exactly one ``qkalign: error:``
line naming the file and what was expected, exit 2 and nothing written at PREFIX, and by
:func:`qkalign.measure` with an :class:`~qkalign.errors.InputError`, in well under a second: a count
of 2^62 must not loop, an array length of 2^60 must not allocate. A RuntimeWarning (a line of its own
on the command's stderr) fails the test. The files are built with ``gguf.GGUFWriter`` (the llama.cpp
project's own writer), then cut or patched at offsets found by ``gguf.GGUFReader``.
"""

import json
import shutil
import struct
import time
from types import SimpleNamespace

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qkalign
from qkalign.errors import InputError
from qkalign.testing.processes import run_concurrently
from qkalign.testing.refusals import one_error_line

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

V = gguf.GGUFValueType
T = gguf.GGMLQuantizationType
#: A refusal of a hostile count or size takes milliseconds; this bound leaves room for a busy machine.
FAST = 2.0
#: The metadata of the valid model: llama, 2 layers, H = 4, H_kv = 2, n = 64 (so d = 16).
BASE_META = {"llama.block_count": (2, V.UINT32), "llama.attention.head_count": (4, V.UINT32),
             "llama.attention.head_count_kv": (2, V.UINT32), "llama.embedding_length": (64, V.UINT32),
             "general.name": ("tiny", V.STRING),
             # arrays as a tokenizer stores them (strings, uint32, uint8), for the hostile lengths
             "tokenizer.ggml.tokens": (["a", "bc", "d"], V.ARRAY),
             "tokenizer.ggml.token_type": ([1, 2, 3], V.ARRAY, V.UINT32),
             "tokenizer.ggml.flags": ([1, 0, 1], V.ARRAY, V.UINT8)}


def weights(dtype=np.float32):
    """``{name: array}`` of the valid model (numpy shapes: attn_q (64, 64), attn_k (32, 64), attn_norm (64,))."""
    rng = np.random.default_rng(0)
    out = {}
    for layer in range(2):
        out[f"blk.{layer}.attn_q.weight"] = rng.standard_normal((64, 64)).astype(dtype)
        out[f"blk.{layer}.attn_k.weight"] = rng.standard_normal((32, 64)).astype(np.float32)
        out[f"blk.{layer}.attn_norm.weight"] = rng.uniform(0.5, 2.0, 64).astype(np.float32)
    return out


def quantized(array, qtype):
    """``array`` in GGML type ``qtype``, as ``GGUFWriter.add_tensor`` takes it: (bytes, type)."""
    return gguf.quants.quantize(array, qtype), qtype


def write_gguf(path, meta=None, tensors=None, arch="llama", **writer_options):
    """A GGUF file at ``path``: :data:`BASE_META` updated by ``meta`` (a value None drops a key, including
    ``general.architecture``) and :func:`weights` by ``tensors`` (None drops one; ``(bytes, type)`` is
    stored as that GGML type). Returns ``path``, or the list of split files with ``split_max_tensors``."""
    writer = gguf.GGUFWriter(str(path), arch, **writer_options)
    for key, value in {**BASE_META, **(meta or {})}.items():
        writer.kv_data[0].pop(key, None)
        if value is not None:
            writer.add_key_value(key, *value)
    for name, array in {**weights(), **(tensors or {})}.items():
        if isinstance(array, tuple):
            writer.add_tensor(name, array[0], raw_dtype=array[1])
        elif array is not None:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(path.parent.glob(f"{path.stem}-*-of-*.gguf")) if writer_options.get("split_max_tensors") else path


def layout_of(path):
    """Where the parts of a GGUF file are: ``value[key]`` (a metadata value's offset), ``key[key]`` (its
    entry's), ``tensor[name]`` (offsets of a directory entry's ``name``, ``n_dims``, ``dims``, ``type``,
    ``offset``), ``data`` (the data section's start), ``size``."""
    reader = gguf.GGUFReader(str(path))
    fields = {key: field for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    tensors = {}
    for tensor in reader.tensors:
        start = tensor.field.offset
        dims = start + 8 + len(tensor.name.encode()) + 4
        tensors[tensor.name] = SimpleNamespace(name=start + 8, n_dims=dims - 4, dims=dims,
                                               type=dims + 8 * len(tensor.shape), offset=dims + 8 * len(tensor.shape) + 4)
    return SimpleNamespace(key={k: f.offset for k, f in fields.items()},
                           value={k: f.offset + 8 + len(k.encode()) + 4 for k, f in fields.items()},
                           tensor=tensors, data=reader.data_offset, size=len(reader.data))


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """The valid file, its layout and its measure (which also compiles measure's kernels once)."""
    path = write_gguf(tmp_path_factory.mktemp("valid") / "valid.gguf")
    return SimpleNamespace(path=path, bytes=path.read_bytes(), layout=layout_of(path),
                           data=qkalign.measure(path, progress=False))


def patch(raw, *edits):
    """``raw`` with ``struct.pack_into(fmt, offset, value)`` for each ``(offset, fmt, value)`` of ``edits``."""
    raw = bytearray(raw)
    for offset, fmt, value in edits:
        struct.pack_into(fmt, raw, offset, value)
    return bytes(raw)


def patched(valid, tmp_path, *edits):
    """``tmp_path / "bad.gguf"``: the valid file patched (see :func:`patch`)."""
    path = tmp_path / "bad.gguf"
    path.write_bytes(patch(valid.bytes, *edits))
    return path


def deeply_nested(path, depth=10_000):
    """A GGUF file of one metadata entry ``x.deep``: an array of an array of ... ``depth`` levels."""
    key = b"x.deep"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<I", V.ARRAY)
    nest = struct.pack("<IQ", V.ARRAY, 1) * depth + struct.pack("<IQ", V.UINT8, 0)
    path.write_bytes(header + nest)
    return path


def refused(cli, path, *fragments, named=None):
    """Assert that ``path`` is refused, fast, by :func:`qkalign.measure` (InputError) and by ``qkalign measure``
    (one error line naming the file, or ``named``, and each fragment, exit 2, nothing written); return the line."""
    start = time.perf_counter()
    with pytest.raises(InputError):
        qkalign.measure(path, progress=False)
    assert time.perf_counter() - start < FAST
    out = path.parent / "out"
    out.mkdir(exist_ok=True)
    line = one_error_line(cli("measure", path, "-o", out / "m", "--quiet"), named or path.name, *fragments)
    assert not any(out.iterdir()), list(out.iterdir())
    return line


def assert_same_measure(a, b):
    for field in ("gram", "fro_sq", "sym_eigs", "eig_dirs"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


# --- truncated files ------------------------------------------------------------------------------------

#: Where to cut the valid file: ``label -> offset(layout)``, one inside each part of it.
CUTS = {
    "inside the magic": lambda lay: 2,
    "inside the version": lambda lay: 6,
    "inside the tensor count": lambda lay: 12,
    "inside the metadata count": lambda lay: 20,
    "inside a key's length": lambda lay: lay.key["llama.block_count"] + 3,
    "inside a key": lambda lay: lay.key["llama.block_count"] + 12,
    "inside a value": lambda lay: lay.value["llama.block_count"] + 2,
    "inside a string value": lambda lay: lay.value["general.name"] + 10,
    "inside a string array": lambda lay: lay.value["tokenizer.ggml.tokens"] + 12 + 9,
    "inside a uint32 array": lambda lay: lay.value["tokenizer.ggml.token_type"] + 12 + 6,
    "inside the tensor directory": lambda lay: lay.tensor["blk.0.attn_k.weight"].name + 5,
    "inside a tensor's dimensions": lambda lay: lay.tensor["blk.1.attn_q.weight"].dims + 9,
    "inside a tensor's offset": lambda lay: lay.tensor["blk.1.attn_norm.weight"].offset + 4,
    "inside the padding": lambda lay: lay.data - 1,
    "at the data section": lambda lay: lay.data,
    "inside the first tensor's data": lambda lay: lay.data + 1000,
    "inside the last tensor's data": lambda lay: lay.size - 1,
}


@pytest.mark.parametrize("where", sorted(CUTS))
def test_a_truncated_file_is_one_line(cli, valid, tmp_path, where):
    cut = CUTS[where](valid.layout)
    path = tmp_path / "bad.gguf"
    path.write_bytes(valid.bytes[:cut])
    if cut < 4:  # no whole magic: a .gguf file that is not GGUF
        refused(cli, path, "expected a GGUF file (its first 4 bytes b'GGUF'), found b'")
    else:
        refused(cli, path, "expected", f"at byte {cut}")


def test_every_cut_is_an_input_error(valid, tmp_path):
    """Every cut in the header, and every 97th in the data: an InputError, never another exception."""
    path = tmp_path / "bad.gguf"
    cuts = list(range(valid.layout.data + 1)) + list(range(valid.layout.data, valid.layout.size, 97))
    start = time.perf_counter()
    for cut in cuts:
        path.write_bytes(valid.bytes[:cut])
        with pytest.raises(InputError):
            qkalign.measure(path, progress=False)
    assert time.perf_counter() - start < 0.02 * len(cuts)  # milliseconds each


def test_where_a_cut_falls_is_named(cli, valid, tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(valid.bytes[:valid.layout.value["general.name"] + 10])
    refused(cli, path, "general.name: expected bytes")
    path.write_bytes(valid.bytes[:valid.layout.data + 1000])
    refused(cli, path, "blk.0.attn_q.weight: expected its 16384 bytes of F32 data")


def test_a_header_read_in_parts_asks_for_more_bytes_not_refused(valid):
    """Read remotely, the header comes in parts (``header_bytes``): the checks that name a refused entry
    must ask for more bytes (HeaderPastFetched) where the bytes at hand end, never refuse a valid file."""
    from qkalign.weights.gguf_reader import HeaderPastFetched, open_gguf

    for start in range(0, valid.layout.data + 1, 29):
        have = start
        while True:
            try:
                reader = open_gguf(valid.path, header_bytes=have)
                break
            except HeaderPastFetched as exc:
                assert have < exc.needed <= valid.layout.size
                have = exc.needed
        assert [t.name for t in reader.tensors] == list(weights())


# --- the header's fixed fields ------------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 1, 4, 2**31 - 1])
def test_a_version_gguf_does_not_read_is_one_line(cli, valid, tmp_path, version):
    refused(cli, patched(valid, tmp_path, (4, "<I", version)), "GGUF.version: expected 2 or 3", f"found {version}")


# --- counts and lengths that would allocate or loop without end ---------------------------------------

#: ``label -> (edit(layout), fragment of the error line)``.
HOSTILE_COUNTS = {
    "tensor_count 2^62": (lambda lay: (8, "<Q", 2**62), "GGUF.tensor_count: expected at most"),
    "kv_count 2^62": (lambda lay: (16, "<Q", 2**62), "GGUF.kv_count: expected at most"),
    "a string array of 2^60": (lambda lay: (lay.value["tokenizer.ggml.tokens"] + 4, "<Q", 2**60),
                               "tokenizer.ggml.tokens: expected at most"),
    "a uint32 array of 2^60": (lambda lay: (lay.value["tokenizer.ggml.token_type"] + 4, "<Q", 2**60),
                               "tokenizer.ggml.token_type: expected at most"),
    "a uint8 array of 2^60": (lambda lay: (lay.value["tokenizer.ggml.flags"] + 4, "<Q", 2**60),
                              "tokenizer.ggml.flags: expected at most"),
    "a uint8 array of 2^64 - 1": (lambda lay: (lay.value["tokenizer.ggml.flags"] + 4, "<Q", 2**64 - 1),
                                  "tokenizer.ggml.flags: expected at most"),
    "a string of 2^62": (lambda lay: (lay.value["general.name"], "<Q", 2**62), "general.name: expected bytes"),
    "a key of 2^62": (lambda lay: (lay.key["general.name"], "<Q", 2**62), "expected bytes"),
    "a tensor name of 2^62": (lambda lay: (lay.tensor["blk.0.attn_q.weight"].name - 8, "<Q", 2**62),
                              "tensor 0 of the directory: expected bytes"),
    "n_dims 2^31": (lambda lay: (lay.tensor["blk.0.attn_q.weight"].n_dims, "<I", 2**31),
                    "blk.0.attn_q.weight: expected at most 4 dimensions"),
    "n_dims 5": (lambda lay: (lay.tensor["blk.0.attn_q.weight"].n_dims, "<I", 5),
                 "blk.0.attn_q.weight: expected at most 4 dimensions"),
    "a dimension of 2^62": (lambda lay: (lay.tensor["blk.0.attn_q.weight"].dims, "<Q", 2**62),
                            "blk.0.attn_q.weight: expected fewer than 2^63 elements"),
    "a dimension of 2^64 - 1": (lambda lay: (lay.tensor["blk.0.attn_norm.weight"].dims, "<Q", 2**64 - 1),
                                "blk.0.attn_norm.weight: expected fewer than 2^63 elements"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_COUNTS))
def test_a_hostile_count_fails_fast(cli, valid, tmp_path, case):
    edit, fragment = HOSTILE_COUNTS[case]
    refused(cli, patched(valid, tmp_path, edit(valid.layout)), fragment)


def test_dimensions_whose_product_wraps_uint64_are_refused(cli, valid, tmp_path):
    """2^32 x 2^32 elements is 0 in uint64 (gguf's np.prod), 64 x (2^58 + 1) is 64: llama.cpp refuses
    2^63 elements or more, as qkalign does (the product in Python integers)."""
    dims = valid.layout.tensor["blk.0.attn_q.weight"].dims
    refused(cli, patched(valid, tmp_path, (dims, "<Q", 2**32), (dims + 8, "<Q", 2**32)),
            "expected fewer than 2^63 elements", "[4294967296, 4294967296]")
    refused(cli, patched(valid, tmp_path, (dims, "<Q", 64), (dims + 8, "<Q", 2**58 + 1)),
            "expected fewer than 2^63 elements")


def test_a_nested_array_is_refused_not_recursed_into(cli, tmp_path):
    """llama.cpp reads no arrays of arrays; gguf recurses into them (10^4 levels: a RecursionError)."""
    refused(cli, write_gguf(tmp_path / "bad.gguf", {"x.nested": ([[1, 2], [3]], V.ARRAY)}),
            "x.nested: expected an array of numbers or strings", "found an array of arrays")
    refused(cli, deeply_nested(tmp_path / "deep.gguf"), "x.deep: expected an array of numbers or strings")


# --- type codes and value types ---------------------------------------------------------------------

@pytest.mark.parametrize("code, fragment", [(99, "found type code 99"), (4, "type code 4 (Q4_2, removed"),
                                            (5, "type code 5 (Q4_3, removed"), (2**32 - 1, "type code 4294967295")])
def test_an_unknown_tensor_type_code_is_one_line(cli, valid, tmp_path, code, fragment):
    offset = valid.layout.tensor["blk.0.attn_q.weight"].type
    refused(cli, patched(valid, tmp_path, (offset, "<I", code)), "blk.0.attn_q.weight: expected a GGML tensor type",
            fragment)


def test_rows_of_no_whole_block_are_one_line(cli, valid, tmp_path):
    """Q8_K blocks hold 256 elements: a 64-element row is none (gguf's own refusal names no tensor)."""
    offset = valid.layout.tensor["blk.0.attn_q.weight"].type
    refused(cli, patched(valid, tmp_path, (offset, "<I", T.Q8_K)), "blk.0.attn_q.weight: expected rows of whole "
            "Q8_K blocks (256 elements each), found rows of 64 elements")


def _without_dequantiser(monkeypatch, simulated):
    """A GGML type gguf cannot dequantise whose blocks divide a 64-element row (Q8_1 in gguf 0.19); when
    ``simulated`` (or a later gguf dequantises them all), Q8_0 with its dequantiser taken out of gguf's table."""
    for qtype in () if simulated else T:
        block, _ = gguf.GGML_QUANT_SIZES[qtype]
        if block > 1 and 64 % block == 0 and qtype not in gguf.quants._type_traits:
            return qtype
    monkeypatch.delitem(gguf.quants._type_traits, T.Q8_0)
    return T.Q8_0


@pytest.mark.parametrize("simulated", [False, True])
def test_a_type_gguf_cannot_dequantise_is_refused_by_name(cli, tmp_path, monkeypatch, simulated):
    qtype = _without_dequantiser(monkeypatch, simulated)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = np.zeros((64, 64 // block * size), np.uint8)
    line = refused(cli, write_gguf(tmp_path / "bad.gguf", tensors={"blk.1.attn_q.weight": (raw, qtype)}),
                   "blk.1.attn_q.weight: expected a tensor type the gguf package dequantises", qtype.name)
    assert "which it does not" in line


def test_integer_tensors_are_refused_by_name(cli, tmp_path):
    ints = np.zeros((64, 64), np.int8)
    refused(cli, write_gguf(tmp_path / "bad.gguf", tensors={"blk.0.attn_q.weight": ints}),
            "blk.0.attn_q.weight: expected a tensor type the gguf package dequantises", "found I8")


@pytest.mark.parametrize("where, fragment", [(lambda lay: lay.value["general.name"] - 4, "general.name: expected a "
                                              "GGUF value type code 0..12 for its value, found 99"),
                                             (lambda lay: lay.value["tokenizer.ggml.flags"], "tokenizer.ggml.flags: "
                                              "expected a GGUF value type code 0..12 for its array's items")])
def test_an_unknown_value_type_is_one_line(cli, valid, tmp_path, where, fragment):
    refused(cli, patched(valid, tmp_path, (where(valid.layout), "<I", 99)), fragment)


# --- tensor data: past the end, overlapping, misaligned ----------------------------------------------------

def test_a_tensor_offset_past_the_end_is_one_line(cli, valid, tmp_path):
    offset = valid.layout.tensor["blk.1.attn_k.weight"].offset
    refused(cli, patched(valid, tmp_path, (offset, "<Q", 2**40)), "blk.1.attn_k.weight: expected its data at offset",
            "found offset 1099511627776")
    refused(cli, patched(valid, tmp_path, (offset, "<Q", 2**64 - 32)), "blk.1.attn_k.weight")


def test_a_tensor_size_past_the_end_is_one_line(cli, valid, tmp_path):
    """The last attn_k claims 64 rows (it has 32): its data would run 8 KiB past the end of the file."""
    dims = valid.layout.tensor["blk.1.attn_k.weight"].dims
    refused(cli, patched(valid, tmp_path, (dims + 8, "<Q", 64)), "blk.1.attn_k.weight: expected its 16384 bytes of "
            "F32 data", f"found it ends at byte {valid.layout.size}")


@pytest.mark.parametrize("offset, what", [(0, "overlapping the tensor before"), (16384 + 4, "misaligned"),
                                          (16384 + 32, "after a gap")])
def test_tensor_data_not_where_llama_cpp_expects_is_refused(cli, valid, tmp_path, offset, what):
    """gguf reads any offsets (two tensors could share bytes); llama.cpp requires each tensor at the aligned
    end of the one before, and so does qkalign: a file it refuses is no model anyone runs."""
    at = valid.layout.tensor["blk.0.attn_k.weight"].offset
    refused(cli, patched(valid, tmp_path, (at, "<Q", offset)), "blk.0.attn_k.weight: expected its data at offset "
            "16384 of the data section", f"found offset {offset}")


def test_a_bad_alignment_is_one_line(cli, tmp_path):
    refused(cli, write_gguf(tmp_path / "bad.gguf", {"general.alignment": (24, V.UINT32)}),
            "general.alignment: expected a power of two", "found 24")
    refused(cli, write_gguf(tmp_path / "bad2.gguf", {"general.alignment": ("32", V.STRING)}),
            "general.alignment: expected a power of two", "found '32'")
    refused(cli, write_gguf(tmp_path / "bad3.gguf", {"general.alignment": (2**31, V.UINT32)}),
            "blk.0.attn_q.weight: expected its 16384 bytes")  # the data section would start at 2 GiB


# --- duplicates and names ------------------------------------------------------------------------------

def test_a_duplicate_tensor_name_is_one_line(cli, valid, tmp_path):
    at = valid.layout.tensor["blk.1.attn_q.weight"].name + len("blk.")
    refused(cli, patched(valid, tmp_path, (at, "<B", ord("0"))), "blk.0.attn_q.weight: expected each tensor name once")


def test_a_duplicate_key_is_one_line(cli, tmp_path):
    """The writer keeps keys in a dict: a key of the same length is written and then renamed."""
    path = write_gguf(tmp_path / "bad.gguf", {"llama.block_coun_": (3, V.UINT32)})
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"llama.block_coun_", b"llama.block_count"))
    refused(cli, path, "llama.block_count: expected each metadata key once", "found it again at byte")


def test_a_key_or_tensor_name_not_in_utf8_is_one_line(cli, valid, tmp_path):
    refused(cli, patched(valid, tmp_path, (valid.layout.key["general.name"] + 8, "<B", 0xFF)),
            "expected a name in UTF-8", r"b'\xffeneral.name'")
    at = valid.layout.tensor["blk.1.attn_q.weight"].name + len("blk.")
    refused(cli, patched(valid, tmp_path, (at, "<B", 0xFF)), "tensor 3 of the directory: expected a name in UTF-8",
            r"b'blk.\xff.attn_q.weight'")


# --- general.architecture -------------------------------------------------------------------------------

@pytest.mark.parametrize("meta, arch, fragment", [
    ({"general.architecture": None}, "llama", "found it missing"),
    ({"general.architecture": (7, V.UINT32)}, "llama", "(a string), found 7"),
    ({}, "mamba", "expected one of the GGUF architectures measure reads: bert"),
    ({"general.architecture": ("m" * 100_000, V.STRING)}, "llama", "found 'mmmm"),
    ({"general.architecture": (["llama"] * 100, V.ARRAY)}, "llama", "(100 items)]"),
])
def test_a_missing_or_unsupported_architecture_is_one_line(cli, tmp_path, meta, arch, fragment):
    line = refused(cli, write_gguf(tmp_path / "bad.gguf", meta, arch=arch), "general.architecture", fragment)
    assert len(line) < 400  # a hostile value is quoted in part


def test_an_architecture_not_in_utf8_is_one_line(cli, valid, tmp_path):
    at = valid.layout.value["general.architecture"] + 8
    refused(cli, patched(valid, tmp_path, (at, "<B", 0xFF)), "general.architecture", "a value that does not decode")


def test_a_free_form_value_not_in_utf8_is_recorded_as_none(cli, valid, tmp_path):
    """general.name is only recorded: not UTF-8, it is None in the output (it would not serialise)."""
    path = patched(valid, tmp_path, (valid.layout.value["general.name"] + 8, "<B", 0xFF))
    proc = cli("measure", path, "-o", tmp_path / "m", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "m.json").read_text())["gguf"]["name"] is None


# --- shapes from the metadata ------------------------------------------------------------------------------

@pytest.mark.parametrize("meta, fragment", [
    ({"llama.attention.head_count": None}, "llama.attention.head_count: expected this key to be present"),
    ({"llama.attention.head_count": (0, V.UINT32)}, "llama.attention.head_count: expected a positive integer, "
     "found 0"),
    ({"llama.attention.head_count": (-4, V.INT32)}, "found -4"),
    ({"llama.attention.head_count": (2**32 - 4, V.UINT32)}, "embedding_length: expected a multiple of llama.attention.head_count = 4294967292"),
    ({"llama.attention.head_count": (4.0, V.FLOAT32)}, "llama.attention.head_count: expected a positive integer, "
     "found 4.0"),
    ({"llama.attention.head_count": ("4", V.STRING)}, "found '4'"),
    ({"llama.attention.head_count": (True, V.BOOL)}, "found True"),
    ({"llama.attention.head_count": ([4, 4, 8], V.ARRAY)}, "the same head count in every layer, found [4, 8]"),
    ({"llama.attention.head_count_kv": (0, V.UINT32)}, "llama.attention.head_count_kv: expected a positive integer"),
    ({"llama.attention.head_count_kv": (3, V.UINT32)}, "head_count_kv: expected a divisor of "
     "llama.attention.head_count = 4, found 3"),
    ({"llama.attention.head_count_kv": None}, "blk.0.attn_k.weight: expected shape (64, 64)"),
    ({"llama.embedding_length": (66, V.UINT32)}, "llama.embedding_length: expected a multiple of "
     "llama.attention.head_count = 4, found 66"),
    ({"llama.embedding_length": None}, "llama.embedding_length: expected this key to be present"),
    ({"llama.block_count": (0, V.UINT32)}, "llama.block_count: expected a positive integer"),
    ({"llama.block_count": (1, V.UINT32)}, "llama.block_count: expected the number of layers the tensors hold "
     "(blk.0 .. blk.1), found 1"),
    ({"llama.block_count": (2**62, V.UINT64)}, "blk.2.attn_q.weight: expected this tensor to be present"),
    ({"llama.block_count": (list(range(10_000)), V.ARRAY, V.UINT32)}, "(10000 items)]"),
    ({"llama.attention.key_length": (0, V.UINT32)}, "llama.attention.key_length: expected a positive integer"),
    ({"llama.attention.key_length": (32, V.UINT32)}, "blk.0.attn_q.weight: expected shape (128, 64)"),
    ({"llama.rope.dimension_count": (15, V.UINT32)}, "expected an even number of rotated dimensions <= the head "
     "size 16, found 15"),
    ({"llama.rope.dimension_count": (32, V.UINT32)}, "found 32"),
])
def test_metadata_that_gives_no_shape_is_one_line(cli, tmp_path, meta, fragment):
    line = refused(cli, write_gguf(tmp_path / "bad.gguf", meta), fragment)
    assert len(line) < 400


@pytest.mark.parametrize("shape, fragment", [((48, 64), "found (48, 64)"), ((64, 32), "found (64, 32)"),
                                             ((4096,), "found (4096,)"), ((4, 16, 64), "found (4, 16, 64)")])
def test_attn_q_of_another_shape_than_the_metadata_says_is_one_line(cli, tmp_path, shape, fragment):
    bad = np.ones(shape, np.float32)
    refused(cli, write_gguf(tmp_path / "bad.gguf", tensors={"blk.1.attn_q.weight": bad}),
            "blk.1.attn_q.weight: expected shape (64, 64) (from the GGUF metadata)", fragment)


def test_a_missing_attention_tensor_is_one_line(cli, tmp_path):
    refused(cli, write_gguf(tmp_path / "bad.gguf", tensors={"blk.1.attn_k.weight": None}),
            "blk.1.attn_k.weight: expected this tensor to be present")


def test_a_zero_dimensional_qk_norm_is_refused_when_folded(cli, tmp_path):
    """A QK-norm's length tells one gain shared by the heads from one per head: a 0-D one has none."""
    scalar = np.array(1.0, np.float32)
    path = write_gguf(tmp_path / "bad.gguf", tensors={"blk.0.attn_q_norm.weight": scalar,
                                                        "blk.0.attn_k_norm.weight": scalar})
    qkalign.measure(path, progress=False)  # the gains are not read
    out = tmp_path / "out"
    out.mkdir()
    one_error_line(cli("measure", path, "-o", out / "m", "--quiet", "--fold-norms"), "blk.0.attn_q_norm.weight: "
                   "expected shape (64,)", "found ()")
    assert not any(out.iterdir())


# --- weights that are not finite ----------------------------------------------------------------------------

def _with_value(array, value, at=(5, 7)):
    array = array.copy()
    array[at] = value
    return array


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_weight_not_finite_is_one_line(cli, tmp_path, value):
    q = _with_value(weights()["blk.1.attn_q.weight"], value)
    refused(cli, write_gguf(tmp_path / "bad.gguf", tensors={"blk.1.attn_q.weight": q}),
            "blk.1.attn_q.weight: expected finite weights", "found NaN or Inf in rows 0:16")
    q16 = _with_value(weights(np.float16)["blk.0.attn_q.weight"], value, at=(40, 3))
    refused(cli, write_gguf(tmp_path / "bad16.gguf", tensors={"blk.0.attn_q.weight": q16}),
            "blk.0.attn_q.weight: expected finite weights", "found NaN or Inf in rows 32:48")


def test_a_q8_0_block_whose_scale_is_nan_is_one_line(cli, tmp_path):
    raw, qtype = quantized(weights()["blk.0.attn_k.weight"], T.Q8_0)
    raw = raw.copy()
    raw[20, 0:2] = np.frombuffer(np.float16(np.nan).tobytes(), np.uint8)  # the f16 scale of row 20's first block
    refused(cli, write_gguf(tmp_path / "bad.gguf", tensors={"blk.0.attn_k.weight": (raw, qtype)}),
            "blk.0.attn_k.weight: expected finite weights", "rows 16:32")


def test_a_norm_gain_not_finite_is_one_line_when_folded(cli, tmp_path):
    gain = _with_value(weights()["blk.1.attn_norm.weight"], np.nan, at=(9,))
    path = write_gguf(tmp_path / "bad.gguf", tensors={"blk.1.attn_norm.weight": gain})
    out = tmp_path / "out"
    out.mkdir()
    one_error_line(cli("measure", path, "-o", out / "m", "--quiet", "--fold-norms"), "blk.1.attn_norm.weight: "
                   "expected a finite norm gain")
    assert not any(out.iterdir())


def test_an_f64_weight_beyond_float32_is_measured_in_float32(cli, tmp_path):
    """A float64 weight of 1e39 is scaled by a power of two before it is rounded to float32 (rounded first, it
    would overflow): float32 products give the float64 mode's numbers within float32's tolerance."""
    q = weights(np.float64)["blk.0.attn_q.weight"]
    q[0, 0] = 1e39
    path = write_gguf(tmp_path / "f64.gguf", tensors={"blk.0.attn_q.weight": q})
    single = qkalign.measure(path, progress=False)
    double = qkalign.measure(path, precision="float64", progress=False)
    norms = np.sqrt(np.einsum("llh->lh", double.gram))
    assert np.all(np.abs(single.gram - double.gram) <= 1e-5 * norms[:, None, :] * norms[None, :, :])
    assert double.gram[0, 0, 0] > 1e77
    proc = cli("measure", path, "-o", tmp_path / "m", "--quiet")
    assert proc.returncode == 0, proc.stderr


def test_a_quantised_norm_gain_is_dequantised_whole(tmp_path):
    """A Q8_0 vector's bytes do not slice by element: the gain is dequantised whole, then sliced (QK-norms of
    H d and H_kv d, as OLMo 2 has: one slice per head)."""
    rng = np.random.default_rng(1)
    gains = {f"blk.{layer}.{which}.weight": quantized(rng.uniform(0.5, 2.0, length).astype(np.float32), T.Q8_0)
             for layer in range(2) for which, length in (("attn_norm", 64), ("attn_q_norm", 64), ("attn_k_norm", 32))}
    q8 = qkalign.measure(write_gguf(tmp_path / "q8.gguf", tensors=gains), progress=False, fold_norms=True)
    plain = {name: gguf.quants.dequantize(*gain) for name, gain in gains.items()}
    f32 = qkalign.measure(write_gguf(tmp_path / "f32.gguf", tensors=plain), progress=False, fold_norms=True)
    assert_same_measure(q8, f32)
    assert q8.extra["tensor_types"]["blk.0.attn_norm.weight"] == "Q8_0"


# --- big-endian files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_big_endian_file_reads_as_the_little_endian_one(tmp_path, dtype):
    """gguf's reader gives a big-endian file's F32/F16 tensors as byte-swapped numpy views, which numpy
    widens correctly (gguf's F16 dequantiser would view the bytes as native float16: wrong numbers)."""
    q = {name: array.astype(dtype) for name, array in weights().items() if "attn_q" in name}
    little = qkalign.measure(write_gguf(tmp_path / "le.gguf", tensors=q), progress=False)
    big = qkalign.measure(write_gguf(tmp_path / "be.gguf", tensors=q, endianess=gguf.GGUFEndian.BIG), progress=False)
    assert_same_measure(big, little)


def test_a_quantised_tensor_in_a_big_endian_file_is_refused(cli, tmp_path):
    """gguf dequantises little-endian blocks; a big-endian file's block scales may be byte-swapped
    (gguf_convert_endian.py swaps them, gguf's writer does not): refused rather than guessed."""
    q = {"blk.0.attn_q.weight": quantized(weights()["blk.0.attn_q.weight"], T.Q8_0)}
    refused(cli, write_gguf(tmp_path / "bad.gguf", tensors=q, endianess=gguf.GGUFEndian.BIG),
            "blk.0.attn_q.weight: expected F32, F16 or F64 in a big-endian GGUF file", "found Q8_0")


# --- split sets ----------------------------------------------------------------------------------------------

@pytest.fixture()
def splits(tmp_path):
    """The valid model as 3 splits of 2 tensors each (``m-0000i-of-00003.gguf``)."""
    folder = tmp_path / "splits"
    folder.mkdir()
    return write_gguf(folder / "m.gguf", split_max_tensors=2)


def test_a_split_set_reads_as_the_single_file(valid, splits):
    assert [p.name for p in splits] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for split in splits:
        assert_same_measure(qkalign.measure(split, progress=False), valid.data)


def test_a_split_set_with_a_split_missing_is_one_line(cli, splits):
    splits[1].unlink()
    refused(cli, splits[0], "m-00002-of-00003.gguf: expected split 2 of 3 next to m-00001-of-00003.gguf",
            "found no such file")


def test_a_split_whose_number_disagrees_with_its_name_is_one_line(cli, splits):
    tmp = splits[0].with_name("tmp.gguf")
    splits[0].rename(tmp)
    splits[1].rename(splits[0])
    tmp.rename(splits[1])
    refused(cli, splits[0], "m-00001-of-00003.gguf: split.no, split.count: expected (0, 3): split 1 of 3 as its "
            "name says", "found (1, 3)")


def test_a_single_file_claiming_to_be_a_split_is_one_line(cli, tmp_path, splits):
    lone = tmp_path / "lone.gguf"
    shutil.copy(splits[0], lone)
    refused(cli, lone, "lone.gguf: split.count: expected 1 or none", "found 3")
    refused(cli, write_gguf(tmp_path / "bad.gguf", {"split.count": ("x" * 10_000, V.STRING)}), "split.count",
            "found 'xxx")


def test_a_split_that_is_no_gguf_file_is_one_line(cli, splits):
    """Only the file named is recognised by its magic bytes: the other splits are checked when opened."""
    splits[1].write_bytes(b"XGUF" + splits[1].read_bytes()[4:])
    refused(cli, splits[0], "expected a GGUF file (its first 4 bytes b'GGUF'), found b'XGUF'", named=splits[1].name)
    splits[1].write_bytes(b"GGUF" + struct.pack("<I", 1) + splits[1].read_bytes()[8:])
    refused(cli, splits[0], "GGUF.version: expected 2 or 3", named=splits[1].name)


def test_a_split_file_name_with_no_valid_number_is_one_line(cli, splits):
    bad = splits[0].with_name("m-00004-of-00003.gguf")
    splits[0].rename(bad)
    refused(cli, bad, "expected a split file NAME-0000i-of-0000N.gguf with 1 <= i <= N")


# --- in a fresh process ----------------------------------------------------------------------------------------

def test_the_command_in_a_fresh_process_prints_one_line(valid, tmp_path):
    """A representative few through ``python -m qkalign``: what a user sees, warnings included."""
    lay = valid.layout
    bad = {"truncated": valid.bytes[:lay.data + 1000],
           "kv_count": patch(valid.bytes, (16, "<Q", 2**62)),
           "array": patch(valid.bytes, (lay.value["tokenizer.ggml.tokens"] + 4, "<Q", 2**60)),
           "type": patch(valid.bytes, (lay.tensor["blk.0.attn_q.weight"].type, "<I", 99)),
           "nested": deeply_nested(tmp_path / "deep.gguf").read_bytes()}
    commands = {}
    for name, raw in bad.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "bad.gguf").write_bytes(raw)
        commands[name] = ["measure", tmp_path / name / "bad.gguf", "-o", tmp_path / name / "m"]
    for name, proc in run_concurrently(commands).items():
        one_error_line(proc, "bad.gguf")
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["bad.gguf"], name


# --- fuzzing --------------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=2000, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_any_corruption_is_a_result_or_an_input_error(valid, tmp_path, data):
    """Bytes flipped (half of them in the header, where they change the most) and the file perhaps cut: either
    a measure of finite numbers of both layers or an InputError; never another exception, a warning or a hang."""
    raw = bytearray(valid.bytes)
    header = valid.layout.data
    for _ in range(data.draw(st.integers(1, 6), label="flips")):
        at = data.draw(st.integers(0, header - 1) | st.integers(0, len(raw) - 1), label="at")
        raw[at] = data.draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]) | st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="cut"):
        raw = raw[:data.draw(st.integers(4, len(raw)), label="length")]
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(bytes(raw))
    try:
        result = qkalign.measure(path, progress=False, topk=2)
    except InputError:
        return
    assert result.num_layers == 2  # a block_count of 1 would silently leave out blk.1
    for field in ("gram", "fro_sq", "sym_eigs", "eig_dirs"):
        assert np.isfinite(getattr(result, field)).all(), field
