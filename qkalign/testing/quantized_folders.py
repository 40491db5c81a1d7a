"""Quantised model folders: FP8 block-scaled checkpoints with their dequantised twins, and
integer-quantised ones (GPTQ, AWQ, bitsandbytes) that ``measure`` refuses.

The FP8 weights are made here as the published checkpoints make them (per block ``s =
amax / 448``, times a random factor so that no two blocks share a scale, ``q =
float8_e4m3fn(w / s)``), and the twins are dequantised with ``numpy.kron`` of the scale grid,
independently of :mod:`qkalign.weights.fp8`.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .model_folders import TinyModel, write_model, write_tensors

FP8_MAX = 448.0  # the largest float8_e4m3fn


@dataclass
class Fp8Model:
    """An FP8 checkpoint and its twins: the same weights dequantised, stored as float32 and as float64.

    ``twin32`` holds ``q * s`` rounded once to float32 (what a float32 dequantiser writes),
    ``twin64`` the exact products; ``dequantized`` maps each FP8 weight's name to them (float64).
    """

    folder: Path
    twin32: Path
    twin64: Path
    dequantized: dict
    source: TinyModel


def quantize_fp8(w, block, rng):
    """``(q, s)``: float8_e4m3fn values and float32 block scales ``(ceil(R/br), ceil(C/bc))`` of ``w`` (R, C)."""
    rows, cols = w.shape
    br, bc = block
    grid = np.empty((-(-rows // br), -(-cols // bc)), dtype=np.float32)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            amax = np.abs(w[i * br:(i + 1) * br, j * bc:(j + 1) * bc]).max()
            # Random factors give 24-bit significands (powers of two would make float32 products exact).
            grid[i, j] = (amax if amax > 0 else 1.0) / FP8_MAX * rng.uniform(1.0, 1.5)
    scales = expand_grid(grid.astype(np.float64), block, w.shape)
    return torch.from_numpy(w / scales).to(torch.float8_e4m3fn), torch.from_numpy(grid)


def expand_grid(grid, block, shape):
    """The scale of every entry: ``kron(grid, ones(block))`` cut to ``shape``."""
    return np.kron(grid, np.ones(block))[: shape[0], : shape[1]]


def dequantize_fp8(q, scale_grid, block):
    """``q * s`` of every entry in float64 (exact: 4-bit times 24-bit significands)."""
    return q.to(torch.float64).numpy() * expand_grid(scale_grid.to(torch.float64).numpy(), block, q.shape)


def write_fp8_model(folder, model_type="qwen3", *, shape=None, block=(128, 128), shards=1, seed=0,
                    config_extra=None):
    """Write ``folder/fp8`` (every 2-D weight as FP8 with ``<name>_scale_inv``) and its twins ``folder/twin32``,
    ``folder/twin64``; the source model (float32) goes to ``folder/source``."""
    folder = Path(folder)
    source = write_model(folder / "source", model_type, shape=shape, seed=seed)
    tensors = load_file(str(source.folder / "model.safetensors"))
    config = json.loads((source.folder / "config.json").read_text())
    rng = np.random.default_rng(seed + 1)
    fp8, twin32, twin64, dequantized = {}, {}, {}, {}
    for name, t in tensors.items():
        if t.ndim != 2:  # norm gains stay as they are, as in the published checkpoints
            fp8[name] = twin32[name] = twin64[name] = t
            continue
        q, grid = quantize_fp8(t.double().numpy(), block, rng)
        fp8[name], fp8[name + "_scale_inv"] = q, grid
        dequantized[name] = dequantize_fp8(q, grid, block)
        twin64[name] = torch.from_numpy(dequantized[name])
        twin32[name] = twin64[name].float()  # rounded once to nearest
    quantization = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                    "weight_block_size": list(block)}
    for name, weights, extra in (("fp8", fp8, {"quantization_config": quantization, **(config_extra or {})}),
                                 ("twin32", twin32, {}), ("twin64", twin64, {})):
        out = folder / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({**config, **extra}))
        write_tensors(out, weights, shards, np.random.default_rng(seed))
    return Fp8Model(folder / "fp8", folder / "twin32", folder / "twin64", dequantized, source)


#: Integer formats: their quantization_config and the tensors that replace a Linear's ``weight`` (out, n).
INTEGER_FORMATS = ("gptq", "awq", "bitsandbytes-4bit", "bitsandbytes-8bit")


def write_integer_quantized(folder, method, *, with_config=True, shape=(2, 4, 2, 8, 32)):
    """A tiny Llama folder whose q/k/v/o projections are stored in integer format ``method`` (INTEGER_FORMATS).

    The packed tensors have the formats' names, dtypes and shapes (their contents are not a real
    quantisation: only the refusal is tested). ``with_config=False`` leaves out
    ``quantization_config``, so only the tensor names tell.
    """
    num_layers, num_heads, num_kv, head_dim, hidden = shape
    group = hidden  # one quantisation group per input row block
    tensors = {}
    for layer in range(num_layers):
        base = f"model.layers.{layer}."
        tensors[base + "input_layernorm.weight"] = torch.ones(hidden)
        for proj, out in (("q_proj", num_heads * head_dim), ("k_proj", num_kv * head_dim),
                          ("v_proj", num_kv * head_dim), ("o_proj", hidden)):
            name = f"{base}self_attn.{proj}."
            if method == "gptq":
                tensors[name + "qweight"] = torch.zeros(hidden // 8, out, dtype=torch.int32)
                tensors[name + "qzeros"] = torch.zeros(hidden // group, out // 8, dtype=torch.int32)
                tensors[name + "scales"] = torch.ones(hidden // group, out, dtype=torch.float16)
                tensors[name + "g_idx"] = torch.zeros(hidden, dtype=torch.int32)
            elif method == "awq":
                tensors[name + "qweight"] = torch.zeros(hidden, out // 8, dtype=torch.int32)
                tensors[name + "qzeros"] = torch.zeros(hidden // group, out // 8, dtype=torch.int32)
                tensors[name + "scales"] = torch.ones(hidden // group, out, dtype=torch.float16)
            elif method == "bitsandbytes-4bit":
                tensors[name + "weight"] = torch.zeros(out * hidden // 2, 1, dtype=torch.uint8)
                tensors[name + "weight.absmax"] = torch.ones(out * hidden // 64)
                tensors[name + "weight.quant_map"] = torch.linspace(-1, 1, 16)
                tensors[name + "weight.quant_state.bitsandbytes__nf4"] = torch.zeros(32, dtype=torch.uint8)
            elif method == "bitsandbytes-8bit":
                tensors[name + "weight"] = torch.zeros(out, hidden, dtype=torch.int8)
                tensors[name + "SCB"] = torch.ones(out)
            else:
                raise ValueError(method)
    config = dict(model_type="llama", num_hidden_layers=num_layers, num_attention_heads=num_heads,
                  num_key_value_heads=num_kv, hidden_size=hidden, head_dim=head_dim)
    if with_config:
        config["quantization_config"] = {
            "gptq": {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": False},
            "awq": {"quant_method": "awq", "bits": 4, "group_size": group, "version": "gemm"},
            "bitsandbytes-4bit": {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
            "bitsandbytes-8bit": {"quant_method": "bitsandbytes", "load_in_8bit": True},
        }[method]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    write_tensors(folder, tensors, 1, np.random.default_rng(0))
    return folder
