"""measure's rotary distance profile ``rope_profile`` against dense float64 operators g(Δ) = K^T S R(Δ) S Q.

Tiny random transformers models (qkalign.testing.gguf_files.CONFIGS: Llama with llama3 scaling, Qwen2 with yarn
and its attention factor, Phi-3 partial rotary with longrope, GPT-NeoX rotating a quarter of each head) are
measured from their folders; the dense side forms each head's n x n operator at every distance from the
blocks and :meth:`~qkalign.weights.rope.RopeSpec.rotation`, whose sign and scaling tests/test_rope.py checks
against the model's own attention scores. A GGUF written as llama.cpp's converter writes it (Q/K rows
permuted to interleaved pairs for Llama) gives the folder's profile. A Gemma 3, whose local and global layers
rotate at different bases (the global one with yarn's attention factor), is checked against dense operators
formed with transformers' own rotary embedding of each layer's type.
"""

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from qkalign.errors import InputError  # noqa: E402
from qkalign.testing.gguf_files import build_model, write_gguf_from_folder  # noqa: E402
from qkalign.testing.refusals import one_error_line  # noqa: E402
from qkalign.weights.measure import measure, open_model, read_rope  # noqa: E402
from qkalign.weights.rope import ModelRope, RopeSpec, default_inv_freq  # noqa: E402
from qkalign.weights.rope_profile import profile_plan, profile_record  # noqa: E402
from qkalign.weights.rotary_grams import rotary_tables  # noqa: E402

DELTAS = (0, 1, 3, 64, 1000)
EPS64 = np.finfo(np.float64).eps
U32 = 2.0**-24  # float32's unit roundoff


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for model_type in ("llama", "qwen2", "phi3", "gpt_neox", "gpt2"):
        folder = tmp_path_factory.mktemp(model_type)
        build_model(model_type, folder)
        out[model_type] = folder
    return out


def dense_profile(folder, deltas, rotation=None):
    """gram(Δ)[t, L, L', h] from dense float64 g_L,h(Δ) = K^T M_L(Δ) Q of the folder's blocks: M_L(Δ) =
    ``rotation(L, Δ)`` (d, d), by default layer L's S R(Δ) S (:meth:`~qkalign.weights.rope.RopeSpec.rotation`)."""
    model, layout, shape = open_model(folder)
    rope = read_rope(model, layout, shape)
    if rotation is None:
        def rotation(layer, delta):
            return rope.layer(layer).rotation(delta, scaled=True)
    out = np.empty((len(deltas), shape.num_layers, shape.num_layers, shape.num_heads))
    for head in range(shape.num_heads):
        kv = head // shape.group
        q = [model.read_block(layout.q_block(shape, l, head)).astype(np.float64) for l in range(shape.num_layers)]
        k = [model.read_block(layout.k_block(shape, l, kv)).astype(np.float64) for l in range(shape.num_layers)]
        for t, delta in enumerate(deltas):
            g = np.stack([k[l].T @ rotation(l, delta) @ q[l] for l in range(shape.num_layers)])
            flat = g.reshape(shape.num_layers, -1)
            out[t, :, :, head] = flat @ flat.T
    return out, rope


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "phi3", "gpt_neox"])
def test_profile_matches_dense(folders, model_type):
    data = measure(folders[model_type], topk=2, precision="float64", deltas=DELTAS, progress=False)
    profile = data.extra["rope_profile"]
    assert profile["deltas"] == list(DELTAS) and data.extra["rope_profile_note"] is None
    got = np.asarray(profile["gram"])
    want, rope = dense_profile(folders[model_type], DELTAS)
    norms = np.sqrt(np.einsum("tllh->tlh", np.abs(want)))
    # float64 sums of n + 2 d terms per entry, a few ulps each, relative to the Cauchy-Schwarz bound.
    bound = 16 * (data.hidden_size + 2 * data.head_dim) * EPS64 * norms[:, :, None, :] * norms[:, None, :, :]
    assert np.all(np.abs(got - want) <= bound)
    # Δ = 0 is the gram, times s^4 where the attention factor s scales a whole head (yarn's mscale here)
    spec = rope.layer(0)
    if spec.rotary_dims == data.head_dim:
        np.testing.assert_allclose(got[0], spec.attention_factor ** 4 * data.gram, rtol=0, atol=bound[0].max())
    # the profile moves with the distance (far more than the tolerance): the rotation is applied
    assert np.abs(got[-1] - got[0]).max() > 1e3 * bound.max()
    if model_type == "qwen2":
        assert rope.layer(0).attention_factor != 1.0  # yarn's mscale is in the profile (S R S)


