"""Models in memory (arrays, TransformerLens, transformers state dicts) against ``measure`` of the same weights.

The in-memory paths feed the same stored values through the same computation, so the
arrays are compared for equality, not to a tolerance.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import qkalign
from qkalign.errors import InputError
from qkalign.testing.model_folders import write_model
from qkalign.testing.quantized_folders import write_fp8_model, write_integer_quantized
from qkalign.weights.measure import measure

ARRAYS = ("gram", "fro_sq", "sym_eigs", "eig_dirs")


def assert_same(got, want):
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def tl_convention(w):
    """(L, H, d, n) head blocks as stored in a folder -> TransformerLens' (L, H, d_model, d_head)."""
    return np.swapaxes(w, -1, -2)


@pytest.fixture(scope="module")
def gqa_model(tmp_path_factory):
    """A grouped-query Llama-style folder (H = 4 query heads on H_kv = 2), head_dim != hidden / H."""
    return write_model(tmp_path_factory.mktemp("gqa"), "qwen3", seed=11)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["numpy", "torch", "torch-bfloat16"])
def test_from_weights_equals_measure(tmp_path, gqa_model, kind, precision):
    if kind == "torch-bfloat16":
        model = write_model(tmp_path, "llama", dtype=torch.bfloat16, seed=12)
        w_q, w_k = (torch.from_numpy(tl_convention(w)).to(torch.bfloat16) for w in (model.w_q, model.w_k))
    else:
        model = gqa_model
        w_q, w_k = (tl_convention(w).astype(np.float32) for w in (model.w_q, model.w_k))  # views, not contiguous
        if kind == "torch":
            w_q, w_k = torch.from_numpy(w_q).requires_grad_(), torch.from_numpy(w_k)
    got = qkalign.from_weights(w_q, w_k, topk=5, precision=precision, progress=False)
    assert_same(got, measure(model.folder, topk=5, precision=precision, progress=False))
    assert got.extra["num_kv_heads"] == model.w_k.shape[1] and got.extra["source"] == "qkalign.from_weights"


@pytest.mark.parametrize("w_q_shape, w_k_shape, words", [
    ((2, 4, 24, 8), (2, 3, 24, 8), ["W_K", "dividing H = 4", "(2, 3, 24, 8)"]),
    ((2, 4, 24, 8), (2, 2, 24, 6), ["W_K", "shape (2, H_kv, 24, 8)"]),
    ((2, 4, 24, 8), (2, 2, 24), ["W_K", "(layers, heads, d_model, d_head)", "(2, 2, 24)"]),
])
def test_from_weights_bad_shapes(w_q_shape, w_k_shape, words):
    with pytest.raises(InputError) as err:
        qkalign.from_weights(np.ones(w_q_shape), np.ones(w_k_shape), topk=2, progress=False)
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_from_weights_bad_values():
    w_q, w_k = np.ones((2, 4, 24, 8)), np.ones((2, 2, 24, 8))
    w_q[1, 3, 5, 2] = np.nan
    with pytest.raises(InputError, match=r"^from_weights: W_Q\[1, 3\]: expected finite weights"):
        qkalign.from_weights(w_q, w_k, topk=2, progress=False)
    with pytest.raises(InputError, match=r"W_Q\[0, 0\]: expected dtype .*found int64"):
        qkalign.from_weights(np.ones((2, 4, 24, 8), dtype=np.int64), w_k, topk=2, progress=False)
    with pytest.raises(InputError, match="--topk|topk"):
        qkalign.from_weights(np.ones((2, 4, 24, 8)), w_k, topk=17, progress=False)


