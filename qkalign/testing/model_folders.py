"""Tiny Hugging Face model folders of every layout ``qkalign measure`` reads.

Each folder is written from per-head weights the way the architecture's modeling code
lays them out (built here independently of ``qkalign.weights.layouts``); the weights it
stores come back in a :class:`TinyModel`, for :func:`qkalign.testing.dense.dense_truth`.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

LLAMA_STYLE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "granite")
FUSED = ("phi3", "gpt2", "gpt_neox", "bert")
ALL_MODEL_TYPES = LLAMA_STYLE + FUSED
GEMMA = ("gemma", "gemma2", "gemma3_text")
# Query and key norms whose gains --fold-norms multiplies into the rows.
PER_HEAD_QK_NORM = ("qwen3", "gemma3_text")
ALL_HEADS_QK_NORM = ("olmo2",)
NO_INPUT_NORM = ("olmo", "olmo2")


@dataclass
class TinyModel:
    """A written model folder and the float64 weights it stores.

    ``w_q`` (L, H, d, n), ``w_k`` (L, H_kv, d, n) as stored (after rounding to the file's
    dtype); ``folded_q``, ``folded_k`` with every norm gain multiplied in as the model applies it.
    """

    folder: Path
    model_type: str
    w_q: np.ndarray
    w_k: np.ndarray
    folded_q: np.ndarray
    folded_k: np.ndarray


def default_shape(model_type):
    """(L, H, H_kv, d, n): grouped-query with explicit head_dim where the family has it, else H d = n."""
    if model_type in LLAMA_STYLE:
        return 3, 4, 2, 8, 24  # H d = 32 != n: config.json must give head_dim
    if model_type == "phi3":
        return 3, 4, 2, 6, 24
    return 3, 4, 4, 6, 24


def write_model(folder, model_type, *, shape=None, dtype=torch.float32, prefix=None, shards=1, seed=0,
                tie_qk=False, config_extra=None):
    """Write ``config.json`` and safetensors weights of a tiny random ``model_type`` model into ``folder``."""
    if model_type not in ALL_MODEL_TYPES:
        raise ValueError(model_type)
    shape = shape or default_shape(model_type)
    rng = np.random.default_rng(seed)
    weights = _random_weights(rng, shape, dtype, tie_qk, gemma=model_type in GEMMA)
    family = "llama" if model_type in LLAMA_STYLE else model_type
    layout = _FAMILY_WRITERS[family](model_type, weights, shape, _DEFAULT_PREFIX[family] if prefix is None else prefix)
    config = {**layout.config, "model_type": model_type, **(config_extra or {})}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    write_tensors(folder, layout.tensors, shards, rng)
    folded_q = layout.row_q[..., :, None] * weights.w_q * layout.col[:, None, None, :]
    folded_k = layout.row_k[..., :, None] * weights.w_k * layout.col[:, None, None, :]
    return TinyModel(folder, model_type, weights.w_q, weights.w_k, folded_q, folded_k)


@dataclass
class _Weights:
    """A tiny model's random tensors in the file's dtype, and the float64 values the file stores.

    ``q_t`` (L, H, d, n), ``k_t``, ``v_t`` (L, H_kv, d, n) torch tensors, ``w_q``, ``w_k`` their
    float64 values; ``input_gain`` L + 1 pairs (tensor, gain applied), BERT's embeddings norm
    first; ``gain(*dims)`` draws one more norm gain the same way.
    """

    q_t: object
    k_t: object
    v_t: object
    w_q: np.ndarray
    w_k: np.ndarray
    input_gain: list
    gain: object
    dtype: object


@dataclass
class _Layout:
    """What a family writer returns: the tensors by name, the config's shape keys, and the gains the
    model applies: ``col`` (L, n) on the columns, ``row_q`` (L, H, d) / ``row_k`` (L, H_kv, d) on the rows."""

    tensors: dict
    config: dict
    col: np.ndarray
    row_q: np.ndarray
    row_k: np.ndarray


def _random_weights(rng, shape, dtype, tie_qk, gemma):
    """:class:`_Weights` drawn from ``rng``, each rounded to ``dtype`` first (the truth is what the file holds).

    Gemma stores each norm's gain as ``w`` for ``1 + w``; the others store the gain itself.
    """
    L, H, Hkv, d, n = shape

    def stored(*dims, scale=1.0, offset=0.0):
        t = torch.from_numpy(offset + scale * rng.standard_normal(dims)).to(dtype)
        return t, t.double().numpy()

    def gain(*dims):
        t, w = stored(*dims, scale=0.3, offset=0.0 if gemma else 1.0)
        return t, (1.0 + w if gemma else w)

    q_t, w_q = stored(L, H, d, n, scale=n ** -0.5)
    k_t, w_k = (q_t[:, :Hkv], w_q[:, :Hkv]) if tie_qk else stored(L, Hkv, d, n, scale=n ** -0.5)
    v_t, _ = stored(L, Hkv, d, n, scale=n ** -0.5)
    input_gain = [gain(n) for _ in range(L + 1)]  # BERT uses L + 1 (embeddings + each layer's output)
    return _Weights(q_t, k_t, v_t, w_q, w_k, input_gain, gain, dtype)


def _plain_gains(weights, shape):
    """``(col, row_q, row_k)`` of a model whose attention reads layer l's input norm and has no QK-norm."""
    L, H, Hkv, d, _ = shape
    return np.stack([g for _, g in weights.input_gain[:L]]), np.ones((L, H, d)), np.ones((L, Hkv, d))


