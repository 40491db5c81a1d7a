"""qkalign.testing.gguf_files against the folders it converts, gguf's reader and transformers' GGUF loader.

Tiny random transformers models (2 layers, hidden 64, 4 heads, 2 key-value heads where the family has
grouped-query attention, head_dim 16, or 24 where the config takes an explicit one) are saved, converted,
and read back with ``gguf.GGUFReader``: metadata values, the query/key rows in Hugging Face order again
(through :func:`converter_permutation` where the converter permutes), norm gains, quantised values.
"""

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gguf import GGMLQuantizationType as QT  # noqa: E402

from qkalign.testing.gguf_files import (  # noqa: E402
    CONFIGS,
    GGUF_ARCH,
    PERMUTED,
    build_model,
    converter_permutation,
    quantize_q4_k,
    quantize_q6_k,
    write_gguf_from_folder,
)
from qkalign.testing.model_folders import ALL_MODEL_TYPES, write_model  # noqa: E402

HEAD_DIM = {mt: CONFIGS[mt].get("head_dim", 16) for mt in CONFIGS}
COMMON = {"block_count": 2, "context_length": 128, "embedding_length": 64, "attention.head_count": 4}
# Per model type: metadata values the converter writes (under the architecture's prefix) and keys it does not write.
EXPECTED = {
    "llama": ({"feed_forward_length": 128, "attention.head_count_kv": 2, "attention.key_length": 16,
               "rope.dimension_count": 16, "rope.freq_base": 1e4, "attention.layer_norm_rms_epsilon": 1e-6,
               "vocab_size": 128}, ["rope.scaling.type"]),
    "mistral": ({"attention.head_count_kv": 2, "attention.key_length": 24, "attention.value_length": 24,
                 "rope.dimension_count": 24, "rope.scaling.type": "linear", "rope.scaling.factor": 2.0}, []),
    "qwen2": ({"attention.head_count_kv": 2, "rope.freq_base": 1e6, "rope.scaling.type": "yarn",
               "rope.scaling.factor": 4.0, "rope.scaling.original_context_length": 32},
              ["attention.key_length", "rope.dimension_count"]),
    "qwen3": ({"attention.head_count_kv": 2, "attention.key_length": 24, "rope.freq_base": 1e4},
              ["rope.dimension_count"]),
    "gemma": ({"attention.head_count_kv": 2, "attention.key_length": 24, "attention.layer_norm_rms_epsilon": 1e-6},
              ["rope.freq_base", "rope.dimension_count"]),
    "gemma2": ({"attention.key_length": 24, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                "attention.sliding_window": 32}, ["rope.freq_base", "rope.dimension_count"]),
    "gemma3_text": ({"attention.head_count_kv": 2, "attention.key_length": 24, "rope.freq_base": 1e6,
                "attention.sliding_window": 32}, ["rope.dimension_count"]),
    "phi3": ({"attention.head_count_kv": 2, "rope.dimension_count": 12, "rope.freq_base": 1e4,
              "rope.scaling.original_context_length": 128, "attention.sliding_window": 0},
             ["attention.key_length"]),
    "gpt2": ({"feed_forward_length": 256, "attention.layer_norm_epsilon": 1e-5},
             ["attention.head_count_kv", "attention.key_length", "rope.dimension_count"]),
    "gpt_neox": ({"rope.dimension_count": 4, "use_parallel_residual": True, "attention.layer_norm_epsilon": 1e-5},
                ["attention.head_count_kv", "rope.freq_base"]),
    "bert": ({"attention.causal": False, "attention.layer_norm_epsilon": 1e-12}, ["attention.head_count_kv"]),
    "olmo": ({"attention.head_count_kv": 2, "attention.layer_norm_epsilon": 1e-5, "attention.clamp_kqv": 8.0},
             ["attention.layer_norm_rms_epsilon", "rope.dimension_count", "attention.key_length"]),
    "olmo2": ({"attention.head_count_kv": 2, "attention.layer_norm_rms_epsilon": 1e-5},
              ["rope.dimension_count", "attention.key_length"]),
    "granite": ({"attention.head_count_kv": 2, "rope.dimension_count": 16, "attention.scale": 0.125,
                 "embedding_scale": 12.0, "residual_scale": 0.25, "logit_scale": 8.0}, ["attention.key_length"]),
}
# transformers' GGUF loader (modeling_gguf_pytorch_utils): the architectures it loads.
LOADER_SKIPS = {
    "gemma": "transformers' GGUF loader has no 'gemma' architecture (GGUF_CONFIG_MAPPING: gemma2, gemma3 only)",
    "gpt_neox": "transformers' GGUF loader has no 'gptneox' architecture",
    "bert": "transformers' GGUF loader has no 'bert' architecture",
    "olmo": "transformers' GGUF loader has no 'olmo' architecture",
    "olmo2": "transformers' GGUF loader has no 'olmo2' architecture",
    "granite": "transformers' GGUF loader has no 'granite' architecture",
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """model_type -> its transformers ``model``, ``folder``, folder ``tensors``, F32 GGUF ``path``, the GGUF's
    ``fields`` (metadata) and ``gtensors`` (by name)."""
    out = {}
    for model_type in CONFIGS:
        folder = tmp_path_factory.mktemp(model_type, numbered=False)
        model, tensors = build_model(model_type, folder)
        (path,) = write_gguf_from_folder(folder, folder / "model.gguf")
        fields, gtensors = read(path)
        out[model_type] = SimpleNamespace(model=model, folder=folder, tensors=tensors, path=path, fields=fields,
                                          gtensors=gtensors)
    return out


def read(path):
    """(metadata {key: value}, tensors {name: gguf ReaderTensor}) of one GGUF file."""
    reader = gguf.GGUFReader(path)
    fields = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    return fields, {t.name: t for t in reader.tensors}


def values(t):
    """A tensor's float32 values, (rows, columns) as the Hugging Face module stores them."""
    return gguf.quants.dequantize(t.data, t.tensor_type)


def unpermute(rows, head_dim):
    """Undo the converter's per-head row permutation of (heads * head_dim, ...) ``rows``."""
    p = converter_permutation(head_dim)
    heads = rows.reshape(-1, head_dim, *rows.shape[1:])
    out = np.empty_like(heads)
    out[:, p] = heads  # GGUF row r of a head holds HF row p[r]
    return out.reshape(rows.shape)


def hf_query_key(model_type, tensors, layer):
    """{"q": ..., "k": ...} weights (and "q.bias", "k.bias" where the model has them) in HF row order."""
    n, d = 64, HEAD_DIM[model_type]
    if model_type == "gpt2":  # Conv1D (in, 3n): y = x W + b, columns [Q | K | V]
        w, b = tensors[f"transformer.h.{layer}.attn.c_attn.weight"], tensors[f"transformer.h.{layer}.attn.c_attn.bias"]
        return {"q": w[:, :n].T, "k": w[:, n:2 * n].T, "q.bias": b[:n], "k.bias": b[n:2 * n]}
    if model_type == "gpt_neox":  # per head [q_h; k_h; v_h]
        base = f"gpt_neox.layers.{layer}.attention.query_key_value."
        w, b = tensors[base + "weight"].reshape(4, 3, d, n), tensors[base + "bias"].reshape(4, 3, d)
        return {"q": w[:, 0].reshape(-1, n), "k": w[:, 1].reshape(-1, n), "q.bias": b[:, 0].ravel(),
                "k.bias": b[:, 1].ravel()}
    if model_type == "phi3":  # rows [Q; K; V]
        w = tensors[f"model.layers.{layer}.self_attn.qkv_proj.weight"]
        return {"q": w[:4 * d], "k": w[4 * d:6 * d]}
    if model_type == "bert":
        base = f"encoder.layer.{layer}.attention.self."
        return {"q": tensors[base + "query.weight"], "k": tensors[base + "key.weight"],
                "q.bias": tensors[base + "query.bias"], "k.bias": tensors[base + "key.bias"]}
    base = f"model.layers.{layer}.self_attn."
    out = {"q": tensors[base + "q_proj.weight"], "k": tensors[base + "k_proj.weight"]}
    for kind in ("q", "k"):
        if base + f"{kind}_proj.bias" in tensors:
            out[f"{kind}.bias"] = tensors[base + f"{kind}_proj.bias"]
    return out


def gguf_query_key(model_type, gtensors, layer):
    """The same from the GGUF tensors, fused QKV split by the GGUF layout [Q; K; V], rows as stored."""
    blk, n, d = f"blk.{layer}.", 64, HEAD_DIM[model_type]
    if f"{blk}attn_qkv.weight" in gtensors:
        q_rows, k_rows = 4 * d, (2 if model_type == "phi3" else 4) * d
        w = values(gtensors[f"{blk}attn_qkv.weight"])
        out = {"q": w[:q_rows], "k": w[q_rows:q_rows + k_rows]}
        if f"{blk}attn_qkv.bias" in gtensors:
            b = values(gtensors[f"{blk}attn_qkv.bias"])
            out.update({"q.bias": b[:q_rows], "k.bias": b[q_rows:q_rows + k_rows]})
        assert w.shape == (q_rows + 2 * k_rows, n)
        return out
    out = {"q": values(gtensors[f"{blk}attn_q.weight"]), "k": values(gtensors[f"{blk}attn_k.weight"])}
    for kind in ("q", "k"):
        if f"{blk}attn_{kind}.bias" in gtensors:
            out[f"{kind}.bias"] = values(gtensors[f"{blk}attn_{kind}.bias"])
    return out


@pytest.mark.parametrize("model_type", CONFIGS)
def test_metadata(converted, model_type):
    fields, arch = converted[model_type].fields, GGUF_ARCH[model_type]
    want, absent = EXPECTED[model_type]
    assert fields["general.architecture"] == arch
    assert fields["general.quantization_version"] == 2
    for key, value in {**COMMON, **want}.items():
        got = fields[f"{arch}.{key}"]
        assert got == (pytest.approx(value, rel=1e-6) if isinstance(value, float) else value), key
    for key in absent:
        assert f"{arch}.{key}" not in fields, key
    if model_type == "gpt_neox":  # GPTNeoXModel.set_gguf_parameters writes no file type
        assert "general.file_type" not in fields
    else:
        assert fields["general.file_type"] == gguf.LlamaFileType.ALL_F32


@pytest.mark.parametrize("model_type", CONFIGS)
def test_query_key_rows(converted, model_type):
    """F32: the GGUF Q/K rows (un-permuted for the llama family) are the folder's, bit for bit."""
    tensors, gtensors, d = converted[model_type].tensors, converted[model_type].gtensors, HEAD_DIM[model_type]
    for layer in range(2):
        want, got = hf_query_key(model_type, tensors, layer), gguf_query_key(model_type, gtensors, layer)
        assert sorted(got) == sorted(want)
        for key, rows in got.items():
            assert rows.dtype == np.float32
            if model_type in PERMUTED:
                assert not np.array_equal(rows, want[key]), f"{key}: the converter permutes these rows"
                rows = unpermute(rows, d)
            np.testing.assert_array_equal(rows, want[key], err_msg=f"layer {layer} {key}")


@pytest.mark.parametrize("model_type", CONFIGS)
def test_norm_gains(converted, model_type):
    """Every norm gain as stored: Gemma's 1 + w, the others w (attention input norms and QK-norms included)."""
    tensors, gtensors = converted[model_type].tensors, converted[model_type].gtensors
    pairs = {
        "bert": {"embeddings.LayerNorm.weight": "token_embd_norm.weight",
                 "encoder.layer.0.output.LayerNorm.weight": "blk.0.layer_output_norm.weight"},
        "gpt2": {"transformer.h.1.ln_1.weight": "blk.1.attn_norm.weight", "transformer.h.1.ln_1.bias":
                 "blk.1.attn_norm.bias"},
        "gpt_neox": {"gpt_neox.layers.1.input_layernorm.weight": "blk.1.attn_norm.weight"},
    }.get(model_type, {f"model.layers.1.{hf}.weight": f"blk.1.{gg}.weight" for hf, gg in (
        ("input_layernorm", "attn_norm"), ("self_attn.q_norm", "attn_q_norm"), ("self_attn.k_norm", "attn_k_norm"))})
    pairs = {hf: gg for hf, gg in pairs.items() if hf in tensors}
    # OLMo has parameter-free norms, OLMo 2 no input norm (QK-norms only), Qwen3 and Gemma 3 both.
    assert len(pairs) == {"olmo": 0, "olmo2": 2, "qwen3": 3, "gemma3_text": 3, "bert": 2, "gpt2": 2}.get(model_type, 1)
    for hf, gg in pairs.items():
        t = gtensors[gg]
        assert t.tensor_type == QT.F32
        want = tensors[hf] + np.float32(1) if model_type in ("gemma", "gemma2", "gemma3_text") else tensors[hf]
        np.testing.assert_array_equal(values(t), want, err_msg=gg)


def test_llama3_rope_freqs(converted):
    """``rope_freqs``: the factors by which llama.cpp divides the RoPE frequencies, against transformers' own."""
    factors = values(converted["llama"].gtensors["rope_freqs.weight"])
    assert factors.shape == (8,) and factors[0] == 1 and factors[-1] == 8
    scaled, _ = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["llama3"](converted["llama"].model.config, "cpu")
    plain = 1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16)
    np.testing.assert_allclose(plain / factors, scaled.numpy(), rtol=1e-5)


