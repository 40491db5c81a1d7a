"""``ollama:NAME[:TAG]`` resolved through Ollama stores built on disk, and GGUF files known by their magic bytes."""

import dataclasses
import hashlib
import json
import os

import gguf
import numpy as np
import pytest

from qkalign import InputError
from qkalign.errors import one_line
from qkalign.weights import ollama
from qkalign.weights.gguf_reader import is_gguf_file
from qkalign.weights.ollama import MODEL_MEDIA_TYPE, is_ollama_source, resolve_ollama

HOST, NAMESPACE = "registry.ollama.ai", "library"
HF_NAME = "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF"


def _digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob(store, data):
    """Write ``data`` as the store's blob and return its digest, as Ollama names them."""
    digest = _digest(data)
    (store / "blobs").mkdir(parents=True, exist_ok=True)
    (store / "blobs" / digest.replace(":", "-")).write_bytes(data)
    return digest


def _layer(store, media_type, data):
    return {"mediaType": media_type, "digest": _blob(store, data), "size": len(data)}


def _manifest(store, name, tag, doc):
    """Write ``doc`` (a dict, or raw text/bytes) as the manifest of ``name:tag`` (name fully qualified)."""
    path = store.joinpath("manifests", *name.split("/"), tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(doc, dict):
        doc = json.dumps(doc)
    path.write_bytes(doc if isinstance(doc, bytes) else doc.encode())
    return path


def _model(store, name, tag, weights=b"GGUF" + bytes(60), extra_layers=()):
    """A manifest of ``name:tag`` as ``ollama pull`` writes it; returns (manifest path, model digest)."""
    config = _layer(store, "application/vnd.docker.container.image.v1+json", b'{"model_format": "gguf"}')
    model = _layer(store, MODEL_MEDIA_TYPE, weights)
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
           "config": config, "layers": [model, *extra_layers]}
    return _manifest(store, name, tag, doc), model["digest"]


def _layers_manifest(store, layers):
    return _manifest(store, f"{HOST}/{NAMESPACE}/m", "latest", {"schemaVersion": 2, "layers": layers})


