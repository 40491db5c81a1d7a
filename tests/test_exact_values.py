"""What is exact by construction is reported exactly, never as the rounding noise of a computation.

- Every comparison of a layer with itself: cosines, overlaps and agreements 1, residuals 0
  (``sqrt(1 - cos^2)`` of a cosine one ulp below 1 is 2e-8), on both backends, through the
  all-pairs and the to-anchor paths and the head matching.
- The chance levels whose means a symmetry fixes (Q -> -Q: sign agreement and positive fractions
  1/2, spectral cosine and signed mass 0) are those values, with the sd of the mirrored ensemble;
  the JSON marks them (``exact_mean``) and the report says so.

On the old code these values were 1 - 2.2e-16, 1 + 2.2e-16, 2.6e-9 and 1.22e-19 (whose last digits
depended on the BLAS kernel: the report's golden copy failed on an AVX2 laptop's kernel).
"""

import json

import numpy as np
import pytest

import qkalign
from qkalign.cli import bundled_example_path
from qkalign.stats.chance import random_symmetric_spectra, spectra_levels
from qkalign.testing.processes import run_qkalign


@pytest.fixture(scope="module")
def example():
    return qkalign.load(bundled_example_path())


def self_values(result):
    """Every statistic of ``result`` that compares a layer (or head) with itself, by name: arrays."""
    anchor, layers = result.meta["anchor"], np.arange(result.meta["num_layers"])
    values = {
        "operator_cos_per_head[L, L]": result.operator_cos_per_head[layers, layers],
        "operator_cos[L, L]": result.operator_cos[layers, layers],
        "to_anchor.cos[a]": result.to_anchor["cos"][anchor],
        "to_anchor.t_opt[a]": result.to_anchor["t_opt"][anchor],
        "rescale.mean_cos[a]": result.rescale["mean_cos"][anchor],
        "principal_angles.cosines[a]": result.principal_angles["cosines"][anchor],
        "principal_angles.top1_overlap[a]": result.principal_angles["top1_overlap"][anchor],
        "sign_agreement.per_layer_head[:, a]": result.sign_agreement["per_layer_head"][:, anchor],
    }
    if result.pairs is not None:
        for key, pair in result.pairs.items():
            if key != "resid_frac":
                per_head = pair["per_head"]
                values[f"pairs.{key}[L, L]"] = per_head[:, layers, layers] if key == "sign_agreement" \
                    else per_head[layers, layers]
    if result.matched is not None:
        matched = result.matched["to_anchor"]
        for key in ("pa_mean_cos", "pa_min_cos", "top1_overlap", "spectral_cos", "spectral_abs_cos", "sign_agreement"):
            values[f"matched.to_anchor.{key}[a]"] = np.asarray(matched[key])[anchor]
    return values


def residuals_with_itself(result):
    anchor, layers = result.meta["anchor"], np.arange(result.meta["num_layers"])
    values = {"to_anchor.resid_frac[a]": result.to_anchor["resid_frac"][anchor],
              "rescale.mean_resid[a]": result.rescale["mean_resid"][anchor]}
    if result.pairs is not None:
        values["pairs.resid_frac[L, L]"] = result.pairs["resid_frac"]["per_head"][layers, layers]
    return values


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("options", [dict(pairs=True, match_heads=True), dict(pairs=False)], ids=["pairs", "to-anchor"])
def test_a_layer_compared_with_itself_gives_exactly_one_and_residual_zero(example, backend, options):
    result = qkalign.analyze(example, backend=backend, chance=False, **options)
    for name, value in self_values(result).items():
        assert np.all(np.asarray(value) == 1.0), f"{name}: {np.unique(value)[:4]}"
    for name, value in residuals_with_itself(result).items():
        assert np.all(np.asarray(value) == 0.0), f"{name}: {np.unique(value)[:4]}"


