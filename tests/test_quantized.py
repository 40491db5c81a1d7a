"""Quantised checkpoints: FP8 block-scaled weights measured exactly, integer formats refused in one line."""

import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from qkalign.errors import InputError
from qkalign.testing.processes import run_concurrently
from qkalign.testing.quantized_folders import (
    INTEGER_FORMATS,
    dequantize_fp8,
    quantize_fp8,
    write_fp8_model,
    write_integer_quantized,
)
from qkalign.weights.fp8 import BlockScaledFp8
from qkalign.weights.measure import measure

ARRAYS = ("gram", "fro_sq", "sym_eigs", "eig_dirs")


def test_dequantize_every_row_and_column_range():
    """Every range of rows (columns), starting and ending inside, on or across blocks, edge blocks smaller."""
    rng = np.random.default_rng(0)
    block, shape = (4, 3), (10, 7)  # edge blocks of 2 rows and 1 column
    q, grid = quantize_fp8(rng.standard_normal(shape) * np.exp(rng.uniform(-5, 5, shape)), block, rng)
    truth = dequantize_fp8(q, grid, block)
    fp8 = BlockScaledFp8(*block)
    assert fp8.scale_shape(shape) == grid.shape == (3, 3)
    for transposed, size in ((False, shape[0]), (True, shape[1])):
        for start in range(size):
            for stop in range(start + 1, size + 1):
                index = (slice(None), slice(start, stop)) if transposed else slice(start, stop)
                scales = grid[fp8.scale_index(start, stop, transposed)]
                got = fp8.dequantize(q[index].float().numpy(), scales.numpy(), start, transposed)
                assert got.dtype == np.float64
                np.testing.assert_array_equal(got, truth[index])


def test_fp8_product_is_exact_in_float64_and_not_in_float32():
    """The docstring's claim: a 4-bit times a 24-bit significand fits float64, not always float32."""
    rng = np.random.default_rng(1)
    q, grid = quantize_fp8(rng.standard_normal((64, 64)), (64, 64), rng)
    scale = grid.item()
    values = [float(v) for v in q.double().flatten()]
    assert all(Fraction(v * scale) == Fraction(v) * Fraction(scale) for v in values)
    assert any(Fraction(float(np.float32(v) * np.float32(scale))) != Fraction(v) * Fraction(scale) for v in values)


@pytest.mark.parametrize("model_type, shape, block, shards, fold_norms", [
    ("qwen3", (2, 4, 2, 48, 200), (128, 128), 2, False),  # GQA; head rows 96:144 cross a block edge
    ("gpt2", (2, 3, 3, 48, 144), (128, 128), 1, False),  # Conv1D: column ranges of a (144, 432) weight
    ("llama", (2, 4, 2, 8, 40), (16, 24), 1, True),  # many small blocks, norm gains folded in
])
def test_fp8_equals_dequantized_twin(tmp_path, model_type, shape, block, shards, fold_norms):
    """Bitwise: the float64 dequantisation is exact, and float32 mode rounds it once, as the twin's writer did."""
    model = write_fp8_model(tmp_path, model_type, shape=shape, block=block, shards=shards, seed=3)
    for precision, twin in (("float32", model.twin32), ("float64", model.twin64)):
        got = measure(model.folder, topk=4, precision=precision, fold_norms=fold_norms, progress=False)
        want = measure(twin, topk=4, precision=precision, fold_norms=fold_norms, progress=False)
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=f"{precision} {name}")
        assert got.extra["checkpoint_dtypes"] == (["F32", "F8_E4M3"] if fold_norms else ["F8_E4M3"])
    # The twins differ (float32 rounding of the products), so the comparisons above tell them apart.
    assert not np.array_equal(load_file(str(next(model.twin32.glob("*.safetensors"))))[_first_weight(model)].double(),
                              load_file(str(next(model.twin64.glob("*.safetensors"))))[_first_weight(model)])


def _first_weight(model):
    return sorted(model.dequantized)[0]


def _rewrite(folder, edit_tensors=None, edit_config=None):
    """Rewrite a single-file folder's tensors and config.json in place."""
    path = folder / "model.safetensors"
    if edit_tensors:
        save_file(edit_tensors(load_file(str(path))), str(path))
    if edit_config:
        config = json.loads((folder / "config.json").read_text())
        edit_config(config)
        (folder / "config.json").write_text(json.dumps(config))


def _without_scales(tensors):
    return {k: v for k, v in tensors.items() if not k.endswith("_scale_inv")}


def _as_e5m2(tensors):
    return {k: v.to(torch.float8_e5m2) if v.dtype == torch.float8_e4m3fn else v for k, v in tensors.items()}


def _per_channel(tensors):
    out = _without_scales(tensors)
    out.update({k[: -len("_scale_inv")].replace("weight", "weight_scale"): torch.ones(1)
                for k in tensors if k.endswith("_scale_inv")})
    return out


