"""measure's cheap path to the layers' whole-operator scores (issue 24.7: nearly free) gives the definition's numbers.

The definition, :func:`~qkalign.weights.layer_symmetry.layer_operator_scores`, reads each layer's blocks again and
sums ``W = K^T M_L Q~`` in numpy; measure gathers the blocks its head tasks read
(:class:`~qkalign.weights.layer_symmetry.LayerOperators`) and sums ``W`` in one numba pass
(:mod:`qkalign.kernels.layer_sums`). Both are checked against ``W`` built densely in float64, with bounds derived
from the float32 (or float64) products: a dot of length ``c`` (``r = H_kv d`` products, the ``G`` heads of a group
summed, one rounding of ``M_L Q~``) errs by at most ``c eps`` times the same dot of absolute values, ``B = |K|^T
|M| sum_h |Q_h|``; a sum of squares then by ``2.1 c eps ||B||^2`` (the 0.1 covers the square of the error).
"""

import numpy as np
import pytest

from qkalign.kernels.layer_sums import operator_sums as fused_sums
from qkalign.testing.model_folders import write_model
from qkalign.weights.layer_symmetry import (
    LAYER_SCORES,
    LayerOperators,
    directionality,
    layer_operator_scores,
    operator_sums,
    times_power_of_two,
)
from qkalign.weights.layouts import AttentionShape
from qkalign.weights.measure import measure

EPS64 = np.finfo(np.float64).eps


def sums_bound(w):
    """Bounds on the float64 sums of a square ``w`` (n, n) against exact ones: ``(n^2 + 1) eps ||w||^2`` for the
    whole (a running sum of n^2 products, each rounded once), ``(n + 1) eps`` relative for each row or column."""
    n = len(w)
    return (n * n + 1) * EPS64 * np.sum(w.astype(np.float64) ** 2), (n + 1) * EPS64


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n, tile", [(1, 64), (5, 64), (70, 64), (70, 7), (130, 1), (129, 32)])
def test_fused_sums_match_float64_sums(n, tile, dtype):
    rng = np.random.default_rng(n + tile)
    w = rng.standard_normal((n, n)).astype(dtype)
    w[:, 1::3] *= 1e3  # some heavy columns, as directionality looks for
    wide = w.astype(np.float64)
    want = (np.sum(wide * wide), np.sum(wide * wide.T), np.sum(wide * wide, axis=1), np.sum(wide * wide, axis=0))
    whole, relative = sums_bound(w)
    for got in (fused_sums(w, tile), operator_sums(w, chunk_rows=tile)):
        assert all(np.asarray(x).dtype == np.float64 for x in got)
        # both sides err: twice each bound
        assert abs(got[0] - want[0]) <= 2 * whole and abs(got[1] - want[1]) <= 2 * whole
        np.testing.assert_array_less(np.abs(got[2] - want[2]), 2 * relative * want[2] + 1e-300)
        np.testing.assert_array_less(np.abs(got[3] - want[3]), 2 * relative * want[3] + 1e-300)


def test_fused_sums_of_symmetric_and_skew_matrices():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((67, 67))
    sym, skew = a + a.T, a - a.T
    for w in (sym, skew):
        norm_sq, inner, row_sq, col_sq = fused_sums(w, 16)
        assert abs(abs(inner) - norm_sq) <= 2 * sums_bound(w)[0]
        assert np.sign(inner) == (1 if w is sym else -1)
        np.testing.assert_allclose(row_sq, col_sq, rtol=2 * sums_bound(w)[1])


