"""What GGUF quantisation does to qkalign's numbers: one set of weights written as F32 and as Q8_0, Q6_K, Q5_0,
Q4_K, Q4_1 and Q4_0 files (gguf's writer, through :func:`qkalign.testing.gguf_files.write_gguf_from_folder`),
measured. (Q5_0 is what llama-quantize stores for Q4_K where rows are no multiple of 256, as SmolLM2's 576.)

(a) qkalign adds nothing to quantisation: ``measure`` of each file equals the dense float64 construction
(:func:`qkalign.testing.dense.dense_truth`) from that file's weights as ``gguf.quants.dequantize`` decodes them.

(b) The quantisation errors (each quantised file against the F32 one) stay within bounds derived from the
formats' step sizes, computed from the F32 weights alone:

**Steps.** A format stores a block's weights as ``x_hat = s q + offset`` with integer codes ``q``, its step
``s`` set by the block's extremes (:func:`~qkalign.testing.quantization_errors.step_model`): Q8_0 blocks of 32, ``s = max|x| / 127``; Q4_0 32,
``s = max|x| / 8`` (the extreme is code -8 and codes stop at +7, so values in the top half step of the other
sign clip by up to one step); Q5_0 likewise, ``s = max|x| / 16``, codes -16..15; Q4_1 32,
``s = (max - min) / 15``; Q4_K sub-blocks of 32 in super-blocks of 256, ``s = (max - min) / 15`` plus up to
``d + dmin / 15`` from its 6-bit sub-block scale and min (``d``, ``dmin``: the super-block's largest step and
largest lift over 63); Q6_K sub-blocks of 16, ``s = max|x| / 31`` plus up to ``d`` (the largest over 127).
Rounding to the nearest code errs by ``|e| <= s / 2`` (clipped values by ``s``), plus the fp16 rounding of the
block scale (2^-11 per code step): relative to the block's largest weight, 2^-8 for Q8_0, 2^-5 for Q5_0, 2^-4
for the 4-bit formats (2^-3 where Q4_0 clips).

**Error model M:** the errors are independent, mean 0, uniform in +-s/2: variance ``v = s^2 / 12``.

1. Weights: ``||dW||_F^2 ~ sum v`` (a sum of ~10^5 terms: spread ~0.5 %). For Gaussian blocks of 32
   (max ~ 2.1 sd, range ~ 3.9 sd) the relative RMS error is ``eps ~ 2.1 / (127 sqrt 12) = 2^-7.6`` for Q8_0,
   ``3.9 / (15 sqrt 12) = 2^-3.7`` for Q4_1; heavier tails raise both.
2. Operators ``g = K^T Q``: ``dg = dK^T Q + K^T dQ + dK^T dQ``, so under M
   ``E||dg||_F^2 = sum_r (V^K_r ||Q_r||^2 + V^Q_r ||K_r||^2 + V^K_r V^Q_r)`` over the head's rows ``r``
   (``V_r`` the row's summed variances): ``rho_hat = sqrt(.) / ||g||_F`` (:func:`~qkalign.testing.quantization_errors.operator_error`). For
   unstructured K and Q (``||g||^2 ~ ||K||^2 ||Q||^2 / d``) that is ``sqrt(eps_K^2 + eps_Q^2) ~ sqrt 2 eps``.
3. Grams, by Cauchy-Schwarz: ``|dG_LL'| <= (rho_L + rho_L' + rho_L rho_L') ||g_L|| ||g_L'||``. The errors are
   7-50 x smaller: ``dg`` is nearly orthogonal to every ``g``, what remains is ``rho^2`` on the diagonal and
   any scale bias of the quantiser (4 x its bias on the weights).
4. Operator cosines: ``||g_hat / ||g_hat|| - g / ||g|| || <= 2 rho``, so ``|dcos| <= 2 (rho_L + rho_L')``.
   What actually happens is systematic: to first order ``dg`` is orthogonal to ``g_L`` and ``g_L'``; it adds
   ``rho^2`` to ``||g_hat||^2 / ||g||^2`` and nothing to the inner product, so
   ``cos_hat ~ cos / sqrt((1 + rho_L^2)(1 + rho_L'^2))``: 4-bit cosines shrink by ~rho^2 ~ 1.5 % of
   themselves, with a first-order scatter around that whose sd M gives (:func:`~qkalign.testing.quantization_errors.cosine_scatter`).
5. Eigenvalues of ``S = (g + g^T) / 2``, by Weyl (for singular values, = the |lambda| order):
   ``| |lambda_hat|_i - |lambda|_i | <= ||dS||_2``. Under M, ``dS`` is a sum of independent random matrices;
   ``sigma_S^2 = ||E dS^2||_2`` has a closed form (:func:`~qkalign.testing.quantization_errors.symmetric_error_sigma`) and ``||dS||_2`` comes
   out 1.0-1.4 ``sigma_S`` here (the matrix Khintchine inequality caps its mean at ``sqrt(6 log 2n)``
   ``sigma_S``); the bound is ``eta = 2 sigma_S``.
6. Top-k subspaces, by Davis-Kahan's sin-theta theorem, gap-free form: the top-m eigenvectors ``V_m`` of
   ``S`` (``|lambda| >= |lambda_m|``) against the top-k of ``S_hat`` (whose other eigenvalues have
   ``|lambda_hat| <= |lambda_{k+1}| + eta``) have ``sin theta_max <= eta / delta_m``,
   ``delta_m = |lambda_m| - |lambda_{k+1}| - eta``; as ``V_m`` lies in ``V_k``, the m-th principal cosine of
   the two top-k subspaces is ``>= sqrt(1 - (eta / delta_m)^2)``. Only directions well above the cut are
   protected: the smallest principal cosine is bounded only where ``lambda_k`` stands ``2 eta`` clear of
   ``lambda_{k+1}``, which real spectra seldom do (a near-tie at the cut can swap a direction out entirely).

and the errors are ordered Q8_0 < Q6_K < Q4_K ~ Q4_1 ~ Q4_0 (ratios that held over seeds 0-7 with room).

The weights (:func:`~qkalign.testing.quantization_errors.realistic_weights`) are heavy-tailed, with row and column scales and a drift across
layers, as in real attention weights. Q4_K and Q6_K come from this package's small quantisers
(:func:`~qkalign.testing.gguf_files.quantize_q4_k`: scales and mins rounded up, no clipping, no search);
llama.cpp's searched scales err a little less.
"""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from threadpoolctl import threadpool_limits  # noqa: E402

