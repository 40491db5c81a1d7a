"""A GGUF written the way llama.cpp's converter writes it measures as the Hugging Face folder it came from.

Tiny random transformers models of every architecture measure reads in GGUF are saved as a safetensors
folder and converted (:mod:`qkalign.testing.gguf_files`: Q/K rows permuted for the llama family, Gemma's
gains stored as ``1 + w``, GPT-2's Conv1D transposed, GPT-NeoX's heads regrouped). The operator at relative
distance 0 does not change under a common row permutation of a head's Q and K, so grams, spectra and
eigen-directions agree; the recorded rotary pairing maps the file's rows back onto the folder's.
"""

import numpy as np
import pytest

pytest.importorskip("transformers")

from qkalign.testing.gguf_files import CONFIGS, GGUF_ARCH, PERMUTED, build_model, write_gguf_from_folder  # noqa: E402
from qkalign.weights.gguf_layout import HALF_SPLIT, INTERLEAVED, half_split_rows  # noqa: E402
from qkalign.weights.measure import measure, open_model  # noqa: E402

EPS64 = np.finfo(np.float64).eps
EPS32 = np.finfo(np.float32).eps
NO_ROPE = ("gpt2", "bert")
# Rotated dimensions per head of CONFIGS: GPT-NeoX rotary_pct 0.25 of 16, Phi-3 int(0.75 n) // H = 12.
ROTARY_DIMS = {"gpt_neox": 4, "phi3": 12}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """model_type -> (folder, GGUF path) of one tiny random model."""
    out = {}
    for model_type in CONFIGS:
        if model_type == "olmo":
            continue  # OLMo's converter output equals llama's here (permuted, no input norm): one is enough below
        folder = tmp_path_factory.mktemp(model_type)
        build_model(model_type, folder)
        out[model_type] = folder, write_gguf_from_folder(folder, folder / "model.gguf")[0]
    return out


def tolerance(data, eps, factor=8):
    """Entry-wise bound of two computations of the same gram: ``factor`` eps per term summed, relative to the
    Cauchy-Schwarz bound ``||g_L|| ||g_L'||`` (a gram entry sums L·d·d·n/d products of n-term sums: n + 2 d terms)."""
    norms = np.sqrt(np.einsum("llh->lh", data.gram))
    return factor * (data.hidden_size + 2 * data.head_dim) * eps * norms[:, None, :] * norms[None, :, :]


def assert_same_operators(a, b, eps):
    assert (a.num_layers, a.num_heads, a.head_dim, a.hidden_size) == (b.num_layers, b.num_heads, b.head_dim,
                                                                         b.hidden_size)
    assert np.all(np.abs(a.gram - b.gram) <= tolerance(a, eps))
    top = np.abs(a.sym_eigs[..., :1])
    assert np.all(np.abs(a.sym_eigs - b.sym_eigs) <= 8 * (a.hidden_size + 2 * a.head_dim) * eps * top)
    # Directions up to sign where the eigenvalue stands apart from its neighbours.
    lam = np.abs(a.sym_eigs[..., : a.topk + 1])
    gap = np.minimum(np.abs(np.diff(lam, axis=-1))[..., : a.topk],
                     np.abs(np.diff(lam, axis=-1, prepend=np.inf))[..., : a.topk])
    separated = gap >= 1e-3 * lam[..., :1]
    cosines = np.abs(np.einsum("lhkn,lhkn->lhk", a.eig_dirs, b.eig_dirs))
    assert separated.mean() > 0.5 and cosines[separated].min() >= 1 - 1e-6


@pytest.mark.parametrize("model_type", [mt for mt in CONFIGS if mt != "olmo"])
def test_gguf_measures_as_its_folder(converted, model_type):
    folder, gguf_path = converted[model_type]
    from_folder = measure(folder, topk=8, precision="float64", progress=False)
    from_gguf = measure(gguf_path, topk=8, precision="float64", progress=False)
    assert_same_operators(from_folder, from_gguf, EPS64)
    extra = from_gguf.extra
    assert extra["source_format"] == "gguf" and extra["model_type"] == GGUF_ARCH[model_type]
    assert set(extra["tensor_types"].values()) == {"F32"}
    if model_type in NO_ROPE:
        assert extra["rotary_pairing"] is None and extra["rotary_dims"] is None
    else:
        assert extra["rotary_pairing"] == (INTERLEAVED if model_type in PERMUTED else HALF_SPLIT)
        assert extra["rotary_dims"] == ROTARY_DIMS.get(model_type, from_gguf.head_dim)