def test_an_anchor_inside_the_model_and_grams_far_from_unit_scale(example):
    """Exact whatever the operators' scale and wherever the anchor is (the diagonal is not a lucky 1)."""
    scaled = qkalign.QKData(num_layers=example.num_layers, num_heads=example.num_heads, head_dim=example.head_dim,
                            hidden_size=example.hidden_size, gram=example.gram * 3.3e-7, fro_sq=example.fro_sq,
                            sym_eigs=example.sym_eigs, eig_dirs=example.eig_dirs)
    for backend in ("numpy", "numba"):
        result = qkalign.analyze(scaled, anchor=7, backend=backend, chance=False)
        computed = scaled.gram[7, 7] / (np.sqrt(scaled.gram[7, 7]) * np.sqrt(scaled.gram[7, 7]))
        assert not np.all(computed == 1.0)  # the arithmetic alone would leave ulps here
        for name, value in {**self_values(result), **residuals_with_itself(result)}.items():
            assert np.all(np.asarray(value) == (0.0 if "resid" in name else 1.0)), name


def mirrored_ensemble(spectra, k_values, topk):
    """The old construction, independently: every spectrum with its mirror image, statistics by np.mean/np.std."""
    mirrored = np.concatenate([spectra, -spectra])
    i, j = np.triu_indices(len(mirrored), k=1)
    distinct = (j - i) != len(spectra)  # a draw and its own mirror image are not an independent pair
    signs = np.sign(mirrored)
    unit = mirrored / np.linalg.norm(mirrored, axis=1, keepdims=True)
    return {
        "sign_agreement": [((signs[i, :k] == signs[j, :k]).mean(axis=1))[distinct] for k in k_values],
        "spectral_cos": (unit @ unit.T)[i, j][distinct],
        "signed_mass": mirrored.sum(axis=1) / np.abs(mirrored).sum(axis=1),
        "frac_positive_topk": (mirrored[:, :topk] > 0).mean(axis=1),
    }


@pytest.mark.parametrize("head_dim, hidden, topk", [(16, 128, 8), (8, 12, 4)], ids=["full-rank", "n<2d"])
def test_chance_means_fixed_by_the_mirror_symmetry_are_exact(head_dim, hidden, topk):
    k_values, samples, seed = (2, 4, 8), 40, 123
    levels = spectra_levels(head_dim, hidden, topk, k_values, samples, np.random.default_rng(seed), seed)
    ensemble = mirrored_ensemble(random_symmetric_spectra(head_dim, hidden, samples, np.random.default_rng(seed)),
                                 k_values, topk)
    exact = {"sign_agreement": 0.5, "spectral_cos": 0.0, "signed_mass": 0.0, "frac_positive_topk": 0.5}
    for name, center in exact.items():
        level = levels[name]
        assert level.exact_mean and not level.exact_sd, name
        draws = ensemble[name]
        if name == "sign_agreement":
            assert level.mean == [0.5] * len(k_values)
            for sd, x in zip(level.sd, draws):
                assert np.mean(x) == pytest.approx(0.5, abs=1e-15)  # the ensemble's mean: 1/2 up to rounding
                assert sd == pytest.approx(np.std(x), rel=1e-12)
        else:
            assert level.mean == center and type(level.mean) is float
            assert np.mean(draws) == pytest.approx(center, abs=1e-15)
            assert level.sd == pytest.approx(np.std(draws), rel=1e-12)
    assert levels["frac_positive"].mean == 0.5 and levels["frac_positive"].exact_mean
    assert not levels["spectral_abs_cos"].exact_mean  # a sample mean: no symmetry fixes it


@pytest.mark.slow
def test_the_json_and_the_report_carry_the_exact_values(tmp_path):
    out = tmp_path / "result.json"
    proc = run_qkalign("analyze", "--json", out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    for name in ("spectral_cos", "signed_mass"):
        assert doc["chance"][name]["mean"] == 0.0 and doc["chance"][name]["exact_mean"] is True
    assert doc["chance"]["sign_agreement"]["mean"] == [0.5] * len(doc["sign_agreement"]["k"])
    assert doc["chance"]["pa_mean_cos"]["exact_mean"] is False
    resid = np.array(doc["pairs"]["resid_frac"]["mean"])
    assert np.all(np.diagonal(resid) == 0.0) and doc["to_anchor"]["resid_frac"][-1] == 0.0
    assert np.all(np.diagonal(np.array(doc["operator_cos"])) == 1.0)
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("    ")}
    assert lines["signed_mass"].split()[1] == "0" and lines["signed_mass"].endswith("mean exact")
    assert lines["pa_mean_cos"].endswith("samples)")  # a Monte Carlo mean: not marked
    assert any(line.startswith("  [qkalign] exact = holds by construction") for line in proc.stdout.splitlines())