from qkalign.testing.dense import dense_operators, dense_truth  # noqa: E402
from qkalign.testing.gguf_files import build_model, write_gguf_from_folder  # noqa: E402
from qkalign.testing.quantization_errors import (  # noqa: E402
    cosine_scatter,
    operator_error,
    principal_cosines,
    realistic_weights,
    step_model,
    symmetric_error_sigma,
)
from qkalign.weights.measure import measure  # noqa: E402

L, H, H_KV, D, N = 4, 4, 2, 64, 256  # hidden a multiple of 256: real K-quants, no fallback
TOPK = 16
SEED = 0
QTYPES = ("Q8_0", "Q6_K", "Q5_0", "Q4_K", "Q4_1", "Q4_0")
# float32 products of n = 256 terms against float64 (as tests/test_gguf_real.py), relative to the
# Cauchy-Schwarz bound of an entry or to the top |lambda|.
TOL = {"float32": 1e-5, "float64": 1e-11}
# The model's predictions of ||dW||_F and ||dg||_F hold to a few %: the extremes a block's scale is set from are
# stored exactly (1/32 to 2/32 of the values err less than M says), the K-quant steps are their mean.
RATIO_RANGE = (0.9, 1.04)
# The largest error relative to the block's largest |x| (Steps): half a step, plus the fp16 scale's rounding over
# the codes (2^-11 per step: 127, 16, 15 or 8 steps), plus Q4_1's fp16 minimum; Q5_0's and Q4_0's clipped values a
# whole step.
BLOCK_MAX_BOUND = {"Q8_0": 1 / 254 + 2**-11, "Q5_0": 1 / 16 + 2**-11, "Q4_1": 1 / 15 + 2**-10 + 2**-11,
                   "Q4_0": 1 / 8 + 2**-11}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The F32 and quantised GGUF files of one tiny llama (L=4, 4 heads, 2 kv heads, d=64, n=256) with
    :func:`realistic_weights`: ``paths`` and ``weights`` (w_q (L, H, d, n), w_k (L, H_kv, d, n) float64 as
    gguf decodes them) by qtype, F32 included."""
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("quantization")
    _, tensors = build_model("llama", folder, hidden_size=N, num_hidden_layers=L, num_attention_heads=H,
                             num_key_value_heads=H_KV, head_dim=D, intermediate_size=N, vocab_size=256)
    rng = np.random.default_rng(SEED)
    w_q, w_k = realistic_weights(rng, L, H * D, N), realistic_weights(rng, L, H_KV * D, N)
    for layer in range(L):
        tensors[f"model.layers.{layer}.self_attn.q_proj.weight"] = w_q[layer]
        tensors[f"model.layers.{layer}.self_attn.k_proj.weight"] = w_k[layer]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    paths, weights = {}, {}
    for qtype in ("F32", *QTYPES):
        (paths[qtype],) = write_gguf_from_folder(folder, folder / f"model-{qtype}.gguf", qtype=qtype)
        weights[qtype] = dequantized(paths[qtype])
    return paths, weights


def dequantized(path):
    """``(w_q, w_k)`` of a GGUF file as ``gguf.quants.dequantize`` decodes them (GGUF row order), float64."""
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}

    def stack(kind, heads):
        return np.stack([gguf.quants.dequantize(tensors[f"blk.{layer}.attn_{kind}.weight"].data,
                                                tensors[f"blk.{layer}.attn_{kind}.weight"].tensor_type)
                         .astype(np.float64).reshape(heads, D, N) for layer in range(L)])

    return stack("q", H), stack("k", H_KV)


@pytest.fixture(scope="module")
def measured(files):
    """qtype -> ``measure`` of its file in float64 (F32 included)."""
    paths, _ = files
    return {qtype: measure(path, topk=TOPK, precision="float64", progress=False) for qtype, path in paths.items()}


@pytest.fixture(scope="module")
def model(files):
    """M's predictions from the F32 weights, per qtype, and the F32 operators.

    ``k``, ``q`` (L, H, d, n) the F32 heads (kv heads repeated for their query heads), ``g`` (L, H, n, n),
    ``norm`` (L, H) ``||g||_F``; per qtype ``step``/``bound`` of (w_q, w_k), ``v_k``/``v_q`` the variances
    per query head, ``rho`` (L, H) and ``sigma_s`` (L, H).
    """
    _, weights = files
    w_q, w_k = weights["F32"]
    k = np.repeat(w_k, H // H_KV, axis=1)
    g = dense_operators(w_q, w_k)
    out = {"k": k, "q": w_q, "g": g, "norm": np.linalg.norm(g, axis=(2, 3))}
    with threadpool_limits(1, user_api="blas"):
        for qtype in QTYPES:
            (step_q, bound_q), (step_k, bound_k) = step_model(w_q, qtype), step_model(w_k, qtype)
            v_q, v_k = step_q**2 / 12, np.repeat(step_k**2 / 12, H // H_KV, axis=1)
            sigma = np.array([[symmetric_error_sigma(v_k[a, h], v_q[a, h], k[a, h], w_q[a, h]) for h in range(H)]
                              for a in range(L)])
            out[qtype] = dict(step=(step_q, step_k), bound=(bound_q, bound_k), v_k=v_k, v_q=v_q, sigma_s=sigma,
                              rho=operator_error(v_k, v_q, k, w_q) / out["norm"])
    return out


def operator_cosines(data):
    """Per-head operator cosines (L, L, H) from a QKData's grams."""
    norms = np.sqrt(np.einsum("llh->lh", data.gram))
    return data.gram / (norms[:, None] * norms[None])


