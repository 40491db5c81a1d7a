"""Every number qkalign reports is invariant to the scale of W_Q and W_K (issue 15, item 1).

``measure`` of weights anywhere in the float32/bfloat16/float16 range (huge, or near the
subnormal range), with folded gains of any scale, gives the dense float64 truth of what the
file holds; a power-of-two scale gives exactly the unscaled numbers, scaled. ``analyze`` of a
gram, fro_sq or spectrum scaled by up to 1e+-300 gives the numbers of the unscaled input.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from qkalign import QKData, analyze
from qkalign.errors import InputError
from qkalign.testing.comparisons import COMPARISONS, random_inputs
from qkalign.testing.dense import dense_truth
from qkalign.testing.model_folders import write_model
from qkalign.weights.measure import measure

EPS64 = float(np.finfo(np.float64).eps)
#: (L, H, H_kv, d, n): grouped-query attention, two query heads per kv head.
SHAPE = (3, 4, 2, 8, 24)
TOPK = 4
#: measure's relative accuracy in each precision: products of length n, each rounded at eps.
MEASURE_TOL = {precision: 8 * SHAPE[4] * float(np.finfo(precision).eps) for precision in ("float32", "float64")}
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: log10 of the weight scales each storage type holds without overflow, against stored weights of
#: 1e-5..1 (float32/bfloat16 max 3.4e38, and below 1e-38 subnormals, which are read exactly;
#: float16 max 65504, subnormal below 6e-5).
WEIGHT_SCALES = {"float32": (-38, 37), "bfloat16": (-38, 37), "float16": (-4, 4)}
GAIN_SCALES = {"float32": (-15, 15), "bfloat16": (-15, 15), "float16": (-3, 4)}


def scaled_copy(source, target, weight_scale, gain_scale=1.0):
    """The model folder ``source`` written to ``target`` with every matrix (the projections) times
    ``weight_scale`` and every vector (the norm gains) times ``gain_scale``, rounded to the stored dtype."""
    target.mkdir()
    (target / "config.json").write_text((source / "config.json").read_text())
    tensors = load_file(str(source / "model.safetensors"))
    for name, t in tensors.items():
        scale = weight_scale if t.ndim == 2 else gain_scale
        tensors[name] = (t.double() * scale).to(t.dtype)
        assert torch.isfinite(tensors[name]).all(), (name, scale)
    save_file(tensors, str(target / "model.safetensors"))
    return target


def stored_operators(folder, fold_norms):
    """``(w_q, w_k)`` (L, H, d, n), (L, H_kv, d, n) float64 as a Llama-style folder stores them,
    with the gains multiplied in (input norm on the columns, Qwen3's q/k norms on the rows) when
    ``fold_norms``: built from the file independently of ``qkalign.weights``."""
    L, H, Hkv, d, n = SHAPE
    t = {name: v.double().numpy() for name, v in load_file(str(folder / "model.safetensors")).items()}
    layer = "model.layers.{}.".format
    w_q = np.stack([t[layer(i) + "self_attn.q_proj.weight"].reshape(H, d, n) for i in range(L)])
    w_k = np.stack([t[layer(i) + "self_attn.k_proj.weight"].reshape(Hkv, d, n) for i in range(L)])
    if fold_norms:
        column = np.stack([t[layer(i) + "input_layernorm.weight"] for i in range(L)])[:, None, None, :]
        w_q = np.stack([t[layer(i) + "self_attn.q_norm.weight"] for i in range(L)])[:, None, :, None] * w_q * column
        w_k = np.stack([t[layer(i) + "self_attn.k_norm.weight"] for i in range(L)])[:, None, :, None] * w_k * column
    return w_q, w_k


def assert_matches_dense(data, w_q, w_k, tol):
    """gram, fro_sq and spectrum relative to their natural scales, directions to ``1 - tol``."""
    gram, fro_sq, sym_eigs, vecs = dense_truth(w_q, w_k, data.topk)
    norms = np.sqrt(np.einsum("llh->lh", gram))
    assert np.all(np.abs(data.gram - gram) <= tol * norms[:, None, :] * norms[None, :, :])
    np.testing.assert_allclose(data.fro_sq, fro_sq, rtol=tol, atol=0)
    assert np.all(np.abs(data.sym_eigs - sym_eigs) <= tol * np.abs(sym_eigs[..., :1]))
    cosines = np.abs(np.einsum("lhkn,lhkn->lhk", data.eig_dirs, vecs))
    assert cosines.min() >= 1 - tol, cosines.min()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """``{(model_type, dtype): folder}``: a Llama (plain) and a Qwen3 (q/k norms to fold) of :data:`SHAPE`."""
    root = tmp_path_factory.mktemp("models")
    return {(model_type, dtype): write_model(root / f"{model_type}-{dtype}", model_type, shape=SHAPE,
                                             dtype=DTYPES[dtype], seed=5).folder
            for model_type in ("llama", "qwen3") for dtype in DTYPES}


@st.composite
def measure_cases(draw):
    """(storage dtype, precision, fold_norms, log10 weight scale, log10 gain scale)."""
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    fold_norms = draw(st.booleans())
    weight_exp = draw(st.floats(*WEIGHT_SCALES[dtype]))
    gain_exp = draw(st.floats(*GAIN_SCALES[dtype])) if fold_norms else 0.0
    return dtype, draw(st.sampled_from(["float32", "float64"])), fold_norms, weight_exp, gain_exp


@SETTINGS
@given(case=measure_cases())
def test_measure_at_any_scale_matches_dense(models, tmp_path_factory, case):
    """Weights scaled by 1e-38..1e37 (float16: what it holds), gains by 1e-15..1e15 on top."""
    dtype, precision, fold_norms, weight_exp, gain_exp = case
    source = models["qwen3" if fold_norms else "llama", dtype]
    folder = scaled_copy(source, tmp_path_factory.mktemp("scaled") / "m", 10.0**weight_exp, 10.0**gain_exp)
    data = measure(folder, topk=TOPK, fold_norms=fold_norms, precision=precision, progress=False)
    assert_matches_dense(data, *stored_operators(folder, fold_norms), MEASURE_TOL[precision])


@SETTINGS
@given(dtype=st.sampled_from(["float32", "bfloat16"]), precision=st.sampled_from(["float32", "float64"]),
       fold_norms=st.booleans(), weight_exp=st.integers(-100, 100), gain_exp=st.integers(-50, 50))
def test_power_of_two_scales_give_the_same_bits(models, tmp_path_factory, dtype, precision, fold_norms,
                                                weight_exp, gain_exp):
    """Scaling by 2^k is exact in storage, so the numbers are exactly the unscaled ones, scaled."""
    source = models["qwen3" if fold_norms else "llama", dtype]
    gain_exp = gain_exp if fold_norms else 0
    folder = scaled_copy(source, tmp_path_factory.mktemp("scaled") / "m", 2.0**weight_exp, 2.0**gain_exp)
    plain_q, _ = stored_operators(source, fold_norms=False)
    np.testing.assert_array_equal(stored_operators(folder, fold_norms=False)[0], np.ldexp(plain_q, weight_exp))
    base = measure(source, topk=TOPK, fold_norms=fold_norms, precision=precision, progress=False)
    scaled = measure(folder, topk=TOPK, fold_norms=fold_norms, precision=precision, progress=False)
    # Each factor of g = W_K^T W_Q carries the weight scale, the column gain and (Qwen3) a row gain.
    operator_exp = 2 * weight_exp + (4 * gain_exp if fold_norms else 0)
    np.testing.assert_array_equal(scaled.gram, np.ldexp(base.gram, 2 * operator_exp))
    np.testing.assert_array_equal(scaled.fro_sq, np.ldexp(base.fro_sq, 2 * operator_exp))
    np.testing.assert_array_equal(scaled.sym_eigs, np.ldexp(base.sym_eigs, operator_exp))
    np.testing.assert_array_equal(scaled.eig_dirs, base.eig_dirs)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_operator_beyond_float64_is_one_error_line(models, tmp_path, scale):
    """Weights and both gains at 1e+-30: g ~ 1e+-180, its squared norm ~ 1e+-360 has no float64."""
    folder = scaled_copy(models["qwen3", "float32"], tmp_path / "m", scale, scale)
    with pytest.raises(InputError, match=r"layer 0, query head 0: expected .* float64's range .*, found a "
                                         r"squared norm of 2\^-?1\d\d\d\.\d") as error:
        measure(folder, topk=TOPK, fold_norms=True, progress=False)
    assert "\n" not in str(error.value)
    # Without the gains the same weights fit.
    data = measure(folder, topk=TOPK, progress=False)
    assert np.isfinite(data.gram).all() and (np.einsum("llh->lh", data.gram) > 0).all()


def small_qkdata(seed):
    """A valid random QKData (L=5, H=3, d=4, n=16, topk=4) from the kernel comparison inputs."""
    inputs = random_inputs(5, 3, 4, 16, 8, seed=seed)
    return QKData(5, 3, 4, 16, gram=inputs.gram, fro_sq=np.einsum("llh->lh", inputs.gram),
                  eig_dirs=inputs.eig_dirs, sym_eigs=inputs.sym_eigs)


def rescaled(data, **factors):
    """``data`` with ``gram``, ``fro_sq`` or ``sym_eigs`` multiplied by the given factors."""
    arrays = {name: getattr(data, name) * factors.get(name, 1.0) for name in ("gram", "fro_sq", "sym_eigs")}
    return QKData(data.num_layers, data.num_heads, data.head_dim, data.hidden_size, eig_dirs=data.eig_dirs, **arrays)


def leaves(value, path=""):
    """``(path, value)`` of every number in an ``AnalysisResult.to_dict()`` (``meta`` left out)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "meta":
                yield from leaves(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def analysis(data, backend):
    return dict(leaves(analyze(data, backend=backend, match_heads=True).to_dict()))


@pytest.fixture(scope="module")
def base_analyses():
    """The unscaled analyses of :func:`small_qkdata` by seed and backend."""
    return {}


def base_analysis(cache, seed, backend):
    if (seed, backend) not in cache:
        cache[seed, backend] = analysis(small_qkdata(seed), backend)
    return cache[seed, backend]


@SETTINGS
@given(seed=st.integers(0, 2), backend=st.sampled_from(["numpy", "numba"]),
       which=st.sampled_from(["gram", "fro_sq", "sym_eigs", "all"]), half_exponent=st.integers(-495, 495))
def test_analyze_of_power_of_two_scaled_inputs_is_the_same_bits(base_analyses, seed, backend, which,
                                                                half_exponent):
    """A scale 2^(2j) up to ~1e+-298 (even: the gram's square roots stay exact) changes no bit."""
    data = small_qkdata(seed)
    names = ("gram", "fro_sq", "sym_eigs") if which == "all" else (which,)
    scaled = analysis(rescaled(data, **dict.fromkeys(names, 2.0 ** (2 * half_exponent))), backend)
    assert scaled == base_analysis(base_analyses, seed, backend)


#: An entry scaled by a decimal factor rounds by half an ulp: a cosine from such entries moves by
#: a few eps (up to ~m eps for a spectrum of m), and sqrt(1 - cos^2) by at most sqrt(2 |d cos|).
COSINE_TOL = 16 * 8 * EPS64
RESIDUAL_TOL = math.sqrt(2 * COSINE_TOL)


@SETTINGS
@given(seed=st.integers(0, 2), backend=st.sampled_from(["numpy", "numba"]),
       gram_exp=st.floats(-300, 300), spectrum_exp=st.floats(-300, 300))
def test_analyze_at_any_scale_matches_unscaled(base_analyses, seed, backend, gram_exp, spectrum_exp):
    """gram and fro_sq times 10^a, sym_eigs times 10^b, a and b in [-300, 300]."""
    data = rescaled(small_qkdata(seed), gram=10.0**gram_exp, fro_sq=10.0**gram_exp, sym_eigs=10.0**spectrum_exp)
    scaled = analysis(data, backend)
    base = base_analysis(base_analyses, seed, backend)
    assert scaled.keys() == base.keys()
    for path, value in base.items():
        tol = RESIDUAL_TOL if "resid" in path else COSINE_TOL * max(1.0, abs(value))
        assert abs(scaled[path] - value) <= tol, (path, scaled[path], value)


SPECTRUM_COMPARISONS = [c for c in COMPARISONS if "sym_eigs" in c.arguments]


@pytest.mark.parametrize("exponent", [-1000, 1000])
@pytest.mark.parametrize("comparison", SPECTRUM_COMPARISONS, ids=lambda c: c.label)
def test_spectrum_kernels_at_extreme_scales_equal_the_unscaled_reference(comparison, exponent):
    """Every kernel that reads sym_eigs, on a spectrum times 2^+-1000, against the reference unscaled."""
    inputs = random_inputs(4, 3, 4, 12, 10, seed=21)
    scaled = type(inputs)(inputs.gram, np.ldexp(inputs.sym_eigs, exponent), inputs.eig_dirs, inputs.anchor,
                          inputs.k_values)
    expected = comparison.reference(*comparison.args(inputs))
    for function in (comparison.kernel, comparison.reference):
        np.testing.assert_allclose(function(*comparison.args(scaled)), expected, rtol=1e-12, atol=comparison.atol)