def _error(text):
    with pytest.raises(InputError) as info:
        resolve_ollama(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def _blob_path(store, digest):
    return store / "blobs" / digest.replace(":", "-")


@pytest.fixture()
def store(tmp_path, monkeypatch):
    path = tmp_path / "store"
    path.mkdir()
    monkeypatch.setenv("OLLAMA_MODELS", str(path))
    return path


def _write_gguf(path):
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("x", np.arange(64, dtype=np.float32).reshape(2, 32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --- resolving names -----------------------------------------------------------------------------


def test_default_host_namespace_and_tag(store):
    manifest, digest = _model(store, f"{HOST}/{NAMESPACE}/llama3.2", "latest")
    found = resolve_ollama("ollama:llama3.2")
    assert found == ollama.OllamaModel(given="ollama:llama3.2", name=f"{HOST}/{NAMESPACE}/llama3.2", tag="latest",
                                       manifest=manifest, blob=_blob_path(store, digest), digest=digest, store=store)
    assert found.blob.name == "sha256-" + digest[len("sha256:"):]
    assert found.display == "llama3.2:latest"
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.tag = "1b"


def test_explicit_tags_pick_their_own_blobs(store):
    _, latest = _model(store, f"{HOST}/{NAMESPACE}/llama3.2", "latest", b"GGUF latest")
    manifest, small = _model(store, f"{HOST}/{NAMESPACE}/llama3.2", "1b", b"GGUF one billion")
    found = resolve_ollama("ollama:llama3.2:1b")
    assert (found.tag, found.manifest, found.digest, found.display) == ("1b", manifest, small, "llama3.2:1b")
    assert found.blob.read_bytes() == b"GGUF one billion"
    assert resolve_ollama("ollama:llama3.2:latest").digest == latest != small


def test_user_namespace(store):
    manifest, digest = _model(store, f"{HOST}/someone/tiny-model", "v1.5")
    found = resolve_ollama("ollama:someone/tiny-model:v1.5")
    assert (found.name, found.tag, found.manifest) == (f"{HOST}/someone/tiny-model", "v1.5", manifest)
    assert found.blob == _blob_path(store, digest)
    assert found.display == "someone/tiny-model:v1.5"
    assert resolve_ollama(f"ollama:{HOST}/someone/tiny-model:v1.5") == dataclasses.replace(
        found, given=f"ollama:{HOST}/someone/tiny-model:v1.5")


def test_host_qualified_name_with_a_real_gguf(store, tmp_path):
    _write_gguf(tmp_path / "w.gguf")
    manifest, digest = _model(store, HF_NAME, "Q4_K_M", (tmp_path / "w.gguf").read_bytes())
    found = resolve_ollama(f"ollama:{HF_NAME}:Q4_K_M")
    assert (found.name, found.tag, found.manifest, found.digest) == (HF_NAME, "Q4_K_M", manifest, digest)
    assert found.blob == _blob_path(store, digest)
    assert found.display == f"{HF_NAME}:Q4_K_M"
    reader = gguf.GGUFReader(found.blob)  # the nameless blob is the file GGUF readers take
    [tensor] = reader.tensors
    assert tensor.name == "x"
    np.testing.assert_array_equal(np.asarray(tensor.data).reshape(2, 32), np.arange(64).reshape(2, 32))


def test_host_with_a_port(store):
    _, digest = _model(store, "localhost:5000/team/model", "latest")
    found = resolve_ollama("ollama:localhost:5000/team/model")
    assert (found.name, found.tag, found.digest) == ("localhost:5000/team/model", "latest", digest)


def test_other_layers_are_ignored(store):
    extra = [_layer(store, "application/vnd.ollama.image.template", b"{{ .Prompt }}"),
             _layer(store, "application/vnd.ollama.image.projector", b"GGUF projector"),
             _layer(store, "application/vnd.ollama.image.adapter", b"GGUF adapter"),
             _layer(store, "application/vnd.ollama.image.params", b'{"stop": ["<|eot|>"]}'),
             _layer(store, "application/vnd.ollama.image.license", b"licence text")]
    _, digest = _model(store, f"{HOST}/{NAMESPACE}/llava", "7b", b"GGUF language model", extra)
    found = resolve_ollama("ollama:llava:7b")
    assert found.digest == digest
    assert found.blob.read_bytes() == b"GGUF language model"


def test_dash_digest_as_ollama_accepts_it(store):
    digest = _blob(store, b"GGUF dash")
    _layers_manifest(store, [{"mediaType": MODEL_MEDIA_TYPE, "digest": digest.replace(":", "-")}])
    found = resolve_ollama("ollama:m")
    assert (found.digest, found.blob) == (digest, _blob_path(store, digest))


def test_default_store_is_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    default = tmp_path / ".ollama" / "models"
    _, digest = _model(default, f"{HOST}/{NAMESPACE}/qwen3", "0.6b")
    assert ollama.ollama_store() == default
    found = resolve_ollama("ollama:qwen3:0.6b")
    assert (found.store, found.blob) == (default, _blob_path(default, digest))


@pytest.mark.parametrize("value", ["  {}  ", '"{}"', "'{}'"])
def test_store_variable_read_as_ollama_reads_it(tmp_path, monkeypatch, value):
    monkeypatch.setenv("OLLAMA_MODELS", value.format(tmp_path / "s"))
    assert ollama.ollama_store() == tmp_path / "s"


def test_empty_store_variable_means_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", " ")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ollama.ollama_store() == tmp_path / ".ollama" / "models"


def test_source_prefix():
    assert is_ollama_source("ollama:llama3.2") and is_ollama_source("ollama:")
    assert not is_ollama_source("llama3.2") and not is_ollama_source("Ollama:x") and not is_ollama_source(None)
    assert ollama.parse_ollama_name("ollama:a/b/c:d") == ("a", "b", "c", "d")


# --- errors: names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, field, found", [
    ("ollama:", "name", "nothing"),
    ("ollama::tag", "model", "nothing"),
    ("ollama:llama3.2:", "tag", "nothing"),
    ("ollama:../x", "namespace", "'..'"),
    ("ollama:..", "model", "'..'"),
    ("ollama:a/../b", "namespace", "'..'"),
    ("ollama:x/y/..", "model", "'..'"),
    ("ollama:m:..", "tag", "'..'"),
    ("ollama:/etc/passwd", "host", "nothing"),
    ("ollama:m:../../x", "namespace", "'..'"),  # host 'm:..' passes: a port's colon, then dots
    ("ollama:a\\b", "model", "'a\\\\b'"),
    ("ollama:.hidden", "model", "'.hidden'"),
    ("ollama:-x", "model", "'-x'"),
    ("ollama:my.org/model", "namespace", "'my.org'"),
    ("ollama:model@sha256-00", "model", "'model@sha256-00'"),
    ("ollama:x" + "y" * 80, "model", "'x" + "y" * 80 + "'"),
    ("ollama:m:t\n", "tag", "'t\\n'"),
])
def test_malformed_names(store, text, field, found):
    message = _error(text)
    assert message.startswith(f"{one_line(text)}: {field}: ")
    assert message.endswith(f", found {found}")
    assert "expected" in message


def test_name_rules_in_the_message(store):
    assert _error("ollama:../x") == (
        "ollama:../x: namespace: expected a namespace of 1 to 80 ASCII letters, digits or _ -, the first a letter, "
        "digit or _ (ollama:[HOST/][NAMESPACE/]MODEL[:TAG]), found '..'")
    assert _error("ollama:") == ("ollama:: name: expected a model name after ollama: "
                                 "(ollama:[HOST/][NAMESPACE/]MODEL[:TAG], e.g. ollama:llama3.2:1b), found nothing")


def test_too_many_parts_and_not_a_source(store):
    assert _error("ollama:a/b/c/d:t") == ("ollama:a/b/c/d:t: name: expected at most three parts split by '/' "
                                          "(ollama:[HOST/][NAMESPACE/]MODEL[:TAG]), found 4 parts")
    assert _error("https://hf.co/a/b").startswith("'https://hf.co/a/b': expected an Ollama model source")


def test_name_checked_before_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "missing"))
    assert _error("ollama:../x").startswith("ollama:../x: namespace:")