# (a) ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("qtype", QTYPES)
def test_measure_equals_dense_of_dequantized_weights(files, qtype, precision):
    """Each quantised file's numbers are the dense float64 ones of its own dequantised weights."""
    paths, weights = files
    data = measure(paths[qtype], topk=TOPK, precision=precision, progress=False)
    assert set(data.extra["tensor_types"].values()) == {qtype}  # no fallback: rows of 256
    gram, fro_sq, sym_eigs, directions = dense_truth(*weights[qtype], TOPK)
    norms = np.sqrt(np.einsum("llh->lh", gram))
    tol = TOL[precision]
    assert np.all(np.abs(data.gram - gram) <= tol * norms[:, None] * norms[None])  # Cauchy-Schwarz bound
    np.testing.assert_allclose(data.fro_sq, fro_sq, rtol=tol, atol=0)
    top = np.abs(sym_eigs[..., :1])
    assert np.all(np.abs(data.sym_eigs - sym_eigs) <= tol * top)
    # Directions up to sign where |lambda| stands apart from both neighbours (gap >= 0.1 % of the top: a float32
    # operator error ~1e-7 ||g|| turns them by < 1e-3 rad), and the whole top-k subspace where the cut has that gap.
    lam = np.abs(sym_eigs[..., :TOPK + 1])
    gaps = np.abs(np.diff(lam, axis=-1)) >= 1e-3 * top
    apart = np.concatenate([gaps[..., :1], gaps[..., 1:] & gaps[..., :-1]], axis=-1)
    cosines = np.abs(np.einsum("lhkn,lhkn->lhk", data.eig_dirs, directions))
    assert apart.sum() > L * H * TOPK * 3 // 4  # most directions are checked
    assert cosines[apart].min() >= 1 - 1e-6
    subspace = principal_cosines(data.eig_dirs, directions)[gaps[..., -1]]
    assert len(subspace) >= L * H * 3 // 4 and subspace.min() >= 1 - 1e-6


