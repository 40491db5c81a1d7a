"""GGUF files written from tiny Hugging Face model folders the way llama.cpp's converter writes them.

:func:`write_gguf_from_folder` redoes, with ``gguf.GGUFWriter``, what ``convert_hf_to_gguf.py`` does to a
folder's tensors and metadata, so that a GGUF reader can be tested against the folder it came from.
Line numbers ``convert.py:N`` refer to llama.cpp's converter of 20 Feb 2025 (commit c392e509,
``convert_hf_to_gguf.py``); Qwen3 and Gemma 3 came later (``Qwen3Model(Qwen2Model)`` with its own
architecture and ``Gemma3Model``, quoted where used), as did the ``rope_parameters`` and partial-rotary
handling noted below. :func:`converter_permutation` is the ground truth of the row order the converter
gives llama-family query and key weights.

``gguf`` (llama.cpp's gguf-py) and ``transformers`` are imported inside the functions: this module ships
in the wheel, whose core needs neither.
"""

import re
from pathlib import Path

import numpy as np

# Hugging Face model_type -> GGUF general.architecture (gguf.MODEL_ARCH_NAMES).
GGUF_ARCH = {
    "llama": "llama", "mistral": "llama", "granite": "granite", "olmo": "olmo", "olmo2": "olmo2",
    "qwen2": "qwen2", "qwen3": "qwen3", "gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3",
    "phi3": "phi3", "gpt2": "gpt2", "gpt_neox": "gptneox", "bert": "bert",
}
# Q and K rows permuted by LlamaModel.permute: LlamaModel (Mistral is registered to it), GraniteModel(LlamaModel),
# OlmoModel (weights only, convert.py:3615-3618). Olmo2Model, Qwen2/3, Gemma and Phi3 keep the Hugging Face order.
PERMUTED = ("llama", "mistral", "granite", "olmo")
# Every "*norm.weight" stored as 1 + w (GemmaRMSNorm multiplies by 1 + weight).
NORM_PLUS_ONE = ("gemma", "gemma2", "gemma3_text")
QTYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K")
# general.file_type per qtype; an all-Q4_K file is what `llama-quantize --pure ... Q4_K_M` writes.
FILE_TYPES = {
    "F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16", "Q8_0": "MOSTLY_Q8_0", "Q4_0": "MOSTLY_Q4_0",
    "Q4_1": "MOSTLY_Q4_1", "Q5_0": "MOSTLY_Q5_0", "Q5_1": "MOSTLY_Q5_1", "Q4_K": "MOSTLY_Q4_K_M", "Q6_K": "MOSTLY_Q6_K",
}
# llama-quantize's type for a K-quant row not a multiple of 256 long (src/llama-quant.cpp, "fallback quantization").
K_FALLBACK = {"Q4_K": "Q5_0", "Q6_K": "Q8_0"}
QK_K = 256  # values in a K-quant super-block


# Tiny transformers configs of every model type converted: 2 layers, hidden 64, 4 heads (2 kv heads where the
# family has grouped-query attention), head_dim 16 or an explicit 24; rope variants where the family has them.
BASE = dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128, vocab_size=128,
            max_position_embeddings=128)
GQA = dict(BASE, num_key_value_heads=2)
CONFIGS = {
    "llama": dict(GQA, head_dim=16, attention_bias=True, rope_parameters=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64,
        rope_theta=10000.0)),
    "mistral": dict(GQA, head_dim=24, rope_parameters=dict(rope_type="linear", factor=2.0, rope_theta=10000.0)),
    "qwen2": dict(GQA, rope_parameters=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32,
                                            rope_theta=1e6)),
    "qwen3": dict(GQA, head_dim=24),
    "gemma": dict(GQA, head_dim=24),
    "gemma2": dict(GQA, head_dim=24, sliding_window=32),
    "gemma3_text": dict(GQA, head_dim=24, sliding_window=32),
    "phi3": dict(GQA, partial_rotary_factor=0.75, original_max_position_embeddings=128, pad_token_id=0),
    "gpt2": dict(n_embd=64, n_head=4, n_layer=2, vocab_size=128, n_positions=128),
    "gpt_neox": dict(BASE, rotary_pct=0.25),
    "bert": dict(BASE),
    "olmo": dict(GQA, clip_qkv=8.0),
    "olmo2": dict(GQA),
    "granite": dict(GQA, attention_multiplier=0.125, embedding_multiplier=12.0, residual_multiplier=0.25,
                    logits_scaling=8.0),
}

