"""``measure --operator``: the seed's whole analysis of the rotary operator at one distance, or of its window mean.

The truth is dense float64: each head's operator ``g_L = K_L^T M_L Q_L`` with ``M = S R(D) S`` from
:meth:`~qkalign.weights.rope.RopeSpec.rotation` (whose sign and scale tests/test_rope.py and tests/test_rotary_grams.py
check against the model's own attention logits), and for ``window:W`` the explicit mean of the n x n operators
``g(0), ..., g(W-1)``. The tiny transformers models of tests/test_rope_profile.py cover llama3 scaling, yarn's
attention factor, partial rotary (Phi-3 longrope, GPT-NeoX).
"""

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from qkalign.errors import InputError  # noqa: E402
from qkalign.stats.analyze import analyze  # noqa: E402
from qkalign.testing.dense import assert_matches_dense, spectra_by_magnitude  # noqa: E402
from qkalign.testing.gguf_files import build_model  # noqa: E402
from qkalign.testing.refusals import one_error_line  # noqa: E402
from qkalign.weights.measure import measure, open_model, read_rope  # noqa: E402
from qkalign.weights.rotary_operator import Operator, parse_operator  # noqa: E402

EPS64 = np.finfo(np.float64).eps
ROTARY = ("llama", "qwen2", "phi3", "gpt_neox")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for model_type in ROTARY + ("gpt2",):
        folder = tmp_path_factory.mktemp(model_type)
        build_model(model_type, folder)
        out[model_type] = folder
    return out


def blocks(folder):
    """``(w_q (L, H, d, n), w_k (L, H_kv, d, n), rope)``: the folder's head blocks in float64 and its ModelRope."""
    model, layout, shape = open_model(folder)
    rope = read_rope(model, layout, shape)
    layers = range(shape.num_layers)
    w_q = np.array([[model.read_block(layout.q_block(shape, l, h)) for h in range(shape.num_heads)] for l in layers])
    w_k = np.array([[model.read_block(layout.k_block(shape, l, h)) for h in range(shape.num_kv_heads)] for l in layers])
    return w_q.astype(np.float64), w_k.astype(np.float64), rope


def rotated_queries(w_q, maps):
    """``M_L Q_L`` for every layer and head: w_q (L, H, d, n), maps (L, d, d) -> (L, H, d, n)."""
    return np.einsum("lde,lhen->lhdn", maps, w_q)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("model_type", ROTARY)
def test_delta_operator_matches_dense(folders, model_type, precision):
    delta = 37
    data = measure(folders[model_type], topk=3, precision=precision, operator=f"delta:{delta}", deltas=(0, delta),
                   progress=False)
    w_q, w_k, rope = blocks(folders[model_type])
    maps = np.stack([rope.layer(l).rotation(delta, scaled=True) for l in range(data.num_layers)])
    assert_matches_dense(data, rotated_queries(w_q, maps), w_k, precision)
    assert data.extra["operator"] == f"delta:{delta}" and "R(37)" in data.extra["operator_definition"]
    assert data.extra["rope"].startswith("applied")
    # the profile at the same distance is the same Gram (both from the rotary kernel, at the same table row)
    np.testing.assert_array_equal(np.asarray(data.extra["rope_profile"]["gram"])[1], data.gram)
    # and far from the raw operator's: the rotation is applied
    raw = measure(folders[model_type], topk=3, precision=precision, deltas=(), progress=False)
    assert np.abs(raw.sym_eigs - data.sym_eigs).max() > 1e-3 * np.abs(raw.sym_eigs).max()