def _llama_style(model_type, weights, shape, prefix):
    """``q_proj`` / ``k_proj`` per layer, grouped-query, with the family's QK-norms (per head or over all heads)."""
    L, H, Hkv, d, n = shape
    col, row_q, row_k = _plain_gains(weights, shape)
    qn = kn = None
    if model_type in PER_HEAD_QK_NORM:
        qn, kn = [weights.gain(d) for _ in range(L)], [weights.gain(d) for _ in range(L)]
    if model_type in ALL_HEADS_QK_NORM:
        qn, kn = [weights.gain(H * d) for _ in range(L)], [weights.gain(Hkv * d) for _ in range(L)]
    tensors = {}
    for l in range(L):
        base = f"{prefix}layers.{l}."
        tensors[base + "self_attn.q_proj.weight"] = weights.q_t[l].reshape(H * d, n)
        tensors[base + "self_attn.k_proj.weight"] = weights.k_t[l].reshape(Hkv * d, n)
        tensors[base + "self_attn.v_proj.weight"] = weights.v_t[l].reshape(Hkv * d, n)
        tensors[base + "self_attn.o_proj.weight"] = torch.zeros(n, H * d, dtype=weights.dtype)
        if model_type not in NO_INPUT_NORM:
            tensors[base + "input_layernorm.weight"] = weights.input_gain[l][0]
        tensors[base + "post_attention_layernorm.weight"] = weights.input_gain[L][0]
        if qn is not None:
            tensors[base + "self_attn.q_norm.weight"] = qn[l][0]
            tensors[base + "self_attn.k_norm.weight"] = kn[l][0]
            row_q[l] = qn[l][1].reshape(-1, d)  # all heads' gain: one row of d per head
            row_k[l] = kn[l][1].reshape(-1, d)
    if model_type in NO_INPUT_NORM:
        col = np.ones((L, n))
    config = dict(num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=Hkv, hidden_size=n,
                  head_dim=d, rope_theta=10000.0)
    return _Layout(tensors, config, col, row_q, row_k)