def _wrong_scale_shape(tensors):
    return {k: v[:1] if k.endswith("_scale_inv") else v for k, v in tensors.items()}


FP8_ERRORS = {  # case: (tensor edit, config edit, words the message must hold)
    "e5m2": (_as_e5m2, None, ["found F8_E5M2", "F8_E4M3 with block scales"]),
    "no-scales": (_without_scales, None, ["q_proj.weight_scale_inv", "no scale tensor"]),
    "per-channel": (_per_channel, None, ["weight_scale", "per-tensor or per-channel"]),
    "no-config": (None, lambda c: c.pop("quantization_config"), ["q_proj.weight", "weight_block_size", "no quantization_config"]),
    "no-block-size": (None, lambda c: c["quantization_config"].pop("weight_block_size"),
                      ["weight_block_size", "per-tensor or per-channel FP8", "it missing"]),
    "bad-block-size": (None, lambda c: c["quantization_config"].update(weight_block_size=[128]),
                       ["weight_block_size", "[128]"]),
    "fmt-e5m2": (None, lambda c: c["quantization_config"].update(fmt="e5m2"), ["fmt", "'e5m2'"]),
    "scale-shape": (_wrong_scale_shape, None, ["q_proj.weight_scale_inv", "shape (2, 2)", "found (1, 2)"]),
}


@pytest.fixture(scope="module")
def refused_folders(tmp_path_factory):
    """{case: (folder, words the error must hold)} for every FP8 and integer-quantised refusal."""
    root = tmp_path_factory.mktemp("refused")
    cases = {}
    for case, (tensors, config, words) in FP8_ERRORS.items():
        model = write_fp8_model(root / case, "llama", shape=(2, 4, 2, 8, 24), block=(16, 16))
        _rewrite(model.folder, tensors, config)
        cases["fp8-" + case] = (model.folder, words)
    names = {"gptq": "GPTQ 4-bit", "awq": "AWQ 4-bit", "bitsandbytes-4bit": "bitsandbytes 4-bit nf4",
             "bitsandbytes-8bit": "bitsandbytes 8-bit"}
    names_only = {"gptq": "GPTQ (qweight", "awq": "GPTQ/AWQ-style", "bitsandbytes-4bit": "bitsandbytes 4-bit",
                  "bitsandbytes-8bit": "bitsandbytes 8-bit"}
    for method in INTEGER_FORMATS:
        cases[method] = (write_integer_quantized(root / method, method),
                         [names[method], "config.json: quantization_config", "unquantised", "FP8"])
        cases[method + "-names"] = (write_integer_quantized(root / (method + "-names"), method, with_config=False),
                                    [names_only[method], "model.safetensors: tensor names", "unquantised", "FP8"])
    return cases


@pytest.mark.parametrize("case", [f"fp8-{c}" for c in FP8_ERRORS] + list(INTEGER_FORMATS)
                         + [m + "-names" for m in INTEGER_FORMATS])
def test_refused_in_one_line(refused_folders, case, cli, tmp_path):
    folder, words = refused_folders[case]
    with pytest.raises(InputError) as err:
        measure(folder, topk=2, progress=False)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
    assert "expected this tensor" not in message  # not the missing q_proj.weight
    proc = cli("measure", folder, "-o", tmp_path / "out", "--quiet")
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"qkalign: error: {message}\n")


@pytest.mark.slow
def test_cli_refusals_exit_2_in_a_new_process(refused_folders, tmp_path):
    """The command as a user runs it, for an FP8 and an integer-quantised refusal."""
    commands = {case: ("measure", refused_folders[case][0], "-o", tmp_path / case, "--quiet")
                for case in ("fp8-no-scales", "gptq")}
    for case, proc in run_concurrently(commands).items():
        assert proc.returncode == 2, (case, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qkalign: error: "), (case, proc.stderr)
        assert all(word in lines[0] for word in refused_folders[case][1]), (case, lines[0])


def test_every_fp8_bit_pattern_decodes_as_torch_decodes_it():
    from qkalign.weights.safetensors_ranges import decode

    bits = np.arange(256, dtype=np.uint8)
    ours = decode(bits.tobytes(), "F8_E4M3", (256,), "test", "q")
    theirs = torch.from_numpy(bits).view(torch.float8_e4m3fn).float().numpy()
    np.testing.assert_array_equal(ours, theirs)  # NaN where torch has NaN (S.1111.111)
    assert ours.dtype == np.float32 and np.nanmax(ours) == 448.0


def test_bfloat16_decodes_as_torch_decodes_it():
    from qkalign.weights.safetensors_ranges import decode

    bits = np.arange(2**16, dtype=np.uint16)
    ours = decode(bits.tobytes(), "BF16", (2**16,), "test", "w")
    theirs = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(ours, theirs)