#: A tiny Gemma 3 (CONFIGS' gemma3_text, 3 layers): local layers at base 1e4, the global one at 1e6 with yarn,
#: whose attention factor 0.1 ln 4 + 1 scales its rotated dimensions (all of them: Gemma 3 rotates whole heads).
GEMMA3_ROPE = dict(num_hidden_layers=3, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                   rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                                    "full_attention": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                                       "original_max_position_embeddings": 32}})


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gemma3")
    model, _ = build_model("gemma3_text", folder, **GEMMA3_ROPE)
    return folder, model


def transformers_rotation(model, layer_type, delta):
    """``C_0^T C_Δ`` (d, d) float64: the matrix between a key at position 0 and a query at ``Δ`` that the model's
    own code applies (Gemma3RotaryEmbedding's float32 cos/sin of ``layer_type``, times its attention scaling, and
    ``apply_rotary_pos_emb`` on the basis vectors): ``s² R(Δ)`` up to float32 rounding."""
    import torch
    from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

    head_dim = model.config.head_dim
    basis = torch.eye(head_dim, dtype=torch.float64)[None, None]  # (batch, heads, seq, d): row i is e_i
    columns = []
    for position in (0, delta):
        cos, sin = model.model.rotary_emb(basis, torch.tensor([[position]]), layer_type)
        rotated, _ = apply_rotary_pos_emb(basis, basis, cos, sin)
        columns.append(rotated[0, 0].numpy().T)  # C_p: its column i is C_p e_i
    return columns[0].T @ columns[1]


