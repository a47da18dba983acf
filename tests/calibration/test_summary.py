"""Noise floor, bootstrap intervals and the summary, against loops over the same random draws."""

from __future__ import annotations

import numpy as np
import pytest

from guardrail.calibration import metrics as m
from guardrail.calibration import summary as sm
from tests.support.calibration import quantized, sign_changing
from tests.support.reference_metrics import ref_ece

DATASETS = {"sign_changing": sign_changing(), "quantized": quantized(), "small": sign_changing(37, seed=5)}


def test_noise_floor_matches_a_loop_over_redraws() -> None:
    c, _ = DATASETS["sign_changing"]
    floor = sm.ece_noise_floor(c, n_bins=10, n_draws=40, seed=3)
    rng = np.random.default_rng(3)
    eces = [ref_ece(c, (row < c).astype(float), 10) for row in rng.random((40, len(c)))]
    assert floor.mean == pytest.approx(np.mean(eces), abs=1e-12)
    assert floor.low == pytest.approx(np.percentile(eces, 2.5))
    assert floor.high == pytest.approx(np.percentile(eces, 97.5))


def test_noise_floor_contains_a_calibrated_predictor_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(0)
    c = rng.random(1000)
    floor = sm.ece_noise_floor(c, n_bins=10, n_draws=300, seed=1)
    inside = [floor.low <= m.expected_calibration_error(c, rng.random(1000) < c, 10) <= floor.high for _ in range(50)]
    assert sum(inside) >= 40
    assert sm.ece_noise_floor(np.tile(c, 10), n_bins=10, n_draws=100).mean < floor.mean / 2


def test_bootstrap_matches_a_loop_and_counts_undefined_resamples() -> None:
    c, y = DATASETS["small"]
    ci = sm.bootstrap_ci(m.brier_score, c, y, n_boot=50, alpha=0.1, seed=4)
    rng = np.random.default_rng(4)
    values = [m.brier_score(c[i], y[i]) for i in rng.integers(0, len(c), size=(50, len(c)))]
    assert (ci.low, ci.high) == pytest.approx(tuple(np.percentile(values, [5, 95])))
    assert ci.estimate == m.brier_score(c, y)
    tiny = sm.bootstrap_ci(m.auroc, [0.1, 0.9, 0.5], [0, 1, 1], n_boot=200, seed=0)
    assert 0 < tiny.n_failed < 200


def test_summary_agrees_with_the_functions_and_is_json() -> None:
    c, y = DATASETS["quantized"]
    s = sm.calibration_summary(c, y, noise_draws=50)
    assert s.ece_10 == m.expected_calibration_error(c, y, 10)
    assert s.ece_15 == m.expected_calibration_error(c, y, 15)
    assert s.auroc == m.auroc(c, y)
    assert s.selective_accuracy_90 == m.selective_accuracy(c, y, 0.9)
    assert sm.CalibrationSummary.model_validate_json(s.model_dump_json()) == s
    assert sm.calibration_summary([0.9, 0.8], [1, 1], noise_draws=10).auroc is None


def test_summary_bootstrap_intervals() -> None:
    c, y = DATASETS["sign_changing"]
    s = sm.calibration_summary(c, y, noise_draws=20, n_boot=100, seed=2)
    assert s.ece_10_ci is not None
    assert s.auroc_ci is not None
    assert s.ece_10_ci[0] <= s.ece_10 <= s.ece_10_ci[1]
    assert s.auroc is not None
    assert s.auroc_ci[0] <= s.auroc <= s.auroc_ci[1]
    ci = sm.bootstrap_ci(lambda a, b: m.expected_calibration_error(a, b, 10), c, y, n_boot=100, seed=2)
    assert s.ece_10_ci == pytest.approx((ci.low, ci.high))
    assert sm.CalibrationSummary.model_validate_json(s.model_dump_json()) == s
    assert sm.calibration_summary([0.9, 0.8], [1, 1], noise_draws=10, n_boot=10).auroc_ci is None