@pytest.mark.parametrize("model_type", [mt for mt in CONFIGS if mt != "olmo"])
def test_folded_norms_agree(converted, model_type):
    """--fold-norms multiplies the same gains in: GGUF's attn_norm (Gemma's 1 + w, rounded to float32 by the
    converter), BERT's token_embd_norm / layer_output_norm, the QK-norms."""
    folder, gguf_path = converted[model_type]
    from_folder = measure(folder, topk=8, precision="float64", fold_norms=True, progress=False)
    from_gguf = measure(gguf_path, topk=8, precision="float64", fold_norms=True, progress=False)
    # Gemma's 1 + w is float32 in the file (the converter's float32 sum) and float64 in measure's folder read.
    assert_same_operators(from_folder, from_gguf, EPS32 if model_type.startswith("gemma") else EPS64)
    assert len(from_gguf.extra["folded_gains"]) == len(from_folder.extra["folded_gains"])
    unfolded = measure(gguf_path, topk=8, precision="float64", progress=False)
    assert np.abs(unfolded.gram - from_gguf.gram).max() > 1e-3 * np.abs(unfolded.gram).max()  # gains did something


@pytest.mark.parametrize("model_type", ["llama", "mistral", "granite", "qwen2", "phi3", "gpt_neox"])
def test_recorded_pairing_maps_gguf_rows_onto_the_folders(converted, model_type):
    """Each head's Q and K block read from the GGUF, put in :func:`half_split_rows` order, is the folder's block."""
    folder, gguf_path = converted[model_type]
    f_model, f_layout, shape = open_model(folder)
    g_model, g_layout, g_shape = open_model(gguf_path)
    assert g_shape == shape
    data = measure(gguf_path, topk=1, progress=False)
    order = half_split_rows(shape.head_dim, data.extra["rotary_dims"], data.extra["rotary_pairing"])
    assert (order == np.arange(shape.head_dim)).all() == (model_type not in PERMUTED)
    for layer in range(shape.num_layers):
        for head in range(shape.num_heads):
            np.testing.assert_array_equal(g_model.read_block(g_layout.q_block(shape, layer, head))[order],
                                          f_model.read_block(f_layout.q_block(shape, layer, head)))
        for kv_head in range(shape.num_kv_heads):
            np.testing.assert_array_equal(g_model.read_block(g_layout.k_block(shape, layer, kv_head))[order],
                                          f_model.read_block(f_layout.k_block(shape, layer, kv_head)))


def test_olmo_is_permuted_without_an_input_norm(tmp_path):
    build_model("olmo", tmp_path)
    path = write_gguf_from_folder(tmp_path, tmp_path / "model.gguf")[0]
    from_gguf = measure(path, topk=8, precision="float64", fold_norms=True, progress=False)
    assert from_gguf.extra["rotary_pairing"] == INTERLEAVED and from_gguf.extra["folded_gains"] == []
    assert_same_operators(measure(tmp_path, topk=8, precision="float64", progress=False), from_gguf, EPS64)


@pytest.mark.parametrize("model_type", [mt for mt in CONFIGS if mt != "olmo"])
def test_measure_records_the_models_rope(converted, model_type):
    """``rope_parameters``: θ_i as the model's own rotary embedding holds them (float32 there: within a few
    float32 ulps of their float64 formula, tests/test_rope.py), the same from the folder and from the GGUF
    (whose pairing is the file's); absent (None) for the models without RoPE."""
    import torch
    import transformers

    folder, gguf_path = converted[model_type]
    from_folder = measure(folder, topk=1, progress=False).extra["rope_parameters"]
    from_gguf = measure(gguf_path, topk=1, progress=False).extra["rope_parameters"]
    if model_type in NO_ROPE:
        assert from_folder is None and from_gguf is None
        return
    kinds = from_folder["kinds"]
    assert set(kinds) == set(from_gguf["kinds"]) and from_folder["layer_kinds"] == from_gguf["layer_kinds"]
    for kind, spec in kinds.items():
        # Llama 3 scaling is stored as float32 factors (the rope_freqs tensor): θ_i / factor_i within 2 ulps.
        rtol = 4 * EPS32 if "rope_freqs" in from_gguf["kinds"][kind]["source"] else 1e-12
        np.testing.assert_allclose(from_gguf["kinds"][kind]["inv_freq"], spec["inv_freq"], rtol=rtol, atol=0)
        assert spec["pairing"] == HALF_SPLIT
        assert from_gguf["kinds"][kind]["pairing"] == (INTERLEAVED if model_type in PERMUTED else HALF_SPLIT)
    config = transformers.AutoConfig.from_pretrained(folder)
    with torch.device("cpu"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    rotary = model.base_model.rotary_emb
    if "all" in kinds:
        np.testing.assert_allclose(kinds["all"]["inv_freq"], rotary.inv_freq.double().numpy(), rtol=64 * EPS32)
    else:  # Gemma 3: one embedding per layer kind (here both layers are local: every 6th is global)
        for kind, spec in kinds.items():
            held = getattr(rotary, f"{kind}_inv_freq").double().numpy()
            np.testing.assert_allclose(spec["inv_freq"], held, rtol=64 * EPS32)
