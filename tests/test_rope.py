"""qkalign.weights.rope against transformers' own RoPE initialisation and llama.cpp's GGUF metadata.

Every rope type of ``ROPE_INIT_FUNCTIONS`` (and each family's ``compute_default_rope_parameters``), in the
config spellings transformers 4.x and 5.x write, is compared with the function itself; every family with
the rotary embedding module of a tiny model built from the same config.json; GGUF files written from tiny
model folders as llama.cpp's converter writes them with the folder's config. The rotation ``R(Δ)`` is
checked against transformers' ``apply_rotary_pos_emb``.

**Tolerance.** transformers computes ``θ_i`` in float32, qkalign in float64 from the same formulas, so the
two differ by float32 rounding. With ``U = 2^-24`` (float32's unit roundoff: a correctly rounded operation
is off by at most ``U`` relatively, one ulp is at most ``2U``), :func:`bound` is a first-order bound on that
difference, relative, element by element:

- default ``θ_i = 1 / base^(2i/d)``: the float32 exponent ``2i/d`` (a rounded division, ``<= U``) moves
  ``base^(2i/d)`` by ``<= |ln base| U``; the power (torch's float32 ``pow``, ``<= 1`` ulp = ``2U``) and ``1/x``
  (``U``) add ``3U``, and ``U`` spare: ``B0 = (|ln base| + 4) U``;
- linear ``/ factor``, longrope ``/ (short_factor · base^...)`` (the factors rounded to float32): ``+ 3U``;
- yarn ``(1 − e) θ/f + e θ``: the float32 ramp ``e`` is off by ``<= 2U`` absolutely, which moves the blend by
  ``<= 2 (f − 1) U`` relative to it (the blend is at least ``θ/f``); ``+ 3U`` for the products and the sum;
- llama3: the weight ``t = (L/λ − lo)/(hi − lo)`` from the float32 wavelength ``λ = 2π/θ`` is off by
  ``<= hi (B0 + 3U)/(hi − lo) + U``, weighing ``(f − 1)`` as in yarn; ``+ 3U``.

Measured differences are a few ``U`` for the parameters here (up to 85 ``U`` in an extreme llama3 smooth band,
factor 32 and bands 2..3, whose bound is 2000 ``U``); an exponent off by 1e-5 relatively, or a frequency of the
wrong index, is far outside. Attention factors
are Python floats in transformers too: equal exactly. GGUF against config: both sides are qkalign's float64,
equal to 1e-15, except Llama 3's ``rope_freqs``, which the converter computes in float32 (the llama3 bound).
"""

import copy
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402

from qkalign.errors import InputError  # noqa: E402
from qkalign.testing.gguf_files import build_model, converter_permutation, write_gguf_from_folder  # noqa: E402
from qkalign.weights.gguf_layout import ARCHITECTURES, HALF_SPLIT, INTERLEAVED, GGUFLayout  # noqa: E402
from qkalign.weights.gguf_model import GGUFModel  # noqa: E402
from qkalign.weights.gguf_reader import open_gguf  # noqa: E402
from qkalign.weights.rope import (  # noqa: E402
    ROPE_TYPES,
    ModelRope,
    RopeSpec,
    default_inv_freq,
    rope_from_config,
    rope_from_gguf,
    uniform_rope,
)

U = 2.0 ** -24


def bound(rope_type, base, factor=1.0, low=1.0, high=4.0):
    """The relative tolerance of transformers' float32 ``θ_i`` against the float64 formula (module docstring)."""
    b0 = (abs(math.log(base)) + 4) * U
    if rope_type in ("default", "dynamic", "proportional"):
        return b0
    if rope_type in ("linear", "longrope"):
        return b0 + 3 * U
    if rope_type == "yarn":
        return b0 + 2 * (factor - 1) * U + 3 * U
    assert rope_type == "llama3"
    return b0 + (factor - 1) * (high * (b0 + 3 * U) / (high - low) + U) + 3 * U


def assert_theta(ours, theirs, rtol):
    """``ours`` (float64) equals transformers' float32 ``theirs`` within ``rtol`` relatively (0 where theirs is 0)."""
    theirs = np.asarray(theirs.detach().double() if hasattr(theirs, "detach") else theirs, dtype=np.float64)
    assert ours.dtype == np.float64 and ours.shape == theirs.shape
    scale = np.where(theirs == 0, 1.0, np.abs(theirs))
    worst = float(np.max(np.abs(ours - theirs) / scale))
    assert worst <= rtol, f"max relative difference {worst:.3g} = {worst / U:.1f} U > {rtol / U:.1f} U"


