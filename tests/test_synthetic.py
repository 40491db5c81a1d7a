"""Synthetic models: the drift does what it says, and the bundled example is reproducible."""

import numpy as np
import pytest

import qkalign
from qkalign.cli import bundled_example_path
from qkalign.testing.dense import dense_operators
from qkalign.weights.synthetic import PRESETS, SyntheticSpec, make_qkdata, make_weights


def test_bundled_example_is_the_example_preset():
    bundled = qkalign.load(bundled_example_path())
    fresh = make_qkdata(PRESETS["example"])
    np.testing.assert_allclose(bundled.gram, fresh.gram, rtol=1e-12)
    np.testing.assert_allclose(bundled.sym_eigs, fresh.sym_eigs, rtol=1e-12, atol=1e-15)
    # eig_dirs are stored as float32; eigenvector signs are arbitrary.
    dots = np.abs(np.einsum("lhkn,lhkn->lhk", bundled.eig_dirs, fresh.eig_dirs))
    np.testing.assert_allclose(dots, 1.0, atol=1e-5)


def test_weights_are_deterministic_and_float32():
    spec = SyntheticSpec(3, 4, 2, 4, 16, topk=2, seed=5)
    a, b = make_weights(spec), make_weights(spec)
    assert a[0].dtype == np.float32 and a[0].shape == (3, 4, 4, 16) and a[1].shape == (3, 2, 4, 16)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], make_weights(SyntheticSpec(3, 4, 2, 4, 16, topk=2, seed=6))[0])


def test_zero_drift_gives_one_operator_up_to_scale():
    spec = SyntheticSpec(6, 2, 1, 4, 16, topk=2, drift=0.0, scale_growth=0.1)
    result = qkalign.analyze(make_qkdata(spec), backend="numpy")
    np.testing.assert_allclose(result.operator_cos, 1.0, atol=1e-6)
    # g scales with the product of the Q and K scales: (1 + 0.1 L)^2.
    expected_t = ((1 + 0.1 * np.arange(6)) / 1.5) ** 2
    np.testing.assert_allclose(result.to_anchor["t_opt"], expected_t, rtol=1e-5)
    np.testing.assert_allclose(result.principal_angles["mean_cos"], 1.0, atol=1e-5)


def test_drift_makes_cosine_decay_with_layer_distance():
    spec = SyntheticSpec(8, 4, 2, 8, 64, topk=4, drift=0.3)
    cos = qkalign.analyze(make_qkdata(spec), backend="numpy").operator_cos
    by_distance = [np.mean(np.diagonal(cos, offset=k)) for k in range(8)]
    assert all(a > b for a, b in zip(by_distance, by_distance[1:]))
    assert by_distance[1] == pytest.approx(0.7, abs=0.1)


def test_full_drift_gives_unrelated_layers():
    spec = SyntheticSpec(4, 4, 4, 8, 128, topk=4, drift=1.0)
    cos = qkalign.analyze(make_qkdata(spec), backend="numpy").operator_cos
    assert np.abs(cos[~np.eye(4, dtype=bool)]).max() < 0.1


@pytest.mark.parametrize("kwargs", [dict(num_heads=3, num_kv_heads=2), dict(drift=1.5), dict(topk=99), dict(head_dim=0)])
def test_spec_validation(kwargs):
    base = dict(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=4, hidden_size=16, topk=2)
    with pytest.raises(ValueError):
        SyntheticSpec(**{**base, **kwargs})


def test_rank_deficient_heads_and_topk_beyond_the_spectrum():
    # hidden < 2 d: A = [K; Q] is rank-deficient, and topk > 2 d asks for null-space directions.
    spec = SyntheticSpec(2, 2, 1, 6, 10, topk=10, drift=0.5)
    data = make_qkdata(spec)
    gram_eye = np.einsum("lhkn,lhjn->lhkj", data.eig_dirs, data.eig_dirs)
    np.testing.assert_allclose(gram_eye, np.broadcast_to(np.eye(10), gram_eye.shape), atol=1e-10)
    assert np.all(data.sym_eigs[..., 10:] == 0.0)  # S has rank <= n: exact zeros, not eigh's rounding
    g = dense_operators(*make_weights(spec))
    sym = (g + np.swapaxes(g, -1, -2)) / 2
    # Every row is an eigenvector: S v = lambda v, with lambda = 0 past the rank.
    lam = np.concatenate([data.sym_eigs[..., :10]], axis=-1)
    np.testing.assert_allclose(np.einsum("lhij,lhkj->lhki", sym, data.eig_dirs),
                               lam[..., None] * data.eig_dirs, atol=1e-10)