def build_model(model_type, folder, **overrides):
    """A tiny random transformers model of ``model_type`` (:data:`CONFIGS`) saved in ``folder``; returns the model and
    its saved tensors as numpy arrays."""
    import torch
    import transformers
    from safetensors.numpy import load_file

    config = transformers.AutoConfig.for_model(model_type, **{**CONFIGS[model_type], **overrides})
    torch.manual_seed(sorted(CONFIGS).index(model_type))
    auto = transformers.AutoModel if model_type == "bert" else transformers.AutoModelForCausalLM
    model = auto.from_config(config)
    with torch.no_grad():
        for p in model.parameters():  # every weight random, norm gains too (Gemma's default 0 would hide 1 + w)
            p.copy_(0.5 * torch.randn_like(p))
    model.save_pretrained(folder)
    return model, load_file(str(folder / "model.safetensors"))


def write_gguf_from_folder(folder, path, *, qtype="F32", split_max_tensors=0):
    """Convert a Hugging Face model folder into GGUF as ``convert_hf_to_gguf.py`` would; return the paths written.

    Parameters
    ----------
    folder : path
        ``config.json`` and ``model*.safetensors`` of a model type in :data:`GGUF_ARCH`, e.g. from
        ``save_pretrained`` or :func:`qkalign.testing.model_folders.write_model`.
    path : path
        The ``.gguf`` file; with splits, ``NAME-00001-of-0000N.gguf`` beside it.
    qtype : str
        One of :data:`QTYPES`, for the 2-D ``*.weight`` tensors. As in the converter (convert.py:310-335),
        1-D tensors, biases, ``*_norm.weight``, ``position_embd`` and ``token_types`` stay F32. A row whose
        length is not a multiple of the block size falls back as llama.cpp does: a K-quant to Q5_0 (Q4_K) or
        Q8_0 (Q6_K), as ``llama-quantize`` does, then anything else to F16, as the converter does on a
        ``QuantError`` (convert.py:369-373). Q4_K and Q6_K use :func:`quantize_q4_k` / :func:`quantize_q6_k`
        (gguf-py has no K-quantiser); the rest ``gguf.quants.quantize``.
    split_max_tensors : int
        > 0: at most this many tensors a file, as ``convert_hf_to_gguf.py --split-max-tensors`` (GGUFWriter's
        split): every metadata key in the first file, ``split.no`` (0-based), ``split.count`` and
        ``split.tensors.count`` in each. A model that fits in one file is written unsplit at ``path``.

    Returns
    -------
    list of Path
        The files written, in split order.

    Notes
    -----
    Every tensor the converter writes is written (embeddings, MLP, output, norms), named by gguf's
    ``TensorNameMap``, changed as the converter changes it: llama-family Q/K rows permuted
    (:func:`converter_permutation`), Gemma norm gains ``1 + w``, GPT-2's Conv1D weights transposed to
    (out, in), GPT-NeoX's ``query_key_value`` reordered to [Q; K; V]; Phi-3's ``qkv_proj`` stays fused as
    ``attn_qkv``. Not written: ``tokenizer.*`` keys (no tokenizer here), Phi-3 long-context rope factors.
    """
    import gguf

    if qtype not in QTYPES:
        raise ValueError(f"qtype {qtype!r}: expected one of {QTYPES}")
    folder, path = Path(folder), Path(path)
    hp = converter_hparams(folder)
    model_type = hp["model_type"]
    if (arch := GGUF_ARCH.get(model_type)) is None:
        raise ValueError(f"no GGUF conversion here for model_type {model_type!r}")
    arch_enum = next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == arch)
    name_map = gguf.get_tensor_name_map(arch_enum, _find(hp, "n_layers", "num_hidden_layers", "n_layer", "num_layers"))
    writer = gguf.GGUFWriter(None, arch, split_max_tensors=split_max_tensors)
    # The converter's order (convert.py:280): generate_extra_tensors, then the folder's tensors.
    for hf_name, data in [*_extra_tensors(model_type, hp), *_folder_tensors(folder)]:
        for name, array in _modify(model_type, hp, hf_name, data, name_map):
            encoded, raw_dtype = _encode(array, _tensor_qtype(name, array, qtype))
            writer.add_tensor(name, encoded, raw_dtype=raw_dtype)
    _add_metadata(writer, hp, folder.name, qtype)
    paths = writer.format_shard_names(path)
    writer.write_header_to_file(path=path)  # Model.write, convert.py:438-444
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return paths