@pytest.mark.parametrize("model_type", CONFIGS)
def test_transformers_loader(converted, model_type):
    """Independent: transformers' GGUF loader undoes the conversion and gives back the folder's tensors."""
    if model_type in LOADER_SKIPS:
        pytest.skip(LOADER_SKIPS[model_type])
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    model, tensors = converted[model_type].model, converted[model_type].tensors
    if model_type == "mistral":
        # The loader maps a model to gguf-py by its model_type and gguf-py has no "mistral" (llama.cpp writes
        # Mistral as "llama"): load it into the Llama model of the same shape, whose tensor names are the same.
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
            k: v for k, v in CONFIGS["mistral"].items() if k != "rope_parameters"}))
    parsed = load_gguf_checkpoint(str(converted[model_type].path), return_tensors=True, model_to_load=model)
    loaded = {name: t.numpy() for name, t in parsed["tensors"].items()}
    attention = [k for k in tensors if re.search(r"(q_proj|k_proj|qkv_proj|c_attn)\.(weight|bias)$", k)]
    assert len(attention) >= 2  # Phi-3: one fused qkv_proj per layer
    for name in attention:
        np.testing.assert_array_equal(loaded[name], tensors[name], err_msg=name)
    norms = [k for k in tensors if re.search(r"(norm|ln_1)\.weight$", k)]
    assert norms
    for name in norms:  # Gemma's (1 + w) - 1 in float32: w to rounding
        np.testing.assert_allclose(loaded[name], tensors[name], rtol=0, atol=4e-7, err_msg=name)
    assert parsed["config"]["num_attention_heads" if model_type != "gpt2" else "n_head"] == 4


