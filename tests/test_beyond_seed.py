"""All-pairs statistics, distance profile, chance levels in the result, report sections and figures."""

import json

import numpy as np
import pytest
from matplotlib.image import imread

import qkalign
from qkalign.stats import reference
from qkalign.stats.all_pairs import PAIR_KEYS
from qkalign.testing.dense import dense_operators, spectra_by_magnitude
from qkalign.views.analysis_figures import DPI, FIGSIZE
from qkalign.weights.synthetic import make_weights

PAIR_JSON_KEYS = {"operator_cos", "resid_frac", "sign_agreement", "pa_mean_cos", "pa_min_cos", "top1_overlap",
                  "spectral_cos", "spectral_abs_cos"}


@pytest.fixture(scope="module")
def result(data36):
    return qkalign.analyze(data36, anchor=-1, backend="numpy", match_heads=True)


def test_pairs_have_every_statistic_and_slice_to_the_anchor_analysis(result, data36):
    assert set(PAIR_KEYS) == PAIR_JSON_KEYS == set(result.pairs)
    L, H = data36.num_layers, data36.num_heads
    # Each key holds its own statistic, averaged over the head axis.
    cos = reference.operator_cos_per_head(data36.gram)
    pa = reference.principal_cosines_all_pairs(data36.eig_dirs)
    expected = {"operator_cos": cos, "resid_frac": np.sqrt(np.clip(1 - cos**2, 0, 1)), "pa_mean_cos": pa.mean(-1),
                "pa_min_cos": pa.min(-1), "top1_overlap": reference.top1_overlap_all_pairs(data36.eig_dirs),
                "spectral_cos": reference.spectral_cos_all_pairs(data36.sym_eigs),
                "spectral_abs_cos": reference.spectral_cos_all_pairs(data36.sym_eigs, absolute=True),
                "sign_agreement": reference.sign_agreement_all_pairs(data36.sym_eigs, result.sign_agreement["k"])}
    for key in PAIR_KEYS:
        assert result.pairs[key]["per_head"].shape[-3:] == (L, L, H)
        np.testing.assert_allclose(result.pairs[key]["mean"], expected[key].mean(axis=-1), rtol=1e-13, atol=1e-15)
    anchor = L - 1
    np.testing.assert_allclose(result.pairs["operator_cos"]["mean"][:, anchor], result.to_anchor["cos"], rtol=1e-14)
    np.testing.assert_allclose(result.pairs["pa_mean_cos"]["mean"][:, anchor], result.principal_angles["mean_cos"],
                               rtol=1e-12)
    np.testing.assert_allclose(result.pairs["top1_overlap"]["mean"][:, anchor], result.principal_angles["top1_overlap"],
                               rtol=1e-12)
    np.testing.assert_allclose(result.pairs["sign_agreement"]["per_head"][:, :, anchor],
                               result.sign_agreement["per_layer_head"], rtol=0)
    np.testing.assert_allclose(result.pairs["resid_frac"]["per_head"],
                               np.sqrt(np.clip(1 - result.operator_cos_per_head**2, 0, 1)), rtol=1e-15)
    # Symmetric in the two layers.
    for key in PAIR_KEYS:
        matrix = result.pairs[key]["mean"]
        np.testing.assert_allclose(matrix, np.swapaxes(matrix, -1, -2), rtol=1e-10, atol=1e-12)


def test_distance_profile_is_the_mean_over_diagonals(result):
    prof = result.by_distance
    assert prof["distance"][0] == 1 and len(prof["distance"]) == 35
    assert prof["operator_cos"][4] == pytest.approx(np.diagonal(result.pairs["operator_cos"]["mean"], 5).mean())
    # The synthetic drift makes the operator cosine fall with distance.
    assert prof["operator_cos"][0] > prof["operator_cos"][10] > prof["operator_cos"][30]


def test_inertia_statistics(result, spec36):
    # Signed mass sum(lambda) / sum(|lambda|) = tr(g) / ||spectrum||_1, from dense operators.
    g = dense_operators(*make_weights(spec36))
    lam, _ = spectra_by_magnitude(g)
    expected = np.trace(g, axis1=-2, axis2=-1) / np.abs(lam).sum(axis=-1)
    np.testing.assert_allclose(result.signed_mass, expected, rtol=1e-9, atol=1e-12)
    assert result.frac_positive_topk.shape == (36, 4)
    np.testing.assert_array_equal(result.frac_positive, 0.5)