def converter_permutation(head_dim):
    """Row order of one llama-family head in GGUF: GGUF row ``r`` holds Hugging Face row ``p[r]``.

    ``LlamaModel.permute`` (convert.py:1616-1622) views a head's ``d = head_dim`` rows as (2, d/2) and
    swaps the axes: HF row ``j * d/2 + i`` (half ``j`` of the rotate-half RoPE pairing, index ``i``) goes
    to GGUF row ``2 i + j``, the interleaved pairing ggml's RoPE uses. So GGUF row ``2i`` = HF row ``i``
    and GGUF row ``2i + 1`` = HF row ``i + d/2``: ``p = [0, d/2, 1, d/2 + 1, ..., d/2 - 1, d - 1]``.
    The same holds per head for the K rows (with the key-value head count) and for the Q/K biases.

    Parameters
    ----------
    head_dim : int
        ``d``, even.

    Returns
    -------
    numpy.ndarray
        (d,) int64, a permutation: ``gguf_head = hf_head[p]`` and ``hf_head[p] = gguf_head``.
    """
    if head_dim % 2:
        raise ValueError(f"head_dim {head_dim} is odd")
    return np.arange(head_dim).reshape(2, head_dim // 2).T.reshape(-1)


def converter_hparams(folder):
    """The hyper-parameters the converter reads for ``folder``, as a dict.

    ``AutoConfig.from_pretrained(folder).to_dict()``, as later converters' ``load_hparams`` reads them (the
    Feb 2025 converter read ``config.json`` alone, convert.py:467-469; the defaults fill what a minimal
    ``config.json`` leaves out). transformers 5 keeps ``rope_theta``, ``partial_rotary_factor`` and the
    scaling in ``rope_parameters`` (per layer type for Gemma 3: the ``full_attention`` ones are taken);
    they are copied to the flat keys the Feb 2025 code reads (``rope_theta``, ``partial_rotary_factor``,
    ``original_max_position_embeddings``, ``rope_scaling`` with ``type``, and GPT-NeoX's ``rotary_pct``),
    the mirror image of what the later converter's ``TextModel.__init__`` does.
    """
    from transformers import AutoConfig

    hp = AutoConfig.from_pretrained(folder).to_dict()
    rope = hp.get("rope_parameters") or {}
    rope = rope.get("full_attention", rope)
    for key in ("rope_theta", "partial_rotary_factor", "original_max_position_embeddings"):
        if hp.get(key) is None and key in rope:
            hp[key] = rope[key]
    if hp.get("rope_scaling") is None and rope.get("rope_type", "default") != "default":
        hp["rope_scaling"] = {**rope, "type": rope["rope_type"]}
    if hp["model_type"] == "gpt_neox" and "rotary_pct" not in hp:
        hp["rotary_pct"] = hp.get("partial_rotary_factor", 1.0)
    return hp


def quantize_q4_k(values):
    """ggml ``block_q4_K`` bytes of ``values``: each value within half its sub-block's step.

    A super-block of 256 values is 8 sub-blocks of 32; value ``x`` of sub-block ``j`` is stored as a 4-bit
    ``q`` with ``x ~ d * sc[j] * q - dmin * m[j]``: fp16 ``d`` and ``dmin`` (2 + 2 bytes), 6-bit ``sc`` and
    ``m`` packed into 12 bytes (the layout gguf's ``Q4_K.get_scale_min`` unpacks), then 128 bytes of ``q``,
    byte ``32 c + l`` holding sub-block ``2c`` in its low nibble and ``2c + 1`` in its high one.
    Simpler than ggml's search (``make_qkx2_quants``): ``m[j]`` and then ``sc[j]`` are rounded up, so the
    offset ``dmin * m[j]`` lifts every value to >= 0 and the 15 steps ``d * sc[j]`` cover the lifted
    range: nothing is clipped and ``|x - x_hat| <= d * sc[j] / 2``.

    Parameters
    ----------
    values : array_like
        (..., C) with C a multiple of 256; computed in float32.

    Returns
    -------
    numpy.ndarray
        (..., C // 256 * 144) uint8, what ``gguf.quants.dequantize(_, GGMLQuantizationType.Q4_K)`` reads.
    """
    x = _rows_of(values, QK_K)
    sub = x.reshape(-1, 8, 32)
    lift = np.maximum(-sub.min(axis=-1), 0)  # (B, 8): x + lift >= 0
    dmin = _fp16_at_least(lift.max(axis=-1) / 63)
    m = _ceil_ratio(lift, dmin, 63)
    offset = dmin.astype(np.float32)[:, None] * m  # as the dequantiser forms it: dmin * m
    need = np.maximum(sub.max(axis=-1) + offset, 0) / 15  # the step for 15 steps over [0, max + offset]
    d = _fp16_at_least(need.max(axis=-1) / 63)
    sc = _ceil_ratio(need, d, 63)
    q = _round_to_steps(sub + offset[..., None], d.astype(np.float32)[:, None] * sc, 0, 15).astype(np.uint8)
    scales = np.empty((len(sub), 12), np.uint8)
    scales[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)  # low 6 bits of sc 0-3, high 2 bits of sc 4-7
    scales[:, 4:8] = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)  # low 4 bits of sc 4-7 and m 4-7
    qs = q[:, 0::2] | (q[:, 1::2] << 4)  # (B, 4, 32)
    blocks = [_fp16_bytes(d), _fp16_bytes(dmin), scales, qs.reshape(-1, 128)]
    return np.concatenate(blocks, axis=1).reshape(*x.shape[:-1], -1)