class StandIn:
    """An object with TransformerLens' attributes: ``W_Q``, ``W_K`` (repeated per query head), ``cfg``,
    and the grouped kv heads as ``_W_K`` (or per block) when asked."""

    def __init__(self, w_q, w_k, grouped=None):
        num_layers, num_heads, hidden, head_dim = w_q.shape
        num_kv = w_k.shape[1]
        self.cfg = SimpleNamespace(n_layers=num_layers, n_heads=num_heads, d_model=hidden, d_head=head_dim,
                                   n_key_value_heads=num_kv if num_kv != num_heads else None,
                                   positional_embedding_type="rotary", normalization_type="RMS")
        self.W_Q = torch.nn.Parameter(torch.from_numpy(w_q))
        self.W_K = torch.repeat_interleave(torch.from_numpy(w_k), num_heads // num_kv, dim=1)
        if grouped == "model":
            self._W_K = torch.nn.Parameter(torch.from_numpy(w_k))
        elif grouped == "blocks":
            self.blocks = [SimpleNamespace(attn=SimpleNamespace(_W_K=torch.from_numpy(w_k[l])))
                           for l in range(num_layers)]


@pytest.mark.parametrize("grouped, num_kv_read", [("model", 2), ("blocks", 2), (None, 4)])
def test_from_transformer_lens_stand_in(gqa_model, grouped, num_kv_read):
    w_q, w_k = (tl_convention(w).astype(np.float32) for w in (gqa_model.w_q, gqa_model.w_k))
    got = qkalign.from_transformer_lens(StandIn(w_q, w_k, grouped), topk=5, precision="float64", progress=False)
    # W_K repeated per query head holds the same operators: the same numbers, H kv heads read.
    assert_same(got, measure(gqa_model.folder, topk=5, precision="float64", progress=False))
    assert got.extra["num_kv_heads"] == num_kv_read
    assert got.extra["source"] == "qkalign.from_transformer_lens" and "relative position 0" in got.extra["rope"]


def test_from_transformer_lens_refuses_other_objects():
    with pytest.raises(InputError, match="a TransformerLens model"):
        qkalign.from_transformer_lens(object())
    model = StandIn(np.ones((2, 4, 24, 8), np.float32), np.ones((2, 2, 24, 8), np.float32))
    model.cfg.d_head = 6
    with pytest.raises(InputError, match=r"model.W_Q: expected shape .* \(2, 4, 24, 6\) from model.cfg"):
        qkalign.from_transformer_lens(model)


@pytest.mark.parametrize("model_type, fold_norms", [("qwen3", True), ("gpt2", True), ("phi3", False),
                                                    ("gpt_neox", False)])
def test_from_state_dict_equals_measure(tmp_path, model_type, fold_norms):
    model = write_model(tmp_path, model_type, seed=13)
    state_dict = load_file(str(model.folder / "model.safetensors"))
    config = json.loads((model.folder / "config.json").read_text())
    got = qkalign.from_state_dict(state_dict, config, topk=4, fold_norms=fold_norms, precision="float64",
                                  progress=False)
    want = measure(model.folder, topk=4, fold_norms=fold_norms, precision="float64", progress=False)
    assert_same(got, want)
    where = ("source", "model_dir", "model_source", "source_kind", "source_format", "revision", "commit_hash",
             "read_from")
    assert got.extra["source_kind"] == "memory" and want.extra["source_kind"] == "local"
    assert {k: v for k, v in got.extra.items() if k not in where} == \
        {k: v for k, v in want.extra.items() if k not in where}
    # numpy arrays read the same
    as_numpy = {name: t.numpy() for name, t in state_dict.items()}
    assert_same(qkalign.from_state_dict(as_numpy, config, topk=4, fold_norms=fold_norms, precision="float64",
                                        progress=False), want)


def test_from_state_dict_fp8_and_refusals(tmp_path):
    fp8 = write_fp8_model(tmp_path / "fp8", "qwen3", shape=(2, 4, 2, 8, 40), block=(16, 16))
    state_dict = load_file(str(fp8.folder / "model.safetensors"))
    config = json.loads((fp8.folder / "config.json").read_text())
    assert_same(qkalign.from_state_dict(state_dict, config, topk=3, progress=False),
                measure(fp8.twin32, topk=3, progress=False))
    gptq = write_integer_quantized(tmp_path / "gptq", "gptq", with_config=False)
    with pytest.raises(InputError, match=r"^state_dict: tensor names: expected an unquantised .* found GPTQ"):
        qkalign.from_state_dict(load_file(str(gptq / "model.safetensors")),
                                json.loads((gptq / "config.json").read_text()))
    with pytest.raises(InputError, match="^config: expected a dict or a transformers PretrainedConfig, found list"):
        qkalign.from_state_dict(state_dict, [])
    with pytest.raises(InputError, match="^state_dict: expected a mapping of tensor names to tensors"):
        qkalign.from_state_dict([], config)
    del state_dict["model.layers.1.self_attn.k_proj.weight"]
    with pytest.raises(InputError, match=r"^state_dict: model.layers.1.self_attn.k_proj.weight: expected this tensor"):
        qkalign.from_state_dict(state_dict, config)


def tiny_llama(num_layers=2, seed=0):
    """A random transformers LlamaForCausalLM (grouped-query, random input-norm gains)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=24, intermediate_size=32,
                                      num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                                      head_dim=8, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight.copy_(1 + 0.3 * torch.randn(24))
    return model


def test_from_state_dict_of_a_transformers_model(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path)
    for fold_norms in (False, True):
        got = qkalign.from_state_dict(model.state_dict(), model.config, topk=4, fold_norms=fold_norms,
                                      precision="float64", progress=False)
        assert_same(got, measure(tmp_path, topk=4, fold_norms=fold_norms, precision="float64", progress=False))


# --- a real TransformerLens model (skipped when transformer_lens is not installed) ---------------------------


@pytest.fixture(scope="module")
def bridge_tokenizer(tmp_path_factory):
    """A word-level tokenizer saved to disk: TransformerBridge reloads its tokenizer by path (no network)."""
    pytest.importorskip("transformer_lens")
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tokenizer")
    vocab = {f"t{i}": i for i in range(64)}
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="t0")), unk_token="t0",
                            bos_token="t1", eos_token="t2", pad_token="t3").save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def boot_bridge(hf_model, name, tokenizer):
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tokenizer)


@pytest.mark.filterwarnings("ignore")
def test_transformer_bridge_llama(tmp_path, bridge_tokenizer):
    """Raw weights equal measure; compatibility mode's fold_ln (RMSNorm) equals --fold-norms."""
    model = tiny_llama(seed=1)
    model.save_pretrained(tmp_path)
    bridge = boot_bridge(model, "meta-llama/Llama-3.2-1B", bridge_tokenizer)
    got = qkalign.from_transformer_lens(bridge, topk=4, precision="float64", progress=False)
    assert_same(got, measure(tmp_path, topk=4, precision="float64", progress=False))
    assert got.extra["num_kv_heads"] == 2
    bridge.enable_compatibility_mode(disable_warnings=True)
    folded = qkalign.from_transformer_lens(bridge, topk=4, precision="float64", progress=False)
    want = measure(tmp_path, topk=4, fold_norms=True, precision="float64", progress=False)
    # TransformerLens multiplies the gains in float32: each factor is off by one rounding.
    tol = 8 * np.finfo(np.float32).eps
    np.testing.assert_allclose(folded.gram, want.gram, rtol=0, atol=tol * np.abs(want.gram).max())
    assert np.abs(got.gram - want.gram).max() > 100 * tol * np.abs(want.gram).max()  # the gains matter


@pytest.mark.filterwarnings("ignore")
def test_transformer_bridge_gpt2_processing(tmp_path, bridge_tokenizer):
    """fold_ln on a LayerNorm model centres the folded weights along d_model; the factored-matrix refactor
    keeps the operators (gram, spectrum, directions) but not fro_sq."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(2)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=24, n_layer=2, n_head=4)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for block in model.transformer.h:
            block.ln_1.weight.copy_(1 + 0.3 * torch.randn(24))
            block.ln_1.bias.copy_(0.1 * torch.randn(24))
    model.save_pretrained(tmp_path)
    gains = torch.stack([block.ln_1.weight.detach().double() for block in model.transformer.h])  # (L, n)
    bridge = boot_bridge(model, "gpt2", bridge_tokenizer)
    raw_q, raw_k = bridge.W_Q.detach().double(), bridge.W_K.detach().double()
    bridge.enable_compatibility_mode(disable_warnings=True)
    processed = qkalign.from_transformer_lens(bridge, topk=4, precision="float64", progress=False)

    def folded_and_centred(w):  # (I - 1 1^T / n) diag(gamma) W in TransformerLens' (d_model, d_head) blocks
        w = w * gains[:, None, :, None]
        return w - w.mean(dim=2, keepdim=True)

    want = qkalign.from_weights(folded_and_centred(raw_q), folded_and_centred(raw_k), topk=4, precision="float64",
                                progress=False)
    tol = 8 * np.finfo(np.float32).eps * np.abs(want.gram).max()
    np.testing.assert_allclose(processed.gram, want.gram, rtol=0, atol=tol)
    gains_only = measure(tmp_path, topk=4, fold_norms=True, precision="float64", progress=False)
    assert np.abs(gains_only.gram - want.gram).max() > 100 * tol  # the centring matters

    refactored_model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path)
    refactored = boot_bridge(refactored_model, "gpt2", bridge_tokenizer)
    refactored.enable_compatibility_mode(disable_warnings=True, refactor_factored_attn_matrices=True)
    assert (refactored.W_Q - bridge.W_Q).abs().max() > 1e-2  # the factors change ...
    again = qkalign.from_transformer_lens(refactored, topk=4, precision="float64", progress=False)
    # ... the operators do not (up to the float32 SVD of the (n + 1)-row factors), fro_sq = ||K Q^T||^2 does.
    svd_tol = 8 * (config.n_embd + 1) * np.finfo(np.float32).eps
    np.testing.assert_allclose(again.gram, processed.gram, rtol=0, atol=svd_tol * np.abs(processed.gram).max())
    np.testing.assert_allclose(again.sym_eigs, processed.sym_eigs, rtol=0,
                               atol=svd_tol * np.abs(processed.sym_eigs).max())
    assert np.abs(np.einsum("lhkn,lhkn->lhk", again.eig_dirs, processed.eig_dirs)).min() > 1 - svd_tol
    assert np.abs(again.fro_sq - processed.fro_sq).max() > 1e-2 * processed.fro_sq.max()