# (b) ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", QTYPES)
def test_weight_errors_follow_the_step_size(files, model, qtype):
    """Every weight within its format's rounding bound; the RMS error as M predicts; 2^-8 and 2^-4 of the
    block maximum (module docstring, Steps)."""
    _, weights = files
    f32, quant = weights["F32"], weights[qtype]
    for w, w_hat, step, bound in zip(f32, quant, model[qtype]["step"], model[qtype]["bound"]):
        error = np.abs(w_hat - w)
        assert np.all(error <= bound * (1 + 1e-6))  # float32 arithmetic of the quantiser
        assert (error / bound).max() >= 0.9  # the bound is the format's: some value errs by almost all of it
        ratio = np.sqrt((error**2).sum((1, 2, 3)) / (step**2 / 12).sum((1, 2, 3)))  # per layer
        assert np.all((RATIO_RANGE[0] <= ratio) & (ratio <= RATIO_RANGE[1])), ratio
        if qtype in BLOCK_MAX_BOUND:  # (the K-quants' bounds depend on the super-block too)
            block_max = np.abs(w.reshape(*w.shape[:-1], -1, 32)).max(-1, keepdims=True)
            assert (error.reshape(block_max.shape[:-1] + (32,)) / block_max).max() <= BLOCK_MAX_BOUND[qtype]