def test_fused_sums_refuse_what_is_not_square():
    with pytest.raises(ValueError, match="square"):
        fused_sums(np.ones((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="float32 or float64"):
        fused_sums(np.ones((3, 3), dtype=np.int64))


class _BlocksReader:
    """A stand-in for measure's head reader over given blocks: ``layer_keys``/``layer_queries`` as
    :func:`layer_operator_scores` reads them, ``key``/``query`` stacks as measure's head tasks do."""

    def __init__(self, k, k_exponents, q, q_exponents):
        self.k, self.k_exponents, self.q, self.q_exponents = k, k_exponents, q, q_exponents

    def layer_keys(self, layer):
        return self.k[layer], self.k_exponents[layer]

    def layer_queries(self, layer):
        return self.q[layer], self.q_exponents[layer]


def random_blocks(shape, dtype, rng, exponent_spread):
    """Blocks (L, H_kv or H, d, n) with entries below 1 in ``dtype`` and exponents (L, H_kv or H) spread over
    ``-exponent_spread..exponent_spread``: the weights are ``blocks 2^exponents``."""
    L, H, Hkv, d, n = shape.num_layers, shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.hidden_size
    k = rng.uniform(-1, 1, (L, Hkv, d, n))
    q = rng.uniform(-1, 1, (L, H, d, n))
    q[..., :2] *= 4  # two heavy input dimensions: W's columns 0 and 1 stand out
    q /= 4
    k_exponents = rng.integers(-exponent_spread, exponent_spread + 1, (L, Hkv))
    q_exponents = rng.integers(-exponent_spread, exponent_spread + 1, (L, H))
    return k.astype(dtype), k_exponents, q.astype(dtype), q_exponents


def dense_layers(k, k_exponents, q, q_exponents, group, maps=None):
    """Per layer, from float64 ``W = sum_g K_g^T M_L sum_{h in g} Q_h``: ``(||W||^2, <W, W^T>, row norms (n,),
    column norms (n,))``, and the same of ``B = |K|^T |M_L| sum |Q_h|`` (the error scale of float products)."""
    out = []
    for layer in range(len(k)):
        keys = np.ldexp(k[layer].astype(np.float64), k_exponents[layer][:, None, None])
        queries = np.ldexp(q[layer].astype(np.float64), q_exponents[layer][:, None, None])
        hkv, d, n = keys.shape
        q_sum = queries.reshape(hkv, group, d, n).sum(axis=1)
        q_abs = np.abs(queries).reshape(hkv, group, d, n).sum(axis=1)
        if maps is not None:
            q_sum, q_abs = maps[layer] @ q_sum, np.abs(maps[layer]) @ q_abs
        w = np.einsum("gai,gaj->ij", keys, q_sum)
        b = np.einsum("gai,gaj->ij", np.abs(keys), q_abs)
        out.append(dict(w=w, b=b, norm_sq=np.sum(w * w), inner=np.sum(w * w.T), rows=np.linalg.norm(w, axis=1),
                        columns=np.linalg.norm(w, axis=0)))
    return out


def assert_scores_match_dense(scores, dense, shape, dtype, with_map):
    """``scores`` ({LAYER_SCORES: (L,)}) against :func:`dense_layers`, within the bounds of the module docstring.

    Directionality: a norm errs by at most ``delta = c eps`` times the largest row (column) norm of ``B``, each
    threshold (mean + 2 std) by at most ``3.1 delta`` (the std's Lipschitz constant ``sqrt(n / (n - 1))``, n >= 20);
    where no norm lies within ``4.1 delta`` of its threshold the same norms exceed it, ``R`` and ``C`` move by at
    most ``4.1 delta`` per exceeding norm, and ``d = (R - C) / (R + C)`` by at most ``2 (|dR| + |dC|) / (R + C)``
    (twice that allowed, for the second order).
    """
    eps = np.finfo(dtype).eps
    c = shape.num_kv_heads * shape.head_dim + shape.group + (1 if with_map else 0)
    scored = 0
    for layer, truth in enumerate(dense):
        b = truth["b"]
        whole = 2.1 * c * eps * np.sum(b * b) + 2 * (b.size + 1) * EPS64 * truth["norm_sq"]
        assert abs(scores["layer_norm_sq"][layer] - truth["norm_sq"]) <= whole
        assert abs(scores["layer_transpose_inner"][layer] - truth["inner"]) <= whole
        total = change = 0.0
        # Saponati's rows are W's columns
        for norms, axis in ((truth["columns"], 0), (truth["rows"], 1)):
            delta = 1.01 * c * eps * np.linalg.norm(b, axis=axis).max()
            threshold = norms.mean() + 2 * norms.std(ddof=1)
            assert np.all(np.abs(norms - threshold) > 4.1 * delta), "a norm too close to its threshold to test"
            total += float((norms[norms > threshold] - threshold).sum())
            change += 4.1 * delta * np.sum(norms > threshold)
        want = directionality(truth["columns"], truth["rows"])
        if total == 0:
            assert scores["layer_directionality"][layer] == 0.0
            continue
        scored += 1
        assert abs(scores["layer_directionality"][layer] - want) <= 2 * 2 * change / total
    assert scored > 0, "no layer with a directionality to compare"


def gathered_scores(shape, dtype, k, k_exponents, q, q_exponents, maps=None):
    """The scores as measure computes them: kv heads in any order, query heads in head order."""
    layers = LayerOperators(shape, dtype, maps)
    for kv_head in reversed(range(shape.num_kv_heads)):  # the key tasks finish in any order
        layers.add_keys(kv_head, np.ascontiguousarray(k[:, kv_head]), k_exponents[:, kv_head])
    for head in range(shape.num_heads):
        layers.add_queries(head, np.ascontiguousarray(q[:, head]), q_exponents[:, head])
    scores = {name: np.empty(shape.num_layers) for name in LAYER_SCORES}
    for layer in range(shape.num_layers):
        for name, value in zip(LAYER_SCORES, layers.layer_scores(layer)):
            scores[name][layer] = value
    return scores


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_powers_of_two_round_as_ldexp(dtype):
    """Products by powers of two (normal and subnormal ones) and ldexp beyond them: the bits of ``np.ldexp``."""
    info = np.finfo(dtype)
    block = np.random.default_rng(2).uniform(-1, 1, 1000).astype(dtype)
    block[:3] = [info.smallest_subnormal, -info.tiny, info.max]
    for exponent in (0, -1, -30, info.minexp, info.minexp - info.nmant // 2, info.minexp - info.nmant,
                     info.minexp - info.nmant - 1, -2 * info.maxexp, 3):
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(times_power_of_two(block, exponent, np.empty_like(block)),
                                          np.ldexp(block, exponent))


def random_maps(rng, shape):
    """(L, d, d) rotations times 1.2 (an attention factor), as a rotated operator's ``M_L``."""
    rotations = np.linalg.qr(rng.standard_normal((shape.num_layers, shape.head_dim, shape.head_dim)))[0]
    return 1.2 * rotations


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rotated", [False, True], ids=["raw", "rotated"])
@pytest.mark.parametrize("spread", [0, 3, 40, 100], ids=lambda s: f"exponents+-{s}")
def test_gathered_blocks_give_the_definitions_scores(dtype, rotated, spread):
    """Grouped-query (4 query heads a kv head), heads at exponents far apart (partial sums rescaled as larger ones
    come; at +-100 float32 heads underflow against the largest, and scale by ldexp): the gathered path and the
    definition against dense float64, and against each other."""
    rng = np.random.default_rng(spread + 2 * rotated)
    shape = AttentionShape(3, 8, 2, 6, 48)
    k, k_exponents, q, q_exponents = random_blocks(shape, dtype, rng, spread)
    maps = random_maps(rng, shape) if rotated else None
    dense = dense_layers(k, k_exponents, q, q_exponents, shape.group, maps)
    gathered = gathered_scores(shape, dtype, k, k_exponents, q, q_exponents, maps)
    definition = layer_operator_scores(_BlocksReader(k, k_exponents, q, q_exponents), shape, maps)
    for scores in (gathered, definition):
        assert_scores_match_dense(scores, dense, shape, dtype, rotated)
    # the same float32 sums of Q~ and the same product: the sums alone differ in their order (float64)
    for name in ("layer_norm_sq", "layer_transpose_inner"):
        np.testing.assert_allclose(gathered[name], definition[name], rtol=0,
                                   atol=4 * (shape.hidden_size**2 + 1) * EPS64 * float(np.max(gathered["layer_norm_sq"])))


@pytest.mark.parametrize("exponents", [(-3, 7), (7, -3)], ids=["larger-last", "larger-first"])
def test_group_sums_are_kept_at_the_groups_largest_exponent(exponents):
    """Q~ of two query heads at exponents 10 apart, the larger one added last (the partial sum rescaled) or first:
    the float32 bits of both brought to the larger exponent, then summed in head order."""
    shape = AttentionShape(1, 2, 1, 3, 20)
    k, k_exponents, q, q_exponents = random_blocks(shape, "float32", np.random.default_rng(5), 0)
    q_exponents[0] = exponents
    layers = LayerOperators(shape, "float32")
    for head in range(2):
        layers.add_queries(head, np.ascontiguousarray(q[:, head]), q_exponents[:, head])
    top = max(exponents)
    want = np.ldexp(q[0, 0], exponents[0] - top) + np.ldexp(q[0, 1], exponents[1] - top)
    assert want.dtype == np.float32 and np.any(want != q[0, 0] + q[0, 1])
    np.testing.assert_array_equal(layers.query_sums[0, 0], want)
    assert layers.query_exponents[0, 0] == top


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_measure_gqa_layer_scores_match_the_definition(tmp_path, precision):
    """measure(layer_symmetry=True) on a grouped-query llama folder (8 query heads on 2 kv heads) against the
    definition on the same reader and dense float64."""
    from qkalign.weights.measure import _HeadReader, open_model

    model = write_model(tmp_path, "llama", shape=(3, 8, 2, 8, 40), seed=31)
    data = measure(model.folder, topk=2, precision=precision, deltas=(), layer_symmetry=True, progress=False)
    folder, layout, shape = open_model(model.folder)
    reader = _HeadReader(layout, shape, folder, False, np.dtype(precision))
    definition = layer_operator_scores(reader, shape)
    sym = data.extra["symmetry"]
    zeros = np.zeros((shape.num_layers, shape.num_heads), dtype=np.int64)
    dense = dense_layers(model.w_k, zeros[:, :shape.num_kv_heads], model.w_q, zeros, shape.group)
    got = {"layer_norm_sq": sym["layer_norm_sq"], "layer_transpose_inner": sym["layer_transpose_inner"],
           "layer_directionality": sym["directionality"]}
    for scores in (got, definition):
        assert_scores_match_dense({k: np.asarray(v) for k, v in scores.items()}, dense, shape, precision, False)


def test_measure_rotated_operator_layer_scores_match_dense(tmp_path):
    """``--operator delta:7`` on a rotary grouped-query transformers model: the gathered path against the definition
    with the same maps, and against dense float64 ``W = sum_h K^T M_L Q_h``."""
    pytest.importorskip("transformers")
    from qkalign.testing.gguf_files import build_model
    from qkalign.weights.measure import _HeadReader, open_model, read_rope
    from qkalign.weights.rotary_operator import operator_plan

    build_model("llama", tmp_path)
    data = measure(tmp_path, topk=2, precision="float32", deltas=(), operator="delta:7", layer_symmetry=True,
                   progress=False)
    folder, layout, shape = open_model(tmp_path)
    assert shape.num_kv_heads < shape.num_heads
    rope = read_rope(folder, layout, shape)
    maps = operator_plan("delta:7", rope, "tiny llama").maps
    definition = layer_operator_scores(_HeadReader(layout, shape, folder, False, np.dtype("float32")), shape, maps)
    k = np.stack([[folder.read_block(layout.k_block(shape, layer, g)) for g in range(shape.num_kv_heads)]
                  for layer in range(shape.num_layers)]).astype(np.float64)
    q = np.stack([[folder.read_block(layout.q_block(shape, layer, h)) for h in range(shape.num_heads)]
                  for layer in range(shape.num_layers)]).astype(np.float64)
    zeros = np.zeros((shape.num_layers, shape.num_heads), dtype=np.int64)
    dense = dense_layers(k, zeros[:, :shape.num_kv_heads], q, zeros, shape.group, maps)
    sym = data.extra["symmetry"]
    got = {"layer_norm_sq": np.asarray(sym["layer_norm_sq"]),
           "layer_transpose_inner": np.asarray(sym["layer_transpose_inner"]),
           "layer_directionality": np.asarray(sym["directionality"])}
    for scores in (got, definition):
        assert_scores_match_dense(scores, dense, shape, "float32", True)


def test_peak_memory_counts_the_gathered_blocks():
    """measure's estimate grows by at least the kept K stacks and Q~ sums, ``2 L H_kv d n`` float32 numbers (0.75 GB
    at qwen3-4b), and by less than twice that plus a head stack per queued task and a layer task's ``W`` per core."""
    from qkalign.linalg.blas_threads import core_count
    from qkalign.weights.measure import peak_bytes

    shape = AttentionShape(36, 32, 8, 128, 2560)
    extra = peak_bytes(shape, 16, "float32", layer_symmetry=True) - peak_bytes(shape, 16, "float32")
    kept = 4 * 2 * 36 * 8 * 128 * 2560
    assert kept <= extra <= 2 * kept + core_count() * 4 * (2 * 36 * 128 * 2560 + 2560**2)
