"""Every Numba kernel equals its numpy reference (the rows of ``qkalign.testing.comparisons``).

Shapes, seeds and kinds of eigenvector rows come from hypothesis; the edge cases
the issue names are pinned as explicit examples. This module also runs once with
``NUMBA_DISABLE_JIT=1`` (see ``test_kernels_runtime.py``), with fewer examples.
"""

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkalign import kernels
from qkalign.kernels.principal_angles import _all_pairs_grams, _anchor_grams, orthonormalized
from qkalign.linalg.cholesky_qr import GERSHGORIN_RADIUS_LIMIT
from qkalign.stats import reference
from qkalign.stats.backends import BACKEND_FUNCTIONS
from qkalign.testing.comparisons import COMPARISONS, EIG_DIRS_KINDS, RTOL, random_inputs

# Interpreted kernels are slow: the NUMBA_DISABLE_JIT run covers the source with fewer examples.
EXAMPLES = 4 if numba.config.DISABLE_JIT else 30
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def shapes(draw):
    """(L, H, k, n, m, seed, kind, head_scale_exponent) of random valid inputs."""
    hidden = draw(st.integers(1, 24))
    return dict(
        num_layers=draw(st.integers(1, 6)),
        num_heads=draw(st.integers(1, 4)),
        topk=draw(st.integers(1, hidden)),
        hidden=hidden,
        spectrum=draw(st.integers(1, 12)),
        seed=draw(st.integers(0, 2**32 - 1)),
        eig_dirs_kind=draw(st.sampled_from(EIG_DIRS_KINDS)),
        head_scale_exponent=draw(st.sampled_from([-60.0, 0.0, 60.0])),
        eig_dirs_dtype=draw(st.sampled_from(["float64", "float32"])),
    )


def assert_matches(kernel_result, reference_result, atol):
    """Same structure, shapes and dtypes; values equal to RTOL (plus ``atol`` near zero)."""
    if isinstance(reference_result, tuple):
        assert isinstance(kernel_result, tuple) and len(kernel_result) == len(reference_result)
        for k, r in zip(kernel_result, reference_result):
            assert_matches(k, r, atol)
        return
    assert kernel_result.shape == reference_result.shape
    assert kernel_result.dtype == reference_result.dtype == np.float64
    np.testing.assert_allclose(kernel_result, reference_result, rtol=RTOL, atol=atol)


EDGE_CASES = [
    dict(num_layers=1, num_heads=3, topk=2, hidden=5, spectrum=4, seed=1, eig_dirs_kind="orthonormal",
         head_scale_exponent=0.0),
    dict(num_layers=4, num_heads=1, topk=3, hidden=7, spectrum=6, seed=2, eig_dirs_kind="float16",
         head_scale_exponent=0.0),
    dict(num_layers=3, num_heads=2, topk=1, hidden=9, spectrum=1, seed=3, eig_dirs_kind="gaussian",
         head_scale_exponent=-60.0),
    dict(num_layers=3, num_heads=2, topk=6, hidden=6, spectrum=8, seed=4, eig_dirs_kind="orthonormal",
         head_scale_exponent=60.0),
    dict(num_layers=5, num_heads=2, topk=4, hidden=20, spectrum=8, seed=5, eig_dirs_kind="near_anchor",
         head_scale_exponent=0.0),
    dict(num_layers=3, num_heads=3, topk=5, hidden=11, spectrum=8, seed=6, eig_dirs_kind="equal_layers",
         head_scale_exponent=0.0),
    dict(num_layers=4, num_heads=2, topk=16, hidden=24, spectrum=12, seed=7, eig_dirs_kind="float16",
         head_scale_exponent=0.0),
    # stored as float32, as a file holds them: the kernels widen each entry, the reference the array
    dict(num_layers=5, num_heads=3, topk=6, hidden=20, spectrum=8, seed=8, eig_dirs_kind="orthonormal",
         head_scale_exponent=0.0, eig_dirs_dtype="float32"),
    dict(num_layers=4, num_heads=2, topk=5, hidden=30, spectrum=8, seed=9, eig_dirs_kind="near_anchor",
         head_scale_exponent=0.0, eig_dirs_dtype="float32"),
]


def test_table_covers_every_backend_function():
    assert sorted({c.name for c in COMPARISONS if c.backend}) == sorted(BACKEND_FUNCTIONS)
    for name in BACKEND_FUNCTIONS:
        assert callable(getattr(kernels, name)) and callable(getattr(reference, name))