def _phi3(model_type, weights, shape, prefix):
    """Fused ``qkv_proj``, rows [Q; K; V]."""
    L, H, Hkv, d, n = shape
    tensors = {}
    for l in range(L):
        base = f"{prefix}layers.{l}."
        tensors[base + "self_attn.qkv_proj.weight"] = torch.cat(
            [weights.q_t[l].reshape(H * d, n), weights.k_t[l].reshape(Hkv * d, n), weights.v_t[l].reshape(Hkv * d, n)])
        tensors[base + "input_layernorm.weight"] = weights.input_gain[l][0]
    config = dict(num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=Hkv, hidden_size=n)
    return _Layout(tensors, config, *_plain_gains(weights, shape))


def _gpt2(model_type, weights, shape, prefix):
    """Conv1D ``c_attn``: ``y = x W + b`` with W (n, 3n), columns [Q | K | V]."""
    L, H, _, _, n = shape
    tensors = {}
    for l in range(L):
        fused = torch.cat([weights.q_t[l].reshape(n, n), weights.k_t[l].reshape(n, n), weights.v_t[l].reshape(n, n)])
        tensors[f"{prefix}h.{l}.attn.c_attn.weight"] = fused.T.contiguous()
        tensors[f"{prefix}h.{l}.attn.c_attn.bias"] = torch.zeros(3 * n, dtype=weights.dtype)
        tensors[f"{prefix}h.{l}.ln_1.weight"] = weights.input_gain[l][0]
    return _Layout(tensors, dict(n_layer=L, n_head=H, n_embd=n), *_plain_gains(weights, shape))


def _gpt_neox(model_type, weights, shape, prefix):
    """``query_key_value``: per head h the rows [q_h; k_h; v_h], a view (H, 3, d, n)."""
    L, H, _, _, n = shape
    tensors = {}
    for l in range(L):
        tensors[f"{prefix}layers.{l}.attention.query_key_value.weight"] = torch.stack(
            [weights.q_t[l], weights.k_t[l], weights.v_t[l]], dim=1).reshape(3 * n, n)
        tensors[f"{prefix}layers.{l}.input_layernorm.weight"] = weights.input_gain[l][0]
    config = dict(num_hidden_layers=L, num_attention_heads=H, hidden_size=n, rotary_pct=1.0)  # head_dim 6: a quarter is no whole pair
    return _Layout(tensors, config, *_plain_gains(weights, shape))


def _bert(model_type, weights, shape, prefix):
    """``attention.self.query`` / ``key``; layer l's attention reads the LayerNorm output of layer l - 1
    (the embeddings' for layer 0), so ``input_gain[l]`` is layer l's column gain."""
    L, H, _, _, n = shape
    tensors = {f"{prefix}embeddings.LayerNorm.weight": weights.input_gain[0][0]}
    for l in range(L):
        base = f"{prefix}encoder.layer.{l}."
        tensors[base + "attention.self.query.weight"] = weights.q_t[l].reshape(n, n)
        tensors[base + "attention.self.key.weight"] = weights.k_t[l].reshape(n, n)
        tensors[base + "attention.self.query.bias"] = torch.zeros(n, dtype=weights.dtype)
        tensors[base + "output.LayerNorm.weight"] = weights.input_gain[l + 1][0]
    return _Layout(tensors, dict(num_hidden_layers=L, num_attention_heads=H, hidden_size=n),
                   *_plain_gains(weights, shape))


_FAMILY_WRITERS = {"llama": _llama_style, "phi3": _phi3, "gpt2": _gpt2, "gpt_neox": _gpt_neox, "bert": _bert}
_DEFAULT_PREFIX = {"llama": "model.", "phi3": "model.", "gpt2": "", "gpt_neox": "gpt_neox.", "bert": ""}


def write_tensors(folder, tensors, shards, rng):
    """``model.safetensors``, or ``shards`` files plus ``model.safetensors.index.json`` (tensors shuffled)."""
    tensors = {name: t.contiguous().clone() for name, t in tensors.items()}  # no shared storage
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return
    names = list(tensors)
    rng.shuffle(names)  # one layer's tensors land in different shards, in no particular order
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i::shards]
        save_file({name: tensors[name] for name in part}, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
