"""Models wherever they live: measure over HTTP range reads, file:// URLs and the Hub (cache and endpoint).

Every remote result is compared with ``measure`` of the same folder read locally (memory-mapped
by safetensors), and the bytes a server sent are compared with the bytes of the Q/K tensors.
"""

import json
import socket
import time

import fsspec
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from qkalign.errors import InputError
from qkalign.testing.http_server import RangeServer, record_authorization
from qkalign.testing.hub import commit_of, hub_routes, use_hub_endpoint, write_hub_snapshot
from qkalign.testing.model_folders import write_model
from qkalign.testing.processes import run_python, run_qkalign
from qkalign.testing.quantized_folders import write_fp8_model
from qkalign.weights import remote_files, remote_folder
from qkalign.weights.measure import measure
from qkalign.weights.remote_files import RemoteFiles
from qkalign.weights.safetensors_ranges import read_header
from qkalign.weights.sources import is_remote_source

# (model_type, shards, dtype): single files and sharded folders, every dtype read, fused Q/K/V tensors.
CASES = [("llama", 1, torch.float32), ("llama", 3, torch.bfloat16), ("phi3", 1, torch.float16),
         ("gpt_neox", 1, torch.float64)]
# GPT-2's Conv1D c_attn (n, 3n): a head's block is a column range, one byte range per row.
GPT2 = ("gpt2", 2, torch.bfloat16)
# Same bytes, same arithmetic: the remote result equals the local one to rounding of float64 sums.
TOL = 1e-12
ARRAYS = ("gram", "fro_sq", "sym_eigs", "eig_dirs")


def case_name(case):
    model_type, shards, dtype = case
    return f"{model_type}-{shards}shard-{str(dtype).removeprefix('torch.')}"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """``{name: (TinyModel, local float64 QKData)}`` under one served root."""
    root = tmp_path_factory.mktemp("served")
    out = {}
    for i, case in enumerate(CASES + [GPT2]):
        model_type, shards, dtype = case
        model = write_model(root / case_name(case), model_type, shards=shards, dtype=dtype, seed=i)
        out[case_name(case)] = (model, measure(model.folder, topk=4, precision="float64", progress=False))
    qwen = write_model(root / "qwen3", "qwen3", shards=2, seed=9)
    out["qwen3"] = (qwen, measure(qwen.folder, topk=4, fold_norms=True, precision="float64", progress=False))
    out["root"] = root
    return out


def assert_same(remote, local):
    for key in ARRAYS:
        a, b = getattr(remote, key), getattr(local, key)
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= TOL * np.abs(b).max(), key


def qk_bytes(model, itemsize):
    """Bytes of every W_Q and W_K block: L (H + H_kv) d n elements."""
    L, H, d, n = model.w_q.shape
    return L * (H + model.w_k.shape[1]) * d * n * itemsize


def metadata_bytes(folder):
    """config.json, the index (if any) and each shard's 8-byte length + JSON header."""
    total = (folder / "config.json").stat().st_size
    if (folder / "model.safetensors.index.json").exists():
        total += (folder / "model.safetensors.index.json").stat().st_size
    for shard in folder.glob("*.safetensors"):
        total += 8 + int.from_bytes(shard.read_bytes()[:8], "little")
    return total