@pytest.mark.parametrize("comparison", COMPARISONS, ids=lambda c: c.label)
@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda c: f"L{c['num_layers']}-H{c['num_heads']}-k{c['topk']}"
                         f"-n{c['hidden']}-{c['eig_dirs_kind']}-{c.get('eig_dirs_dtype', 'float64')}")
def test_kernel_equals_reference_edge_cases(comparison, case):
    inputs = random_inputs(**case)
    assert_matches(comparison.kernel(*comparison.args(inputs)), comparison.reference(*comparison.args(inputs)),
                   comparison.atol)


@pytest.mark.parametrize("comparison", COMPARISONS, ids=lambda c: c.label)
@SETTINGS
@given(shape=shapes())
def test_kernel_equals_reference(comparison, shape):
    inputs = random_inputs(**shape)
    assert_matches(comparison.kernel(*comparison.args(inputs)), comparison.reference(*comparison.args(inputs)),
                   comparison.atol)


def test_nearly_parallel_subspaces_keep_cosines_below_one_accurately():
    inputs = random_inputs(6, 3, 4, 40, 4, seed=11, eig_dirs_kind="near_anchor")
    got = kernels.principal_cosines_to_anchor(inputs.eig_dirs, inputs.anchor)
    want = reference.principal_cosines_to_anchor(inputs.eig_dirs, inputs.anchor)
    others = np.arange(6) != inputs.anchor % 6
    gap = 1.0 - want[others]
    assert 1e-13 < gap.min() and gap.max() < 1e-8  # really nearly parallel, really not equal
    np.testing.assert_allclose(1.0 - got[others], gap, rtol=1e-3)  # the gap itself to 0.1 %
    np.testing.assert_allclose(got, want, rtol=1e-15 * 8, atol=0)


def test_equal_layers_give_cosines_of_one():
    inputs = random_inputs(4, 2, 5, 12, 4, seed=12, eig_dirs_kind="equal_layers")
    np.testing.assert_allclose(kernels.principal_cosines_all_pairs(inputs.eig_dirs), 1.0, rtol=0, atol=4e-16)
    np.testing.assert_array_equal(kernels.top1_overlap_all_pairs(inputs.eig_dirs) > 1 - 4e-16, True)


#: The two ways to the Cholesky-QR factors: fused into the numba Gram pass (pairs with an
#: anchor) and batched LAPACK after the SYRKs (all pairs).
GRAM_PATHS = {"to_anchor": lambda e: _anchor_grams(e, 0), "all_pairs": _all_pairs_grams}


def _fallback_mask(eig_dirs, path="to_anchor"):
    """(L, H) bool: which blocks took the Householder path."""
    return orthonormalized(eig_dirs, GRAM_PATHS[path])[2]


@pytest.mark.parametrize("path", list(GRAM_PATHS))
@pytest.mark.parametrize("kind", ["orthonormal", "float16", "equal_layers"])
def test_cholesky_qr_serves_nearly_orthonormal_rows(kind, path):
    inputs = random_inputs(3, 2, 8, 30, 4, seed=13, eig_dirs_kind=kind)
    assert not _fallback_mask(inputs.eig_dirs, path).any()


