"""Closed-form window means of rotations against explicit float64 sums over the window."""

import numpy as np
import pytest

from qkalign.weights.rope_means import mean_cos_sin, mean_products

EPS = np.finfo(np.float64).eps
# the angles transformers' default rope gives (base 10000, d_rot 64), 0, and steps at and near 2π k
THETAS = np.concatenate([10000.0 ** (-np.arange(32) / 32), [0.0, 2 * np.pi, 4 * np.pi, np.pi, 1e-9, 2 * np.pi + 1e-7]])


@pytest.mark.parametrize("window", [1, 2, 7, 64, 1000, 4096])
def test_mean_cos_sin_equals_the_sum_over_the_window(window):
    angles = np.outer(np.arange(window), THETAS)
    cos, sin = mean_cos_sin(THETAS, window)
    # the explicit sum: window terms each rounded to eps times the angle's size (angles up to W θ)
    tolerance = 64 * EPS * (1 + window * np.maximum(THETAS, 1))
    assert np.all(np.abs(cos - np.cos(angles).mean(axis=0)) <= tolerance)
    assert np.all(np.abs(sin - np.sin(angles).mean(axis=0)) <= tolerance)


def test_mean_cos_sin_limits():
    cos, sin = mean_cos_sin(np.array([0.0, 2 * np.pi]), 2**31)
    assert np.array_equal(cos, [1.0, 1.0]) and np.array_equal(sin, [0.0, 0.0])
    cos, sin = mean_cos_sin(np.array([1.0]), 1)
    assert cos[0] == 1.0 and sin[0] == 0.0
    # a long window: the mean of a turning rotation is O(1 / (W θ))
    cos, sin = mean_cos_sin(np.array([0.5]), 2**31)
    assert np.hypot(cos, sin)[0] <= 1 / (2**31 * np.sin(0.25))


def test_mean_products_equals_the_sum_over_the_window():
    window = 777
    theta = THETAS[:10]
    delta = np.arange(window)[:, None, None]
    c_i, s_i = np.cos(delta * theta[:, None]), np.sin(delta * theta[:, None])
    c_j, s_j = np.cos(delta * theta[None, :]), np.sin(delta * theta[None, :])
    expected = [(c_i * c_j).mean(0), (c_i * s_j).mean(0), (s_i * c_j).mean(0), (s_i * s_j).mean(0)]
    for got, want in zip(mean_products(theta[:, None], theta[None, :], window), expected):
        assert np.abs(got - want).max() <= 64 * EPS * window * 2