def closed_port_url():
    """``http://127.0.0.1:PORT`` of a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("case", CASES, ids=case_name)
def test_http_equals_local_and_reads_only_the_qk_bytes(models, case):
    model, local = models[case_name(case)]
    with RangeServer(models["root"]) as server:
        remote = measure(f"{server.url}/{model.folder.name}/", topk=4, precision="float64", progress=False)
    assert_same(remote, local)
    assert remote.extra["source_kind"] == "url" and remote.extra["model_source"].startswith(server.url)
    qk = qk_bytes(model, case[2].itemsize)
    assert qk <= server.total_sent <= 1.1 * qk + metadata_bytes(model.folder)
    for shard in model.folder.glob("*.safetensors"):  # never a whole shard
        sent = server.bytes_sent[f"/{model.folder.name}/{shard.name}"]
        assert 0 < sent < shard.stat().st_size
    weight_gets = [r for r in server.requests if r[0] == "GET" and r[1].endswith(".safetensors")]
    assert weight_gets and all(r[2] is not None and r[3] == 206 for r in weight_gets)


@pytest.mark.parametrize("cache_bytes, heads_per_chunk", [(None, 4), (8000, 2), (1000, 1)])
def test_conv1d_columns_are_read_a_chunk_of_heads_at_a_time(models, monkeypatch, cache_bytes, heads_per_chunk):
    """GPT-2's c_attn (n, 3n): a head is a column range, one byte range per row; c heads are read at once,
    c the most for which 4 chunks of each of the 3 layers fit the cache (4 x 3 x c x 24 rows x 6 columns x 2 bytes
    <= cache_bytes; 8000 bytes: c = 2 and no chunk is evicted, 12 chunks of 576 bytes)."""
    if cache_bytes is not None:
        monkeypatch.setattr(remote_folder, "COLUMN_CACHE_BYTES", cache_bytes)
    name = case_name(GPT2)
    model, local = models[name]
    with RangeServer(models["root"]) as server:
        remote = measure(f"{server.url}/{name}", topk=4, precision="float64", progress=False)
    assert_same(remote, local)
    L, H, d, n = model.w_q.shape
    qk = qk_bytes(model, 2)
    assert qk <= server.total_sent <= 1.1 * qk + metadata_bytes(model.folder)
    for shard in model.folder.glob("*.safetensors"):  # never a whole shard
        assert server.bytes_sent[f"/{name}/{shard.name}"] < shard.stat().st_size
    row_reads = [r for r in server.requests if r[0] == "GET" and r[1].endswith(".safetensors")
                 and int(r[2].split("-")[1]) - int(r[2].split("=")[1].split("-")[0]) + 1 == heads_per_chunk * d * 2]
    assert len(row_reads) == L * 2 * (H // heads_per_chunk) * n  # Q and K parts, every row, every chunk


def test_http_fold_norms_reads_the_gains_once(models):
    model, local = models["qwen3"]
    with RangeServer(models["root"]) as server:
        remote = measure(f"{server.url}/qwen3", topk=4, fold_norms=True, precision="float64", progress=False)
    assert_same(remote, local)
    L, H, d, n = model.w_q.shape
    gains = L * (n + 2 * d) * 4  # input_layernorm (n), q_norm and k_norm (d each) per layer
    qk = qk_bytes(model, 4)
    assert qk + gains <= server.total_sent <= 1.1 * qk + gains + metadata_bytes(model.folder)


def test_file_url_equals_local(models):
    model, local = models[case_name(CASES[1])]
    remote = measure(model.folder.as_uri(), topk=4, precision="float64", progress=False)
    assert_same(remote, local)
    assert remote.extra["model_source"] == model.folder.as_uri() and remote.extra["source_kind"] == "url"


def test_transient_failure_is_retried(models):
    model, local = models[case_name(CASES[0])]
    with RangeServer(models["root"]) as server:
        server.fail_next(1)
        remote = measure(f"{server.url}/{model.folder.name}", topk=4, precision="float64", progress=False)
    assert_same(remote, local)
    assert [r[3] for r in server.requests].count(503) == 1


def test_persistent_failure_is_one_error_line(models, cli, monkeypatch, tmp_path):
    monkeypatch.setattr(remote_files, "FIRST_WAIT_SECONDS", 0.001)
    with RangeServer(models["root"]) as server:
        server.fail_next(100)
        r = cli("measure", f"{server.url}/llama-1shard-float32", "-o", tmp_path / "out", "--quiet")
        failed = [x[3] for x in server.requests].count(503)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "config.json" in r.stderr and f"HTTP 503 after {remote_files.ATTEMPTS} attempts" in r.stderr
    assert failed == remote_files.ATTEMPTS


def test_missing_url_and_refused_connection(models, cli, tmp_path):
    with RangeServer(models["root"]) as server:
        r = cli("measure", f"{server.url}/no-such-model/", "-o", tmp_path / "out", "--quiet")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "no-such-model/config.json" in r.stderr and "no such file" in r.stderr
    url = closed_port_url()
    start = time.perf_counter()
    r = cli("measure", f"{url}/m", "-o", tmp_path / "out", "--quiet")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "connection refused" in r.stderr
    # Not retried: the back-off alone would take FIRST_WAIT_SECONDS * (2**(ATTEMPTS - 1) - 1) = 7.5 s.
    assert time.perf_counter() - start < 5


def test_missing_weights_and_hostile_index_over_http(tmp_path, cli):
    model = write_model(tmp_path / "escape", "llama", shards=2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_bytes((model.folder / "config.json").read_bytes())
    index = model.folder / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    doc["weight_map"][next(iter(doc["weight_map"]))] = "../empty/config.json"
    index.write_text(json.dumps(doc))
    model = write_model(tmp_path / "llama", "llama")
    with RangeServer(tmp_path) as server:
        r = cli("measure", f"{server.url}/empty", "-o", tmp_path / "out", "--quiet")
        assert r.returncode == 2 and "model.safetensors or model.safetensors.index.json" in r.stderr
        r = cli("measure", f"{server.url}/escape", "-o", tmp_path / "out", "--quiet")
        assert r.returncode == 2 and "weight_map" in r.stderr and r.stderr.count("\n") == 1
        r = cli("measure", f"{server.url}/llama", "--revision", "main", "-o", tmp_path / "out", "--quiet")
        assert r.returncode == 2 and "--revision" in r.stderr and r.stderr.count("\n") == 1


def test_analyze_measures_a_url(models, cli):
    model, local = models[case_name(CASES[0])]
    with RangeServer(models["root"]) as server:
        r = cli("analyze", f"{server.url}/{model.folder.name}", "--precision", "float64", "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"model {server.url}/{model.folder.name} (measured: llama-style" in r.stdout


# --- the Hugging Face Hub --------------------------------------------------------------------------------


@pytest.mark.slow
def test_hub_cache_offline_cli(models, tmp_path):
    """``qkalign measure ORG/NAME --revision REV`` with HF_HUB_OFFLINE=1 finds the cached snapshot: the
    environment variables as a user sets them, in a fresh process (in-process tests set huggingface_hub's
    constants instead)."""
    model, local = models[case_name(CASES[1])]
    commit = write_hub_snapshot(tmp_path / "hub", "org/tiny", "step1", model.folder)
    r = run_qkalign("measure", "org/tiny", "--revision", "step1", "--precision", "float64", "--topk", 4,
                    "-o", tmp_path / "out", "--quiet", HF_HUB_OFFLINE=1, HF_HUB_CACHE=tmp_path / "hub")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out.json").read_text())
    assert (doc["model_source"], doc["revision"], doc["commit_hash"]) == ("org/tiny", "step1", commit)
    assert np.abs(np.array(doc["gram"]) - local.gram).max() <= TOL * np.abs(local.gram).max()


def test_hub_missing_revision_offline(models, hub, cli, tmp_path):
    commit = write_hub_snapshot(tmp_path / "hub", "org/tiny", "step1", models[case_name(CASES[0])][0].folder)
    r = cli("analyze", "org/tiny", "--revision", "step1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"model org/tiny revision step1 (commit {commit}) (measured: llama-style" in r.stdout
    r = cli("measure", "org/tiny", "--revision", "step2", "-o", tmp_path / "out", "--quiet")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "org/tiny@step2" in r.stderr and "HF_HUB_OFFLINE" in r.stderr and "cached revisions: step1" in r.stderr
    r = cli("measure", "org/absent", "-o", tmp_path / "out", "--quiet")
    assert r.returncode == 2 and "no cached snapshot of org/absent" in r.stderr


def test_hub_cache_is_used_without_network(models, hub, monkeypatch, tmp_path):
    """A complete cached snapshot needs no network even when online (the endpoint is a closed port)."""
    model, local = models[case_name(GPT2)]
    hub.HF_HUB_OFFLINE = False
    use_hub_endpoint(monkeypatch, hub, closed_port_url())
    commit = write_hub_snapshot(tmp_path / "hub", "org/tiny", "main", model.folder)
    data = measure("org/tiny", topk=4, precision="float64", progress=False)
    assert_same(data, local)
    assert (data.extra["revision"], data.extra["commit_hash"]) == ("main", commit)
    assert data.extra["read_from"].startswith("local Hub cache")
    by_commit = measure("org/tiny", revision=commit, topk=4, precision="float64", progress=False)
    assert by_commit.extra["commit_hash"] == commit
    np.testing.assert_array_equal(by_commit.gram, data.gram)
    # Without its weights in the cache the network is needed: the closed port is one error line.
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_bytes((model.folder / "config.json").read_bytes())
    write_hub_snapshot(tmp_path / "hub", "org/partial", "main", partial)
    with pytest.raises(InputError, match="connection refused"):
        measure("org/partial", progress=False)


def test_hub_over_http(models, hub, monkeypatch, cli, tmp_path):
    """Not cached: the revision is resolved on the endpoint (HF_ENDPOINT) and the files read by ranges."""
    model, local = models[case_name(GPT2)]
    hub.HF_HUB_OFFLINE = False
    routes = hub_routes("org/tiny", {"v1": (commit_of("v1"), model.folder)}, missing=("v2",))
    # A gated model without a token, and a private file refused (401) after its revision resolved.
    routes["/api/models/org/gated/revision/main"] = (403, {"X-Error-Code": "GatedRepo"}, b"{}")
    routes.update(hub_routes("org/private", {"main": (commit_of("p"), model.folder)}))
    routes[f"/org/private/resolve/{commit_of('p')}/config.json"] = (401, {}, b"")
    with RangeServer(tmp_path, routes=routes) as server:
        use_hub_endpoint(monkeypatch, hub, server.url)
        data = measure("org/tiny", revision="v1", topk=4, precision="float64", progress=False)
        sent, requests = server.total_sent, list(server.requests)
        # A signed CDN URL that expired mid-run (403): the resolve URL is asked again.
        server.fail_next(1, status=403, path="/cdn/")
        again = measure("org/tiny", revision="v1", topk=4, precision="float64", progress=False)
        expired = [r[3] for r in server.requests[len(requests):]].count(403)
        r = cli("measure", "org/tiny", "--revision", "v2", "-o", tmp_path / "out", "--quiet")
        gated = cli("measure", "org/gated", "-o", tmp_path / "out", "--quiet")
        private = cli("measure", "org/private", "-o", tmp_path / "out", "--quiet")
    for refused in (gated, private):
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "HF_TOKEN" in refused.stderr
    assert "gated" in gated.stderr and "HTTP 401" in private.stderr
    assert_same(data, local)
    assert_same(again, local)
    assert expired == 1
    assert (data.extra["revision"], data.extra["commit_hash"], data.extra["source_kind"]) == \
        ("v1", commit_of("v1"), "hub")
    qk = qk_bytes(model, 2)
    api_answer = len(routes["/api/models/org/tiny/revision/v1"])
    assert qk <= sent <= 1.1 * qk + metadata_bytes(model.folder) + api_answer
    # The weights' resolve URLs are asked once each (for the size, redirected); their ranges go to the CDN.
    shards = sorted(p.name for p in model.folder.glob("*.safetensors"))
    resolved = sorted(r[1].rsplit("/", 1)[1] for r in requests if "/resolve/" in r[1] and r[1].endswith(".safetensors"))
    assert resolved == shards
    assert all(r[1].startswith("/cdn/") for r in requests if r[0] == "GET" and r[1].endswith(".safetensors"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "'v2': no such revision" in r.stderr


# --- pieces ----------------------------------------------------------------------------------------------


def test_is_remote_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_remote_source("org/name") and is_remote_source("https://host/models/x") and is_remote_source("s3://b/x")
    assert not is_remote_source("grams.json") and not is_remote_source("a/b/c") and not is_remote_source("x")
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not is_remote_source("org/name")  # an existing local folder wins


def safetensors_bytes(header, data=b"", length=None):
    raw = json.dumps(header).encode()
    return (len(raw) if length is None else length).to_bytes(8, "little") + raw + data


HEADER_FAULTS = {
    "length past the end": (safetensors_bytes({}, length=10 ** 6), "header length"),
    "not JSON": (b"\x04\x00\x00\x00\x00\x00\x00\x00{{{{", "header"),
    "a list": (safetensors_bytes([1]), "header"),
    "offsets past the end": (safetensors_bytes({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                                               b"\0" * 4), "w.data_offsets"),
    "size disagrees with shape": (safetensors_bytes({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                                                    b"\0" * 8), "w.data_offsets"),
    "negative dimension": (safetensors_bytes({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
                                             b"\0" * 8), "w.shape"),
    "too short": (b"\x01\x00", ""),
}


@pytest.mark.parametrize("fault", HEADER_FAULTS)
def test_hostile_headers_are_one_error_line(fault):
    content, field = HEADER_FAULTS[fault]
    fs = fsspec.filesystem("memory")
    fs.pipe(f"/hostile/{fault}.safetensors", content)
    files = RemoteFiles(fs, lambda name: f"/hostile/{name}")
    with pytest.raises(InputError) as info:
        read_header(files, f"{fault}.safetensors", f"{fault}.safetensors")
    assert info.value.field == field and "\n" not in str(info.value)


def test_a_server_ignoring_range_is_an_error():
    class WholeFiles:  # answers every request with the whole file, as a server without Range support
        def info(self, path):
            return {"size": 64}

        def cat_file(self, path, start=None, end=None):
            return b"\0" * 64

    with pytest.raises(InputError, match="ignored the Range request"):
        RemoteFiles(WholeFiles(), str).read_ranges("f", [(0, 8)])


@pytest.mark.slow
def test_local_folders_import_no_remote_library(models):
    """fsspec, aiohttp and huggingface_hub are imported for remote sources only (a fresh process)."""
    folder = models[case_name(CASES[0])][0].folder
    code = ("import sys; from qkalign.cli import main; main(['analyze', sys.argv[1], '--quiet', '--topk', '4']); "
            "print([m for m in ('fsspec', 'aiohttp', 'huggingface_hub') if m in sys.modules])")
    r = run_python(["-c", code, folder])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


# --- FP8 block-scaled checkpoints --------------------------------------------------------------------------

#: model_type: (shape (L, H, H_kv, d, n), shards). Qwen3 (GQA): 48-row head blocks, the third crossing a
#: 128-row scale block; GPT-2: c_attn (144, 432), head column ranges crossing 128-column scale blocks.
FP8_CASES = {"qwen3": ((2, 4, 2, 48, 200), 2), "gpt2": ((2, 3, 3, 48, 144), 1)}
FP8_BLOCK = 128


@pytest.fixture(scope="module")
def fp8_models(tmp_path_factory):
    """``(served root, {model_type: Fp8Model})``: each under ``root/model_type/{fp8,twin32,twin64}``."""
    root = tmp_path_factory.mktemp("fp8-served")
    return root, {name: write_fp8_model(root / name, name, shape=shape, shards=shards, seed=5)
                  for name, (shape, shards) in FP8_CASES.items()}


def fp8_scale_bytes(model_type, shape):
    """Bytes of the float32 scale rows (GPT-2: columns) covering each Q/K head block, one read per block.

    Row-split q_proj (H d, n) and k_proj (H_kv d, n): block ``h`` is rows ``h d:(h+1) d``, covered by
    ``ceil((h+1) d / 128) - floor(h d / 128)`` scale rows of ``ceil(n / 128)`` entries. GPT-2's c_attn
    (n, 3n): query head ``h`` is columns ``h d:(h+1) d``, key head ``h`` columns ``n + h d:n + (h+1) d``,
    each covered by as many scale columns of ``ceil(n / 128)`` entries.
    """
    L, H, H_kv, d, n = shape
    starts = [h * d for h in range(H)] + [(n if model_type == "gpt2" else 0) + h * d for h in range(H_kv)]
    covering = sum(-(-(start + d) // FP8_BLOCK) - start // FP8_BLOCK for start in starts)
    return L * covering * -(-n // FP8_BLOCK) * 4


@pytest.mark.parametrize("model_type", FP8_CASES)
def test_fp8_over_http_equals_local_and_twin(fp8_models, model_type):
    """Bitwise: the same FP8 bytes and scales dequantised by the same code; reading only the Q/K blocks and
    the scale rows (columns) that cover them."""
    root, models = fp8_models
    model = models[model_type]
    shape = FP8_CASES[model_type][0]
    for precision, twin in (("float32", model.twin32), ("float64", model.twin64)):
        with RangeServer(root) as server:
            remote = measure(f"{server.url}/{model_type}/fp8", topk=4, precision=precision, progress=False)
        local = measure(model.folder, topk=4, precision=precision, progress=False)
        dequantized = measure(twin, topk=4, precision=precision, progress=False)
        for key in ARRAYS:
            np.testing.assert_array_equal(getattr(remote, key), getattr(local, key), err_msg=f"{precision} {key}")
            np.testing.assert_array_equal(getattr(remote, key), getattr(dequantized, key), err_msg=f"{precision} {key}")
        assert remote.extra["checkpoint_dtypes"] == ["F8_E4M3"] and remote.extra["source_kind"] == "url"
        qk, scales = qk_bytes(model.source, 1), fp8_scale_bytes(model_type, shape)
        assert qk + scales <= server.total_sent <= 1.1 * qk + scales + metadata_bytes(model.folder)
        for shard in model.folder.glob("*.safetensors"):  # never a whole shard
            assert 0 < server.bytes_sent[f"/{model_type}/fp8/{shard.name}"] < shard.stat().st_size
        weight_gets = [r for r in server.requests if r[0] == "GET" and r[1].endswith(".safetensors")]
        assert weight_gets and all(r[2] is not None and r[3] == 206 for r in weight_gets)


def test_fp8_from_the_hub_over_http(fp8_models, hub, monkeypatch, tmp_path):
    """An uncached Hub repo of an FP8 checkpoint: read by ranges from the (fake) endpoint, equal to its twin."""
    root, models = fp8_models
    model = models["qwen3"]
    hub.HF_HUB_OFFLINE = False
    with RangeServer(tmp_path, routes=hub_routes("org/fp8", {"main": (commit_of("fp8"), model.folder)})) as server:
        use_hub_endpoint(monkeypatch, hub, server.url)
        data = measure("org/fp8", topk=4, precision="float32", progress=False)
    assert data.extra["source_kind"] == "hub" and data.extra["commit_hash"] == commit_of("fp8")
    twin = measure(model.twin32, topk=4, precision="float32", progress=False)
    for key in ARRAYS:
        np.testing.assert_array_equal(getattr(data, key), getattr(twin, key), err_msg=key)


def _fp8_folder_edited(folder, edit):
    """A tiny Llama FP8 folder (``folder/fp8``) whose tensors ``edit`` rewrites."""
    model = write_fp8_model(folder, "llama", shape=(2, 4, 2, 8, 24), block=(16, 16))
    path = model.folder / "model.safetensors"
    save_file(edit(load_file(str(path))), str(path))
    return model.folder


def _without_scales(tensors):
    return {k: v for k, v in tensors.items() if not k.endswith("_scale_inv")}


def _fp8_gain(tensors):
    """input_layernorm as FP8, with a scale tensor: no block grid fits a vector."""
    out = dict(tensors)
    for name in [k for k in tensors if k.endswith("input_layernorm.weight")]:
        out[name] = tensors[name].to(torch.float8_e4m3fn)
        out[name + "_scale_inv"] = torch.ones(1)
    return out


@pytest.mark.parametrize("edit, fold_norms, field, words", [
    (_without_scales, False, "model.layers.0.self_attn.q_proj.weight_scale_inv", "no scale tensor"),
    (_fp8_gain, True, "model.layers.0.input_layernorm.weight", "F8_E4M3 of shape (24,)"),
], ids=["no-scales", "fp8-gain"])
def test_fp8_refusals_are_the_same_over_http(tmp_path, edit, fold_norms, field, words):
    """The local and the remote folder share the FP8 checks: the same one line, naming the file or URL."""
    folder = _fp8_folder_edited(tmp_path / "m", edit)
    with pytest.raises(InputError) as local:
        measure(folder, topk=2, fold_norms=fold_norms, progress=False)
    with RangeServer(tmp_path) as server, pytest.raises(InputError) as remote:
        measure(f"{server.url}/m/fp8", topk=2, fold_norms=fold_norms, progress=False)
    for err, where in ((local, str(folder / "model.safetensors")), (remote, f"{server.url}/m/fp8/model.safetensors")):
        assert err.value.field == field and words in str(err.value) and "\n" not in str(err.value)
        assert str(err.value).startswith(where)
    assert str(local.value).removeprefix(str(folder / "model.safetensors")) == \
        str(remote.value).removeprefix(f"{server.url}/m/fp8/model.safetensors")


def test_the_token_goes_to_the_hub_and_not_to_the_host_it_redirects_to(models, hub, monkeypatch, tmp_path):
    """The Hub redirects weights to a CDN on another host: range reads there carry no Authorization header."""

    from huggingface_hub import constants

    model, local = models[case_name(GPT2)]
    seen = record_authorization(monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_SECRET")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    with RangeServer(model.folder.parent) as cdn:
        other_host = cdn.url.replace("127.0.0.1", "localhost")  # another origin, the same server
        routes = hub_routes("org/tiny", {"main": (commit_of("m"), model.folder)})
        for path, answer in list(routes.items()):
            if isinstance(answer, tuple) and answer[0] == 302:
                routes[path] = (302, {"Location": f"{other_host}/{model.folder.name}/{path.rsplit('/', 1)[1]}"}, b"")
        with RangeServer(tmp_path, routes=routes) as server:
            use_hub_endpoint(monkeypatch, hub, server.url)
            data = measure("org/tiny", topk=4, precision="float64", progress=False)
            hub_port, cdn_port = server.url.rsplit(":", 1)[1], cdn.url.rsplit(":", 1)[1]
    assert_same(data, local)
    to_hub = [auth for port, auth in seen if str(port) == hub_port]
    to_cdn = [auth for port, auth in seen if str(port) == cdn_port]
    assert "Bearer hf_SECRET" in to_hub  # the token is used where it belongs
    assert to_cdn and all(auth is None for auth in to_cdn)


@pytest.mark.parametrize("where", ["config", "header"])
@pytest.mark.parametrize("junk", ["9" * 5000, "[" * 100_000 + "]" * 100_000])
def test_json_bombs_over_http_are_one_line(tmp_path, cli, where, junk):
    """A 5,000-digit integer or lists nested 100,000 deep, in config.json or a safetensors header, read remotely."""
    folder = write_model(tmp_path / "m", "llama").folder
    if where == "config":
        config = folder / "config.json"
        config.write_text(config.read_text().replace("{", '{"junk": ' + junk + ", ", 1))
    else:
        weights = folder / "model.safetensors"
        raw = weights.read_bytes()
        length = int.from_bytes(raw[:8], "little")
        header = raw[8:8 + length].rstrip().rstrip(b"}") + b', "junk": ' + junk.encode() + b"}"
        weights.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + length:])
    with RangeServer(tmp_path) as server:
        proc = cli("measure", f"{server.url}/m", "-o", tmp_path / "out", "--quiet")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert ("config.json" if where == "config" else "model.safetensors") in proc.stderr