@pytest.mark.parametrize("path", list(GRAM_PATHS))
def test_householder_fallback_for_ill_conditioned_rows(path):
    inputs = random_inputs(3, 2, 6, 30, 4, seed=14, eig_dirs_kind="orthonormal")
    eig_dirs = inputs.eig_dirs.copy()
    eig_dirs[1, 0, 1] = eig_dirs[1, 0, 0] + 1e-9 * eig_dirs[1, 0, 1]  # two nearly parallel rows
    eig_dirs[2, 1, 3] = 0.0  # a zero row (QKData rejects it; the kernel still matches the reference)
    eig_dirs[0, 1] *= np.array([1.0, 1e-3, 1.0, 1e3, 1.0, 1.0])[:, None]  # only scaled: no fallback
    mask = _fallback_mask(eig_dirs, path)
    assert mask.tolist() == [[False, False], [True, False], [False, True]]
    for anchor in (0, 1, 2):
        np.testing.assert_allclose(kernels.principal_cosines_to_anchor(eig_dirs, anchor),
                                   reference.principal_cosines_to_anchor(eig_dirs, anchor), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(kernels.principal_cosines_all_pairs(eig_dirs),
                               reference.principal_cosines_all_pairs(eig_dirs), rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize("path", list(GRAM_PATHS))
def test_gershgorin_limit_separates_the_paths(path):
    # Two unit rows with cosine c: the Gershgorin radius of their Gram is |c|.
    def rows(c):
        return np.array([[1.0, 0.0, 0.0], [c, np.sqrt(1 - c * c), 0.0]])[None, None]
    assert not _fallback_mask(rows(GERSHGORIN_RADIUS_LIMIT * 0.99), path).any()
    assert _fallback_mask(rows(GERSHGORIN_RADIUS_LIMIT * 1.01), path).all()


def test_all_pairs_slices_are_the_to_anchor_results():
    inputs = random_inputs(5, 3, 4, 16, 9, seed=15, eig_dirs_kind="float16")
    pairs = kernels.principal_cosines_all_pairs(inputs.eig_dirs)
    signs = kernels.sign_agreement_all_pairs(inputs.sym_eigs, inputs.k_values)
    top1 = kernels.top1_overlap_all_pairs(inputs.eig_dirs)
    for anchor in range(5):
        np.testing.assert_allclose(pairs[:, anchor], kernels.principal_cosines_to_anchor(inputs.eig_dirs, anchor),
                                   rtol=RTOL, atol=1e-14)
        np.testing.assert_array_equal(signs[:, :, anchor],
                                      kernels.sign_agreement(inputs.sym_eigs, anchor, inputs.k_values))
        np.testing.assert_allclose(top1[:, anchor], kernels.top1_overlap(inputs.eig_dirs, anchor), rtol=RTOL, atol=1e-14)
    np.testing.assert_array_equal(pairs, pairs.transpose(1, 0, 2, 3))


@pytest.mark.parametrize("call, error", [
    (lambda: kernels.operator_cos_per_head(np.ones((2, 3, 1))), ValueError),
    (lambda: kernels.operator_cos_per_head(np.zeros((2, 2, 1))), ValueError),
    (lambda: kernels.operator_cos_per_head(np.full((1, 1, 1), np.nan)), ValueError),
    (lambda: kernels.rescale_to_anchor(np.ones((2, 2, 1)), 2), IndexError),
    (lambda: kernels.sign_agreement(np.ones((2, 1, 4)), -3, (2,)), IndexError),
    (lambda: kernels.sign_agreement(np.ones((2, 1, 4)), 0, (5,)), ValueError),
    (lambda: kernels.sign_agreement(np.ones((2, 1, 4)), 0, (0,)), ValueError),
    (lambda: kernels.sign_agreement(np.ones((2, 1, 4)), 0.5, (1,)), TypeError),
    (lambda: kernels.fraction_positive(np.ones((2, 4))), ValueError),
    (lambda: kernels.principal_cosines_to_anchor(np.ones((2, 1, 4, 3)), 0), ValueError),
    (lambda: kernels.principal_cosines_all_pairs(np.full((2, 1, 1, 3), np.inf)), ValueError),
    (lambda: kernels.top1_overlap(np.ones((2, 1, 1)), 0), ValueError),
])
def test_wrappers_reject_bad_input_with_a_clear_error(call, error):
    with pytest.raises(error):
        call()


@pytest.mark.parametrize("spectrum, k_values", [
    (8, (1, 3, 8)),
    # signs are packed 64 to a word: k on, next to and across word boundaries, unsorted, repeated
    (200, (200, 1, 63, 64, 65, 127, 128, 129, 64)),
])
def test_sign_kernels_count_nan_and_inf_as_numpy_does(spectrum, k_values):
    # No finiteness scan in the wrappers: the kernels themselves follow np.sign (sign(nan) = nan,
    # never equal; sign(+-inf) = +-1; sign(0) = 0).
    values = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, -0.0, np.nan])
    rng = np.random.default_rng(5)
    sym_eigs = rng.choice(values, size=(4, 3, spectrum))
    np.testing.assert_array_equal(kernels.sign_agreement(sym_eigs, 1, k_values),
                                  reference.sign_agreement(sym_eigs, 1, k_values))
    np.testing.assert_array_equal(kernels.sign_agreement_all_pairs(sym_eigs, k_values),
                                  reference.sign_agreement_all_pairs(sym_eigs, k_values))
    assert np.isnan(sym_eigs).any() and not np.all(reference.sign_agreement(sym_eigs, 1, k_values) == 1)


def test_all_pairs_angles_in_head_groups_are_the_same_bits(monkeypatch):
    # Heads are taken in groups so that the cross Grams of a large model never sit in memory at once.
    from qkalign.kernels import principal_angles

    inputs = random_inputs(5, 7, 4, 20, 8, seed=3, eig_dirs_kind="float16", eig_dirs_dtype="float32")
    whole = kernels.principal_cosines_all_pairs(inputs.eig_dirs)
    monkeypatch.setattr(principal_angles, "CROSS_GRAM_BYTES", 1)  # one head at a time
    np.testing.assert_array_equal(kernels.principal_cosines_all_pairs(inputs.eig_dirs), whole)