def quantize_q6_k(values):
    """ggml ``block_q6_K`` bytes of ``values``: each value within half its sub-block's step.

    A super-block of 256 values is 16 sub-blocks of 16 with ``x ~ d * sc[j] * (q - 32)``, ``q`` 6-bit:
    128 bytes of low nibbles ``ql``, 64 bytes of high 2-bit pairs ``qh``, 16 int8 scales, fp16 ``d`` (the
    order gguf's ``Q6_K.dequantize_blocks`` reads). Value ``v = 128 c + 64 h + l`` (``l`` < 64) has its low
    nibble in nibble ``h`` of ``ql[64 c + l]``; value ``128 c + 32 s + l`` (``l`` < 32) has its high bits in
    bits ``2s, 2s + 1`` of ``qh[32 c + l]``. ``sc[j]`` is rounded up so that ``|q - 32| <= 31``: no clipping.

    Parameters
    ----------
    values : array_like
        (..., C) with C a multiple of 256; computed in float32.

    Returns
    -------
    numpy.ndarray
        (..., C // 256 * 210) uint8.
    """
    x = _rows_of(values, QK_K)
    sub = x.reshape(-1, 16, 16)
    need = np.abs(sub).max(axis=-1) / 31
    d = _fp16_at_least(need.max(axis=-1) / 127)
    sc = _ceil_ratio(need, d, 127)
    q = (_round_to_steps(sub, d.astype(np.float32)[:, None] * sc, -32, 31) + 32).astype(np.uint8)
    flat = q.reshape(-1, 2, 2, 64)  # (B, c, h, l)
    ql = (flat[:, :, 0] & 0x0F) | ((flat[:, :, 1] & 0x0F) << 4)
    high = q.reshape(-1, 2, 4, 32) >> 4  # (B, c, s, l)
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    blocks = [ql.reshape(-1, 128), qh.reshape(-1, 64), sc.astype(np.int8).view(np.uint8), _fp16_bytes(d)]
    return np.concatenate(blocks, axis=1).reshape(*x.shape[:-1], -1)


