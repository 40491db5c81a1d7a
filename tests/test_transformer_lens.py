"""``qkalign.from_transformer_lens`` on a real ``HookedTransformer`` (TransformerLens <= 3), built offline.

Random weights from a small ``HookedTransformerConfig``: multi-head (LayerNorm) and grouped-query
(RMSNorm, rotary). Checked against ``from_weights`` of the blocks' own parameters, ``measure`` of the
same weights saved as a Llama folder, and dense float64 operators. Skipped when transformer_lens is
not installed or has no ``HookedTransformer`` (TransformerLens 4 removed it; its ``TransformerBridge``
is tested in test_in_memory.py).
"""

import numpy as np
import pytest
import torch

import qkalign
from qkalign.testing.dense import dense_truth
from qkalign.weights.measure import measure

pytest.importorskip("transformer_lens.HookedTransformer", reason="needs transformer_lens <= 3 (HookedTransformer)")
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402

# TransformerLens 3 warns on every HookedTransformer that it goes away in 4.0.
pytestmark = pytest.mark.filterwarnings("ignore:HookedTransformer is deprecated:DeprecationWarning")

ARRAYS = ("gram", "fro_sq", "sym_eigs", "eig_dirs")
TOPK = 4
SHAPE = dict(n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=50, act_fn="relu")
CONFIGS = {
    "multi-head": dict(normalization_type="LN"),
    "grouped-query": dict(normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=8,
                          n_key_value_heads=2),
}


def hooked_transformer(kind, seed):
    """A random HookedTransformer with random attention-input norm gains (and LayerNorm biases)."""
    model = HookedTransformer(HookedTransformerConfig(**SHAPE, **CONFIGS[kind], seed=seed))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            block.ln1.w.copy_(1 + 0.3 * torch.randn(SHAPE["d_model"], generator=generator))
            if hasattr(block.ln1, "b"):
                block.ln1.b.copy_(0.1 * torch.randn(SHAPE["d_model"], generator=generator))
    return model


def block_weights(model):
    """(L, H, d_model, d_head) W_Q and (L, H_kv, d_model, d_head) W_K read from each block's parameters:
    GroupedQueryAttention stores its kv heads as ``_W_K`` (its ``W_K`` repeats them per query head)."""
    w_q = torch.stack([block.attn.W_Q for block in model.blocks]).detach()
    w_k = torch.stack([getattr(block.attn, "_W_K", block.attn.W_K) for block in model.blocks]).detach()
    return w_q, w_k


