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
    L, H, Hkv, d, n = shape or default_shape(model_type)
    rng = np.random.default_rng(seed)

    def stored(*dims, scale=1.0, offset=0.0):
        # Round to the file's dtype first: the truth uses exactly what the file holds.
        t = torch.from_numpy(offset + scale * rng.standard_normal(dims)).to(dtype)
        return t, t.double().numpy()

    q_t, w_q = stored(L, H, d, n, scale=n ** -0.5)
    k_t, w_k = (q_t[:, :Hkv], w_q[:, :Hkv]) if tie_qk else stored(L, Hkv, d, n, scale=n ** -0.5)
    v_t, _ = stored(L, Hkv, d, n, scale=n ** -0.5)
    gemma = model_type in GEMMA
    # Gemma stores w with the gain 1 + w; the others store the gain.
    gain_offset = 0.0 if gemma else 1.0

    def gain(*dims):
        t, w = stored(*dims, scale=0.3, offset=gain_offset)
        return t, (1.0 + w if gemma else w)

    input_gain = [gain(n) for _ in range(L + 1)]  # BERT uses L + 1 (embeddings + each layer's output)
    col = np.stack([g for _, g in input_gain[:L]])
    row_q = np.ones((L, H, d))
    row_k = np.ones((L, Hkv, d))
    tensors = {}
    if model_type in LLAMA_STYLE:
        prefix = "model." if prefix is None else prefix
        qn = [gain(d) for _ in range(L)] if model_type in PER_HEAD_QK_NORM else None
        kn = [gain(d) for _ in range(L)] if model_type in PER_HEAD_QK_NORM else None
        if model_type in ALL_HEADS_QK_NORM:
            qn, kn = [gain(H * d) for _ in range(L)], [gain(Hkv * d) for _ in range(L)]
        for l in range(L):
            base = f"{prefix}layers.{l}."
            tensors[base + "self_attn.q_proj.weight"] = q_t[l].reshape(H * d, n)
            tensors[base + "self_attn.k_proj.weight"] = k_t[l].reshape(Hkv * d, n)
            tensors[base + "self_attn.v_proj.weight"] = v_t[l].reshape(Hkv * d, n)
            tensors[base + "self_attn.o_proj.weight"] = torch.zeros(n, H * d, dtype=dtype)
            if model_type not in NO_INPUT_NORM:
                tensors[base + "input_layernorm.weight"] = input_gain[l][0]
            tensors[base + "post_attention_layernorm.weight"] = input_gain[L][0]
            if qn is not None:
                tensors[base + "self_attn.q_norm.weight"] = qn[l][0]
                tensors[base + "self_attn.k_norm.weight"] = kn[l][0]
                row_q[l] = qn[l][1].reshape(-1, d) if model_type in ALL_HEADS_QK_NORM else qn[l][1]
                row_k[l] = kn[l][1].reshape(-1, d) if model_type in ALL_HEADS_QK_NORM else kn[l][1]
        if model_type in NO_INPUT_NORM:
            col = np.ones((L, n))
        config = dict(num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=Hkv, hidden_size=n,
                      head_dim=d, rope_theta=10000.0)
    elif model_type == "phi3":
        prefix = "model." if prefix is None else prefix
        for l in range(L):
            base = f"{prefix}layers.{l}."
            tensors[base + "self_attn.qkv_proj.weight"] = torch.cat(
                [q_t[l].reshape(H * d, n), k_t[l].reshape(Hkv * d, n), v_t[l].reshape(Hkv * d, n)])
            tensors[base + "input_layernorm.weight"] = input_gain[l][0]
        config = dict(num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=Hkv, hidden_size=n)
    elif model_type == "gpt2":
        prefix = "" if prefix is None else prefix
        for l in range(L):
            # Conv1D: y = x W + b with W (n, 3n), columns [Q | K | V].
            fused = torch.cat([q_t[l].reshape(n, n), k_t[l].reshape(n, n), v_t[l].reshape(n, n)])
            tensors[f"{prefix}h.{l}.attn.c_attn.weight"] = fused.T.contiguous()
            tensors[f"{prefix}h.{l}.attn.c_attn.bias"] = torch.zeros(3 * n, dtype=dtype)
            tensors[f"{prefix}h.{l}.ln_1.weight"] = input_gain[l][0]
        config = dict(n_layer=L, n_head=H, n_embd=n)
    elif model_type == "gpt_neox":
        prefix = "gpt_neox." if prefix is None else prefix
        for l in range(L):
            # Per head h the rows [q_h; k_h; v_h]: view (H, 3, d, n).
            tensors[f"{prefix}layers.{l}.attention.query_key_value.weight"] = torch.stack(
                [q_t[l], k_t[l], v_t[l]], dim=1).reshape(3 * n, n)
            tensors[f"{prefix}layers.{l}.input_layernorm.weight"] = input_gain[l][0]
        config = dict(num_hidden_layers=L, num_attention_heads=H, hidden_size=n, rotary_pct=0.25)
    elif model_type == "bert":
        prefix = "" if prefix is None else prefix
        tensors[f"{prefix}embeddings.LayerNorm.weight"] = input_gain[0][0]
        for l in range(L):
            base = f"{prefix}encoder.layer.{l}."
            tensors[base + "attention.self.query.weight"] = q_t[l].reshape(n, n)
            tensors[base + "attention.self.key.weight"] = k_t[l].reshape(n, n)
            tensors[base + "attention.self.query.bias"] = torch.zeros(n, dtype=dtype)
            tensors[base + "output.LayerNorm.weight"] = input_gain[l + 1][0]
        # Layer l's attention reads the LayerNorm output of layer l - 1 (the embeddings' for layer 0).
        col = np.stack([g for _, g in input_gain[:L]])
        config = dict(num_hidden_layers=L, num_attention_heads=H, hidden_size=n)
    else:
        raise ValueError(model_type)
    config["model_type"] = model_type
    config.update(config_extra or {})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    write_tensors(folder, tensors, shards, rng)
    folded_q = row_q[..., :, None] * w_q * col[:, None, None, :]
    folded_k = row_k[..., :, None] * w_k * col[:, None, None, :]
    return TinyModel(folder, model_type, w_q, w_k, folded_q, folded_k)


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
