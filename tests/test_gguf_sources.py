"""GGUF models as measure sources: a file recognised by its magic bytes (any name), a split set, a folder
holding one GGUF model, ``ollama:NAME[:TAG]`` through a store on disk, and the CLI on each."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import qkalign
from qkalign.errors import InputError
from qkalign.testing.dense import dense_truth

L, H, H_KV, D, N = 2, 4, 2, 8, 32


def write_tiny_gguf(path, seed=0, split_max_tensors=0):
    """A llama GGUF of random F32 Q/K weights; returns ``(w_q (L, H, d, n), w_k (L, H_kv, d, n))`` float64."""
    import gguf

    rng = np.random.default_rng(seed)
    w_q = rng.standard_normal((L, H, D, N)).astype(np.float32)
    w_k = rng.standard_normal((L, H_KV, D, N)).astype(np.float32)
    writer = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    writer.add_block_count(L)
    writer.add_head_count(H)
    writer.add_head_count_kv(H_KV)
    writer.add_embedding_length(N)
    writer.add_key_length(D)
    for layer in range(L):
        writer.add_tensor(f"blk.{layer}.attn_q.weight", w_q[layer].reshape(H * D, N))
        writer.add_tensor(f"blk.{layer}.attn_k.weight", w_k[layer].reshape(H_KV * D, N))
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(N, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return w_q.astype(np.float64), w_k.astype(np.float64)


def assert_gram_matches(data, w_q, w_k):
    gram, fro_sq, sym_eigs, _ = dense_truth(w_q, w_k, 1)
    norms = np.sqrt(np.einsum("llh->lh", gram))
    assert np.all(np.abs(data.gram - gram) <= 1e-5 * norms[:, None, :] * norms[None, :, :])
    np.testing.assert_allclose(data.fro_sq, fro_sq, rtol=1e-5, atol=0)


def test_a_nameless_blob_is_read_by_its_magic(tmp_path):
    path = tmp_path / "sha256-0123abcd"
    w_q, w_k = write_tiny_gguf(path)
    data = qkalign.measure(path, topk=4, progress=False)
    assert data.extra["source_format"] == "gguf" and data.extra["model_type"] == "llama"
    assert data.extra["tensor_types"] == {f"blk.{l}.attn_{w}.weight": "F32" for l in range(L) for w in "qk"}
    assert_gram_matches(data, w_q, w_k)


def test_a_split_set_is_one_model(tmp_path):
    single = tmp_path / "single" / "tiny.gguf"
    single.parent.mkdir()
    write_tiny_gguf(single, seed=3)
    (tmp_path / "split").mkdir()
    write_tiny_gguf(tmp_path / "split" / "tiny.gguf", seed=3, split_max_tensors=2)
    splits = sorted((tmp_path / "split").iterdir())
    assert [p.name for p in splits] == [f"tiny-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    whole = qkalign.measure(single, topk=4, progress=False)
    for path in (splits[0], splits[2]):  # any split names the set
        parts = qkalign.measure(path, topk=4, progress=False)
        np.testing.assert_array_equal(parts.gram, whole.gram)
        np.testing.assert_array_equal(parts.eig_dirs, whole.eig_dirs)
        assert parts.extra["gguf"]["files"] == [p.name for p in splits]
    splits[1].unlink()
    with pytest.raises(InputError, match="tiny-00002-of-00003.gguf: expected split 2 of 3 next to "
                                         "tiny-00001-of-00003.gguf, found no such file"):
        qkalign.measure(splits[0], progress=False)


def test_a_folder_with_one_gguf_model(tmp_path):
    w_q, w_k = write_tiny_gguf(tmp_path / "model.Q8.gguf", seed=1)
    assert_gram_matches(qkalign.measure(tmp_path, topk=4, progress=False), w_q, w_k)
    write_tiny_gguf(tmp_path / "other.gguf", seed=2)
    with pytest.raises(InputError, match="expected config.json with safetensors weights, or one GGUF model .*found "
                                         "2 GGUF models: model.Q8.gguf, other.gguf"):
        qkalign.measure(tmp_path, progress=False)


def ollama_store(root, blob_source, name="smol", tag="latest"):
    """An Ollama store under ``root`` whose ``NAME:TAG`` model layer is a copy of ``blob_source``."""
    import hashlib

    digest = hashlib.sha256(blob_source.read_bytes()).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    shutil.copy(blob_source, root / "blobs" / f"sha256-{digest}")
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    layers = [{"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 1},
              {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": 1}]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return digest


def test_ollama_name_is_measured_from_the_store(tmp_path, monkeypatch):
    w_q, w_k = write_tiny_gguf(tmp_path / "tiny.gguf", seed=4)
    digest = ollama_store(tmp_path / "store", tmp_path / "tiny.gguf", tag="q8")
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "store"))
    data = qkalign.measure("ollama:smol:q8", topk=4, progress=False)
    assert_gram_matches(data, w_q, w_k)
    assert data.extra["source_kind"] == "ollama" and data.extra["ollama"]["digest"] == f"sha256:{digest}"
    assert data.extra["ollama"]["name"] == "smol:q8"
    with pytest.raises(InputError, match="smol"):
        qkalign.measure("ollama:smol", progress=False)  # no :latest tag in this store


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "qkalign", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow
def test_cli_measure_and_analyze_a_gguf_file(tmp_path):
    path = tmp_path / "blob"
    write_tiny_gguf(path, seed=5)
    done = run_cli("measure", path, "-o", tmp_path / "out", "--quiet")
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["source_format"] == "gguf" and written["rotary_pairing"] == "interleaved"
    assert (tmp_path / "out-eigdirs.safetensors").is_file()
    report = run_cli("analyze", path, "--quiet")
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines()[0].startswith(f"qkalign analyze: input GGUF model {path} (measured: gguf llama")


def test_gguf_version_2_reads_as_version_3(tmp_path):
    """GGUF v2 differs from v3 only in what v3 allows beyond it (big-endian files): the same bytes with version 2
    measure alike, and the JSON records the version."""
    write_tiny_gguf(tmp_path / "v3.gguf", seed=6)
    raw = bytearray((tmp_path / "v3.gguf").read_bytes())
    assert raw[4:8] == (3).to_bytes(4, "little")
    raw[4:8] = (2).to_bytes(4, "little")
    (tmp_path / "v2.gguf").write_bytes(bytes(raw))
    v2, v3 = (qkalign.measure(tmp_path / f"v{v}.gguf", topk=4, progress=False) for v in (2, 3))
    np.testing.assert_array_equal(v2.gram, v3.gram)
    np.testing.assert_array_equal(v2.eig_dirs, v3.eig_dirs)
    assert (v2.extra["gguf"]["version"], v3.extra["gguf"]["version"]) == (2, 3)
