"""measure's rotary distance profile ``rope_profile`` against dense float64 operators g(Δ) = K^T S R(Δ) S Q.

Tiny random transformers models (qkalign.testing.gguf_files.CONFIGS: Llama with llama3 scaling, Qwen2 with yarn
and its attention factor, Phi-3 partial rotary with longrope, GPT-NeoX rotating a quarter of each head) are
measured from their folders; the dense side forms each head's n x n operator at every distance from the
blocks and :meth:`~qkalign.weights.rope.RopeSpec.rotation`, whose sign and scaling tests/test_rope.py checks
against the model's own attention scores. A GGUF written as llama.cpp's converter writes it (Q/K rows
permuted to interleaved pairs for Llama) gives the folder's profile.
"""

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from qkalign.errors import InputError  # noqa: E402
from qkalign.testing.gguf_files import build_model, write_gguf_from_folder  # noqa: E402
from qkalign.testing.refusals import one_error_line  # noqa: E402
from qkalign.weights.measure import measure, open_model, read_rope  # noqa: E402

DELTAS = (0, 1, 3, 64, 1000)
EPS64 = np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for model_type in ("llama", "qwen2", "phi3", "gpt_neox", "gpt2"):
        folder = tmp_path_factory.mktemp(model_type)
        build_model(model_type, folder)
        out[model_type] = folder
    return out


def dense_profile(folder, deltas):
    """gram(Δ)[t, L, L', h] from dense float64 g_L,h(Δ) = K^T S R(Δ) S Q of the folder's blocks."""
    model, layout, shape = open_model(folder)
    rope = read_rope(model, layout, shape)
    out = np.empty((len(deltas), shape.num_layers, shape.num_layers, shape.num_heads))
    for head in range(shape.num_heads):
        kv = head // shape.group
        q = [model.read_block(layout.q_block(shape, l, head)).astype(np.float64) for l in range(shape.num_layers)]
        k = [model.read_block(layout.k_block(shape, l, kv)).astype(np.float64) for l in range(shape.num_layers)]
        for t, delta in enumerate(deltas):
            g = np.stack([k[l].T @ rope.layer(l).rotation(delta, scaled=True) @ q[l] for l in range(shape.num_layers)])
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