def _rows_of(values, block):
    x = np.asarray(values, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % block:
        raise ValueError(f"rows of shape {x.shape}: the last axis must be a multiple of {block}")
    return x


def _fp16_at_least(v):
    """float16 of float32 ``v`` >= 0, rounded up where rounding to nearest went below ``v``."""
    h = v.astype(np.float16)
    return np.where(h.astype(np.float32) < v, np.nextafter(h, np.float16(np.inf)), h)


def _ceil_ratio(a, unit, top):
    """``ceil(a / unit)`` (``unit`` (B,) against ``a`` (B, k)) clipped to [0, ``top``] as uint8; 0 where unit is 0."""
    unit = unit.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(unit > 0, np.ceil(a / unit), 0)
    return np.clip(r, 0, top).astype(np.uint8)


def _round_to_steps(x, step, low, high):
    """``round(x / step)`` (``x`` (B, k, n), ``step`` (B, k)) clipped to [low, high] as int16, 0 where step is 0."""
    step = step[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(step > 0, np.rint(x / step), 0)
    return np.clip(q, low, high).astype(np.int16)


def _fp16_bytes(h):
    return h.astype(np.float16).view(np.uint8).reshape(-1, 2)


def _find(hp, *keys):
    """``Model.find_hparam(keys, optional=True)``: the value of the first key present (even None), else None."""
    return next((hp[k] for k in keys if k in hp), None)


def _folder_tensors(folder):
    """(name, numpy array) of every tensor in the folder's safetensors files, in file and name order.

    As the converter (convert.py:287-289), float16 and float32 stay, any other dtype becomes float32.
    """
    import torch
    from safetensors.torch import load_file

    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no model*.safetensors in {folder}")
    for file in files:
        for name, t in load_file(str(file)).items():
            if t.dtype not in (torch.float16, torch.float32):
                t = t.to(torch.float32)
            yield name, t.numpy()


def _extra_tensors(model_type, hp):
    """``LlamaModel.generate_extra_tensors`` (convert.py:1671-1698): Llama 3 rope scaling as ``rope_freqs``."""
    rope_scaling = hp.get("rope_scaling") or {}
    if model_type not in ("llama", "mistral", "granite") or rope_scaling.get("rope_type", "").lower() != "llama3":
        return []
    base = hp.get("rope_theta", 10000.0)
    dim = hp.get("head_dim") or hp["hidden_size"] // hp["num_attention_heads"]
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = rope_scaling.get("factor", 8.0)
    low, high = rope_scaling.get("low_freq_factor", 1.0), rope_scaling.get("high_freq_factor", 4.0)
    old_context = hp.get("original_max_position_embeddings", 8192)
    wavelen = 2 * np.pi / freqs
    smooth = (old_context / wavelen - low) / (high - low)
    factors = np.where(wavelen < old_context / high, 1.0,
                       np.where(wavelen > old_context / low, factor, 1 / ((1 - smooth) / factor + smooth)))
    return [("rope_freqs.weight", factors.astype(np.float32))]


def _modify(model_type, hp, name, data, name_map):
    """The converter's ``modify_tensors`` for ``model_type``: [(GGUF name, array)], [] for a tensor it drops."""
    if name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):  # convert.py:281-283
        return []
    if model_type == "bert":  # BertModel.modify_tensors, convert.py:3011-3033
        name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name.removeprefix("bert.")))
        if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias") or name.startswith(
                ("cls.predictions", "cls.seq_relationship")):
            return []
    if model_type == "gpt2":  # GPT2Model.modify_tensors, convert.py:2351-2371: Conv1D (in, out) -> (out, in)
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            return []
        if name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            data = np.ascontiguousarray(data.T)
    if model_type in NORM_PLUS_ONE:  # convert.py:3262-3268 (Gemma), 3309-3315 (Gemma 2), Gemma3Model likewise
        if name == "lm_head.weight":
            return []
        name = name.replace("language_model.", "")
        if name.endswith("norm.weight"):
            data = data + data.dtype.type(1)
    if model_type in PERMUTED:  # convert.py:1626-1633 (weights and biases); Olmo weights only, 3609-3620
        n_head, n_head_kv = hp["num_attention_heads"], hp.get("num_key_value_heads")
        kinds = ("weight",) if model_type == "olmo" else ("weight", "bias")
        if name.endswith(tuple(f"q_proj.{kind}" for kind in kinds)):
            data = _permute(data, n_head, n_head)
        if name.endswith(tuple(f"k_proj.{kind}" for kind in kinds)):
            data = _permute(data, n_head, n_head_kv)
    if model_type == "gpt_neox" and re.match(r"gpt_neox\.layers\.\d+\.attention\.query_key_value\.", name):
        data = _neox_qkv(data, hp["num_attention_heads"], hp["hidden_size"])
    new_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
    if new_name is None:
        raise ValueError(f"Can not map tensor {name!r}")  # Model.map_tensor_name
    if model_type == "gpt2" and new_name == "token_embd.weight":  # the tied output, convert.py:2367-2369
        return [(new_name, data), ("output.weight", data)]
    return [(new_name, data)]