QUANT_LEVELS = {"Q8_0": 127, "Q4_0": 15, "Q4_1": 15, "Q5_0": 31, "Q5_1": 31, "Q4_K": 15, "Q6_K": 63}


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory):
    """A Llama folder with 256-long rows (hidden 256), so that every type, the K-quants too, applies."""
    folder = tmp_path_factory.mktemp("wide")
    build_model("llama", folder, hidden_size=256, head_dim=64, intermediate_size=256)
    (path,) = write_gguf_from_folder(folder, folder / "f32.gguf")
    return folder, read(path)[1]


@pytest.mark.parametrize("qtype", ["F16", "BF16", *QUANT_LEVELS])
def test_quantized_values(wide_llama, tmp_path, qtype):
    """2-D weights stored as ``qtype``, within the format's step of the F32 file; 1-D tensors stay F32."""
    folder, exact = wide_llama
    (path,) = write_gguf_from_folder(folder, tmp_path / "q.gguf", qtype=qtype)
    fields, gtensors = read(path)
    assert fields["general.file_type"] == gguf.LlamaFileType[{"Q4_K": "MOSTLY_Q4_K_M"}.get(qtype, f"MOSTLY_{qtype}")]
    for name in ("blk.0.attn_q.weight", "blk.1.attn_k.weight", "token_embd.weight", "blk.0.ffn_down.weight"):
        t, x = gtensors[name], values(exact[name])
        assert t.tensor_type == QT[qtype], name
        err = np.abs(values(t) - x)
        assert err.max() > 0, f"{name}: {qtype} stored the F32 values exactly"
        if qtype in ("F16", "BF16"):
            assert np.all(err <= np.abs(x) * 2.0 ** (-11 if qtype == "F16" else -8) + 2.0 ** -25), name
            continue
        block = 256 if qtype.endswith("_K") else 32
        amax = np.abs(x).reshape(-1, block).max(axis=1, keepdims=True)
        # One step of a block spans at most 2 * amax / levels (4/5/6/8-bit); +2% for the fp16 scales.
        bound = 1.02 * 2 * amax / QUANT_LEVELS[qtype]
        assert np.all(err.reshape(-1, block) <= bound), name
    for name in ("blk.0.attn_norm.weight", "blk.0.attn_q.bias", "rope_freqs.weight"):
        assert gtensors[name].tensor_type == QT.F32
        np.testing.assert_array_equal(values(gtensors[name]), values(exact[name]))