def block_norms(folder):
    """``||K_L||_F ||Q_L||_F`` of every layer and query head: (L, H) float64."""
    model, layout, shape = open_model(folder)
    return np.array([[np.linalg.norm(model.read_block(layout.k_block(shape, l, h // shape.group)).astype(np.float64))
                      * np.linalg.norm(model.read_block(layout.q_block(shape, l, h)).astype(np.float64))
                      for h in range(shape.num_heads)] for l in range(shape.num_layers)])


def test_gemma3_local_and_global_layers_profile(gemma3):
    """Gemma 3's profile: each layer rotated at its type's θ and attention factor s, against dense float64
    operators formed with transformers' own rotary embedding, and ``gram(0)[L, L'] = s_L² s_L'² gram``."""
    folder, model = gemma3
    data = measure(folder, topk=2, precision="float64", deltas=DELTAS, progress=False)
    assert data.extra["rope_profile_note"] is None and data.extra["rope_profile"]["deltas"] == list(DELTAS)
    got = np.asarray(data.extra["rope_profile"]["gram"])
    types = [layer.self_attn.layer_type for layer in model.model.layers]
    rope = read_rope(*open_model(folder))
    assert list(rope.layer_kinds) == types == GEMMA3_ROPE["layer_types"]
    emb = model.model.rotary_emb
    for kind, spec in rope.specs.items():  # qkalign's θ are transformers' float32 ones to the rounding of test_rope
        params = GEMMA3_ROPE["rope_parameters"][kind]
        theirs = getattr(emb, f"{kind}_inv_freq").double().numpy()
        rtol = (np.log(params["rope_theta"]) + 4 + 2 * (params.get("factor", 1.0) - 1) + 3) * U32
        assert np.all(np.abs(spec.inv_freq - theirs) <= rtol * theirs)
        assert spec.attention_factor == getattr(emb, f"{kind}_attention_scaling")
    s2 = np.array([rope.layer(l).attention_factor ** 2 for l in range(len(types))])
    assert s2[1] > 1.25 and s2[0] == s2[2] == 1.0  # yarn's factor is on the global layer only

    want, _ = dense_profile(folder, DELTAS, lambda l, delta: transformers_rotation(model, types[l], delta))
    # The model's tables: angles fl32(Δ θ~_p) off Δθ_p by δφ_p = Δ |θ~_p - θ_p| + U Δ θ~_p, cos/sin within 2U, times
    # s in float32 (U): ||C_0^T C_Δ - s² R(Δ)||_2 <= ε_L = s_L² (2 max δφ + 8 U). With N_L = ||K_L|| ||Q_L||,
    # ||g_L|| <= s_L² N_L, so the Gram moves by at most (ε_L s_L'² + s_L² ε_L' + ε_L ε_L') N_L N_L', beside the
    # float64 sums of n + 2 d terms of measure and of the dense side (16 (n + 2 d) eps64 s_L² s_L'² N_L N_L').
    theta_f32 = np.stack([getattr(emb, f"{kind}_inv_freq").double().numpy() for kind in types])
    theta = np.stack([rope.layer(l).inv_freq for l in range(len(types))])
    deltas = np.asarray(DELTAS, dtype=np.float64)[:, None, None]
    phi_error = (deltas * (np.abs(theta_f32 - theta) + U32 * theta_f32)).max(axis=2)  # (D, L)
    eps = s2 * (2 * phi_error + 8 * U32)
    n = block_norms(folder)  # (L, H)
    nn = n[None, :, None, :] * n[None, None, :, :]
    ss = (s2[:, None] * s2[None, :])[None, :, :, None]
    table = (eps[:, :, None] * s2[None, None, :] + s2[None, :, None] * eps[:, None, :]
             + eps[:, :, None] * eps[:, None, :])[..., None]
    bound = (table + 16 * (data.hidden_size + 2 * data.head_dim) * EPS64 * ss) * nn
    assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)
    # Δ = 0: the gram with each layer's attention factor on both sides
    rounding = 16 * (data.hidden_size + 2 * data.head_dim) * EPS64 * ss[0] * nn[0]
    assert np.all(np.abs(got[0] - ss[0] * data.gram) <= rounding)
    # Each layer's own type matters: rotated all as local layers, the global layer's entries are off at every
    # distance (at the near ones, where float32's angles are tight, by far more than the bound).
    local, _ = dense_profile(folder, DELTAS, lambda l, delta: transformers_rotation(model, "sliding_attention", delta))
    off = (np.abs(local[:, 1] - want[:, 1]) / bound[:, 1]).max(axis=(1, 2))
    assert np.all(off > 10) and np.all(off[:3] > 1e3)
    assert np.all(np.abs(local[:, ::2, ::2] - want[:, ::2, ::2]) <= bound[:, ::2, ::2])  # between local layers: equal


def test_profile_plan_of_layer_kinds():
    """One table per kind (θ and s² of its spec), the kind of each layer, and no profile when kinds pair differently."""
    local = RopeSpec(default_inv_freq(1e4, 8), 8, head_dim=8)
    full = RopeSpec(default_inv_freq(1e6, 8) / 4, 8, attention_factor=1.2, rope_type="linear", base=1e6, head_dim=8)
    rope = ModelRope({"sliding_attention": local, "full_attention": full},
                     ("sliding_attention", "full_attention", "sliding_attention"))
    plan = profile_plan(rope, DELTAS)
    assert plan.cos.shape == plan.sin.shape == (2, len(DELTAS), 4)
    kinds = list(rope.specs)
    assert [kinds[k] for k in plan.layer_kinds] == list(rope.layer_kinds)
    for k, spec in enumerate(rope.specs.values()):
        cos, sin = rotary_tables(DELTAS, spec.inv_freq)
        np.testing.assert_array_equal(plan.cos[k], spec.attention_factor ** 2 * cos)
        np.testing.assert_array_equal(plan.sin[k], spec.attention_factor ** 2 * sin)
    assert profile_plan(ModelRope({"all": local}, ("all",) * 3), DELTAS).layer_kinds is None
    partial = RopeSpec(default_inv_freq(1e6, 4), 4, head_dim=8)
    other = ModelRope({"sliding_attention": local, "full_attention": partial}, rope.layer_kinds)
    assert profile_plan(other, DELTAS) is None
    note = profile_record(None, None, other, DELTAS)["rope_profile_note"]
    assert note.startswith("not computed: its layer kinds rotate different dimension pairs") and "4 rotated" in note


def test_gguf_profile_equals_the_folders(folders, tmp_path):
    """llama.cpp's converter permutes Llama's Q/K rows to interleaved pairs; measure pairs the file's rows so:
    the profile is the folder's."""
    # Mistral: Llama's architecture in GGUF, with linear scaling (Llama 3's is stored as float32 factors, whose
    # rounding would move the angles at large distances).
    build_model("mistral", tmp_path)
    path = write_gguf_from_folder(tmp_path, tmp_path / "mistral.gguf")[0]
    from_gguf = measure(path, topk=2, precision="float64", deltas=DELTAS, progress=False)
    from_folder = measure(tmp_path, topk=2, precision="float64", deltas=DELTAS, progress=False)
    assert from_gguf.extra["rotary_pairing"] == "interleaved"
    a, b = (np.asarray(d.extra["rope_profile"]["gram"]) for d in (from_gguf, from_folder))
    norms = np.sqrt(np.einsum("tllh->tlh", np.abs(b)))
    bound = 16 * (from_folder.hidden_size + 2 * from_folder.head_dim) * EPS64 * norms[:, :, None, :] * \
        norms[:, None, :, :]
    assert np.all(np.abs(a - b) <= bound)


def test_default_distances_and_no_rope(folders):
    data = measure(folders["llama"], topk=1, progress=False)  # max_position_embeddings 128
    assert data.extra["rope_profile"]["deltas"] == [0, 1, 2, 4, 8, 16, 32, 64, 128]
    plain = measure(folders["gpt2"], topk=1, progress=False)
    assert plain.extra["rope_profile"] is None and plain.extra["rope_profile_note"] == "no RoPE"
    assert plain.extra["rope_parameters"] is None


@pytest.mark.parametrize("deltas, found", [((-1,), "-1"), (tuple(range(65)), "65 values"), ((1, 1), "2 values"),
                                           (("x",), "'x'")])
def test_bad_distances_are_one_line(folders, deltas, found):
    with pytest.raises(InputError, match=f"--deltas: expected .*found {found}"):
        measure(folders["llama"], topk=1, deltas=deltas, progress=False)


def test_no_distances_no_profile(folders):
    data = measure(folders["llama"], topk=1, deltas=(), progress=False)
    assert data.extra["rope_profile"] is None and data.extra["rope_profile_note"] == "not asked for (no distances)"
    assert data.extra["rope_parameters"] is not None


def test_cli_deltas(folders, cli, tmp_path):
    assert cli("measure", folders["llama"], "-o", tmp_path / "m", "--quiet", "--deltas", "0,5").returncode == 0
    assert cli("measure", folders["llama"], "-o", tmp_path / "n", "--quiet", "--deltas", "none").returncode == 0
    assert json.loads((tmp_path / "m.json").read_text())["rope_profile"]["deltas"] == [0, 5]
    assert json.loads((tmp_path / "n.json").read_text())["rope_profile"] is None
    one_error_line(cli("measure", folders["llama"], "-o", tmp_path / "m2", "--deltas", "0,x"), "--deltas")
    assert not (tmp_path / "m2.json").exists()


def test_analyze_reports_the_profile(folders):
    """analyze's rope_profile: operator cosines at each distance from the dense profile; at Δ = 0 they are the
    seed's own numbers (adjacent mean, the verdict's mean to the anchor without the anchor)."""
    import qkalign

    data = measure(folders["llama"], topk=2, precision="float64", deltas=DELTAS, progress=False)
    result = qkalign.analyze(data, backend="numpy")
    stats = result.rope_profile
    want, _ = dense_profile(folders["llama"], DELTAS)
    norms = np.sqrt(np.einsum("tllh->tlh", want))
    cos = (want / (norms[:, :, None, :] * norms[:, None, :, :])).mean(axis=3)  # (D, L, L)
    anchor = data.num_layers - 1
    tol = 1e-12
    np.testing.assert_allclose(stats["adjacent"], [np.mean([c[i, i + 1] for i in range(anchor)]) for c in cos],
                               atol=tol)
    np.testing.assert_allclose(stats["to_anchor"], cos[:, :anchor, anchor].mean(axis=1), atol=tol)
    np.testing.assert_allclose(stats["norm_ratio"], norms / norms[:1], rtol=tol)
    assert abs(stats["adjacent"][0] - result.adjacent["mean"]) <= tol
    assert abs(stats["to_anchor"][0] - result.verdict["mean_cos_to_anchor_excluding_anchor"]) <= tol
    report = qkalign.format_report(result)
    assert "=== [qkalign] (h) Rotary distance profile" in report
    assert "rope_profile" in result.to_dict() and "(h) Rotary" not in qkalign.format_report(
        qkalign.analyze(measure(folders["gpt2"], topk=1, progress=False), backend="numpy"))