def _permute(w, n_head, n_head_kv):
    """``LlamaModel.permute`` (convert.py:1616-1622) on a numpy (rows, ...) array."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _neox_qkv(w, n_head, n_embd):
    """GPT-NeoX ``query_key_value`` (3n, ...) from per-head [q_h; k_h; v_h] to [Q; K; V] (convert.py:977-1000)."""
    per_head = w.reshape(n_head, 3, n_embd // n_head, *w.shape[1:])
    return np.concatenate([per_head[:, i].reshape(n_embd, *w.shape[1:]) for i in range(3)])


def _tensor_qtype(name, data, qtype):
    """The type a tensor is stored in: the converter's F32 rules (convert.py:310-335), then the row fallbacks."""
    import gguf

    if data.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight") or name in (
            "position_embd.weight", "token_types.weight"):
        return "F32"
    sizes = gguf.GGML_QUANT_SIZES
    row = data.shape[-1]
    if qtype in K_FALLBACK and row % sizes[gguf.GGMLQuantizationType[qtype]][0]:
        qtype = K_FALLBACK[qtype]
    if row % sizes[gguf.GGMLQuantizationType[qtype]][0]:
        qtype = "F16"
    return qtype


def _encode(data, qtype):
    """(array for GGUFWriter.add_tensor, GGMLQuantizationType): ``data`` (rows, C) stored as ``qtype``."""
    import gguf

    raw_dtype = gguf.GGMLQuantizationType[qtype]
    if qtype == "Q4_K":
        return quantize_q4_k(data), raw_dtype
    if qtype == "Q6_K":
        return quantize_q6_k(data), raw_dtype
    return gguf.quants.quantize(data, raw_dtype), raw_dtype


def _add_metadata(writer, hp, name, qtype):
    """``Model.prepare_metadata`` (convert.py:389-436) without the vocabulary: type, name, size, parameters."""
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    counts = writer.get_total_parameter_count()
    if counts[0] > 0:
        writer.add_size_label(gguf.size_label(*counts))
    _PARAMETERS[hp["model_type"]](writer, hp, gguf.LlamaFileType[FILE_TYPES[qtype]])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _base_parameters(w, hp, ftype):
    """``Model.set_gguf_parameters`` (convert.py:217-261), without the expert counts."""
    w.add_block_count(_find(hp, "n_layers", "num_hidden_layers", "n_layer", "num_layers"))
    for add, keys in ((w.add_context_length, ("max_position_embeddings", "n_ctx")),
                      (w.add_embedding_length, ("hidden_size", "n_embd")),
                      (w.add_feed_forward_length, ("intermediate_size", "n_inner")),
                      (w.add_head_count, ("num_attention_heads", "n_head"))):
        if (value := _find(hp, *keys)) is not None:
            add(value)
    for add, key in ((w.add_head_count_kv, "num_key_value_heads"), (w.add_rope_freq_base, "rope_theta"),
                     (w.add_layer_norm_rms_eps, "rms_norm_eps")):
        if hp.get(key) is not None:
            add(hp[key])
    if (eps := _find(hp, "layer_norm_eps", "layer_norm_epsilon", "norm_epsilon")) is not None:
        w.add_layer_norm_eps(eps)
    if (head_dim := hp.get("head_dim")) is not None:  # convert.py:256-258: wherever config has head_dim
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_file_type(ftype)