def hard_rows(rng):
    """(8, 512) float32: scales from 1e-3 to 1e2, a zero, a constant, an all-positive, an all-negative block,
    an outlier."""
    x = rng.standard_normal((8, 512)) * 10.0 ** rng.uniform(-3, 2, (8, 1))
    x[0, :256] = 0
    x[1, 256:] = -0.75
    x[2] = np.abs(x[2])
    x[3, :256] = -np.abs(x[3, :256])
    x[4, 7] = 1e3
    return x.astype(np.float32)


def test_q4_k_round_trip():
    """quantize_q4_k -> gguf's Q4_K dequantiser: each value within half its sub-block's step d * sc."""
    x = hard_rows(np.random.default_rng(1))
    packed = quantize_q4_k(x)
    assert packed.shape == (8, 2 * 144) and packed.dtype == np.uint8
    blocks = packed.reshape(-1, 144)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    sc, _ = gguf.quants.Q4_K.get_scale_min(blocks[:, 4:16])
    step = np.repeat(d * sc, 32, axis=1).reshape(x.shape)  # (blocks, 8 sub-blocks) -> one step per value
    err = np.abs(gguf.quants.dequantize(packed, QT.Q4_K) - x)
    assert np.all(err <= step / 2 * (1 + 1e-5) + 1e-30)
    assert np.all(err[0, :256] == 0) and np.all(err[1, 256:] < 1e-4 * 0.75)
    # The steps are no coarser than needed: 15 steps over a super-block's range, rounded up by 1/63.
    spread = np.ptp(np.concatenate([x.reshape(-1, 256), np.zeros((16, 1), np.float32)], axis=1), axis=1)
    assert np.all(step.reshape(-1, 256).max(axis=1) <= spread / 15 * (1 + 2 / 63) * 1.01 + 1e-30)