def transformers_init(config, rope_type):
    """``(inv_freq, attention_factor)`` of transformers' own initialisation of ``rope_type``."""
    if rope_type == "default":
        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[rope_type](config, device="cpu")


# -------------------------------------------------------------------------------------------------------------
# Every rope type, both spellings

LLAMA = dict(model_type="llama", hidden_size=160, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3,
             max_position_embeddings=131072)  # head_dim 40: 2i/40 is no binary fraction, the exponent rounds
SHORT = list(np.linspace(1.0, 3.5, 20))
TYPES = {  # rope_type -> (its parameters, the base)
    "default": ({}, 5e5),
    "linear": ({"factor": 8.0}, 1e4),
    "dynamic": ({"factor": 4.0}, 1e4),
    "yarn": ({"factor": 4.0, "original_max_position_embeddings": 4096}, 1e6),
    "llama3": ({"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}, 5e5),
    "longrope": ({"short_factor": SHORT, "long_factor": [4.0] * 20, "original_max_position_embeddings": 4096}, 1e4),
    "proportional": ({"partial_rotary_factor": 0.5, "factor": 2.0}, 1e6),
}
SPELLINGS = ("rope_parameters", "rope_scaling rope_type", "rope_scaling type", "to_dict")


def spelled(rope_type, spelling, **more):
    """A config.json of ``rope_type`` in one of transformers' spellings: 5.x ``rope_parameters`` (with its
    ``rope_theta``), 4.x ``rope_theta`` + ``rope_scaling`` (``rope_type`` or the older ``type``), or what a
    transformers 5 config of the 5.x spelling writes (``to_dict``)."""
    params, base = TYPES[rope_type]
    params = {**copy.deepcopy(params), **more}
    if spelling in ("rope_parameters", "to_dict"):
        raw = dict(LLAMA, rope_parameters={"rope_type": rope_type, "rope_theta": base, **params})
        return LlamaConfig.from_dict(copy.deepcopy(raw)).to_dict() if spelling == "to_dict" else raw
    key = "type" if spelling == "rope_scaling type" else "rope_type"
    scaling = None if rope_type == "default" else {key: rope_type, **params}
    return dict(LLAMA, rope_theta=base, rope_scaling=scaling)


# proportional (Gemma 4) is a 5.x rope type: no rope_scaling spelling
@pytest.mark.parametrize("rope_type, spelling", [(t, s) for t in ROPE_TYPES for s in SPELLINGS
                                                 if t != "proportional" or s == "rope_parameters"])
def test_every_rope_type_gives_transformers_frequencies(rope_type, spelling):
    raw = spelled(rope_type, spelling)
    config = LlamaConfig.from_dict(copy.deepcopy(raw))
    theirs, factor = transformers_init(config, rope_type)
    rope = rope_from_config(raw)
    assert rope.uniform and rope.num_layers == 3
    spec = rope.layer(2)
    params, base = TYPES[rope_type]
    assert (spec.rope_type, spec.base, spec.pairing, spec.head_dim) == (rope_type, base, HALF_SPLIT, 40)
    assert spec.rotary_dims == 40 and spec.inv_freq.shape == (20,)
    assert_theta(spec.inv_freq, theirs, bound(rope_type, base, params.get("factor", 1.0),
                                              params.get("low_freq_factor", 1.0), params.get("high_freq_factor", 4.0)))
    assert spec.attention_factor == factor
    if rope_type not in ("default", "dynamic"):  # the scaling changes the frequencies: the test sees them
        assert not np.allclose(spec.inv_freq, default_inv_freq(base, 40), rtol=1e-3)


def test_attention_factors_of_yarn_and_longrope_are_their_formulas():
    yarn = rope_from_config(spelled("yarn", "rope_parameters")).layer(0)
    assert yarn.attention_factor == 0.1 * math.log(4.0) + 1
    mscales = rope_from_config(spelled("yarn", "rope_parameters", mscale=0.707, mscale_all_dim=0.9)).layer(0)
    assert mscales.attention_factor == pytest.approx((0.1 * 0.707 * math.log(4) + 1) / (0.1 * 0.9 * math.log(4) + 1))
    given = rope_from_config(spelled("yarn", "rope_parameters", attention_factor=1.25)).layer(0)
    assert given.attention_factor == 1.25
    longrope = rope_from_config(spelled("longrope", "rope_parameters")).layer(0)
    # factor = max_position_embeddings / original = 32
    assert longrope.attention_factor == math.sqrt(1 + math.log(32) / math.log(4096))
    for raw in (spelled("yarn", "rope_parameters", mscale=0.707, mscale_all_dim=0.9),
                spelled("yarn", "rope_parameters", beta_fast=8, beta_slow=0.5, truncate=False)):
        theirs, factor = ROPE_INIT_FUNCTIONS["yarn"](LlamaConfig.from_dict(copy.deepcopy(raw)), device="cpu")
        spec = rope_from_config(raw).layer(0)
        assert_theta(spec.inv_freq, theirs, bound("yarn", 1e6, 4.0)) and spec.attention_factor == factor


def test_a_top_level_original_length_overrides_the_dicts_as_in_transformers():
    """standardize_rope_params, run again by every init function, puts a top-level original_max_position_embeddings
    in place of the dict's (for yarn, longrope and llama3)."""
    raw = dict(spelled("yarn", "rope_parameters"), original_max_position_embeddings=512)
    theirs, factor = ROPE_INIT_FUNCTIONS["yarn"](LlamaConfig.from_dict(copy.deepcopy(raw)), device="cpu")
    spec = rope_from_config(raw).layer(0)
    assert_theta(spec.inv_freq, theirs, bound("yarn", 1e6, 4.0))
    assert not np.allclose(spec.inv_freq, rope_from_config(spelled("yarn", "rope_parameters")).layer(0).inv_freq)


def test_dynamic_is_recorded_at_the_original_length():
    """transformers' dynamic RoPE keeps the default frequencies up to max_position_embeddings and rescales its
    base beyond: the spec is the former."""
    raw = dict(spelled("dynamic", "rope_parameters"), max_position_embeddings=64)
    config = LlamaConfig.from_dict(copy.deepcopy(raw))
    module = LlamaRotaryEmbedding(config)
    spec = rope_from_config(raw).layer(0)
    x = torch.zeros(1, 1, 40)
    module(x, torch.arange(64)[None])
    assert_theta(spec.inv_freq, module.inv_freq, bound("default", 1e4))
    assert_theta(spec.inv_freq, default_inv_freq(1e4, 40), 1e-15)
    module(x, torch.arange(200)[None])  # past the original length: rescaled
    assert not np.allclose(spec.inv_freq, module.inv_freq.double().numpy(), rtol=1e-3)


# -------------------------------------------------------------------------------------------------------------
# Every family, against its model's rotary embedding

SMALL = dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128, vocab_size=128,
             max_position_embeddings=256)
GQA = dict(SMALL, num_key_value_heads=2)
PHI3_SHORT = [1.0, 1.1, 1.25, 1.5, 2.0, 3.0]
FAMILIES = {  # name -> (config.json, (rope_type, base, factor) of the bound)
    "qwen2 yarn (4.x)": (dict(GQA, model_type="qwen2", rope_theta=1e6, rope_scaling={
        "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}), ("yarn", 1e6, 4.0)),
    "qwen3 (5.x)": (dict(GQA, model_type="qwen3", head_dim=24, rope_parameters={"rope_type": "default",
                                                                                 "rope_theta": 1e6}), ("default", 1e6)),
    "mistral head_dim 24": (dict(GQA, model_type="mistral", head_dim=24, rope_theta=1e6), ("default", 1e6)),
    "gemma": (dict(GQA, model_type="gemma", head_dim=24, rope_theta=1e4), ("default", 1e4)),
    "gemma2": (dict(GQA, model_type="gemma2", head_dim=24, rope_theta=1e4, sliding_window=32), ("default", 1e4)),
    "phi3 partial longrope (4.x)": (dict(GQA, model_type="phi3", partial_rotary_factor=0.75, rope_theta=1e4,
                                         original_max_position_embeddings=64, pad_token_id=0, rope_scaling={
                                             "type": "longrope", "short_factor": PHI3_SHORT, "long_factor": [4.0] * 6}),
                                    ("longrope", 1e4)),
    "phi3 partial (5.x)": (dict(GQA, model_type="phi3", pad_token_id=0, rope_parameters={
        "rope_type": "default", "rope_theta": 250.0, "partial_rotary_factor": 0.5}), ("default", 250.0)),
    "gpt_neox rotary_pct (4.x)": (dict(SMALL, model_type="gpt_neox", rotary_pct=0.25, rotary_emb_base=500),
                                  ("default", 500)),
    "gpt_neox default rotary_pct": (dict(SMALL, model_type="gpt_neox"), ("default", 1e4)),
    "gpt_neox (5.x)": (dict(SMALL, model_type="gpt_neox", rope_parameters={
        "rope_type": "linear", "factor": 2.0, "rope_theta": 500.0, "partial_rotary_factor": 0.5}), ("linear", 500)),
    "olmo": (dict(GQA, model_type="olmo", rope_theta=5e5), ("default", 5e5)),
    "olmo2 linear": (dict(GQA, model_type="olmo2", rope_scaling={"rope_type": "linear", "factor": 2.0}),
                     ("linear", 1e4)),
    "granite": (dict(GQA, model_type="granite", rope_theta=1e7), ("default", 1e7)),
    "llama llama3": (dict(GQA, model_type="llama", rope_theta=5e5, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}), ("llama3", 5e5, 8.0)),
}
ROTARY_DIMS = {"phi3 partial longrope (4.x)": 12, "phi3 partial (5.x)": 8, "gpt_neox rotary_pct (4.x)": 4,
               "gpt_neox default rotary_pct": 4, "gpt_neox (5.x)": 8}


def tiny_model(raw):
    """The model transformers builds from config.json ``raw`` (random weights; the RoPE buffers are what matters)."""
    config = AutoConfig.for_model(**copy.deepcopy(raw))
    return AutoModelForCausalLM.from_config(config), config


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_gives_its_models_rotary_embedding(name):
    raw, (rope_type, base, *factor) = FAMILIES[name]
    model, config = tiny_model(raw)
    module = model.base_model.rotary_emb
    head_dim = raw.get("head_dim", 16)
    for given in (raw, config.to_dict()):  # the config.json read, and what save_pretrained writes
        rope = rope_from_config(given)
        assert rope.uniform and rope.num_layers == 2
        spec = rope.layer(0)
        assert (spec.rope_type, spec.base, spec.head_dim) == (rope_type, base, head_dim)
        assert spec.rotary_dims == ROTARY_DIMS.get(name, head_dim)
        assert_theta(spec.inv_freq, module.inv_freq, bound(rope_type, base, *factor))
        assert spec.attention_factor == module.attention_scaling


def test_phi3_longrope_records_the_short_factors_of_the_original_length():
    raw, _ = FAMILIES["phi3 partial longrope (4.x)"]
    model, _ = tiny_model(raw)
    module = model.base_model.rotary_emb
    spec = rope_from_config(raw).layer(0)
    assert_theta(spec.inv_freq, default_inv_freq(1e4, 12) / np.array(PHI3_SHORT), 1e-15)
    # factor = 256 / 64 (max_position_embeddings / original): sqrt(1 + ln 4 / ln 64)
    assert spec.attention_factor == math.sqrt(1 + math.log(4) / math.log(64)) == module.attention_scaling
    x = torch.zeros(1, 1, 16)
    module(x, torch.arange(64)[None])
    assert_theta(spec.inv_freq, module.inv_freq, bound("longrope", 1e4))
    module(x, torch.arange(100)[None])  # longer than the original 64: transformers switches to long_factor
    assert_theta(default_inv_freq(1e4, 12) / 4.0, module.inv_freq, bound("longrope", 1e4))


def test_phi3_su_is_longrope():
    raw = copy.deepcopy(FAMILIES["phi3 partial longrope (4.x)"][0])
    raw["rope_scaling"]["type"] = "su"  # the name before longrope (transformers 5.24 maps it, then fails to load)
    spec = rope_from_config(raw).layer(0)
    assert spec.rope_type == "longrope"
    assert_theta(spec.inv_freq, default_inv_freq(1e4, 12) / np.array(PHI3_SHORT), 1e-15)


# -------------------------------------------------------------------------------------------------------------
# Gemma 3: local and global layers

GEMMA3 = dict(GQA, model_type="gemma3_text", head_dim=24, num_hidden_layers=8, sliding_window=32)
GEMMA3_CONFIGS = {
    "4.x spelling": dict(GEMMA3, rope_theta=2e6, rope_local_base_freq=5e3, sliding_window_pattern=4,
                         rope_scaling={"rope_type": "linear", "factor": 8.0}),
    "5.x spelling": dict(GEMMA3, layer_types=["sliding_attention", "full_attention"] * 4, rope_parameters={
        "sliding_attention": {"rope_type": "default", "rope_theta": 5e3},
        "full_attention": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 2e6,
                           "original_max_position_embeddings": 64}}),
    "defaults": dict(GEMMA3),
}
GEMMA3_KINDS = {  # global layers
    "4.x spelling": (3, 7), "5.x spelling": (1, 3, 5, 7), "defaults": (5,)}


@pytest.mark.parametrize("name", GEMMA3_CONFIGS)
def test_gemma3_local_and_global_layers_match_its_rotary_embeddings(name):
    raw = GEMMA3_CONFIGS[name]
    model, config = tiny_model(raw)
    module = model.base_model.rotary_emb
    for given in (raw, config.to_dict(), {"model_type": "gemma3", "text_config": raw}):
        rope = rope_from_config(given)
        kinds = tuple(layer.self_attn.layer_type for layer in model.base_model.layers)
        assert rope.layer_kinds == kinds
        assert [i for i, kind in enumerate(kinds) if kind == "full_attention"] == list(GEMMA3_KINDS[name])
        for kind, spec in rope.specs.items():
            params = config.rope_parameters[kind]
            assert (spec.rope_type, spec.base) == (params["rope_type"], params["rope_theta"])
            assert_theta(spec.inv_freq, getattr(module, f"{kind}_inv_freq"),
                         bound(spec.rope_type, spec.base, params.get("factor", 1.0)))
            assert spec.attention_factor == getattr(module, f"{kind}_attention_scaling")
    local, full = (rope_from_config(raw).specs[k] for k in ("sliding_attention", "full_attention"))
    assert local.base == (1e4 if name == "defaults" else 5e3) and full.base == (1e6 if name == "defaults" else 2e6)


# -------------------------------------------------------------------------------------------------------------
# The rotation against transformers' apply_rotary_pos_emb


@pytest.mark.parametrize("name", ["phi3 partial longrope (4.x)", "qwen2 yarn (4.x)"])
def test_rotation_gives_transformers_scores(name):
    """q rotated at m and k at n (transformers' cos, sin and apply_rotary_pos_emb) dot to kᵀ S R(m − n) S q: s² on
    the rotated block, the passed dimensions (Phi-3's last 4) unscaled."""
    raw, _ = FAMILIES[name]
    model, _ = tiny_model(raw)
    apply = __import__(type(model).__module__, fromlist=["apply_rotary_pos_emb"]).apply_rotary_pos_emb
    spec = rope_from_config(raw).layer(0)
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal(16), rng.standard_normal(16)
    positions = torch.arange(24)[None]
    cos, sin = model.base_model.rotary_emb(torch.zeros(1, 24, 16), positions)
    qs, ks = (torch.tensor(np.tile(v, (1, 1, 24, 1)), dtype=torch.float32) for v in (q, k))
    q_rot, k_rot = apply(qs, ks, cos, sin)
    scores = (q_rot[0, 0] @ k_rot[0, 0].T).double().numpy()  # [m, n]
    expected = np.array([[k @ spec.rotation(m - n, scaled=True) @ q for n in range(24)] for m in range(24)])
    np.testing.assert_allclose(scores, expected, rtol=0, atol=2e-5 * np.abs(q) @ np.abs(k))
    assert spec.attention_factor != 1
    flipped = np.array([[k @ spec.rotation(n - m, scaled=True) @ q for n in range(24)] for m in range(24)])
    assert np.abs(flipped - scores).max() > 1e-2  # the sign of Δ matters


def test_interleaved_rotation_is_the_half_split_one_on_permuted_rows():
    """llama.cpp's converter puts half-split row p[r] at file row r: the interleaved R(Δ) on the file's rows gives
    the half-split score on the checkpoint's."""
    half = rope_from_config(dict(GQA, model_type="llama", rope_theta=1e4)).layer(0)
    inter = RopeSpec(half.inv_freq, 16, INTERLEAVED, 1.0, "default", 1e4, 16)
    p = converter_permutation(16)
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal(16), rng.standard_normal(16)
    for delta in (1, 5, -7, 100):
        assert k[p] @ inter.rotation(delta) @ q[p] == pytest.approx(k @ half.rotation(delta) @ q, rel=1e-12)
    assert not np.allclose(half.rotation(5), inter.rotation(5))


# -------------------------------------------------------------------------------------------------------------
# No RoPE, and refused values


def test_models_without_rope_give_none():
    assert rope_from_config({"model_type": "gpt2", "n_layer": 2}) is None
    assert rope_from_config({"model_type": "bert", "num_hidden_layers": 2}) is None
    assert rope_from_gguf({"gpt2.block_count": 2}, "gpt2", 16) is None
    assert rope_from_gguf({"bert.block_count": 2}, "bert", 16) is None


BAD_CONFIGS = {
    "rope_theta": (dict(GQA, model_type="llama", rope_theta="big"), "rope_theta"),
    "dict rope_theta": (dict(GQA, model_type="qwen2", rope_parameters={"rope_theta": 0}), "rope_parameters.rope_theta"),
    "rope_local_base_freq": (dict(GEMMA3, rope_local_base_freq=[1]), "rope_local_base_freq"),
    "gemma3 nested": (dict(GEMMA3, rope_parameters={"full_attention": 8}), "rope_parameters.full_attention"),
    "factor": (dict(GQA, model_type="llama", rope_scaling={"type": "linear", "factor": -2}), "rope_scaling.factor"),
    "missing factor": (dict(GQA, model_type="llama", rope_scaling={"type": "linear"}), "rope_scaling.factor"),
    "rope type": (dict(GQA, model_type="llama", rope_scaling={"type": "ntk-by-parts", "factor": 2}),
                  "rope_scaling.rope_type"),
    "short factors": (dict(GQA, model_type="phi3", original_max_position_embeddings=64, rope_scaling={
        "type": "longrope", "short_factor": [1.0] * 5, "long_factor": [1.0] * 8}), "rope_scaling.short_factor"),
    "partial whole-head": (dict(GQA, model_type="llama", partial_rotary_factor=0.5), "partial_rotary_factor"),
    "partial odd": (dict(SMALL, model_type="gpt_neox", rotary_pct=0.2), "rotary_pct"),
    "partial in dict": (dict(SMALL, model_type="phi3", rope_parameters={"partial_rotary_factor": 1.5}),
                        "rope_parameters.partial_rotary_factor"),
    "llama3 bands": (dict(GQA, model_type="llama", rope_scaling={
        "rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1}), "rope_scaling.high_freq_factor"),
    "gemma3 flat": (dict(GEMMA3, rope_parameters={"rope_type": "linear", "factor": 8.0}), "rope_parameters"),
    "gemma3 layer_types": (dict(GEMMA3, layer_types=["full_attention"] * 3), "layer_types"),
    "model type": (dict(GQA, model_type="mamba"), "model_type"),
    "layers": (dict(GQA, model_type="llama", num_hidden_layers=0), "num_hidden_layers"),
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_bad_config_values_are_one_line(name):
    raw, field = BAD_CONFIGS[name]
    with pytest.raises(InputError) as info:
        rope_from_config(raw, source="m/config.json")
    message = str(info.value)
    assert info.value.field == field and message.startswith(f"m/config.json: {field}: expected ")
    assert "\n" not in message


# -------------------------------------------------------------------------------------------------------------
# GGUF files as llama.cpp's converter writes them

GGUF_FAMILIES = {  # model_type -> build_model overrides
    "llama": {}, "mistral": {}, "qwen2": {}, "qwen3": {}, "gemma": {}, "gemma2": {}, "phi3": {}, "gpt_neox": {},
    "olmo": {}, "olmo2": {}, "granite": {"rope_parameters": {"rope_type": "default", "rope_theta": 3e5}},
    "gemma3_text": {"num_hidden_layers": 7, "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}},
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """model_type -> (the folder's config.json, the GGUF's metadata, architecture, head_dim, rotary_dims, tensors)."""
    out = {}
    for model_type, overrides in GGUF_FAMILIES.items():
        folder = tmp_path_factory.mktemp(f"rope-{model_type}")
        build_model(model_type, folder, **overrides)
        (path,) = write_gguf_from_folder(folder, folder / "model.gguf")
        model = GGUFModel(path)
        arch = model.metadata["general.architecture"]
        layout = GGUFLayout(arch, model.names(), model.shape_of)
        shape = layout.shape(model.metadata, path)
        tensors = {t.name: np.array(t.data) for t in open_gguf(path).tensors if t.name.startswith("rope_")}
        config = json.loads((folder / "config.json").read_text())
        out[model_type] = (config, model.metadata, arch, shape.head_dim,
                           layout.rotary_dims(model.metadata, shape, path), tensors)
    return out


@pytest.mark.parametrize("model_type", GGUF_FAMILIES)
def test_gguf_metadata_gives_the_folders_frequencies(converted, model_type):
    config, meta, arch, head_dim, rotary_dims, tensors = converted[model_type]
    from_config = rope_from_config(config)
    from_gguf = rope_from_gguf(meta, arch, head_dim, rotary_dims, rope_freqs=tensors.get("rope_freqs.weight"))
    assert from_gguf.layer_kinds == from_config.layer_kinds
    assert set(from_gguf.specs) == set(from_config.specs)
    for kind, ours in from_gguf.specs.items():
        theirs = from_config.specs[kind]
        assert ours.pairing == ARCHITECTURES[arch].pairing
        assert (ours.rotary_dims, ours.head_dim, ours.base) == (theirs.rotary_dims, theirs.head_dim, theirs.base)
        assert (ours.rope_type, ours.attention_factor) == (theirs.rope_type, theirs.attention_factor)
        rtol = bound("llama3", ours.base, 8.0) if ours.rope_type == "llama3" else 1e-15
        assert_theta(ours.inv_freq, theirs.inv_freq, rtol)
    if model_type == "gemma3_text":
        assert from_gguf.layer_kinds == ("sliding_attention",) * 5 + ("full_attention", "sliding_attention")
    if model_type in ("llama", "qwen2", "mistral", "gemma3_text"):  # llama3 rope_freqs, yarn, linear, linear
        assert not np.allclose(from_gguf.specs[from_gguf.layer_kinds[5 if model_type == "gemma3_text" else 0]]
                               .inv_freq, default_inv_freq(from_config.layer(0).base, rotary_dims), rtol=1e-3)


def test_gguf_keys_and_defaults():
    meta = {"llama.block_count": 2, "llama.context_length": 128}
    spec = rope_from_gguf(meta, "llama", 16).layer(1)  # no rope keys: base 10000, all dimensions, no scaling
    assert (spec.base, spec.rotary_dims, spec.pairing, spec.rope_type) == (1e4, 16, INTERLEAVED, "default")
    assert_theta(spec.inv_freq, default_inv_freq(1e4, 16), 0)
    old = rope_from_gguf({**meta, "llama.rope.scale_linear": 4.0}, "llama", 16).layer(0)  # the older key name
    assert old.rope_type == "linear" and np.array_equal(old.inv_freq, default_inv_freq(1e4, 16) / 4)
    none = rope_from_gguf({**meta, "llama.rope.scaling.type": "none", "llama.rope.scaling.factor": 4.0}, "llama", 16)
    assert none.layer(0).rope_type == "default"  # type none never scales
    yarn = {**meta, "llama.context_length": 4096, "llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}
    by_context = rope_from_gguf(yarn, "llama", 16).layer(0)  # original length: context_length
    by_key = rope_from_gguf({**yarn, "llama.context_length": 16384,
                             "llama.rope.scaling.original_context_length": 4096}, "llama", 16).layer(0)
    assert np.array_equal(by_context.inv_freq, by_key.inv_freq) and by_key.rope_type == "yarn"
    assert by_context.attention_factor == by_key.attention_factor == 1 + 0.1 * math.log(4)
    betas = rope_from_gguf({**yarn, "llama.rope.scaling.yarn_beta_fast": 8.0}, "llama", 16).layer(0)
    assert not np.array_equal(betas.inv_freq, by_key.inv_freq)
    config = dict(GQA, model_type="llama", max_position_embeddings=16384, rope_scaling={
        "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096, "beta_fast": 8})
    assert_theta(betas.inv_freq, rope_from_config(config).layer(0).inv_freq, 1e-15)
    scaled = rope_from_gguf({**meta, "llama.rope.scaling.attn_factor": 1.5}, "llama", 16).layer(0)
    assert scaled.attention_factor == 1.5


def test_gguf_phi3_longrope_as_the_converter_writes_it():
    """Phi3MiniModel (convert.py:2506-2571): original_context_length, attn_factor from the longrope formula,
    rope_factors_long/short tensors; no scaling type."""
    raw, _ = FAMILIES["phi3 partial longrope (4.x)"]
    meta = {"phi3.block_count": 2, "phi3.context_length": 256, "phi3.rope.scaling.original_context_length": 64,
            "phi3.rope.dimension_count": 12, "phi3.rope.freq_base": 1e4,
            "phi3.rope.scaling.attn_factor": math.sqrt(1 + math.log(256 / 64) / math.log(64))}
    ours = rope_from_gguf(meta, "phi3", 16, rope_factors_short=np.array(PHI3_SHORT, dtype=np.float32)).layer(0)
    theirs = rope_from_config(raw).layer(0)
    assert (ours.rope_type, ours.rotary_dims, ours.pairing) == ("longrope", 12, HALF_SPLIT)
    assert ours.attention_factor == theirs.attention_factor
    assert_theta(ours.inv_freq, theirs.inv_freq, 2 * U)  # the converter's float32 factors


def test_gguf_gemma3_local_keys():
    meta = {"gemma3.block_count": 6, "gemma3.rope.freq_base": 1e6}
    default = rope_from_gguf(meta, "gemma3", 24)
    assert default.layer_kinds == ("sliding_attention",) * 5 + ("full_attention",)
    assert default.specs["sliding_attention"].base == 1e4 and default.specs["full_attention"].base == 1e6
    keyed = rope_from_gguf({**meta, "gemma3.rope.freq_base_swa": 5e3, "gemma3.attention.sliding_window_pattern": 3},
                           "gemma3", 24)
    assert keyed.layer_kinds == ("sliding_attention", "sliding_attention", "full_attention") * 2
    assert keyed.specs["sliding_attention"].base == 5e3
    flags = rope_from_gguf({**meta, "gemma3.attention.sliding_window_pattern": [True, False] * 3}, "gemma3", 24)
    assert flags.layer_kinds == ("sliding_attention", "full_attention") * 3


BAD_GGUF = {
    "qwen2.rope.freq_base": {"qwen2.rope.freq_base": -1.0},
    "qwen2.rope.scaling.type": {"qwen2.rope.scaling.type": "ntk"},
    "qwen2.rope.scaling.factor": {"qwen2.rope.scaling.factor": "x"},
    "qwen2.rope.dimension_count": {"qwen2.rope.dimension_count": 15},
    "qwen2.block_count": {"qwen2.block_count": None},
    "rope_freqs.weight": {},
}


@pytest.mark.parametrize("field", BAD_GGUF)
def test_bad_gguf_values_are_one_line(field):
    meta = {"qwen2.block_count": 2, **BAD_GGUF[field]}
    freqs = np.ones(3) if field == "rope_freqs.weight" else None
    with pytest.raises(InputError) as info:
        rope_from_gguf(meta, "qwen2", 16, rope_freqs=freqs, source="m.gguf")
    assert info.value.field == field and str(info.value).startswith(f"m.gguf: {field}: expected ")


def test_spec_and_model_rope_checks():
    spec = RopeSpec(default_inv_freq(1e4, 8), 8, head_dim=16)
    assert spec.rotation(3).shape == (16, 16) and np.array_equal(spec.rotation(3)[8:, 8:], np.eye(8))
    assert spec == RopeSpec(default_inv_freq(1e4, 8), 8, head_dim=16) != RopeSpec(default_inv_freq(1e4, 8), 8)
    with pytest.raises(ValueError):
        spec.inv_freq[0] = 1.0  # frozen
    for bad in (dict(rotary_dims=7), dict(pairing="rotated"), dict(attention_factor=0.0), dict(inv_freq=np.ones(3))):
        with pytest.raises(ValueError):
            RopeSpec(**{"inv_freq": np.ones(4), "rotary_dims": 8, **bad})
    with pytest.raises(ValueError):
        ModelRope({"all": spec}, ("all", "other"))
    rope = uniform_rope(spec, 3)
    assert rope.num_layers == 3 and rope.uniform and rope.layer(2) is spec