# --- errors: the store and its manifests ------------------------------------------------------------


def test_no_store_from_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "missing"))
    message = _error("ollama:llama3.2")
    assert message.startswith(f"{tmp_path / 'missing'}: expected an Ollama model store")
    assert "OLLAMA_MODELS sets its path" in message
    assert message.endswith("found no such directory (the path OLLAMA_MODELS sets)")


def test_no_store_at_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    message = _error("ollama:llama3.2")
    assert message.startswith(f"{tmp_path / '.ollama' / 'models'}: expected an Ollama model store")
    assert message.endswith("found no such directory (the default, as OLLAMA_MODELS is not set)")


def test_store_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "f"))
    assert _error("ollama:x").endswith("found a file (the path OLLAMA_MODELS sets)")


def test_unknown_tag_lists_the_tags(store):
    for tag in ("latest", "1b", "3b-instruct-q4_K_M"):
        _model(store, f"{HOST}/{NAMESPACE}/llama3.2", tag)
    manifest = store / "manifests" / HOST / NAMESPACE / "llama3.2" / "70b"
    assert _error("ollama:llama3.2:70b") == (
        f"{manifest}: expected the manifest of llama3.2:70b (ollama pull llama3.2:70b writes it), "
        "found no such file; tags of llama3.2 in the store: 1b, 3b-instruct-q4_K_M, latest")


def test_unknown_model_lists_the_models(store):
    _model(store, f"{HOST}/{NAMESPACE}/llama3.2", "1b")
    _model(store, f"{HOST}/someone/tiny", "v1")
    _model(store, HF_NAME, "Q4_K_M")
    message = _error("ollama:qwen3")
    assert message.startswith(f"{store / 'manifests' / HOST / NAMESPACE / 'qwen3' / 'latest'}: expected the "
                              "manifest of qwen3:latest (ollama pull qwen3:latest writes it), found no such file; ")
    assert message.endswith(f"models in the store: {HF_NAME}:Q4_K_M, llama3.2:1b, someone/tiny:v1")


def test_long_model_list_is_cut(store):
    for i in range(20):
        _manifest(store, f"{HOST}/{NAMESPACE}/m{i:02d}", "latest", "{}")
    message = _error("ollama:other")
    assert message.endswith("models in the store: m00:latest, m01:latest, m02:latest, m03:latest, m04:latest, "
                            "m05:latest, m06:latest, m07:latest, ... (12 more)")


