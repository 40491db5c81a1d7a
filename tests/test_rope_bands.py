"""Frequency bands of the rotary operator (issue 23.3): band energies ``mean_Δ ||g_p(Δ)||^2`` and group Grams
``mean_Δ <g_G,L(Δ), g_G,L'(Δ)>`` over the window ``Δ = 0 .. C-1``, in closed form.

The chain of checks: the numpy reference equals explicit means over every distance of dense float64 operators
``g_p(Δ) = s^2 K_p^T R_p(Δ) Q_p`` (both pairings, partial rotary, two kinds of layers with their own frequencies and
attention factors); the kernel equals the reference (the ``rotary_bands`` row of ``qkalign.testing.comparisons``,
run by test_kernels.py, and here at larger heads); measure's ``rope_bands`` of tiny transformers models equals the
dense construction from their weights and :meth:`~qkalign.weights.rope.RopeSpec.rotation` (whose sign and scaling
tests/test_rope.py checks against the models' own attention), and is null without RoPE; analyze's statistics and
report section (i) follow from it.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from qkalign.kernels import rotary_bands as kernel
from qkalign.testing.comparisons import COMPARISONS, RTOL, StackedGrams
from qkalign.weights import rotary_bands as reference
from qkalign.weights.factored_operator import stacked_gram_lower
from qkalign.weights.rotary_bands import BAND_GROUPS, band_group_of_pair, band_wavelengths, band_weights
from qkalign.weights.rotary_grams import rotary_pairs

EPS64 = float(np.finfo(np.float64).eps)
IMPLEMENTATIONS = {"reference": reference.rotary_bands, "kernel": kernel.rotary_bands}
WINDOW = 50
#: Angles per distance where the closed form matters, for a window of 50: π (λ = 2, sign flips), 1 (high:
#: λ <= sqrt(50)), 2π/25 (two whole turns: mean cosine exactly 0), 0.3 and 2π/50 (λ = 50 = C: mid), 0.05 and
#: 1e-3 (low: less than a turn), 0 (never turns).
THETAS = np.array([np.pi, 1.0, 2 * np.pi / 25, 0.3, 2 * np.pi / 50, 0.05, 1e-3, 0.0])
#: (head_dim, rotary_dims, interleaved): both pairings, and partial rotary (unrotated dimensions).
PAIRINGS = [(8, 8, False), (8, 8, True), (10, 6, False), (12, 8, True)]


def dense_bands(k, q, first, second, thetas, factors, layer_kinds, group_of_pair, window):
    """energy (L, P+1), mean_energy (L,), group_gram (G+1, L, L) as explicit means over ``Δ = 0 .. window-1`` of the
    dense n x n operators ``g_p(Δ)`` (G = len(BAND_GROUPS); the unrotated rows are group G)."""
    num_layers, head_dim, hidden = k.shape
    num_pairs, num_groups = len(first), len(BAND_GROUPS)
    rest = np.setdiff1d(np.arange(head_dim), np.concatenate([first, second]))
    energy, mean_energy = np.zeros((num_layers, num_pairs + 1)), np.zeros(num_layers)
    group_gram = np.zeros((num_groups + 1, num_layers, num_layers))
    g_rest = np.stack([k[l, rest].T @ q[l, rest] for l in range(num_layers)])  # (L, n, n), at every distance
    for delta in range(window):
        groups = np.zeros((num_groups + 1, num_layers, hidden, hidden))
        groups[num_groups] = g_rest
        for l in range(num_layers):
            kind = layer_kinds[l]
            full = g_rest[l].copy()
            for p in range(num_pairs):
                angle = delta * thetas[kind][p]
                rotation = factors[kind] ** 2 * np.array([[np.cos(angle), -np.sin(angle)],
                                                          [np.sin(angle), np.cos(angle)]])
                dims = [first[p], second[p]]
                g_p = k[l, dims].T @ rotation @ q[l, dims]
                energy[l, p] += np.sum(g_p * g_p) / window
                groups[group_of_pair[kind][p], l] += g_p
                full += g_p
            mean_energy[l] += np.sum(full * full) / window
        group_gram += np.einsum("glij,gmij->glm", groups, groups) / window
    energy[:, num_pairs] = np.einsum("lij,lij->l", g_rest, g_rest)
    return energy, mean_energy, group_gram


def two_kinds(rotary_dims):
    """(thetas (2, P), attention factors (2,), layer kinds (3,)): a kind with the angles of :data:`THETAS` (repeated
    to P) and factor 1.3, and one with slower angles and factor 1 (the middle layer)."""
    num_pairs = rotary_dims // 2
    thetas = np.stack([np.resize(THETAS, num_pairs), 0.7 * np.resize(THETAS[::-1], num_pairs)])
    return thetas, np.array([1.3, 1.0]), np.array([0, 1, 0])


@pytest.mark.parametrize("head_dim, rotary_dims, interleaved", PAIRINGS)
def test_reference_is_the_window_mean_of_the_dense_operators(head_dim, rotary_dims, interleaved):
    num_layers, hidden = 3, 7
    rng = np.random.default_rng(head_dim + rotary_dims + interleaved)
    k, q = rng.standard_normal((2, num_layers, head_dim, hidden)) * 10.0 ** rng.uniform(-1, 1, (2, num_layers, 1, 1))
    first, second = rotary_pairs(head_dim, rotary_dims, interleaved)
    thetas, factors, layer_kinds = two_kinds(rotary_dims)
    products, means = band_weights(thetas, factors, WINDOW)
    group_of_pair = band_group_of_pair(thetas, WINDOW)
    assert set(group_of_pair.ravel()) == {0, 1, 2}  # every group has pairs
    got = reference.rotary_bands(stacked_gram_lower(q), stacked_gram_lower(k), num_layers, head_dim, products, means,
                                 group_of_pair, layer_kinds, first, second, len(BAND_GROUPS))
    want = dense_bands(k, q, first, second, thetas, factors, layer_kinds, group_of_pair, WINDOW)
    # |<g_L, g_L'>| <= s^4 ||K_L|| ||Q_L|| ||K_L'|| ||Q_L'||: float64 sums of n + 4 d^2 terms, and W terms of the mean
    norms = factors.max() ** 2 * np.linalg.norm(k, axis=(1, 2)) * np.linalg.norm(q, axis=(1, 2))
    scale = 16 * (hidden * hidden + 4 * head_dim**2 + WINDOW) * EPS64 * np.outer(norms, norms)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == np.float64
    assert np.all(np.abs(got[0] - want[0]) <= np.diagonal(scale)[:, None])
    assert np.all(np.abs(got[1] - want[1]) <= np.diagonal(scale))
    assert np.all(np.abs(got[2] - want[2]) <= scale)
    # The means are not the operator at Δ = 0, nor do the bands add up to the whole (interference).
    at_zero = dense_bands(k, q, first, second, thetas, factors, layer_kinds, group_of_pair, 1)
    assert np.all(np.abs(want[2][:3] - at_zero[2][:3]).max(axis=(1, 2)) > 1e3 * scale.max())
    assert np.abs(want[0].sum(axis=1) - want[1]).max() > 1e3 * scale.max()
    if rotary_dims == head_dim:
        np.testing.assert_array_equal(got[0][:, -1], 0.0)
        np.testing.assert_array_equal(got[2][-1], 0.0)


def test_window_means_match_explicit_sums():
    """``band_weights`` against the explicit means of the products at every distance, both kinds' angles."""
    thetas, factors, _ = two_kinds(16)
    products, means = band_weights(thetas, factors, WINDOW)
    delta = np.arange(WINDOW)[:, None, None]
    for a in range(2):
        ca, sa = np.cos(delta * thetas[a]), np.sin(delta * thetas[a])  # (W, 1, P)
        np.testing.assert_allclose(means[a], factors[a] ** 2 * np.stack([ca.mean(0)[0], sa.mean(0)[0]]),
                                   rtol=0, atol=8 * WINDOW * EPS64)
        for b in range(2):
            cb, sb = np.cos(delta * thetas[b]), np.sin(delta * thetas[b])
            rows = [(ca.transpose(0, 2, 1) * y).mean(0) for y in (cb, sb)]
            rows_s = [(sa.transpose(0, 2, 1) * y).mean(0) for y in (cb, sb)]
            want = (factors[a] * factors[b]) ** 2 * np.stack([rows[0], rows[1], rows_s[0], rows_s[1]])
            np.testing.assert_allclose(products[a, b], want, rtol=0, atol=8 * WINDOW * EPS64)


