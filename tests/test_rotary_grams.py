"""The rotary layer Grams (issue 23): ``<g_L(Δ), g_L'(Δ)>_F`` with ``g(Δ) = K^T R(Δ) Q``.

The chain of checks: transformers' own attention logits equal ``x_n^T g(m - n) x_m`` for ``g``
formed densely (Llama, and GPT-NeoX with partial rotary); the numpy reference and the kernel equal
the Frobenius products of those dense operators; the kernel equals the reference on random
inputs of every pairing (the ``rotary_layer_grams`` rows of ``qkalign.testing.comparisons``, run by
``test_kernels.py``, and here at larger heads). Layers of several kinds (Gemma 3's local and global layers)
rotate each by its own table, checked the same way against dense operators.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from qkalign.kernels import rotary_grams as kernel
from qkalign.kernels.block_sums import layer_gram_accumulated
from qkalign.testing.comparisons import COMPARISONS, RTOL, StackedGrams
from qkalign.weights import rotary_grams as reference
from qkalign.weights.factored_operator import layer_gram_from_blocks, stacked_gram_lower
from qkalign.weights.rotary_grams import rotary_pairs, rotary_tables

EPS32, EPS64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)
IMPLEMENTATIONS = {"reference": reference.rotary_layer_grams, "kernel": kernel.rotary_layer_grams}
#: (head_dim, rotary_dims, interleaved): both pairings, and partial rotary (unrotated dimensions).
PAIRINGS = [(8, 8, False), (8, 8, True), (10, 4, False), (10, 6, True)]
#: Causal and anti-causal distances, 0, and one far enough for the slow frequencies to turn.
DISTANCES = np.array([0, 1, -1, 3, -7, 64, 8192])


def rotation(head_dim, first, second, cos, sin):
    """``R`` (d, d) float64: pair p turned from ``first[p]`` towards ``second[p]`` by the angle with
    ``(cos[p], sin[p])``, the identity elsewhere."""
    r = np.eye(head_dim)
    r[first, first], r[first, second] = cos, -sin
    r[second, first], r[second, second] = sin, cos
    return r


def dense_operators(k, q, r):
    """``g_L = K_L^T R Q_L``: k, q (L, d, n), r (d, d) -> (L, n, n) float64."""
    return np.einsum("ldi,de,lej->lij", np.asarray(k, np.float64), r, np.asarray(q, np.float64))


def dense_grams(k, q, head_dim, first, second, cos, sin):
    """``gram[t, L, L'] = sum(g_L(Δ_t) * g_L'(Δ_t))`` from the n x n operators: (D, L, L) float64."""
    out = np.empty((len(cos), len(k), len(k)))
    for t in range(len(cos)):
        g = dense_operators(k, q, rotation(head_dim, first, second, cos[t], sin[t]))
        out[t] = np.einsum("lij,mij->lm", g, g)
    return out


def gram_error_bound(k, q, gram_eps):
    """Bound on ``|computed - dense|`` (L, L), for Grams with entries accurate to ``1.01 n gram_eps |x_i| |x_j|``.

    With ``S = ||K_L|| ||Q_L|| ||K_L'|| ||Q_L'||`` (Frobenius), ``|gram| <= S``; an error ``dM`` of
    ``M = K_L K_L'^T`` moves the sum by at most ``||dM||_F ||N||_F <= 1.01 n gram_eps S`` (R is
    orthogonal), as for ``N``. Rotating and summing ``4 d^2`` terms, and the dense sums of ``n^2``
    products, add ``(n^2 + 4 d^2 + 8) eps64 S``.
    """
    _, d, n = k.shape
    norms = np.linalg.norm(k, axis=(1, 2)) * np.linalg.norm(q, axis=(1, 2))
    return (2.02 * n * gram_eps + (n * n + 4 * d * d + 8) * EPS64) * np.outer(norms, norms)


def random_blocks(seed, num_layers, head_dim, hidden, dtype):
    """K, Q (L, d, n) of ``dtype``, each layer at its own scale (norms from 0.1 to 10)."""
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-1, 1, size=(2, num_layers, 1, 1))
    k, q = (rng.standard_normal((2, num_layers, head_dim, hidden)) * scales).astype(dtype)
    return k, q


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("head_dim, rotary_dims, interleaved", PAIRINGS)
def test_rotary_grams_are_the_frobenius_products_of_the_dense_operators(head_dim, rotary_dims, interleaved, dtype,
                                                                         implementation):
    num_layers, hidden = 3, 12
    k, q = random_blocks(head_dim + rotary_dims, num_layers, head_dim, hidden, dtype)
    first, second = rotary_pairs(head_dim, rotary_dims, interleaved)
    cos, sin = rotary_tables(DISTANCES, 1e4 ** (-np.arange(0, rotary_dims, 2) / rotary_dims))
    got = IMPLEMENTATIONS[implementation](stacked_gram_lower(q), stacked_gram_lower(k), num_layers, head_dim,
                                          cos, sin, first, second)
    want = dense_grams(k, q, head_dim, first, second, cos, sin)  # of the blocks as stored (float32 or 64)
    assert got.shape == want.shape and got.dtype == np.float64
    bound = gram_error_bound(k.astype(np.float64), q.astype(np.float64), float(np.finfo(dtype).eps))
    assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)
    # The distances matter: each Gram differs from that at 0 far beyond the bound (a lost rotation fails).
    assert np.all((np.abs(want[1:] - want[0]) / bound).max(axis=(1, 2)) > 1e3)


#: Layer kinds of the mixed tests (Gemma 3's local 0 and global 1, and a third), each kind's base and table
#: scale s² (an attention factor's; 1 for the local kind, as in Gemma 3).
MIXED_KINDS = np.array([0, 1, 0, 2, 1])
KIND_BASES, KIND_SCALES = (10.0, 1e4, 300.0), (1.0, 1.3, 0.6)


def kind_tables(distances, rotary_dims):
    """``s_k² cos(Δ_t θ_kp)``, ``s_k² sin(Δ_t θ_kp)`` of every kind: two (K, D, P) float64."""
    tables = [rotary_tables(distances, base ** (-np.arange(0, rotary_dims, 2) / rotary_dims)) for base in KIND_BASES]
    return tuple(np.stack([scale * table[i] for scale, table in zip(KIND_SCALES, tables)]) for i in range(2))


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("head_dim, rotary_dims, interleaved", PAIRINGS)
def test_mixed_rotary_grams_are_the_frobenius_products_of_the_dense_operators(head_dim, rotary_dims, interleaved,
                                                                               dtype, implementation):
    """Layers of several kinds: ``gram(Δ)[L, L'] = <g_L(Δ), g_L'(Δ)>_F``, ``g_L = K_L^T M_L(Δ) Q_L`` with ``M_L``
    layer L's own dense rotation (its kind's θ, ``s²`` on the rotated dimensions, 1 on the others)."""
    num_layers, hidden = len(MIXED_KINDS), 12
    k, q = random_blocks(head_dim + rotary_dims + 1, num_layers, head_dim, hidden, dtype)
    first, second = rotary_pairs(head_dim, rotary_dims, interleaved)
    cos, sin = kind_tables(DISTANCES, rotary_dims)
    got = IMPLEMENTATIONS[implementation](stacked_gram_lower(q), stacked_gram_lower(k), num_layers, head_dim,
                                          cos, sin, first, second, layer_kinds=MIXED_KINDS)
    want = np.empty((len(DISTANCES), num_layers, num_layers))
    for t in range(len(DISTANCES)):
        g = np.stack([dense_operators(k[l:l + 1], q[l:l + 1], rotation(head_dim, first, second, cos[kind, t],
                                                                       sin[kind, t]))[0]
                      for l, kind in enumerate(MIXED_KINDS)])
        want[t] = np.einsum("lij,mij->lm", g, g)
    assert got.shape == want.shape and got.dtype == np.float64
    # gram_error_bound holds for orthogonal R; M_L has the 2-norm max(s², 1), on both sides of a block
    norms = np.maximum(np.asarray(KIND_SCALES)[MIXED_KINDS], 1.0)
    bound = gram_error_bound(k.astype(np.float64), q.astype(np.float64), float(np.finfo(dtype).eps)) * \
        np.outer(norms, norms)
    assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)
    # The kinds matter: rotated all as kind 0, the layers of the other kinds are far off (a lost table fails).
    one_kind = dense_grams(k, q, head_dim, first, second, cos[0], sin[0])
    assert (np.abs(one_kind - want) / bound).max() > 1e3


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_one_table_for_every_kind_is_the_uniform_call(implementation):
    """Every layer's kind reading the same table (one kind, or three copies) gives the uniform call's numbers bit for
    bit: the same products summed in the same order."""
    num_layers, head_dim = 4, 10
    k, q = random_blocks(5, num_layers, head_dim, 15, "float32")
    qq, kk = stacked_gram_lower(q), stacked_gram_lower(k)
    first, second = rotary_pairs(head_dim, 8, interleaved=True)
    cos, sin = rotary_tables(DISTANCES, 1e4 ** (-np.arange(0, 8, 2) / 8))
    function = IMPLEMENTATIONS[implementation]
    uniform = function(qq, kk, num_layers, head_dim, cos, sin, first, second)
    for tables, kinds in (((cos[None], sin[None]), [0] * num_layers), ((np.stack([cos] * 3), np.stack([sin] * 3)),
                                                                        [2, 0, 1, 2])):
        np.testing.assert_array_equal(function(qq, kk, num_layers, head_dim, *tables, first, second,
                                               layer_kinds=np.array(kinds)), uniform)


def test_zero_distance_is_the_layer_gram():
    """At Δ = 0 the reference rotates nothing (cos = 1, sin = 0 exactly): its Gram is
    ``layer_gram_from_blocks`` of the mirrored Grams bit for bit. The kernel sums the same products
    in another order (a bilinear form): equal to ``block_sums`` to rounding, ~d^2 eps of the terms' sum."""
    num_layers, head_dim = 4, 16
    k, q = random_blocks(3, num_layers, head_dim, 40, "float32")
    qq, kk = stacked_gram_lower(q), stacked_gram_lower(k)
    first, second = rotary_pairs(head_dim, 12)
    cos, sin = rotary_tables([0], np.linspace(1, 0.01, 6))
    mirrored = [np.tril(x) + np.tril(x, -1).T for x in (qq, kk)]
    np.testing.assert_array_equal(reference.rotary_layer_grams(qq, kk, num_layers, head_dim, cos, sin, first, second)[0],
                                  layer_gram_from_blocks(*mirrored, num_layers, head_dim))
    terms = layer_gram_from_blocks(np.abs(mirrored[0]), np.abs(mirrored[1]), num_layers, head_dim)
    got = kernel.rotary_layer_grams(qq, kk, num_layers, head_dim, cos, sin, first, second)[0]
    assert np.all(np.abs(got - layer_gram_accumulated(qq, kk, num_layers, head_dim)) <= 4 * head_dim**2 * EPS64 * terms)


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_only_the_lower_triangle_is_read(implementation):
    num_layers, head_dim = 3, 6
    k, q = random_blocks(4, num_layers, head_dim, 9, "float64")
    qq, kk = stacked_gram_lower(q), stacked_gram_lower(k)
    first, second = rotary_pairs(head_dim, interleaved=True)
    cos, sin = rotary_tables([0, 5, -2], [1.0, 0.3, 0.05])
    args = (num_layers, head_dim, cos, sin, first, second)
    clean = IMPLEMENTATIONS[implementation](qq, kk, *args)
    if implementation == "kernel":  # one sum per block pair, mirrored (the reference: symmetric to rounding)
        np.testing.assert_array_equal(clean, clean.transpose(0, 2, 1))
    unread = np.triu(np.ones(qq.shape, dtype=bool), 1)
    for layer in range(num_layers):  # the diagonal blocks are read whole
        unread[layer * head_dim:(layer + 1) * head_dim, layer * head_dim:(layer + 1) * head_dim] = False
    qq[unread], kk[unread] = np.nan, np.inf
    np.testing.assert_array_equal(IMPLEMENTATIONS[implementation](qq, kk, *args), clean)