def test_json_has_the_new_keys_with_method_and_seed(cli, written36, tmp_path):
    out = tmp_path / "r.json"
    proc = cli("analyze", written36[0], "--json", out, "--match-heads", "--chance-seed", "5")
    assert proc.returncode == 0
    doc = json.loads(out.read_text())
    assert {"pairs", "signed_mass", "frac_positive_topk", "chance", "matched", "by_distance"} <= set(doc)
    assert set(doc["pairs"]) == PAIR_JSON_KEYS
    assert np.array(doc["pairs"]["sign_agreement"]["per_head"]).shape == (4, 36, 36, 4)
    for name, level in doc["chance"].items():
        assert {"mean", "sd", "method", "seed", "samples"} <= set(level), name
        assert level["method"] in {"analytic", "monte-carlo"}
        if level["method"] == "monte-carlo":
            assert level["seed"] == 5 and level["samples"] > 0
    assert np.array(doc["matched"]["to_anchor"]["assignment"]).shape == (36, 4)
    # Without --match-heads there is no "matched" key.
    cli("analyze", written36[0], "--json", out)
    assert "matched" not in json.loads(out.read_text())


def test_report_has_the_new_sections_after_the_seeds(cli, written36):
    out = cli("analyze", written36[0], "--match-heads").stdout
    verdict = out.index("=== Verdict ===")
    for title in ("=== [qkalign] (e) All layer pairs", "=== [qkalign] (f) Operator vs spectral vs eigenvector",
                  "=== [qkalign] (g) Inertia-aware sign statistics", "=== [qkalign] Chance levels",
                  "=== [qkalign] Head matching"):
        assert out.index(title) > verdict
    lines = out.splitlines()
    seed_verdict = next(i for i, line in enumerate(lines) if line.startswith("  WEAK:") or line.startswith("  MEDIUM:")
                        or line.startswith("  STRONG:") or line.startswith("  REJECTED:"))
    assert lines[seed_verdict + 2].startswith("  [qkalign] vs chance: operator cos-sim to anchor")
    assert "standard errors from unrelated operators" in out


def test_figures_are_written_and_open_as_pngs(cli, written36, tmp_path):
    result_json = tmp_path / "r.json"
    assert cli("analyze", written36[0], "--json", result_json, "--plot", tmp_path / "a").returncode == 0
    assert cli("plot", result_json, tmp_path / "b").returncode == 0
    names = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "a").iterdir())
    # 7 heatmaps (each with its z map), to-anchor panels, layer x head maps, one L x L panel per head
    assert {"to_anchor.png", "pairs_operator_cos.png", "per_head.png", "pairs_operator_cos_heads.png"} <= set(names)
    assert len(names) == 10
    for name in names:
        image = imread(tmp_path / "b" / name)
        assert image.shape[0] >= round(FIGSIZE[1] * DPI) and image.shape[1] >= round(FIGSIZE[0] * DPI)
        assert image.std() > 0.05  # not blank


def test_figure_scales_fit_the_off_diagonal_values_and_z_is_the_reports():
    from qkalign.stats.chance import ChanceLevel, z_score
    from qkalign.views.analysis_figures import ROBUST_PERCENTILE, head_mean_z, off_diagonal, robust_half_range

    matrix = np.full((4, 4), 0.02) + np.eye(4)  # diagonal 1 by construction, off-diagonal 0.02
    masked = off_diagonal(matrix)
    assert np.isnan(np.diag(masked)).all() and np.allclose(masked[~np.eye(4, dtype=bool)], 0.02)
    assert robust_half_range(masked, 0.0) == pytest.approx(0.02)  # the diagonal's 1 does not set the scale
    values = np.append(np.arange(100.0), 1e6)  # one outlier
    assert robust_half_range(values, 0.0) == pytest.approx(np.percentile(np.abs(values), ROBUST_PERCENTILE))
    assert robust_half_range(values, 0.0) < 100
    level = {"mean": 0.01, "sd": 0.003}
    assert np.allclose(head_mean_z(masked, level, 9)[0, 1], z_score(0.02, ChanceLevel(mean=0.01, sd=0.003, method="analytic"), 9))
    assert head_mean_z(masked, {"mean": 0.0, "sd": None}, 9) is None


def test_plot_of_a_missing_result_is_one_error_line(cli, tmp_path):
    proc = cli("plot", tmp_path / "none.json", tmp_path / "out")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "none.json" in proc.stderr