def test_band_groups_split_at_sqrt_c_and_c():
    """Window 4096: high up to λ = 64 included, mid up to 4096 included, low beyond (and a pair that never turns).
    Powers of two: 2π/λ and 2π/(2π/λ) are exact, so the bounds themselves are tested."""
    wavelengths = np.array([2.0, 63.0, 64.0, 65.0, 4095.0, 4096.0, 4097.0, 1e7])
    thetas = np.append(2 * np.pi / wavelengths, 0.0)
    assert band_wavelengths(thetas)[[2, 5]].tolist() == [64.0, 4096.0] and band_wavelengths(0.0) == np.inf
    assert band_group_of_pair(thetas, 4096).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert list(BAND_GROUPS) == ["high", "mid", "low"]


@pytest.mark.parametrize("head_dim, rotary_dims, interleaved, local_theta",
                         [(16, 16, False, None), (16, 16, True, 100.0), (24, 8, False, 100.0), (12, 0, False, None)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_equals_the_reference_at_larger_heads(head_dim, rotary_dims, interleaved, local_theta, dtype):
    """The comparison row at heads larger than ``random_inputs`` draws (d up to 10 there)."""
    row = next(c for c in COMPARISONS if c.name == "rotary_bands")
    stacked = StackedGrams(5, head_dim, 30, seed=head_dim, dtype=dtype, rotary_dims=rotary_dims,
                           interleaved=interleaved, rope_theta=1e4, window=300, band_local_theta=local_theta,
                           band_attention_factor=1.2)
    inputs = SimpleNamespace(stacked=stacked)  # the field of Inputs the row reads
    got, want = row.kernel(*row.args(inputs)), row.reference(*row.args(inputs))
    assert [x.shape for x in got] == [x.shape for x in want] == [(5, rotary_dims // 2 + 1), (5,), (4, 5, 5)]
    # unit-norm blocks, weights at most s^4 = 2.1: entries at most ~2, rounding ~4 d^2 eps absolute
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=8 * head_dim**2 * EPS64)
    np.testing.assert_array_equal(got[2], got[2].transpose(0, 2, 1))
    if rotary_dims:
        assert set(stacked.group_of_pair.ravel()) >= {0, 2}  # the groups are not all one


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_only_the_lower_triangle_is_read(implementation):
    stacked = StackedGrams(3, 6, 9, seed=4, dtype="float64", rotary_dims=4, interleaved=True, rope_theta=10.0,
                           window=20, band_local_theta=3.0)
    qq, kk = stacked.qq.copy(), stacked.kk.copy()
    args = (3, 6, stacked.band_products, stacked.band_means, stacked.group_of_pair, stacked.band_layer_kinds,
            stacked.first, stacked.second, 3)
    clean = IMPLEMENTATIONS[implementation](qq, kk, *args)
    unread = np.triu(np.ones(qq.shape, dtype=bool), 1)
    for layer in range(3):  # the diagonal blocks are read whole
        unread[layer * 6:(layer + 1) * 6, layer * 6:(layer + 1) * 6] = False
    qq[unread], kk[unread] = np.nan, np.inf
    for a, b in zip(IMPLEMENTATIONS[implementation](qq, kk, *args), clean):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("change", [
    dict(qq=np.zeros((12, 12))),  # not (L d, L d)
    dict(products=np.zeros((1, 1, 4, 2, 2))),  # 2 pairs in the weights, 3 in the pairing
    dict(means=np.zeros((2, 2, 3))),  # two kinds in the means, one in the products
    dict(group_of_pair=np.array([[0, 1, 3]])),  # group 3 of 0..2
    dict(layer_kinds=np.array([0, 1, 0])),  # kind 1 of one kind
    dict(layer_kinds=np.array([0, 0])),  # 2 kinds for 3 layers
    dict(first=[0, 1, 2], second=[3, 4, 2]),  # dimension 2 twice
])
def test_kernel_rejects_bad_input(change):
    products, means = band_weights(np.array([[1.0, 0.1, 0.01]]), [1.0], 10)
    args = dict(qq=np.eye(18), kk=np.eye(18), num_layers=3, head_dim=6, products=products, means=means,
                group_of_pair=np.array([[0, 1, 2]]), layer_kinds=np.zeros(3, dtype=int), first=[0, 1, 2],
                second=[3, 4, 5], num_groups=3)
    kernel.rotary_bands(**args)  # the unchanged arguments are fine
    with pytest.raises(ValueError):
        kernel.rotary_bands(**(args | change))


# --- measure and analyze on tiny transformers models -----------------------------------------------------------

transformers = pytest.importorskip("transformers")

from qkalign.testing.gguf_files import build_model  # noqa: E402
from qkalign.weights.measure import context_length, measure, open_model, read_rope  # noqa: E402

#: Llama 3 scaling (whole heads), Gemma 3 (a local and a global layer: their own frequencies), Phi-3 (partial
#: rotary with longrope's attention factor).
MODELS = {"llama": {}, "gemma3_text": dict(layer_types=["sliding_attention", "full_attention"]), "phi3": {}}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for model_type in (*MODELS, "gpt2", "bert"):
        folder = tmp_path_factory.mktemp(model_type)
        build_model(model_type, folder, **MODELS.get(model_type, {}))
        out[model_type] = folder
    return out


def dense_model_bands(folder):
    """energy (L, H, P+1), mean_energy (L, H), group_gram (G, L, L, H) of a model folder's heads from dense float64
    operators at every distance of its context; the model's RoPE, window and groups of pairs (K, P); and the
    Cauchy-Schwarz bound ``s^4 ||K_L|| ||Q_L|| ||K_L'|| ||Q_L'||`` (L, L, H) of every Gram entry."""
    model, layout, shape = open_model(folder)
    rope = read_rope(model, layout, shape)
    window = context_length(model, layout)
    kinds = sorted(rope.specs)
    specs = [rope.specs[kind] for kind in kinds]
    thetas = np.stack([spec.inv_freq for spec in specs])
    first, second = specs[0].pairs()
    layer_kinds = [kinds.index(kind) for kind in rope.layer_kinds]
    group_of_pair = band_group_of_pair(thetas, window)
    out, bounds = [], []
    factor = max(spec.attention_factor for spec in specs) ** 2
    for head in range(shape.num_heads):
        q = np.stack([model.read_block(layout.q_block(shape, l, head)) for l in range(shape.num_layers)])
        k = np.stack([model.read_block(layout.k_block(shape, l, head // shape.group)) for l in range(shape.num_layers)])
        out.append(dense_bands(k.astype(np.float64), q.astype(np.float64), first, second, thetas,
                               [spec.attention_factor for spec in specs], layer_kinds, group_of_pair, window))
        norms = max(factor, 1.0) * np.linalg.norm(k.astype(np.float64), axis=(1, 2)) * np.linalg.norm(q, axis=(1, 2))
        bounds.append(np.outer(norms, norms))
    energy, mean_energy, gram = (np.stack(parts, axis=-1) for parts in zip(*out))
    energy = energy.transpose(0, 2, 1)  # (L, H, P+1)
    unrotated = specs[0].rotary_dims < specs[0].head_dim
    return (energy, mean_energy, gram[:len(BAND_GROUPS) + unrotated], rope, window, group_of_pair,
            np.stack(bounds, axis=-1))


@pytest.mark.parametrize("model_type", list(MODELS))
def test_measured_bands_match_dense(folders, model_type):
    data = measure(folders[model_type], topk=2, precision="float64", deltas=(), progress=False)
    bands = data.extra["rope_bands"]
    assert data.extra["rope_bands_note"] is None and data.extra["rope_profile"] is None  # bands without a profile
    energy, mean_energy, gram, rope, window, group_of_pair, bound = dense_model_bands(folders[model_type])
    assert bands["window"] == window == 128
    assert bands["groups"] == ["high", "mid", "low"] + (["unrotated"] if model_type == "phi3" else [])
    assert bands["layer_kinds"] == list(rope.layer_kinds)
    kinds = sorted(rope.specs)
    if rope.uniform:
        assert bands["group_of_pair"] == group_of_pair[0].tolist()
        np.testing.assert_array_equal(bands["wavelengths"], 2 * np.pi / rope.layer(0).inv_freq)
    else:
        assert bands["group_of_pair"] == {kind: g.tolist() for kind, g in zip(kinds, group_of_pair)}
        assert group_of_pair[0].tolist() != group_of_pair[1].tolist()  # the kinds group their pairs differently
    got = [np.asarray(bands[key]) for key in ("energy", "mean_energy", "group_gram")]
    for g, w in zip(got, (energy, mean_energy, gram)):
        assert g.shape == w.shape
    # float64 sums of n^2 + 4 d^2 + W terms, relative to the Cauchy-Schwarz bound of each entry
    tol = 16 * (data.hidden_size**2 + 4 * data.head_dim**2 + window) * EPS64 * bound
    diagonal = np.einsum("llh->lh", tol)
    assert np.all(np.abs(got[0] - energy) <= diagonal[:, :, None])
    assert np.all(np.abs(got[1] - mean_energy) <= diagonal)
    assert np.all(np.abs(got[2] - gram) <= tol)
    assert np.all(np.abs(np.einsum("gllh->glh", gram)) > 1e6 * diagonal)  # every group's energy far from 0


def test_gguf_bands_equal_the_folders(tmp_path):
    """llama.cpp's converter stores Llama's Q/K rows as interleaved pairs; measure pairs the file's rows so: the bands
    (pair by pair) are the folder's."""
    from qkalign.testing.gguf_files import write_gguf_from_folder

    build_model("mistral", tmp_path)  # Llama's GGUF architecture, linear scaling (float64 frequencies both ways)
    path = write_gguf_from_folder(tmp_path, tmp_path / "mistral.gguf")[0]
    from_gguf, from_folder = (measure(source, topk=2, precision="float64", deltas=(), progress=False)
                              for source in (path, tmp_path))
    assert from_gguf.extra["rotary_pairing"] == "interleaved" and from_folder.extra["rotary_pairing"] == "half-split"
    a, b = from_gguf.extra["rope_bands"], from_folder.extra["rope_bands"]
    assert {k: a[k] for k in ("window", "groups", "group_of_pair")} == {k: b[k] for k in ("window", "groups",
                                                                                        "group_of_pair")}
    np.testing.assert_allclose(a["wavelengths"], b["wavelengths"], rtol=4 * EPS64)
    *_, bound = dense_model_bands(tmp_path)
    tol = 32 * (from_folder.hidden_size + 4 * from_folder.head_dim**2) * EPS64 * bound  # both sides' rounding
    diagonal = np.einsum("llh->lh", tol)
    assert np.all(np.abs(np.asarray(a["energy"]) - b["energy"]) <= diagonal[:, :, None])
    assert np.all(np.abs(np.asarray(a["mean_energy"]) - b["mean_energy"]) <= diagonal)
    assert np.all(np.abs(np.asarray(a["group_gram"]) - b["group_gram"]) <= tol)


def test_bands_are_of_the_weights_whatever_the_operator(folders):
    """``--operator`` changes what the grams describe, not the bands: those split the weights' rotary operator."""
    raw = measure(folders["llama"], topk=2, precision="float64", deltas=(), progress=False)
    window = measure(folders["llama"], topk=2, precision="float64", deltas=(), progress=False, operator="window:64")
    assert window.extra["operator"] != raw.extra["operator"]
    assert window.extra["rope_bands"] == raw.extra["rope_bands"]


@pytest.mark.parametrize("model_type", ["gpt2", "bert"])
def test_no_rope_no_bands(folders, model_type):
    data = measure(folders[model_type], topk=1, progress=False)
    assert data.extra["rope_bands"] is None and data.extra["rope_bands_note"] == "no RoPE"


def test_analyze_reports_the_bands(folders, tmp_path):
    """analyze's rope_bands from the dense construction: shares, group shares, group cosines; section (i)."""
    import qkalign

    data = measure(folders["phi3"], topk=2, precision="float64", progress=False)
    result = qkalign.analyze(data, backend="numpy")
    stats = result.rope_bands
    energy, mean_energy, gram, rope, _, group_of_pair, _ = dense_model_bands(folders["phi3"])
    share = energy / energy.sum(axis=2, keepdims=True)
    tol = 1e-12
    np.testing.assert_allclose(stats["share"], share, rtol=tol)
    np.testing.assert_allclose(stats["share_mean"], share.mean(axis=1), rtol=tol)
    np.testing.assert_allclose(stats["band_sum_ratio"], energy.sum(axis=2) / mean_energy, rtol=tol)
    groups = group_of_pair[0]
    want_group = np.stack([share[:, :, :-1][:, :, groups == g].sum(axis=2) for g in range(3)]
                          + [share[:, :, -1]], axis=2)
    np.testing.assert_allclose(stats["group_share"], want_group.mean(axis=1), rtol=tol)
    np.testing.assert_allclose(stats["group_share"].sum(axis=1), 1.0, rtol=tol)
    np.testing.assert_array_equal(stats["dominant_heads"].sum(axis=1), data.num_heads)
    norms = np.sqrt(np.einsum("gllh->glh", gram))
    cos = (gram / (norms[:, :, None, :] * norms[:, None, :, :])).mean(axis=3)  # (G, L, L)
    anchor = data.num_layers - 1
    np.testing.assert_allclose(stats["group_cos"]["to_anchor"], cos[:, :anchor, anchor].mean(axis=1), atol=tol)
    np.testing.assert_allclose(stats["group_cos"]["adjacent"], [c[0, 1] for c in cos], atol=tol)
    cross = gram[:, 0, 1].sum(axis=1) + gram[:, 1, 0].sum(axis=1)  # two layers
    np.testing.assert_allclose(stats["cross_share"], cross / cross.sum(), rtol=1e-10)
    report = qkalign.format_report(result)
    assert "=== [qkalign] (i) Rotary frequency bands" in report and "unrotated" in report
    assert report.index("(h) Rotary distance profile") < report.index("(i) Rotary frequency bands")
    result.to_json(tmp_path / "a.json")
    saved = json.loads((tmp_path / "a.json").read_text())["rope_bands"]
    assert saved["groups"] == ["high", "mid", "low", "unrotated"]
    assert np.asarray(saved["share"]).shape == energy.shape
    plain = qkalign.analyze(measure(folders["gpt2"], topk=1, progress=False), backend="numpy")
    assert plain.rope_bands is None and "(i) Rotary" not in qkalign.format_report(plain)
