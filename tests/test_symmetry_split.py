"""The cross-layer operator cosine split into symmetric and skew parts (issue 24.2): measure's ``gram_transpose``
``<g_L, g_L'^T>`` and analyze's ``cos_S``, ``cos_A`` and agreement shares against dense float64 operators (every
layout, grouped-query heads, rotated operators), exact constructions, the kernel against its reference, the option
being off by default, the command line, malformed files and the chance level against sampling."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

import qkalign
from qkalign.errors import InputError
from qkalign.files.seed_format import save
from qkalign.stats.analyze import analyze
from qkalign.stats.symmetry_split import split_chance
from qkalign.testing.comparisons import COMPARISONS, RTOL, StackedGrams
from qkalign.testing.dense import TOL, dense_operators
from qkalign.testing.model_folders import ALL_MODEL_TYPES, write_model
from qkalign.testing.refusals import one_error_line
from qkalign.views.text_report import format_report
from qkalign.weights.measure import measure
from qkalign.weights.symmetry_split import gram_transpose_from_product, stacked_product

EPS64 = np.finfo(np.float64).eps
SPLIT_KEYS = ("gram_transpose", "symmetry_split")


def dense_split(g):
    """From the n x n operators g (L, H, n, n): gram, gram_transpose (L, L, H) and cos_S, cos_A (L, L, H) of the
    parts ``(g +- g^T)/2`` formed as matrices."""
    gram = np.einsum("ahij,bhij->abh", g, g)
    transposed = np.einsum("ahij,bhji->abh", g, g)
    cosines = []
    for sign in (1, -1):
        part = (g + sign * np.swapaxes(g, -1, -2)) / 2
        inner = np.einsum("ahij,bhij->abh", part, part)
        norms = np.sqrt(np.einsum("llh->lh", inner))
        cosines.append(inner / (norms[:, None] * norms[None]))
    return gram, transposed, cosines[0], cosines[1]


def factor_bound(w_q, w_k, precision):
    """Bound on the error of every ``<g_L, g_L'^T>`` and ``<g_L, g_L'>`` (L, L, H): ``T[L, L'] = <X_LL', X_L'L^T>``
    with ``X = Q K^T`` formed to ``TOL`` relative in the precision's products, ``||X_LL'||_F <= ||Q_L|| ||K_L'||``, so
    ``|dT| <= 2 TOL ||Q_L|| ||K_L|| ||Q_L'|| ||K_L'||`` (the gram's error is within the same bound)."""
    k = np.repeat(w_k, w_q.shape[1] // w_k.shape[1], axis=1)
    norms = np.linalg.norm(w_q, axis=(-2, -1)) * np.linalg.norm(k, axis=(-2, -1))  # (L, H)
    return 2 * TOL[precision] * norms[:, None] * norms[None]


def cosine_bound(error, cos, norms_sq):
    """First-order bound on a cosine ``<P_L, P_L'>/(||P_L|| ||P_L'||)`` whose inner products are off by at most
    ``error`` (L, L, H) each, doubled for the higher orders: ``(e_LL' / (||P_L|| ||P_L'||) + |cos| (e_LL / ||P_L||^2
    + e_L'L' / ||P_L'||^2)/2)``; norms_sq (L, H) of the true part."""
    diagonal = np.einsum("llh->lh", error) / norms_sq
    norms = np.sqrt(norms_sq)
    return 2 * (error / (norms[:, None] * norms[None]) + np.abs(cos) * (diagonal[:, None] + diagonal[None]) / 2)


def assert_split_matches(data, g, w_q, w_k, precision):
    """measure's gram_transpose and analyze's cos_S, cos_A against the dense operators g (L, H, n, n); w_q, w_k the
    blocks the products were formed from (their norms set the tolerance)."""
    gram, transposed, cos_s, cos_a = dense_split(g)
    bound = factor_bound(w_q, w_k, precision)
    got = np.asarray(data.extra["gram_transpose"])
    assert data.extra["symmetry_split"] is True and got.shape == transposed.shape
    assert np.all(np.abs(got - transposed) <= bound), np.abs(got - transposed).max()
    # the diagonal is the symmetry score's numerator, computed from the (d, d) products K Q^T
    inner = np.asarray(data.extra["symmetry"]["transpose_inner"])
    assert np.all(np.abs(np.einsum("llh->lh", got) - inner) <= np.einsum("llh->lh", bound))
    result = analyze(data, pairs=False, chance=False)
    split = result.symmetry_split
    # each inner product of a part is (gram +- T)/2: off by at most the bound
    for cos, sign, key in ((cos_s, 1, "cos_S_per_head"), (cos_a, -1, "cos_A_per_head")):
        norms_sq = np.einsum("llh->lh", gram + sign * transposed) / 2
        np.testing.assert_array_less(np.abs(split[key] - cos), cosine_bound(bound, cos, norms_sq) + 4 * EPS64)
    # the halves' agreements add up to the (measured) operator cosine
    np.testing.assert_allclose(split["agreement_S"] + split["agreement_A"], result.operator_cos, rtol=0,
                               atol=8 * EPS64)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_every_layout_matches_dense(tmp_path, model_type, precision):
    """Every layout (grouped-query heads in the llama-style ones and phi3)."""
    model = write_model(tmp_path, model_type, seed=ALL_MODEL_TYPES.index(model_type) + 70)
    data = measure(model.folder, topk=2, precision=precision, deltas=(), progress=False, symmetry_split=True)
    assert_split_matches(data, dense_operators(model.w_q, model.w_k), model.w_q, model.w_k, precision)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_folded_norms_and_scales_far_from_one(tmp_path, precision):
    """Weights far from unit scale (read scaled by powers of two, undone by ldexp) and folded norm gains."""
    model = write_model(tmp_path, "qwen3", seed=4)
    for name in ("w_q", "w_k", "folded_q", "folded_k"):  # the same weights, written 2^40 and 2^-30 larger
        setattr(model, name, getattr(model, name) * (2.0**40 if "q" in name else 2.0**-30))
    from safetensors.torch import load_file, save_file

    path = model.folder / "model.safetensors"
    tensors = load_file(str(path))
    for name, tensor in tensors.items():
        if name.endswith("q_proj.weight"):
            tensors[name] = tensor * 2.0**40
        elif name.endswith("k_proj.weight"):
            tensors[name] = tensor * 2.0**-30
    save_file(tensors, str(path))
    data = measure(model.folder, topk=2, precision=precision, fold_norms=True, deltas=(), progress=False,
                   symmetry_split=True)
    assert_split_matches(data, dense_operators(model.folded_q, model.folded_k), model.folded_q, model.folded_k,
                         precision)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("operator", ["delta:5", "window:8"])
def test_rotated_operators_match_dense(tmp_path, operator, precision):
    pytest.importorskip("transformers")
    from qkalign.testing.gguf_files import build_model
    from qkalign.weights.measure import open_model, read_rope

    build_model("llama", tmp_path)
    data = measure(tmp_path, topk=2, precision=precision, deltas=(), operator=operator, progress=False,
                   symmetry_split=True)
    model, layout, shape = open_model(tmp_path)
    rope = read_rope(model, layout, shape)
    kind, value = operator.split(":")
    distances = [int(value)] if kind == "delta" else range(int(value))
    layers = range(shape.num_layers)
    maps = np.stack([np.mean([rope.layer(layer).rotation(d, scaled=True) for d in distances], axis=0)
                     for layer in layers])
    w_q = np.array([[model.read_block(layout.q_block(shape, l, h)) for h in range(shape.num_heads)] for l in layers])
    w_k = np.array([[model.read_block(layout.k_block(shape, l, h)) for h in range(shape.num_kv_heads)]
                    for l in layers])
    mapped = np.einsum("lde,lhen->lhdn", maps, w_q.astype(np.float64))  # M_L Q_L
    assert_split_matches(data, dense_operators(mapped, w_k), mapped, w_k.astype(np.float64), precision)


def test_shared_symmetric_part_and_skew_parts():
    """``W_Q = W_K (P + B_L)``: ``g_L = W_K (P + B_L)^T W_K^T`` with P symmetric (every layer's) and B_L skew (one per
    layer), so every S_L is W_K P W_K^T (cos_S 1), the A_L independent; tied Q = K has no skew part (cos_A NaN) and
    Q = K B no symmetric one."""
    rng = np.random.default_rng(8)
    L, H, n, d = 4, 2, 24, 4
    w_k = np.broadcast_to(rng.standard_normal((1, H, n, d)), (L, H, n, d))
    p = rng.standard_normal((1, H, d, d))
    b = rng.standard_normal((L, H, d, d))
    p, b = p + np.swapaxes(p, -1, -2), b - np.swapaxes(b, -1, -2)
    data = qkalign.from_weights(w_k @ (p + b), w_k, topk=2, precision="float64", progress=False,
                                symmetry_split=True)
    split = analyze(data).symmetry_split
    np.testing.assert_allclose(split["cos_S_per_head"], 1.0, rtol=0, atol=1e-12)
    g = dense_operators(np.swapaxes(w_k @ (p + b), -1, -2), np.swapaxes(w_k, -1, -2))
    _, _, _, cos_a = dense_split(g)
    np.testing.assert_allclose(split["cos_A_per_head"], cos_a, rtol=0, atol=1e-12)
    off = ~np.eye(L, dtype=bool)
    assert np.abs(cos_a[off]).max() < 0.99  # the skew parts really differ
    # the shares: agreement_S = ||S||^2/(||g_L|| ||g_L'||) per pair, from the dense parts
    s_sq = np.einsum("lhij,lhij->lh", (g + np.swapaxes(g, -1, -2)) / 2, (g + np.swapaxes(g, -1, -2)) / 2)
    norms = np.sqrt(np.einsum("lhij,lhij->lh", g, g))
    agreement_s = (np.sqrt(s_sq)[:, None] * np.sqrt(s_sq)[None] / (norms[:, None] * norms[None])).mean(axis=2)
    np.testing.assert_allclose(split["agreement_S"], agreement_s, rtol=1e-12)
    cos_g = analyze(data).operator_cos
    assert split["frac_S"] == pytest.approx(agreement_s[off].mean() / cos_g[off].mean(), rel=1e-12)
    assert split["frac_S"] + split["frac_A"] == pytest.approx(1.0, abs=1e-12)
    # z of a mean over the H L (L - 1)/2 = 12 pairs of layers and heads, one head's sd sqrt(2 / (n (n + 1)))
    assert split["S"]["offdiag"] == pytest.approx(1.0, abs=1e-12)
    assert split["S"]["z_offdiag"] == pytest.approx(np.sqrt(H * L * (L - 1) / 2) / np.sqrt(2 / (n * (n + 1))),
                                                    rel=1e-12)

    tied = analyze(qkalign.from_weights(w_k, w_k, topk=2, precision="float64", progress=False, symmetry_split=True))
    assert np.isnan(tied.symmetry_split["cos_A_per_head"]).all() and np.isnan(tied.symmetry_split["A"]["offdiag"])
    np.testing.assert_allclose(tied.symmetry_split["cos_S_per_head"], tied.operator_cos_per_head, rtol=0, atol=1e-13)
    assert tied.symmetry_split["frac_S"] == pytest.approx(1.0, abs=1e-13)
    skew = analyze(qkalign.from_weights(w_k @ b, w_k, topk=2, precision="float32", progress=False,
                                        symmetry_split=True))
    assert np.isnan(skew.symmetry_split["cos_S_per_head"]).all()
    assert skew.symmetry_split["frac_A"] == pytest.approx(1.0, abs=1e-5)  # float32 products
    assert "(k) Symmetric and skew parts across layers" in format_report(skew)


@pytest.mark.parametrize("row", [c for c in COMPARISONS if c.name == "gram_transpose_from_product"], ids=lambda c: c.label)
@pytest.mark.parametrize("head_dim", [1, 16, 40])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_equals_the_reference_at_larger_heads(row, head_dim, dtype):
    """The comparison row at heads larger than ``random_inputs`` draws (d up to 10 there); unit-norm blocks give
    ``|T| <= 1``, rounding ~d^2 eps absolute."""
    inputs = SimpleNamespace(stacked=StackedGrams(5, head_dim, 30, seed=head_dim, dtype=dtype))
    got, want = row.kernel(*row.args(inputs)), row.reference(*row.args(inputs))
    assert got.shape == want.shape == (5, 5) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=4 * head_dim**2 * EPS64)
    np.testing.assert_array_equal(got, got.T)


@pytest.mark.parametrize("rotated", [False, True])
def test_reference_is_the_dense_inner_product(rotated):
    """The numpy definition against ``<g_L, g_L'^T>`` of the n x n operators ``K_L^T M_L Q_L``."""
    rng = np.random.default_rng(2)
    q, k = rng.standard_normal((2, 3, 5, 11))
    maps = rng.standard_normal((3, 5, 5)) if rotated else None
    g = np.einsum("ldi,lde,lej->lij", k, np.eye(5)[None].repeat(3, 0) if maps is None else maps, q)
    want = np.einsum("aij,bji->ab", g, g)
    got = gram_transpose_from_product(stacked_product(q, k, maps), 3, 5)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13 * np.abs(want).max())


def test_kernel_refuses_a_product_of_the_wrong_shape():
    from qkalign.kernels.transpose_sums import gram_transpose_from_product as kernel

    with pytest.raises(ValueError, match="square"):
        kernel(np.zeros((12, 12)), 3, 5)
    with pytest.raises(ValueError, match="float32 or float64"):
        kernel(np.zeros((15, 15), dtype=np.int64), 3, 5)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_off_by_default_and_nothing_else_changes(tmp_path, precision):
    model = write_model(tmp_path, "llama", seed=9)
    off = measure(model.folder, topk=3, precision=precision, progress=False)
    on = measure(model.folder, topk=3, precision=precision, progress=False, symmetry_split=True)
    assert off.extra["gram_transpose"] is None and off.extra["symmetry_split"] is False
    for name in ("gram", "fro_sq", "sym_eigs", "eig_dirs"):
        np.testing.assert_array_equal(getattr(on, name), getattr(off, name))
    assert {k: v for k, v in on.extra.items() if k not in SPLIT_KEYS} == \
        {k: v for k, v in off.extra.items() if k not in SPLIT_KEYS}
    result_off, result_on = analyze(off), analyze(on)
    assert result_off.symmetry_split is None and "symmetry_split" not in result_off.to_dict()
    report_off, report_on = format_report(result_off), format_report(result_on)
    assert "(k) Symmetric" not in report_off and report_on.startswith(report_off)
    on_dict = result_on.to_dict()
    assert on_dict.pop("symmetry_split")["frac_S"] is not None
    assert json.dumps(on_dict) == json.dumps(result_off.to_dict())


def test_command_line(tmp_path, cli):
    model = write_model(tmp_path / "model", "qwen2", seed=3)
    prefix = tmp_path / "split"
    run = cli("measure", model.folder, "-o", prefix, "--symmetry-split", "--deltas", "none", "--quiet")
    assert run.returncode == 0, run.stderr
    doc = json.loads(prefix.with_suffix(".json").read_text())
    assert doc["symmetry_split"] is True and np.shape(doc["gram_transpose"]) == (3, 3, 4)
    run = cli("analyze", prefix.with_suffix(".json"), "--json", tmp_path / "result.json")
    assert run.returncode == 0, run.stderr
    assert "=== [qkalign] (k) Symmetric and skew parts across layers" in run.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert np.shape(result["symmetry_split"]["cos_S"]) == (3, 3)
    run = cli("analyze", model.folder, "--symmetry-split", "--deltas", "none", "--quiet")
    assert run.returncode == 0 and "(k) Symmetric and skew parts" in run.stdout, run.stderr
    plain = cli("measure", model.folder, "-o", tmp_path / "plain", "--deltas", "none", "--quiet")
    assert plain.returncode == 0
    doc = json.loads((tmp_path / "plain.json").read_text())
    assert doc["symmetry_split"] is False and doc["gram_transpose"] is None
    one_error_line(cli("analyze", tmp_path / "plain.json", "--symmetry-split"), "--symmetry-split", "model folder")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A measured pair with gram_transpose, as files: (json_path, its document, data, eigdirs_path)."""
    folder = tmp_path_factory.mktemp("written")
    model = write_model(folder / "model", "llama", seed=12)
    data = measure(model.folder, topk=2, deltas=(), progress=False, symmetry_split=True)
    json_path, eigdirs_path = save(data, folder / "pair")
    return json_path, json.loads(json_path.read_text()), data, eigdirs_path


def _bad_values(doc):
    T = np.asarray(doc["gram_transpose"])
    L, _, H = T.shape
    over = T.copy()
    over[1, 1, 0] = doc["gram"][1][1][0] * (1 + 1e-3)  # <g, g^T> beyond ||g||^2
    cross = T.copy()
    cross[0, 2, 1] = -2 * np.sqrt(doc["gram"][0][0][1] * doc["gram"][2][2][1])  # beyond Cauchy-Schwarz
    with_null = T.tolist()
    with_null[2][0][1] = None
    return {"a string": "yes", "a flat list": T.ravel().tolist(), "one layer short": T[:-1].tolist(),
            "a null entry": with_null, "a diagonal beyond the gram": over.tolist(), "beyond Cauchy-Schwarz": cross.tolist(),
            "ragged": [row[:-1] if i == 0 else row for i, row in enumerate(T.tolist())]}


@pytest.mark.parametrize("case", ["a string", "a flat list", "one layer short", "a null entry",
                                  "a diagonal beyond the gram", "beyond Cauchy-Schwarz", "ragged"])
def test_malformed_gram_transpose_is_one_line(written, case, tmp_path, cli):
    _, doc, _, eigdirs_path = written
    bad = dict(doc, gram_transpose=_bad_values(doc)[case])
    bad_path = tmp_path / "bad.json"
    bad_path.write_text(json.dumps(bad))
    line = one_error_line(cli("analyze", bad_path, "--eigdirs", eigdirs_path), "gram_transpose", bad_path)
    assert "expected" in line
    with pytest.raises(InputError, match="gram_transpose"):
        analyze(qkalign.load(bad_path, eigdirs=eigdirs_path))


def test_a_valid_file_and_a_file_without_the_split_are_read(written, tmp_path):
    json_path, doc, data, eigdirs_path = written
    loaded = qkalign.load(json_path)
    np.testing.assert_array_equal(analyze(loaded).symmetry_split["cos_S_per_head"],
                                  analyze(data).symmetry_split["cos_S_per_head"])
    older = {k: v for k, v in doc.items() if k not in SPLIT_KEYS}  # a JSON of a qkalign before the option
    path = tmp_path / "older.json"
    path.write_text(json.dumps(older))
    assert analyze(qkalign.load(path, eigdirs=eigdirs_path)).symmetry_split is None


def test_chance_level_against_sampling():
    """cos_S, cos_A of independent Gaussian operators: mean 0 and the sds sqrt(2/(n(n+-1))) (module docstring)."""
    d, n, samples = 4, 60, 3000
    rng = np.random.default_rng(21)
    k1, q1, k2, q2 = rng.standard_normal((4, samples, d, n))
    g1, g2 = np.swapaxes(k1, -1, -2) @ q1, np.swapaxes(k2, -1, -2) @ q2
    level = split_chance(n)
    for sign, part in ((1, "S"), (-1, "A")):
        a, b = g1 + sign * np.swapaxes(g1, -1, -2), g2 + sign * np.swapaxes(g2, -1, -2)
        cos = np.einsum("sij,sij->s", a, b) / np.sqrt(np.einsum("sij,sij->s", a, a) * np.einsum("sij,sij->s", b, b))
        sd = level[part]["sd"]
        assert level[part]["mean"] == 0.0 and abs(cos.mean()) <= 5 * sd / np.sqrt(samples)
        # exact to O(1/n) relative: within 5 standard errors of a sample sd plus that order
        assert abs(cos.std() - sd) <= 5 * sd / np.sqrt(2 * samples) + 4 * sd / n
    assert level["S"]["sd"] < np.sqrt(2) / n < level["A"]["sd"]


def test_memory_estimate_counts_the_product():
    from qkalign.weights.layouts import AttentionShape
    from qkalign.weights.measure import peak_bytes

    shape = AttentionShape(num_layers=36, num_heads=32, num_kv_heads=8, head_dim=128, hidden_size=2560)
    extra = peak_bytes(shape, 16, "float32", symmetry_split=True) - peak_bytes(shape, 16, "float32")
    from qkalign.linalg.blas_threads import core_count

    # per running task X (L d)^2 and M Q (L d n) in float32, and the output with its JSON text
    assert extra == core_count() * 4 * ((36 * 128) ** 2 + 36 * 128 * 2560) + 64 * 36 * 36 * 32


def test_sweep_option(cli, monkeypatch, tmp_path):
    """``sweep --symmetry-split`` reaches measure; a store written before the option resumes as ``False``."""
    pytest.importorskip("zarr")
    from qkalign.sweeps import run
    from qkalign.sweeps.store import _same_options
    from qkalign.sweeps.task import MEASURE_OPTIONS, default_options

    options = default_options()
    assert "symmetry_split" in MEASURE_OPTIONS and options["symmetry_split"] is False
    older = {k: v for k, v in options.items() if k != "symmetry_split"}
    assert _same_options(json.dumps(older), options)
    assert not _same_options(json.dumps(older), {**options, "symmetry_split": True})
    seen = {}

    def fake_run_sweep(sources, out, revisions, workers, scheduler, retries=None, progress=True, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # the CLI's interrupted path: exit 130 and nothing computed

    monkeypatch.setattr(run, "run_sweep", fake_run_sweep)
    assert cli("sweep", tmp_path, "-o", tmp_path / "s.zarr", "--symmetry-split").returncode == 130
    assert seen["symmetry_split"] is True
    assert cli("sweep", tmp_path, "-o", tmp_path / "s.zarr").returncode == 130 and seen["symmetry_split"] is None


def test_sweep_variables_have_named_dimensions(written):
    """Every array of ``symmetry_split`` in a sweep store has designed dimensions, none ``<name>.dim0``."""
    from qkalign.sweeps.variables import dimensions_of, flatten

    _, _, data, _ = written
    variables = {k: v for k, v in flatten(analyze(data).to_dict()).items() if k.startswith("symmetry_split.")}
    arrays = {k: np.asarray(v) for k, v in variables.items() if not isinstance(v, str)}
    dims = {k: dimensions_of(k, v.ndim) for k, v in arrays.items() if v.ndim}
    assert dims["symmetry_split.cos_S_per_head"] == ("layer", "layer2", "head")
    assert dims["symmetry_split.agreement_A"] == ("layer", "layer2")
    assert dims["symmetry_split.to_anchor_per_layer.S"] == ("layer",)
    assert not [k for k, d in dims.items() if any(".dim" in name for name in d)], dims