def test_q6_k_round_trip():
    """quantize_q6_k -> gguf's Q6_K dequantiser: each value within half its sub-block's step d * sc."""
    x = hard_rows(np.random.default_rng(2))
    packed = quantize_q6_k(x)
    assert packed.shape == (8, 2 * 210)
    blocks = packed.reshape(-1, 210)
    d = blocks[:, 208:210].copy().view(np.float16).astype(np.float32)
    sc = blocks[:, 192:208].view(np.int8).astype(np.float32)
    step = np.repeat(d * sc, 16, axis=1).reshape(x.shape)
    err = np.abs(gguf.quants.dequantize(packed, QT.Q6_K) - x)
    assert np.all(err <= step / 2 * (1 + 1e-5) + 1e-30)
    assert np.all(err <= np.abs(x).reshape(-1, 256).max(axis=1).repeat(256).reshape(x.shape) / 62 * 1.05)
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize_q6_k(x[:, :100])


def test_row_fallbacks(tmp_path, converted):
    """Rows not a multiple of the block: K-quants fall back as llama-quantize does, the rest to F16."""
    folder = converted["qwen3"].folder  # rows of 64: not a multiple of 256
    for qtype, fallback in (("Q4_K", QT.Q5_0), ("Q6_K", QT.Q8_0), ("Q8_0", QT.Q8_0)):
        (path,) = write_gguf_from_folder(folder, tmp_path / f"{qtype}.gguf", qtype=qtype)
        _, gtensors = read(path)
        assert gtensors["blk.0.attn_q.weight"].tensor_type == fallback
        assert gtensors["blk.0.attn_q_norm.weight"].tensor_type == QT.F32
    small = write_model(tmp_path / "small", "llama")  # hidden 24: no 32-value block fits
    (path,) = write_gguf_from_folder(small.folder, tmp_path / "small.gguf", qtype="Q4_0")
    _, gtensors = read(path)
    assert gtensors["blk.0.attn_q.weight"].tensor_type == QT.F16