@pytest.mark.parametrize("row", [c for c in COMPARISONS if c.name == "rotary_layer_grams"], ids=lambda c: c.label)
@pytest.mark.parametrize("head_dim, rotary_dims, interleaved", [(16, 16, False), (16, 16, True), (24, 8, False),
                                                                 (12, 0, False)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_equals_the_reference_at_larger_heads(head_dim, rotary_dims, interleaved, dtype, row):
    """The comparison rows (one table, and two layer kinds) at heads larger than ``random_inputs`` draws (d up to
    10 there)."""
    stacked = StackedGrams(5, head_dim, 30, seed=head_dim, dtype=dtype, rotary_dims=rotary_dims,
                           interleaved=interleaved, distances=(0, 1, 2, 4, 1024, -3), rope_theta=1e4,
                           local_theta=10.0, global_period=2, global_factor=0.75)
    inputs = SimpleNamespace(stacked=stacked)  # the field of Inputs the row reads
    got, want = row.kernel(*row.args(inputs)), row.reference(*row.args(inputs))
    assert got.shape == want.shape == (6, 5, 5)
    # unit-norm blocks: entries at most 1, rounding ~4 d^2 eps absolute
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=4 * head_dim**2 * EPS64)
    if rotary_dims == 0:  # nothing rotates: every distance gives the plain layer Gram
        np.testing.assert_allclose(got, want[0][None].repeat(6, axis=0), rtol=RTOL, atol=4 * head_dim**2 * EPS64)


def test_rotary_pairs_and_tables():
    first, second = rotary_pairs(8)
    assert first.tolist() == [0, 1, 2, 3] and second.tolist() == [4, 5, 6, 7]
    first, second = rotary_pairs(10, 6, interleaved=True)
    assert first.tolist() == [0, 2, 4] and second.tolist() == [1, 3, 5]
    first, second = rotary_pairs(10, 4)
    assert first.tolist() == [0, 1] and second.tolist() == [2, 3]
    for bad in (3, 12, -2):
        with pytest.raises(ValueError, match="rotary_dims"):
            rotary_pairs(10, bad)
    cos, sin = rotary_tables([0, 2, -1], [1.0, 0.25])
    np.testing.assert_array_equal(cos, np.cos([[0, 0], [2, 0.5], [-1, -0.25]]))
    np.testing.assert_array_equal(sin, np.sin([[0, 0], [2, 0.5], [-1, -0.25]]))


@pytest.mark.parametrize("change, error", [
    (dict(qq=np.zeros((12, 12))), ValueError),  # not (L d, L d)
    (dict(qq=np.zeros((18, 18), dtype=np.float64)), TypeError),  # float64 beside float32
    (dict(qq=np.zeros((18, 18), dtype=np.int64), kk=np.zeros((18, 18), dtype=np.int64)), TypeError),
    (dict(cos=np.ones((2, 2))), ValueError),  # 2 pairs in the table, 3 in the pairing
    (dict(sin=np.ones((3, 3))), ValueError),
    (dict(first=[0, 1, 2], second=[3, 4, 6]), ValueError),  # dimension 6 of 0..5
    (dict(first=[0, 1, 2], second=[3, 4, 2]), ValueError),  # dimension 2 twice
    (dict(first=[0, 1], second=[3, 4, 5]), ValueError),
])
def test_kernel_rejects_bad_input(change, error):
    args = dict(qq=np.eye(18, dtype=np.float32), kk=np.eye(18, dtype=np.float32), num_layers=3, head_dim=6,
                cos=np.ones((2, 3)), sin=np.zeros((2, 3)), first=[0, 1, 2], second=[3, 4, 5])
    kernel.rotary_layer_grams(**args)  # the unchanged arguments are fine
    with pytest.raises(error):
        kernel.rotary_layer_grams(**(args | change))


@pytest.mark.parametrize("change", [
    dict(layer_kinds=[0, 1]),  # 2 kinds for 3 layers
    dict(layer_kinds=[0, -1, 0]),
    dict(layer_kinds=[0.0, 1.0, 0.0]),  # not integers
    dict(layer_kinds=[0, 2, 0]),  # kind 2 of 2 tables
    dict(cos=np.ones((2, 3))),  # one (D, P) table: with layer_kinds, (K, D, P)
    dict(cos=np.ones((2, 2, 2)), sin=np.zeros((2, 2, 2))),  # 2 pairs in the tables, 3 in the pairing
    dict(sin=np.zeros((1, 2, 3))),
    dict(layer_kinds=None),  # (K, D, P) tables without the kinds
])
def test_kernel_rejects_bad_layer_kinds(change):
    args = dict(qq=np.eye(18, dtype=np.float32), kk=np.eye(18, dtype=np.float32), num_layers=3, head_dim=6,
                cos=np.ones((2, 2, 3)), sin=np.zeros((2, 2, 3)), first=[0, 1, 2], second=[3, 4, 5],
                layer_kinds=np.array([0, 1, 0]))
    kernel.rotary_layer_grams(**args)  # the unchanged arguments are fine
    with pytest.raises(ValueError):
        kernel.rotary_layer_grams(**(args | change))


# --- transformers' own rotary attention ---------------------------------------------------------

#: Query and key positions (m, n): the query after the key (causal), the same, and before it.
POSITIONS = [(5, 2), (2, 5), (0, 0), (37, 11), (3, 30), (17, 17), (40, 0)]


def random_model(model_class, config):
    """A transformers model with every weight drawn from N(0, 1) (seeded), in float32."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()
    return model


def model_logit(rotary_emb, apply_rotary_pos_emb, q_weight, k_weight, x_m, x_n, m, n):
    """``q_m' . k_n'``: the head's query at position m and key at n, rotated by the model's own code
    (its rotary embedding's cos/sin and ``apply_rotary_pos_emb``), in float64, unscaled by 1/sqrt(d)."""
    import torch

    q = torch.from_numpy(q_weight @ x_m)[None, None, None, :]  # (batch, heads, seq, d)
    k = torch.from_numpy(k_weight @ x_n)[None, None, None, :]
    template = torch.zeros(1, 1, 1, dtype=torch.float64)  # rotary_emb takes its dtype
    cos_m, sin_m = rotary_emb(template, torch.tensor([[m]]))
    cos_n, sin_n = rotary_emb(template, torch.tensor([[n]]))
    q_rotated, _ = apply_rotary_pos_emb(q, q, cos_m, sin_m)
    _, k_rotated = apply_rotary_pos_emb(k, k, cos_n, sin_n)
    return float((q_rotated * k_rotated).sum()), float(q.norm() * k.norm())


def check_logits(rotary_emb, apply_rotary_pos_emb, q_weight, k_weight, rotary_dims):
    """Every position pair: the model's logit is ``x_n^T K^T R(m - n) Q x_m``, R from its inv_freq, half-split."""
    head_dim = q_weight.shape[0]
    inv_freq = rotary_emb.inv_freq.double().numpy()
    assert len(inv_freq) == rotary_dims // 2
    first, second = rotary_pairs(head_dim, rotary_dims)
    rng = np.random.default_rng(1)
    for m, n in POSITIONS:
        x_m, x_n = rng.standard_normal((2, q_weight.shape[1]))
        logit, scale = model_logit(rotary_emb, apply_rotary_pos_emb, q_weight, k_weight, x_m, x_n, m, n)
        cos, sin = rotary_tables([m - n], inv_freq)
        g = dense_operators(k_weight[None], q_weight[None], rotation(head_dim, first, second, cos[0], sin[0]))[0]
        # The model turns m and n in float32 (angles to ~position eps32, cos/sin rounded to eps32).
        assert abs(x_n @ g @ x_m - logit) <= 2 * (m + n + 4) * EPS32 * scale, (m, n)
        if m != n:  # the opposite rotation is far off: the sign of Δ is tested
            cos, sin = rotary_tables([n - m], inv_freq)
            g_wrong = dense_operators(k_weight[None], q_weight[None], rotation(head_dim, first, second, cos[0], sin[0]))
            assert abs(x_n @ g_wrong[0] @ x_m - logit) > 1e3 * (m + n + 4) * EPS32 * scale, (m, n)


def test_llama_logits_are_the_rotary_operator():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      num_hidden_layers=2, intermediate_size=32, vocab_size=16)
    model = random_model(transformers.LlamaForCausalLM, config)
    head, head_dim = 3, 16
    kv_head = head // (4 // 2)
    attention = model.model.layers[1].self_attn
    q_weight = attention.q_proj.weight.detach().double().numpy()[head * head_dim:(head + 1) * head_dim]
    k_weight = attention.k_proj.weight.detach().double().numpy()[kv_head * head_dim:(kv_head + 1) * head_dim]
    check_logits(model.model.rotary_emb, apply_rotary_pos_emb, q_weight, k_weight, rotary_dims=16)


def test_llama_rotary_grams_of_the_model_weights():
    """The Grams of the operators just checked against the model, at its frequencies, for both layers."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      num_hidden_layers=2, intermediate_size=32, vocab_size=16)
    model = random_model(transformers.LlamaForCausalLM, config)
    layers = model.model.layers
    q = np.stack([layer.self_attn.q_proj.weight.detach().numpy()[48:64] for layer in layers])  # head 3
    k = np.stack([layer.self_attn.k_proj.weight.detach().numpy()[16:32] for layer in layers])  # kv head 1
    first, second = rotary_pairs(16)
    cos, sin = rotary_tables([m - n for m, n in POSITIONS], model.model.rotary_emb.inv_freq.double().numpy())
    want = dense_grams(k, q, 16, first, second, cos, sin)
    bound = gram_error_bound(k.astype(np.float64), q.astype(np.float64), EPS32)
    for function in IMPLEMENTATIONS.values():
        got = function(stacked_gram_lower(q), stacked_gram_lower(k), 2, 16, cos, sin, first, second)
        assert np.all(np.abs(got - want) <= bound)


def test_partial_rotary_gpt_neox_logits_are_the_rotary_operator():
    transformers = pytest.importorskip("transformers")
    from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

    config = transformers.GPTNeoXConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                                        intermediate_size=32, vocab_size=16, rotary_pct=0.25, attention_bias=False)
    model = random_model(transformers.GPTNeoXForCausalLM, config)
    head, head_dim = 2, 16
    # The fused projection's rows, per head: its query, key and value rows (the model's view(..., 3 d)).
    fused = model.gpt_neox.layers[1].attention.query_key_value.weight.detach().double().numpy()
    rows = fused.reshape(4, 3, head_dim, 64)[head]
    check_logits(model.gpt_neox.rotary_emb, apply_rotary_pos_emb, rows[0], rows[1], rotary_dims=4)


#: One Llama per rope type transformers defines (5.x rope_parameters; rope_theta 1e4, head_dim 16: 8 pairs). The
#: original lengths exceed the positions used, so that dynamic and longrope keep their initial frequencies.
LLAMA_ROPE_TYPES = {
    "default": {},
    "linear": {"factor": 2.0},
    "dynamic": {"factor": 2.0},
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 64},
    "longrope": {"short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 3.5],
                 "long_factor": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0], "original_max_position_embeddings": 64},
    "llama3": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
}


@pytest.mark.parametrize("rope_type", list(LLAMA_ROPE_TYPES))
def test_llama_logits_of_every_rope_type_are_qkaligns_operator(rope_type):
    """The model's pre-softmax logit ``q_m' . k_n'`` (its own q_proj/k_proj rows, rotary embedding and
    ``apply_rotary_pos_emb``) equals ``x_n^T K^T S R(m - n) S Q x_m`` with ``S R S`` from qkalign's own θ, pairing and
    attention factor (``rope_from_config`` of the model's config.json), for every position pair.

    Tolerance: the model forms angles ``position θ`` and cos/sin in float32 (``2 (m + n + 4)`` eps32 relative to
    ``|q| |k| s²``, as :func:`check_logits`), and its float32 θ differ from qkalign's float64 ones: an angle error
    of at most ``max(m, n) max_i |θ_i - θ'_i|`` per pair, which moves the logit by at most that times ``|q| |k| s²``.
    """
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from qkalign.weights.rope import rope_from_config

    raw = dict(model_type="llama", hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               num_hidden_layers=1, intermediate_size=32, vocab_size=16, max_position_embeddings=256,
               rope_parameters={"rope_type": rope_type, "rope_theta": 1e4, **LLAMA_ROPE_TYPES[rope_type]})
    model = random_model(transformers.LlamaForCausalLM, transformers.LlamaConfig(**raw))
    spec = rope_from_config(raw).layer(0)
    rotary_emb = model.model.rotary_emb
    theta_error = np.abs(spec.inv_freq - rotary_emb.inv_freq.double().numpy()).max()
    assert spec.attention_factor == pytest.approx(rotary_emb.attention_scaling, rel=4 * EPS32)
    attention = model.model.layers[0].self_attn
    q_weight = attention.q_proj.weight.detach().double().numpy()[48:64]  # query head 3
    k_weight = attention.k_proj.weight.detach().double().numpy()[16:32]  # its kv head 1
    rng = np.random.default_rng(2)
    for m, n in POSITIONS:
        x_m, x_n = rng.standard_normal((2, 64))
        logit, scale = model_logit(rotary_emb, apply_rotary_pos_emb, q_weight, k_weight, x_m, x_n, m, n)
        scale *= max(spec.attention_factor, 1.0) ** 2
        want = x_n @ k_weight.T @ spec.rotation(m - n, scaled=True) @ q_weight @ x_m
        tolerance = (2 * (m + n + 4) * EPS32 + max(m, n) * theta_error) * scale
        assert abs(want - logit) <= tolerance, (rope_type, m, n, want - logit, tolerance)
        if m != n:  # the opposite distance is far off: the sign of Δ is tested
            wrong = x_n @ k_weight.T @ spec.rotation(n - m, scaled=True) @ q_weight @ x_m
            assert abs(wrong - logit) > 100 * tolerance, (rope_type, m, n)