def save_as_llama(model, folder, gains=None):
    """The model's W_Q, W_K (and attention-input norm gains) as a transformers Llama folder.

    A Hugging Face ``q_proj.weight`` holds ``W_Q[l, h]^T`` in rows ``h d:(h+1) d``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    w_q, w_k = block_weights(model)
    num_layers, num_heads, hidden, head_dim = w_q.shape
    config = LlamaConfig(vocab_size=SHAPE["d_vocab"], hidden_size=hidden, intermediate_size=16,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         num_key_value_heads=w_k.shape[1], head_dim=head_dim, max_position_embeddings=16)
    llama = LlamaForCausalLM(config)
    with torch.no_grad():
        for l, layer in enumerate(llama.model.layers):
            layer.self_attn.q_proj.weight.copy_(w_q[l].transpose(1, 2).reshape(-1, hidden))
            layer.self_attn.k_proj.weight.copy_(w_k[l].transpose(1, 2).reshape(-1, hidden))
            if gains is not None:
                layer.input_layernorm.weight.copy_(gains[l])
    llama.save_pretrained(folder)
    return folder


def assert_same(got, want):
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def assert_matches_dense(data, w_q, w_k):
    """float64 results within a few n eps64 of the dense float64 operators of the same (float32) weights."""
    w_q, w_k = (np.swapaxes(w.double().numpy(), -1, -2) for w in (w_q, w_k))  # -> (L, H, d_head, d_model)
    gram, fro_sq, sym_eigs, vecs = dense_truth(w_q, w_k, TOPK)
    tol = 8 * w_q.shape[-1] * np.finfo(np.float64).eps
    np.testing.assert_allclose(data.gram, gram, rtol=0, atol=tol * np.abs(gram).max())
    np.testing.assert_allclose(data.fro_sq, fro_sq, rtol=tol, atol=0)
    np.testing.assert_allclose(data.sym_eigs, sym_eigs, rtol=0, atol=tol * np.abs(sym_eigs).max())
    # Directions up to sign; an error E in S turns an eigenvector by about |E| / (gap to the nearest other
    # eigenvalue), the n - 2 d zero eigenvalues included.
    spectrum = np.concatenate([sym_eigs, np.zeros(sym_eigs.shape[:-1] + (1,))], axis=-1)
    gaps = np.abs(spectrum[..., :TOPK, None] - spectrum[..., None, :])
    gaps[..., np.arange(TOPK), np.arange(TOPK)] = np.inf
    angle = tol * np.abs(sym_eigs).max() / gaps.min(axis=-1)
    cosines = np.abs(np.einsum("lhkn,lhkn->lhk", data.eig_dirs, vecs))
    assert np.all(1 - cosines <= angle), (1 - cosines).max()


@pytest.mark.parametrize("kind", CONFIGS)
def test_hooked_transformer_equals_weights_measure_and_dense(tmp_path, kind):
    model = hooked_transformer(kind, seed=3)
    got = qkalign.from_transformer_lens(model, topk=TOPK, precision="float64", progress=False)
    w_q, w_k = block_weights(model)
    num_kv = model.cfg.n_key_value_heads or model.cfg.n_heads
    assert tuple(w_k.shape) == (2, num_kv, 32, 8)
    # The grouped kv heads are read, not the W_K repeated per query head ...
    assert got.extra["num_kv_heads"] == num_kv
    assert_same(got, qkalign.from_weights(w_q, w_k, topk=TOPK, precision="float64", progress=False))
    # ... which holds the same operators.
    assert tuple(model.W_K.shape) == (2, 4, 32, 8)
    assert_same(got, qkalign.from_weights(model.W_Q, model.W_K, topk=TOPK, precision="float64", progress=False))
    folder = save_as_llama(model, tmp_path)
    assert_same(got, measure(folder, topk=TOPK, precision="float64", progress=False))
    assert_matches_dense(got, w_q, w_k)
    assert got.extra["source"] == "qkalign.from_transformer_lens"
    assert got.extra["normalization_type"] == model.cfg.normalization_type
    assert ("relative position 0" in got.extra["rope"]) == (kind == "grouped-query")
    # float32 precision: the same stored values, float32 products.
    single = qkalign.from_transformer_lens(model, topk=TOPK, progress=False)
    assert_same(single, measure(folder, topk=TOPK, progress=False))


def test_fold_ln_on_layernorm_folds_and_centres():
    """from_pretrained's default processing on a LayerNorm model: fold_ln makes W <- (I - 1 1^T / n) diag(gamma) W
    along d_model for W_Q and W_K; center_writing_weights, center_unembed, fold_value_biases leave them."""
    model = hooked_transformer("multi-head", seed=4)
    gains = torch.stack([block.ln1.w.detach().double() for block in model.blocks])  # (L, n)
    raw_q, raw_k = (w.double() for w in block_weights(model))
    model.process_weights_()
    processed = qkalign.from_transformer_lens(model, topk=TOPK, precision="float64", progress=False)

    def folded_and_centred(w):
        w = w * gains[:, None, :, None]
        return w - w.mean(dim=2, keepdim=True)

    want = qkalign.from_weights(folded_and_centred(raw_q), folded_and_centred(raw_k), topk=TOPK,
                                precision="float64", progress=False)
    # TransformerLens folds and centres in float32: each factor is off by a few roundings.
    tol = 8 * np.finfo(np.float32).eps * np.abs(want.gram).max()
    np.testing.assert_allclose(processed.gram, want.gram, rtol=0, atol=tol)
    gains_only = qkalign.from_weights(raw_q * gains[:, None, :, None], raw_k * gains[:, None, :, None], topk=TOPK,
                                      precision="float64", progress=False)
    assert np.abs(gains_only.gram - want.gram).max() > 100 * tol  # the centring matters


def test_fold_ln_on_rmsnorm_equals_fold_norms(tmp_path):
    """fold_ln on an RMSNorm model folds the gains only: ``measure --fold-norms`` of the raw weights."""
    model = hooked_transformer("grouped-query", seed=5)
    gains = torch.stack([block.ln1.w.detach() for block in model.blocks])
    folder = save_as_llama(model, tmp_path, gains)
    raw = qkalign.from_transformer_lens(model, topk=TOPK, precision="float64", progress=False)
    model.process_weights_(fold_ln=True, center_writing_weights=False, center_unembed=False)
    folded = qkalign.from_transformer_lens(model, topk=TOPK, precision="float64", progress=False)
    assert folded.extra["num_kv_heads"] == 2
    want = measure(folder, topk=TOPK, fold_norms=True, precision="float64", progress=False)
    tol = 8 * np.finfo(np.float32).eps * np.abs(want.gram).max()
    np.testing.assert_allclose(folded.gram, want.gram, rtol=0, atol=tol)
    assert np.abs(raw.gram - want.gram).max() > 100 * tol  # the gains matter