@pytest.mark.parametrize("qtype", QTYPES)
def test_operator_errors_follow_the_step_size(files, model, qtype):
    """``||dg||_F / ||g||_F`` as M predicts (to a few %), and ~ sqrt(2) x the weights' relative RMS error."""
    _, weights = files
    g_hat = dense_operators(*weights[qtype])
    rho = np.linalg.norm(g_hat - model["g"], axis=(2, 3)) / model["norm"]
    ratio = rho / model[qtype]["rho"]
    assert np.all((RATIO_RANGE[0] <= ratio) & (ratio <= RATIO_RANGE[1])), ratio
    w_q, w_k = weights["F32"]
    eps_q = np.linalg.norm(weights[qtype][0] - w_q, axis=(2, 3)) / np.linalg.norm(w_q, axis=(2, 3))
    eps_k = np.linalg.norm(weights[qtype][1] - w_k, axis=(2, 3)) / np.linalg.norm(w_k, axis=(2, 3))
    heuristic = np.hypot(eps_q, np.repeat(eps_k, H // H_KV, axis=1))
    assert np.all(np.abs(rho / heuristic - 1) < 0.1)  # these K and Q are unstructured enough for it


@pytest.mark.parametrize("qtype", QTYPES)
def test_gram_errors_within_the_cauchy_schwarz_bound(measured, model, qtype):
    """|dG| <= (rho_L + rho_L' + rho_L rho_L') ||g_L|| ||g_L'|| with M's rho (a few % of margin for its accuracy)."""
    gram, gram_hat = measured["F32"].gram, measured[qtype].gram
    norms = np.sqrt(np.einsum("llh->lh", gram))
    relative = np.abs(gram_hat - gram) / (norms[:, None] * norms[None])
    rho = model[qtype]["rho"] * RATIO_RANGE[1]
    bound = rho[:, None] + rho[None] + rho[:, None] * rho[None]
    assert np.all(relative <= bound)
    assert relative.max() >= bound.max() / 100  # errors exist: not the F32 file twice


@pytest.mark.parametrize("qtype", QTYPES)
def test_operator_cosines_shrink_by_rho_squared(measured, model, qtype):
    """|dcos| <= 2 (rho_L + rho_L'); and the change is the predicted shrink cos / sqrt((1 + rho_L^2)(1 + rho_L'^2))
    up to M's first-order scatter (within 5 sd for every pair and head)."""
    cos, cos_hat = operator_cosines(measured["F32"]), operator_cosines(measured[qtype])
    rho = model[qtype]["rho"]
    off = ~np.eye(L, dtype=bool)
    bound = 2 * (rho[:, None] + rho[None]) * RATIO_RANGE[1]
    assert np.all(np.abs(cos_hat - cos)[off] <= bound[off])
    shrunk = cos / np.sqrt((1 + rho[:, None] ** 2) * (1 + rho[None] ** 2))
    z = np.zeros((L, L, H))
    with threadpool_limits(1, user_api="blas"):
        for h in range(H):
            args = (model[qtype]["v_k"][:, h], model[qtype]["v_q"][:, h], model["k"][:, h], model["q"][:, h],
                    model["g"][:, h])
            for a in range(L):
                for b in range(a + 1, L):
                    z[a, b, h] = (cos_hat[a, b, h] - shrunk[a, b, h]) / cosine_scatter(*args, a, b)
    assert np.abs(z).max() <= 5, np.abs(z).max()
    if qtype.startswith("Q4"):  # at 4 bits the shrink dominates: cosines fall in every pair of every head
        assert np.all((cos_hat - cos)[off] < 0)


@pytest.mark.parametrize("qtype", QTYPES)
def test_eigenvalues_within_weyl_bound(files, measured, model, qtype):
    """``||dS||_2 <= eta = 2 sigma_S`` (M) for every head, hence (Weyl) every |lambda_i| moves by <= eta."""
    _, weights = files
    g_hat = dense_operators(*weights[qtype])
    ds = (g_hat - model["g"]) / 2
    with threadpool_limits(1, user_api="blas"):  # many small eigenproblems: one thread is fastest
        ds_norm = np.abs(np.linalg.eigvalsh(ds + np.swapaxes(ds, -1, -2))).max(-1)
    eta = 2 * model[qtype]["sigma_s"]
    assert np.all(ds_norm <= eta) and np.all(ds_norm >= 0.35 * eta)  # sigma_S is the size of ||dS||_2
    lam, lam_hat = np.abs(measured["F32"].sym_eigs), np.abs(measured[qtype].sym_eigs)
    assert np.all(np.abs(lam_hat - lam)[..., :TOPK] <= eta[..., None])


@pytest.mark.parametrize("qtype", QTYPES)
def test_top_k_subspaces_within_davis_kahan_bound(measured, model, qtype):
    """The m-th principal cosine of the quantised top-16 subspace against the F32 one >= sqrt(1 - (eta/delta_m)^2)
    (module docstring, 6); at 8 bits the bound protects the leading half of every head's directions."""
    ref, quant = measured["F32"], measured[qtype]
    cosines = principal_cosines(ref.eig_dirs, quant.eig_dirs)  # (L, H, k), descending
    lam = np.abs(ref.sym_eigs)
    eta = 2 * model[qtype]["sigma_s"][..., None]
    delta = lam[..., :TOPK] - lam[..., TOPK:TOPK + 1] - eta
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(delta > eta, np.sqrt(1 - (eta / delta) ** 2), 0.0)
    assert np.all(cosines >= bound - 1e-9)
    protected = (bound > 0).sum(-1)
    if qtype == "Q8_0":
        assert protected.min() >= TOPK // 2 and bound[..., 0].min() >= 0.99
    if qtype.startswith("Q4"):  # at 4 bits M's bound protects the top few directions at most (<= 4 over seeds 0-7)
        assert protected.max() <= 6


def error_summary(measured, model, qtype):
    """One number per error kind, for the ordering: rho (mean), max gram error / CS bound, max |dcos|, max top-16
    |lambda| error / |lambda_1|, median over heads of 1 - mean principal cosine."""
    ref, quant = measured["F32"], measured[qtype]
    norms = np.sqrt(np.einsum("llh->lh", ref.gram))
    lam, lam_hat = np.abs(ref.sym_eigs), np.abs(quant.sym_eigs)
    return {
        "rho": model[qtype]["rho"].mean(),
        "gram": (np.abs(quant.gram - ref.gram) / (norms[:, None] * norms[None])).max(),
        "cos": np.abs(operator_cosines(quant) - operator_cosines(ref)).max(),
        "eigenvalues": (np.abs(lam_hat - lam)[..., :TOPK] / lam[..., :1]).max(),
        "subspace": np.median(1 - principal_cosines(ref.eig_dirs, quant.eig_dirs).mean(-1)),
    }


def test_errors_ordered_by_bits(measured, model):
    """Q8_0 < Q6_K < each 4-bit format on every error kind, by a factor >= 1.3 (over seeds 0-7 the smallest
    ratios were 3.5 for Q6_K / Q8_0 and 1.9 for 4-bit / Q6_K, on the max gram error); Q4_K and Q4_0 within
    25 % and 30 % of Q4_1 on the operator error (1.02 and 1.14 on every seed).

    Not asserted, as it does not hold: Q4_K ~ Q4_1 on grams and eigenvalues. This package's Q4_K quantiser rounds
    a block's extremes outward (its scales are rounded up), which inflates the weights by ~0.5 % and the grams by
    ~2 %: its max gram error is 1.7-2.0 x Q4_1's, its eigenvalue error 1.2-1.8 x.
    """
    summary = {qtype: error_summary(measured, model, qtype) for qtype in QTYPES}
    for kind in summary["Q8_0"]:
        assert 1.3 * summary["Q8_0"][kind] < summary["Q6_K"][kind], kind
        for four_bit in ("Q4_K", "Q4_1", "Q4_0"):
            assert 1.3 * summary["Q6_K"][kind] < summary[four_bit][kind], (kind, four_bit)
    assert 0.8 < summary["Q4_K"]["rho"] / summary["Q4_1"]["rho"] < 1.25
    assert 0.8 < summary["Q4_0"]["rho"] / summary["Q4_1"]["rho"] < 1.3