def test_split(converted, tmp_path):
    """Splits hold every tensor of the unsplit file once, with its values; the model metadata is in the first."""
    fields, whole = converted["llama"].fields, converted["llama"].gtensors
    paths = write_gguf_from_folder(converted["llama"].folder, tmp_path / "llama.gguf", split_max_tensors=7)
    count = math.ceil(len(whole) / 7)
    assert [p.name for p in paths] == [f"llama-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    assert all(p.is_file() for p in paths) and not (tmp_path / "llama.gguf").exists()
    seen = []
    for i, path in enumerate(paths):
        meta, gtensors = read(path)
        assert (meta["split.no"], meta["split.count"], meta["split.tensors.count"]) == (i, count, len(whole))
        assert len(gtensors) == (7 if i < count - 1 else len(whole) - 7 * (count - 1))
        if i == 0:
            assert {k: v for k, v in meta.items() if not k.startswith("split.")} == fields
        else:
            assert sorted(meta) == ["split.count", "split.no", "split.tensors.count"]
        for name, t in gtensors.items():
            np.testing.assert_array_equal(values(t), values(whole[name]), err_msg=name)
        seen += list(gtensors)
    assert sorted(seen) == sorted(whole)


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_write_model_folders(tmp_path, model_type):
    """qkalign's own fixture folders (minimal config.json, H d != n) convert too: the Q rows are its w_q."""
    tiny = write_model(tmp_path / "folder", model_type, seed=5)
    if model_type == "olmo":  # write_model gives OLMo a post_attention_layernorm gain, which the real model
        # (parameter-free layer norms) and so gguf's olmo tensor map lack: the converter refuses it the same way.
        with pytest.raises(ValueError, match="Can not map tensor 'model.layers.0.post_attention_layernorm.weight'"):
            write_gguf_from_folder(tiny.folder, tmp_path / "m.gguf")
        return
    (path,) = write_gguf_from_folder(tiny.folder, tmp_path / "m.gguf")
    fields, gtensors = read(path)
    L, H, d, n = tiny.w_q.shape
    arch = GGUF_ARCH[model_type]
    assert (fields[f"{arch}.block_count"], fields[f"{arch}.attention.head_count"]) == (L, H)
    for layer in range(L):
        if f"blk.{layer}.attn_qkv.weight" in gtensors:
            q = values(gtensors[f"blk.{layer}.attn_qkv.weight"])[:H * d]
        else:
            q = values(gtensors[f"blk.{layer}.attn_q.weight"])
            q = unpermute(q, d) if model_type in PERMUTED else q
        np.testing.assert_array_equal(q, tiny.w_q[layer].reshape(H * d, n).astype(np.float32))


def test_converter_permutation():
    """p against the converter's own ``LlamaModel.permute`` (convert.py:1616-1622, copied here in torch)."""
    def permute(weights, n_head, n_head_kv):
        if n_head_kv is not None and n_head != n_head_kv:
            n_head = n_head_kv
        return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
                .swapaxes(1, 2).reshape(weights.shape))

    np.testing.assert_array_equal(converter_permutation(8), [0, 4, 1, 5, 2, 6, 3, 7])
    for n_head, head_dim in ((4, 8), (2, 24), (1, 2)):
        rows = permute(torch.arange(n_head * head_dim), 3, n_head).numpy()  # 3 query heads: K rows use n_head
        want = (np.arange(n_head)[:, None] * head_dim + converter_permutation(head_dim)).ravel()
        np.testing.assert_array_equal(rows, want)
    with pytest.raises(ValueError):
        converter_permutation(7)