def _llama_parameters(w, hp, ftype):
    """``LlamaModel.set_gguf_parameters`` (convert.py:1600-1614): rope dimension = head_dim (all of it)."""
    import gguf

    _base_parameters(w, hp, ftype)
    w.add_vocab_size(hp["vocab_size"])
    w.add_rope_dimension_count(hp["head_dim"] if "head_dim" in hp else hp["hidden_size"] // hp["num_attention_heads"])
    rope_scaling = hp.get("rope_scaling")
    if rope_scaling is not None and "factor" in rope_scaling and rope_scaling.get("type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope_scaling["factor"])


def _granite_parameters(w, hp, ftype):
    """``GraniteModel.set_gguf_parameters`` (convert.py:4786-4811): head_dim ignored, the multipliers as scales."""
    hp = {key: value for key, value in hp.items() if key != "head_dim"}
    _llama_parameters(w, hp, ftype)
    for add, key in ((w.add_attention_scale, "attention_multiplier"), (w.add_embedding_scale, "embedding_multiplier"),
                     (w.add_residual_scale, "residual_multiplier"), (w.add_logit_scale, "logits_scaling")):
        if value := hp.get(key):
            add(value)


def _olmo_parameters(w, hp, ftype):
    """``OlmoModel.set_gguf_parameters`` (convert.py:3600-3605): a fixed layer-norm epsilon, the QKV clamp."""
    _base_parameters(w, hp, ftype)
    w.add_layer_norm_eps(1e-5)
    if hp.get("clip_qkv") is not None:
        w.add_clamp_kqv(hp["clip_qkv"])


def _qwen2_parameters(w, hp, ftype):
    """``Qwen2Model.set_gguf_parameters`` (convert.py:2205-2211), also Qwen3's (``Qwen3Model(Qwen2Model)``)."""
    import gguf

    _base_parameters(w, hp, ftype)
    rope_scaling = hp.get("rope_scaling")
    if rope_scaling is not None and "factor" in rope_scaling and rope_scaling.get("type") == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rope_scaling["factor"])
        w.add_rope_scaling_orig_ctx_len(rope_scaling["original_max_position_embeddings"])


def _gemma_parameters(w, hp, ftype):
    """``GemmaModel`` / ``Gemma2Model.set_gguf_parameters`` (convert.py:3242-3255, 3282-3302): no rope keys."""
    w.add_context_length(hp["max_position_embeddings"])
    w.add_embedding_length(hp["hidden_size"])
    w.add_block_count(hp["num_hidden_layers"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_head_count(hp["num_attention_heads"])
    w.add_head_count_kv(hp["num_key_value_heads"] if "num_key_value_heads" in hp else hp["num_attention_heads"])
    w.add_layer_norm_rms_eps(hp["rms_norm_eps"])
    w.add_key_length(hp["head_dim"])
    w.add_value_length(hp["head_dim"])
    w.add_file_type(ftype)
    if hp["model_type"] == "gemma2":
        w.add_attn_logit_softcapping(hp["attn_logit_softcapping"])
        w.add_final_logit_softcapping(hp["final_logit_softcapping"])
        w.add_sliding_window(hp["sliding_window"])


def _gemma3_parameters(w, hp, ftype):
    """``Gemma3Model.set_gguf_parameters`` (its first version, March 2025): rope base of the global layers."""
    import gguf

    w.add_context_length(hp.get("max_position_embeddings", 131072))
    w.add_embedding_length(hp["hidden_size"])
    w.add_block_count(hp["num_hidden_layers"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_head_count(hp.get("num_attention_heads", 8))
    w.add_layer_norm_rms_eps(hp.get("rms_norm_eps", 1e-6))
    w.add_key_length(hp.get("head_dim", 256))
    w.add_value_length(hp.get("head_dim", 256))
    w.add_file_type(ftype)
    w.add_rope_freq_base(hp.get("rope_theta", 1_000_000.0))
    w.add_sliding_window(hp["sliding_window"])
    w.add_head_count_kv(hp.get("num_key_value_heads", 4))
    if hp.get("rope_scaling") is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(hp["rope_scaling"]["factor"])


def _phi3_parameters(w, hp, ftype):
    """``Phi3MiniModel.set_gguf_parameters`` (convert.py:2506-2532) with the later partial-rotary rope dimension
    ``int(partial_rotary_factor * n) // H`` (Phi-4-mini; the Feb 2025 code had ``n // H``)."""
    if hp.get("rope_scaling") is not None:
        raise NotImplementedError("Phi-3 long-context rope factors (rope_factors_long/short) are not written")
    n_embd, n_head = _find(hp, "hidden_size", "n_embd"), _find(hp, "num_attention_heads", "n_head")
    w.add_context_length(_find(hp, "n_positions", "max_position_embeddings"))
    w.add_rope_scaling_orig_ctx_len(hp["original_max_position_embeddings"])
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_block_count(_find(hp, "num_hidden_layers", "n_layer"))
    w.add_head_count(n_head)
    w.add_head_count_kv(_find(hp, "num_key_value_heads", "n_head_kv"))
    w.add_layer_norm_rms_eps(hp["rms_norm_eps"])
    w.add_rope_dimension_count(int(hp.get("partial_rotary_factor", 1.0) * n_embd) // n_head)
    w.add_rope_freq_base(hp["rope_theta"])
    w.add_file_type(ftype)
    w.add_sliding_window(hp.get("sliding_window") or 0)


def _gpt2_parameters(w, hp, ftype):
    """``GPT2Model.set_gguf_parameters`` (convert.py:2342-2349); ``n_positions`` where config.json has no
    ``n_ctx`` (transformers 5 writes none)."""
    w.add_block_count(hp["n_layer"])
    w.add_context_length(_find(hp, "n_ctx", "n_positions"))
    w.add_embedding_length(hp["n_embd"])
    w.add_feed_forward_length(4 * hp["n_embd"])
    w.add_head_count(hp["n_head"])
    w.add_layer_norm_eps(hp["layer_norm_epsilon"])
    w.add_file_type(ftype)


def _gptneox_parameters(w, hp, ftype):
    """``GPTNeoXModel.set_gguf_parameters`` (convert.py:955-967): rope dimension ``int(rotary_pct * n // H)``,
    no head_count_kv, rope base or file type."""
    w.add_context_length(hp["max_position_embeddings"])
    w.add_embedding_length(hp["hidden_size"])
    w.add_block_count(hp["num_hidden_layers"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_rope_dimension_count(int(hp["rotary_pct"] * (hp["hidden_size"] // hp["num_attention_heads"])))
    w.add_head_count(hp["num_attention_heads"])
    w.add_parallel_residual(hp.get("use_parallel_residual", True))
    w.add_layer_norm_eps(hp["layer_norm_eps"])


def _bert_parameters(w, hp, ftype):
    """``BertModel.set_gguf_parameters`` (convert.py:2956-2981) without the sentence-transformers pooling type."""
    _base_parameters(w, hp, ftype)
    w.add_causal_attention(False)


_PARAMETERS = {
    "llama": _llama_parameters, "mistral": _llama_parameters, "granite": _granite_parameters,
    "olmo": _olmo_parameters, "olmo2": _base_parameters, "qwen2": _qwen2_parameters, "qwen3": _qwen2_parameters,
    "gemma": _gemma_parameters, "gemma2": _gemma_parameters, "gemma3_text": _gemma3_parameters,
    "phi3": _phi3_parameters, "gpt2": _gpt2_parameters, "gpt_neox": _gptneox_parameters, "bert": _bert_parameters,
}