def test_empty_store(store):
    assert _error("ollama:llama3.2").endswith(f"found no such file; the store {store} holds no models")
    (store / "manifests" / HOST / NAMESPACE / "llama3.2").mkdir(parents=True)  # a model folder without tags
    assert _error("ollama:llama3.2").endswith(f"found no such file; the store {store} holds no models")


def test_manifest_not_json(store):
    path = _manifest(store, f"{HOST}/{NAMESPACE}/m", "latest", "{not json")
    assert _error("ollama:m").startswith(f"{path}: expected a model manifest in JSON, found malformed JSON at line 1")


def test_manifest_not_an_object(store):
    path = _manifest(store, f"{HOST}/{NAMESPACE}/m", "latest", "[1, 2]")
    assert _error("ollama:m") == f"{path}: expected a model manifest holding a JSON object, found list"


def test_manifest_is_a_directory(store):
    path = store / "manifests" / HOST / NAMESPACE / "m" / "latest"
    path.mkdir(parents=True)
    assert _error("ollama:m") == f"{path}: expected a model manifest, found a directory"


@pytest.mark.parametrize("doc, found", [
    ({"schemaVersion": 2}, "it missing"),
    ({"layers": []}, "an empty list"),
    ({"layers": {"mediaType": MODEL_MEDIA_TYPE}}, "dict"),
    ({"layers": None}, "NoneType"),
])
def test_manifest_without_layers(store, doc, found):
    path = _manifest(store, f"{HOST}/{NAMESPACE}/m", "latest", doc)
    assert _error("ollama:m") == f"{path}: layers: expected a non-empty list of layers, found {found}"


def test_layer_not_an_object(store):
    path = _layers_manifest(store, [_layer(store, MODEL_MEDIA_TYPE, b"GGUF"), "sha256:00"])
    assert _error("ollama:m") == f"{path}: layers[1]: expected a JSON object (mediaType, digest, size), found str"


def test_no_model_layer(store):
    layers = [_layer(store, "application/vnd.ollama.image.template", b"t"),
              _layer(store, "application/vnd.ollama.image.tensor; name=a; dtype=BF16; shape=2,2", b"a"),
              _layer(store, "application/vnd.ollama.image.tensor; name=b; dtype=BF16; shape=2,2", b"b"),
              {"digest": _blob(store, b"GGUF")}]
    path = _layers_manifest(store, layers)
    assert _error("ollama:m") == (
        f"{path}: layers: expected a layer of mediaType {MODEL_MEDIA_TYPE} (GGUF weights), found none; its layers' "
        "media types: None, application/vnd.ollama.image.template, application/vnd.ollama.image.tensor")


def test_two_model_layers(store):
    path = _layers_manifest(store, [_layer(store, MODEL_MEDIA_TYPE, b"GGUF a"),
                                    _layer(store, "application/vnd.ollama.image.license", b"l"),
                                    _layer(store, MODEL_MEDIA_TYPE, b"GGUF b")])
    assert _error("ollama:m") == (f"{path}: layers: expected one layer of mediaType {MODEL_MEDIA_TYPE}, "
                                  "found 2: layers[0], layers[2]")


HEX = "ab" * 32


@pytest.mark.parametrize("digest, found", [
    ("sha256:../../../../etc/passwd", "'sha256:../../../../etc/passwd'"),
    ("sha256:" + "../" * 21 + "x", repr("sha256:" + "../" * 21 + "x")),
    ("sha256:" + HEX[:-1], repr("sha256:" + HEX[:-1])),
    ("sha256:" + HEX + "0", repr("sha256:" + HEX + "0")),
    ("sha256:" + HEX + "\n", repr("sha256:" + HEX + "\n")),
    ("sha256:" + "g" * 64, repr("sha256:" + "g" * 64)),
    ("sha512:" + HEX, repr("sha512:" + HEX)),
    (HEX, repr(HEX)),
    ("/abs/sha256-" + HEX, repr("/abs/sha256-" + HEX)),
    (42, "42"),
    (None, "None"),
])
def test_bad_digest(store, digest, found):
    path = _layers_manifest(store, [{"mediaType": MODEL_MEDIA_TYPE, "digest": digest}])
    assert _error("ollama:m") == (f"{path}: layers[0].digest: expected sha256: followed by 64 hexadecimal digits, "
                                  f"found {found}")