@pytest.mark.parametrize("model_type", ROTARY)
def test_window_operator_is_the_mean_of_the_dense_operators(folders, model_type):
    window = 40
    data = measure(folders[model_type], topk=3, precision="float64", operator=f"window:{window}", deltas=(),
                   progress=False)
    w_q, w_k, rope = blocks(folders[model_type])
    group = data.num_heads // w_k.shape[1]
    for layer in range(data.num_layers):
        spec = rope.layer(layer)
        for head in range(data.num_heads):
            k, q = w_k[layer, head // group], w_q[layer, head]
            g_mean = np.mean([k.T @ spec.rotation(d, scaled=True) @ q for d in range(window)], axis=0)
            lam, vec = spectra_by_magnitude(g_mean)
            top = abs(lam[0])
            # n-term float64 sums in the eigen-problems and the window's mean: a few (n + W) ulps of the largest
            tolerance = 64 * (data.hidden_size + window) * EPS64 * top
            got = data.sym_eigs[layer, head]
            assert np.all(np.abs(got - lam[:len(got)]) <= tolerance), np.abs(got - lam[:len(got)]).max()
            norm_sq = np.sum(g_mean * g_mean)
            assert abs(data.gram[layer, layer, head] - norm_sq) <= tolerance * np.sqrt(norm_sq)
            cosines = np.abs(np.einsum("kn,nk->k", data.eig_dirs[layer, head], vec[:, :3]))
            assert cosines.min() >= 1 - 1e-9, cosines
    # the closed-form window means match the explicit mean (of dense matrices) for every quantity
    maps = np.stack([np.mean([rope.layer(l).rotation(d, scaled=True) for d in range(window)], axis=0)
                     for l in range(data.num_layers)])
    assert_matches_dense(data, rotated_queries(w_q, maps), w_k, "float64")


@pytest.mark.parametrize("operator", ["delta:9", "window:24"])
def test_layers_that_rotate_differently(tmp_path, operator):
    """Gemma 3: local layers at base 1e4, the global one at 1e6 with yarn (attention factor != 1): each layer's M
    from its own RoPE, in the gram's rows and columns alike (one table per layer kind)."""
    folder = tmp_path / "gemma3"
    build_model("gemma3_text", folder, num_hidden_layers=3,
                layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                                 "full_attention": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                                    "original_max_position_embeddings": 32}})
    data = measure(folder, topk=3, precision="float64", operator=operator, deltas=(), progress=False)
    w_q, w_k, rope = blocks(folder)
    assert not rope.uniform and rope.layer(1).attention_factor != 1.0
    kind, value = operator.split(":")
    distances = [int(value)] if kind == "delta" else range(int(value))
    maps = np.stack([np.mean([rope.layer(l).rotation(d, scaled=True) for d in distances], axis=0)
                     for l in range(data.num_layers)])
    assert_matches_dense(data, rotated_queries(w_q, maps), w_k, "float64")
    # the global layer's own rotation matters: rotating it as a local layer misses its gram by far
    local = np.stack([np.mean([rope.layer(0).rotation(d, scaled=True) for d in distances], axis=0)] * 3)
    with pytest.raises(AssertionError):
        assert_matches_dense(data, rotated_queries(w_q, local), w_k, "float64")


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_a_long_window_is_no_rank_deficiency(folders, precision):
    """window:4096 shrinks the fast pairs of M to ~1e-3 (squared: below float32's rank tolerance, were the Gram of
    [K; M Q] factored): the spectrum still comes from the unrotated blocks' factor and matches dense."""
    window = 4096
    data = measure(folders["llama"], topk=3, precision=precision, operator=f"window:{window}", deltas=(),
                   progress=False)
    w_q, w_k, rope = blocks(folders["llama"])
    maps = np.stack([np.mean([rope.layer(l).rotation(d, scaled=True) for d in range(window)], axis=0)
                     for l in range(data.num_layers)])
    assert np.asarray(data.extra["operator_singular_values"]).min() < 1e-3  # 1.6e-4 here
    assert data.extra["rank_deficient_operators"] == 0
    assert_matches_dense(data, rotated_queries(w_q, maps), w_k, precision)


def test_raw_is_the_default_and_unchanged(folders):
    default = measure(folders["llama"], topk=3, deltas=(), progress=False)
    raw = measure(folders["llama"], topk=3, deltas=(), operator="raw", progress=False)
    delta0 = measure(folders["llama"], topk=3, deltas=(), operator="delta:0", progress=False)
    for name in ("gram", "fro_sq", "sym_eigs", "eig_dirs"):
        np.testing.assert_array_equal(getattr(raw, name), getattr(default, name))
    assert raw.extra["operator"] == "raw" and raw.extra["rope"].startswith("left out")
    # delta:0 is the raw operator (this llama3-scaled model has attention factor 1), to rounding only
    np.testing.assert_allclose(delta0.gram, raw.gram, rtol=1e-12)


def test_no_rope_refuses_a_rotated_operator(folders):
    with pytest.raises(InputError, match="rotary model"):
        measure(folders["gpt2"], topk=2, operator="delta:4", progress=False)
    assert measure(folders["gpt2"], topk=2, operator="raw", progress=False).extra["operator"] == "raw"


