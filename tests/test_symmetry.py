"""The symmetry score ``s = <g, g^T> / ||g||^2`` of every head (issue 24.1): against dense float64 operators, exact
symmetric and skew operators, rotated operators, and its chance level against sampling."""

import json

import numpy as np
import pytest

import qkalign
from qkalign.errors import InputError
from qkalign.stats.analyze import analyze
from qkalign.stats.symmetry import symmetry_chance
from qkalign.testing.dense import TOL, dense_operators
from qkalign.testing.model_folders import ALL_MODEL_TYPES, write_model
from qkalign.weights.measure import measure


def dense_scores(w_q, w_k):
    """``(<g, g^T>, s)`` (L, H) from the n x n operators."""
    g = dense_operators(w_q, w_k)
    inner = np.einsum("lhij,lhji->lh", g, g)
    return inner, inner / np.einsum("lhij,lhij->lh", g, g)


def factor_bound(w_q, w_k, precision):
    """Bound on the error of ``<g, g^T> = tr((Q K^T)^2)`` (L, H): ``2 ||X|| ||dX||`` with ``X = Q K^T`` formed to
    ``TOL`` relative in the precision's products, ``||X||_F <= ||Q||_F ||K||_F``."""
    k = np.repeat(w_k, w_q.shape[1] // w_k.shape[1], axis=1)
    norms = np.linalg.norm(w_q, axis=(-2, -1)) * np.linalg.norm(k, axis=(-2, -1))
    return 2 * TOL[precision] * norms**2


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_scores_match_dense(tmp_path, model_type, precision):
    model = write_model(tmp_path, model_type, seed=ALL_MODEL_TYPES.index(model_type) + 40)
    data = measure(model.folder, topk=2, precision=precision, deltas=(), progress=False)
    inner, score = dense_scores(model.w_q, model.w_k)
    got = data.extra["symmetry"]
    assert np.all(np.abs(np.asarray(got["transpose_inner"]) - inner) <= factor_bound(model.w_q, model.w_k, precision))
    norms_sq = np.einsum("llh->lh", data.gram)
    assert np.all(np.abs(np.asarray(got["per_head"]) - score) <= 2 * factor_bound(model.w_q, model.w_k, precision)
                  / norms_sq)


def test_symmetric_and_skew_operators_score_one_and_minus_one():
    rng = np.random.default_rng(3)
    w_k = rng.standard_normal((2, 2, 24, 4))
    skew = rng.standard_normal((2, 2, 4, 4))
    skew -= np.swapaxes(skew, -1, -2)
    tied = qkalign.from_weights(w_k, w_k, topk=2, precision="float64", progress=False)  # g = W_K W_K^T
    np.testing.assert_allclose(tied.extra["symmetry"]["per_head"], 1.0, rtol=0, atol=1e-13)
    # W_Q = W_K B with B skew: g = W_K B^T W_K^T, skew
    antisymmetric = qkalign.from_weights(w_k @ skew, w_k, topk=2, precision="float64", progress=False)
    np.testing.assert_allclose(antisymmetric.extra["symmetry"]["per_head"], -1.0, rtol=0, atol=1e-13)
    result = analyze(antisymmetric)
    # 2 heads per layer at n = 24: z = (-1 - 1/n) / (sqrt(2)/n / sqrt(2)) = -25
    assert result.symmetry["mean"] == pytest.approx(-1.0) and np.all(result.symmetry["z_per_layer"] < -20)


@pytest.mark.parametrize("operator", ["delta:7", "window:30"])
def test_rotated_operators(tmp_path, operator):
    pytest.importorskip("transformers")
    from qkalign.testing.gguf_files import build_model
    from qkalign.weights.measure import open_model, read_rope

    build_model("llama", tmp_path)
    data = measure(tmp_path, topk=2, precision="float64", deltas=(), operator=operator, progress=False)
    model, layout, shape = open_model(tmp_path)
    rope = read_rope(model, layout, shape)
    kind, value = operator.split(":")
    distances = [int(value)] if kind == "delta" else range(int(value))
    for layer in range(shape.num_layers):
        m = np.mean([rope.layer(layer).rotation(d, scaled=True) for d in distances], axis=0)
        for head in range(shape.num_heads):
            k = model.read_block(layout.k_block(shape, layer, head // shape.group)).astype(np.float64)
            q = model.read_block(layout.q_block(shape, layer, head)).astype(np.float64)
            g = k.T @ m @ q
            want = np.sum(g * g.T) / np.sum(g * g)
            assert abs(data.extra["symmetry"]["per_head"][layer][head] - want) <= 64 * shape.hidden_size * 2.2e-16


def test_chance_level_against_sampling():
    d, n, samples = 8, 300, 3000
    rng = np.random.default_rng(11)
    k, q = rng.standard_normal((2, samples, d, n))
    x = q @ np.swapaxes(k, -1, -2)
    norm_sq = np.einsum("sij,sij->s", k @ np.swapaxes(k, -1, -2), q @ np.swapaxes(q, -1, -2))
    s = np.einsum("sij,sji->s", x, x) / norm_sq
    level = symmetry_chance(d, n)
    # the analytic level is exact to O(1/n) relative: within 5 standard errors plus that order
    assert abs(s.mean() - level["mean"]) <= 5 * s.std() / np.sqrt(samples) + level["mean"] / n
    assert abs(s.std() - level["sd"]) <= 5 * level["sd"] / np.sqrt(2 * samples) + 4 * level["sd"] / n
    # a shrinking M (unequal singular values) is sampled; its spread stays that of M = I to sampling error (s of a
    # rank-one K^T M Q is a squared cosine of two random vectors: mean 1/n, sd sqrt(2)/n too)
    sampled = symmetry_chance(d, n, operator_scales=np.array([[1.0] * 4 + [0.01] * 4]))
    assert sampled["method"].startswith("monte-carlo") and sampled["mean"] == level["mean"]
    assert abs(sampled["sd"] - level["sd"]) <= 5 * level["sd"] / np.sqrt(2 * sampled["samples"]) + 4 * level["sd"] / n


def test_report_json_and_bad_input(tmp_path):
    model = write_model(tmp_path, "llama", seed=5)
    data = measure(model.folder, topk=2, deltas=(), progress=False)
    from qkalign.views.text_report import format_report

    result = analyze(data)
    report = format_report(result)
    assert "(j) Symmetry of each head's operator" in report
    np.testing.assert_array_equal(json.loads(result.to_json())["symmetry"]["per_head"], data.extra["symmetry"]["per_head"])
    data.extra["symmetry"] = {"per_head": [[2.0] * data.num_heads] * data.num_layers}
    with pytest.raises(InputError, match="symmetry.per_head"):
        analyze(data)
    data.extra["symmetry"] = "yes"
    with pytest.raises(InputError, match="symmetry"):
        analyze(data)


def saponati_directionality(m, num_std=2):
    """Their ``directionality_score`` restated in numpy, on their orientation (rows: queries), negated as reported."""
    rows, columns = np.linalg.norm(m, axis=1), np.linalg.norm(m, axis=0)
    row_t, col_t = rows.mean() + num_std * rows.std(ddof=1), columns.mean() + num_std * columns.std(ddof=1)
    row_excess, col_excess = (rows[rows > row_t] - row_t).sum(), (columns[columns > col_t] - col_t).sum()
    return 0.0 if row_excess + col_excess == 0 else -(col_excess - row_excess) / (col_excess + row_excess)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("model_type", ["llama", "qwen3", "gpt2", "bert", "phi3"])
def test_layer_scores_match_saponatis_on_the_dense_layer_matrix(tmp_path, model_type, precision):
    """Per layer: their M = W_Q W_K^T (x W convention: our g summed over heads, transposed), their two scores."""
    model = write_model(tmp_path, model_type, seed=ALL_MODEL_TYPES.index(model_type) + 60)
    data = measure(model.folder, topk=2, precision=precision, deltas=(), layer_symmetry=True, progress=False)
    sym = data.extra["symmetry"]
    g = dense_operators(model.w_q, model.w_k)  # (L, H, n, n), rows on the key side
    for layer in range(data.num_layers):
        m = g[layer].sum(axis=0).T  # theirs: rows on the query side
        norm_sq = np.sum(m * m)
        bound = 2 * TOL[precision] * np.sum(np.linalg.norm(model.w_q[layer], axis=(-2, -1))) ** 2 \
            * np.sum(np.linalg.norm(model.w_k[layer], axis=(-2, -1))) ** 2
        assert abs(sym["layer_norm_sq"][layer] - norm_sq) <= bound
        assert abs(sym["layer_transpose_inner"][layer] - np.sum(m * m.T)) <= bound
        assert abs(sym["per_layer"][layer] - (2 * np.sum((m + m.T) ** 2 / 4) / norm_sq - 1)) <= 2 * bound / norm_sq
        assert sym["directionality"][layer] == pytest.approx(saponati_directionality(m), abs=1e3 * TOL[precision])
    result = analyze(data)
    np.testing.assert_array_equal(result.symmetry["directionality"], sym["directionality"])


def test_layer_scores_are_an_option(tmp_path, cli):
    model = write_model(tmp_path, "qwen3", seed=9)
    plain = measure(model.folder, topk=2, deltas=(), progress=False)
    assert plain.extra["symmetry"]["per_layer"] is None and "layer_score" not in analyze(plain).symmetry
    run = cli("analyze", model.folder, "--layer-symmetry", "--quiet", "--deltas", "none")
    assert run.returncode == 0 and "as Saponati et al. score it: median s" in run.stdout
    # the option adds the layer scores only: every other number is the same
    scored = measure(model.folder, topk=2, deltas=(), layer_symmetry=True, progress=False)
    for name in ("gram", "fro_sq", "sym_eigs", "eig_dirs"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(scored, name))
    assert scored.extra["symmetry"]["per_head"] == plain.extra["symmetry"]["per_head"]


def test_directionality_sign():
    """A matrix with a few heavy columns (key side of their M) scores -1, with heavy rows +1."""
    from qkalign.weights.layer_symmetry import directionality

    norms = np.ones(50)
    heavy = norms.copy()
    heavy[:2] = 10.0
    assert directionality(norms, heavy) == -1.0 and directionality(heavy, norms) == 1.0
    assert directionality(norms, norms) == 0.0


def test_plot_draws_the_scores_and_refuses_malformed_ones(tmp_path, cli):
    import matplotlib.image

    from qkalign.testing.refusals import one_error_line

    model = write_model(tmp_path, "qwen3", seed=21)
    out = tmp_path / "r.json"
    run = cli("analyze", model.folder, "--layer-symmetry", "--quiet", "--deltas", "none", "--json", out,
              "--plot", tmp_path / "figs")
    assert run.returncode == 0, run.stderr
    assert matplotlib.image.imread(tmp_path / "figs" / "symmetry.png").std() > 0.05  # drawn, not blank
    doc = json.loads(out.read_text())
    doc["symmetry"]["per_head"] = doc["symmetry"]["per_head"][:-1]
    out.write_text(json.dumps(doc))
    one_error_line(cli("plot", out, tmp_path / "again"), "symmetry.per_head")
    assert not (tmp_path / "again" / "symmetry.png").exists()


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_symmetry_at_every_profile_distance_matches_dense(tmp_path, model_type):
    """``rope_profile.transpose_inner``: <g(Δ), g(Δ)^T> of every head from dense g(Δ) = K^T S R(Δ) S Q (Gemma 3: each
    layer's own RoPE); at Δ = 0 (a head rotated whole, attention factor s) it is s^4 times the raw one."""
    pytest.importorskip("transformers")
    from qkalign.testing.gguf_files import build_model
    from qkalign.weights.measure import open_model, read_rope

    overrides = {} if model_type == "llama" else dict(
        num_hidden_layers=3, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                         "full_attention": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                            "original_max_position_embeddings": 32}})
    build_model(model_type, tmp_path, **overrides)
    deltas = (0, 3, 100)
    data = measure(tmp_path, topk=2, precision="float64", deltas=deltas, progress=False)
    got = np.asarray(data.extra["rope_profile"]["transpose_inner"])
    model, layout, shape = open_model(tmp_path)
    rope = read_rope(model, layout, shape)
    for layer in range(shape.num_layers):
        for head in range(shape.num_heads):
            k = model.read_block(layout.k_block(shape, layer, head // shape.group)).astype(np.float64)
            q = model.read_block(layout.q_block(shape, layer, head)).astype(np.float64)
            for t, delta in enumerate(deltas):
                g = k.T @ rope.layer(layer).rotation(delta, scaled=True) @ q
                assert abs(got[t, layer, head] - np.sum(g * g.T)) <= 64 * shape.hidden_size * 2.2e-16 * np.sum(g * g)
    factor = np.array([rope.layer(layer).attention_factor for layer in range(shape.num_layers)]) ** 4
    np.testing.assert_allclose(got[0], factor[:, None] * np.asarray(data.extra["symmetry"]["transpose_inner"]),
                               rtol=1e-12, atol=1e-12 * np.abs(got[0]).max())
    profile = analyze(data).rope_profile
    assert profile["symmetry"].shape == (len(deltas),) and np.isfinite(profile["symmetry"]).all()


def test_plot_draws_the_split_and_refuses_a_malformed_one(tmp_path, cli):
    import matplotlib.image

    from qkalign.testing.refusals import one_error_line

    model = write_model(tmp_path, "llama", seed=22)
    out = tmp_path / "r.json"
    run = cli("analyze", model.folder, "--symmetry-split", "--quiet", "--json", out, "--plot", tmp_path / "figs")
    assert run.returncode == 0, run.stderr
    assert matplotlib.image.imread(tmp_path / "figs" / "symmetry_split.png").std() > 0.05
    doc = json.loads(out.read_text())
    doc["symmetry_split"]["cos_A"] = [[0.0]]
    out.write_text(json.dumps(doc))
    one_error_line(cli("plot", out, tmp_path / "again"), "symmetry_split.cos_A")


def test_directionality_against_its_chance_level(tmp_path):
    """Each layer's ``d`` over the level for unrelated factors of the model's shape (n, H_kv, d), in the result, its
    JSON and the report; a file whose kv heads do not divide its heads is refused."""
    from qkalign.stats.directionality_chance import directionality_chance
    from qkalign.views.text_report import format_report

    model = write_model(tmp_path, "qwen3", seed=9)
    data = measure(model.folder, topk=2, deltas=(), layer_symmetry=True, progress=False)
    sym = analyze(data).symmetry
    level = directionality_chance(data.hidden_size, data.extra["num_kv_heads"], data.head_dim)
    assert sym["directionality_chance"] == level and level["sd"] > 0
    d = np.asarray(data.extra["symmetry"]["directionality"])
    np.testing.assert_array_equal(sym["directionality_z"], d / level["sd"])
    assert sym["directionality_mean"] == pytest.approx(d.mean(), rel=1e-15)
    assert sym["directionality_mean_z"] == pytest.approx(d.mean() / (level["sd"] / np.sqrt(len(d))), rel=1e-15)
    doc = json.loads(analyze(data).to_json())["symmetry"]
    assert doc["directionality_chance"]["sd"] == level["sd"] and len(doc["directionality_z"]) == data.num_layers
    report = format_report(analyze(data))
    assert "z(dir)" in report and f"± {level['sd']:.4f} per layer" in report
    data.extra["num_kv_heads"] = 3  # 4 heads
    with pytest.raises(InputError, match="num_kv_heads"):
        analyze(data)