def test_missing_digest(store):
    path = _layers_manifest(store, [{"mediaType": MODEL_MEDIA_TYPE}])
    assert _error("ollama:m").endswith(f"{path}: layers[0].digest: expected sha256: followed by 64 hexadecimal "
                                       "digits, found it missing")


# --- errors: the blob --------------------------------------------------------------------------------


def test_missing_blob(store):
    manifest, digest = _model(store, f"{HOST}/someone/tiny", "v1")
    blob = _blob_path(store, digest)
    blob.unlink()
    assert _error("ollama:someone/tiny:v1") == (
        f"{blob}: expected the blob of the model layer (layers[0]) of {manifest}, "
        "found no such file (ollama pull someone/tiny:v1 downloads it again)")


@pytest.mark.parametrize("data, found", [(b"PK\x03\x04 zip", "first bytes b'PK\\x03\\x04'"),
                                         (b"GGU", "first bytes b'GGU'"),
                                         (b"", "an empty file")])
def test_blob_not_gguf(store, data, found):
    _, digest = _model(store, f"{HOST}/{NAMESPACE}/m", "latest", data)
    assert _error("ollama:m") == (f"{_blob_path(store, digest)}: expected a GGUF file (starting with b'GGUF') "
                                  f"as the model layer of m:latest, found {found}")


def test_blob_is_a_directory(store):
    digest = _digest(b"dir")
    _blob_path(store, digest).mkdir(parents=True)
    _layers_manifest(store, [{"mediaType": MODEL_MEDIA_TYPE, "digest": digest}])
    assert _error("ollama:m") == f"{_blob_path(store, digest)}: expected a model blob (a regular file), found a directory"


# --- is_gguf_file --------------------------------------------------------------------------------------


def test_is_gguf_file_on_a_nameless_blob(tmp_path):
    _write_gguf(tmp_path / "w.gguf")
    blob = tmp_path / ("sha256-" + HEX)
    os.replace(tmp_path / "w.gguf", blob)
    assert is_gguf_file(blob) and is_gguf_file(str(blob)) and is_gguf_file(os.fsencode(blob))
    os.symlink(blob, tmp_path / "link")
    assert is_gguf_file(tmp_path / "link")


@pytest.mark.parametrize("data", [b"", b"GGU", b"GGUG....", b"ggUF....", b"\x00GGUF", b"PK\x03\x04"])
def test_is_gguf_file_refuses_other_bytes(tmp_path, data):
    (tmp_path / "f").write_bytes(data)
    assert not is_gguf_file(tmp_path / "f")
    (tmp_path / "g").write_bytes(b"GGUF" + data)
    assert is_gguf_file(tmp_path / "g")


def test_is_gguf_file_refuses_non_files(tmp_path):
    assert not is_gguf_file(tmp_path)  # a directory
    assert not is_gguf_file(tmp_path / "missing")
    assert not is_gguf_file(tmp_path / "missing" / "below")
    (tmp_path / "file").write_bytes(b"GGUF")
    assert not is_gguf_file(tmp_path / "file" / "below")
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    assert not is_gguf_file(tmp_path / "dangling")
    for value in (None, 0, 3, b"a\0b", "a\0b", ["GGUF"]):  # 0 and 3 would be file descriptors to os.stat
        assert is_gguf_file(value) is False


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_is_gguf_file_never_opens_a_fifo_or_device(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "fifo")  # opening it for reading would wait for a writer forever
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *args: opened.append(path) or real_open(path, *args))
    assert not is_gguf_file(tmp_path / "fifo")
    assert not is_gguf_file("/dev/null")
    assert opened == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_is_gguf_file_on_an_unreadable_file(tmp_path):
    (tmp_path / "f").write_bytes(b"GGUF")
    (tmp_path / "f").chmod(0)
    try:
        assert not is_gguf_file(tmp_path / "f")
    finally:
        (tmp_path / "f").chmod(0o600)


def test_is_gguf_file_reads_at_most_four_bytes(tmp_path, monkeypatch):
    (tmp_path / "big").write_bytes(b"GGUF" + bytes(1 << 16))
    asked = []
    real_read = os.read

    def read(fd, n):
        asked.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", read)
    assert is_gguf_file(tmp_path / "big")
    assert asked == [4]