@pytest.mark.parametrize("text, expected", [("raw", Operator()), ("delta:0", Operator("delta", 0)),
                                            (" Window:16 ", Operator("window", 16)),
                                            ("delta:2147483648", Operator("delta", 2**31))])
def test_parse_operator(text, expected):
    assert parse_operator(text) == expected and parse_operator(expected) is expected


@pytest.mark.parametrize("text", ["", "delta", "delta:", "delta:-1", "window:0", "window:1.5", "raw:3", "rope",
                                  "delta:2147483649", None])
def test_bad_operators_are_one_line(text):
    with pytest.raises(InputError) as info:
        parse_operator(text)
    assert "\n" not in str(info.value) and "--operator" in str(info.value)


def test_cli_writes_a_pair_analyze_reads(folders, cli, tmp_path):
    prefix = tmp_path / "w"
    run = cli("measure", folders["qwen2"], "-o", prefix, "--operator", "window:8", "--quiet", "--deltas", "none")
    assert run.returncode == 0, run.stderr
    doc = json.loads(prefix.with_suffix(".json").read_text())
    assert doc["operator"] == "window:8" and "0..7" in doc["operator_definition"]
    run = cli("analyze", prefix.with_suffix(".json"))
    assert run.returncode == 0, run.stderr
    assert "operator window:8: mean of g(D)" in run.stdout.splitlines()[1]
    run = cli("analyze", folders["qwen2"], "--operator", "delta:3", "--deltas", "none", "--quiet")
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and "operator delta:3)" in lines[0] and "operator delta:3: g(3)" in lines[1]
    one_error_line(cli("measure", folders["qwen2"], "-o", tmp_path / "x", "--operator", "delta:x"), "--operator")
    one_error_line(cli("measure", folders["gpt2"], "-o", tmp_path / "y", "--operator", "delta:2"), "rotary model")
    assert not list(tmp_path.glob("x*")) and not list(tmp_path.glob("y*"))


def test_analysis_of_a_raw_json_has_no_operator_line(folders):
    data = measure(folders["llama"], topk=2, deltas=(), progress=False)
    from qkalign.views.text_report import format_report

    report = format_report(analyze(data))
    assert "operator" not in report.splitlines()[1] and analyze(data).meta["operator"] == "raw"


def test_chance_levels_follow_the_operator(folders):
    """A window mean shrinks its pairs unequally: its spectra get their own chance level; delta:D of wholly rotated
    heads is a scaled rotation (all singular values equal), whose levels are the raw operator's."""
    window = measure(folders["llama"], topk=2, deltas=(), operator="window:64", progress=False)
    delta = measure(folders["llama"], topk=2, deltas=(), operator="delta:5", progress=False)
    raw = measure(folders["llama"], topk=2, deltas=(), progress=False)
    sv = np.asarray(window.extra["operator_singular_values"])
    assert sv.shape == (window.num_layers, window.head_dim) and sv.min() < 0.5 * sv.max()
    np.testing.assert_allclose(delta.extra["operator_singular_values"], 1.0, rtol=1e-14)
    assert raw.extra["operator_singular_values"] is None
    levels = {name: analyze(data).chance for name, data in (("window", window), ("delta", delta), ("raw", raw))}
    assert "singular values" in levels["window"]["spectral_abs_cos"]["method"]
    assert levels["delta"]["spectral_abs_cos"] == levels["raw"]["spectral_abs_cos"]
    assert levels["window"]["operator_cos"] == levels["raw"]["operator_cos"]
    window.extra["operator_singular_values"] = [[1.0, -1.0]]
    with pytest.raises(InputError, match="operator_singular_values"):
        analyze(window)


def test_from_state_dict_takes_the_operator(folders):
    """The in-memory entry point gives the folder's numbers and records for a rotated operator too."""
    from safetensors.numpy import load_file

    import qkalign

    folder = folders["qwen2"]
    state_dict = load_file(str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    got = qkalign.from_state_dict(state_dict, config, topk=3, precision="float64", operator="window:8", progress=False)
    want = measure(folder, topk=3, precision="float64", operator="window:8", progress=False)
    for name in ("gram", "fro_sq", "sym_eigs", "eig_dirs"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    for key in ("operator", "operator_definition", "operator_singular_values", "rope"):
        assert got.extra[key] == want.extra[key]
