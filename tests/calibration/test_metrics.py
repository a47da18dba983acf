"""Metrics against straightforward reference implementations and public libraries (METHOD.md section 6)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from guardrail.calibration import metrics as m
from guardrail.calibration import summary as sm
from guardrail.errors import CalibrationError
from tests.support.calibration import quantized, sign_changing
from tests.support.reference_metrics import ref_adaptive, ref_ece, ref_mce, ref_risks

DATASETS = {"sign_changing": sign_changing(), "quantized": quantized(), "small": sign_changing(37, seed=5)}


# ---------------------------------------------------------------------------------------------------------------
# The test data really changes sign (else the cross-checks prove little).


@pytest.mark.parametrize("name", ["sign_changing", "quantized"])
def test_data_miscalibration_changes_sign(name: str) -> None:
    c, y = DATASETS[name]
    diagram = m.reliability_diagram_data(c, y, 10)
    gaps = (diagram.accuracy - diagram.mean_confidence)[diagram.counts > 50]
    assert np.any(gaps > 0.05)
    assert np.any(gaps < -0.05)
    assert m.expected_calibration_error(c, y, 10) > abs(c.mean() - y.mean()) + 0.05


def test_quantized_data_sits_on_bin_edges() -> None:
    c, _ = DATASETS["quantized"]
    assert set(np.unique(c)) <= {k / 10 for k in range(11)}


# ---------------------------------------------------------------------------------------------------------------
# Cross-checks


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_binned_metrics_match_reference(name: str, n_bins: int) -> None:
    c, y = DATASETS[name]
    assert m.expected_calibration_error(c, y, n_bins) == pytest.approx(ref_ece(c, y, n_bins), abs=1e-12)
    assert m.maximum_calibration_error(c, y, n_bins) == pytest.approx(ref_mce(c, y, n_bins), abs=1e-12)
    assert m.adaptive_calibration_error(c, y, n_bins) == pytest.approx(ref_adaptive(c, y, n_bins), abs=1e-12)


def test_right_closed_bins_put_edge_values_in_the_lower_bin() -> None:
    diagram = m.reliability_diagram_data([0.0, 0.1, 0.1, 0.2, 0.3, 0.30000001, 1.0], [1, 1, 0, 0, 1, 1, 1], 10)
    assert diagram.counts.tolist() == [3, 1, 1, 1, 0, 0, 0, 0, 0, 1]
    assert diagram.mean_confidence[0] == pytest.approx(0.2 / 3)
    assert diagram.accuracy[0] == pytest.approx(2 / 3)
    assert math.isnan(diagram.accuracy[4])
    assert json.loads(json.dumps(diagram.to_dict()))["accuracy"][4] is None


def test_ece_pinned_example() -> None:
    # bins (0.1,0.2], (0.3,0.4], (0.8,0.9]: gaps 0.2, 0.6, 0.1, each weighted 1/3
    assert m.expected_calibration_error([0.2, 0.4, 0.9], [0, 1, 1], n_bins=10) == pytest.approx(0.3)
    assert m.maximum_calibration_error([0.2, 0.4, 0.9], [0, 1, 1], n_bins=10) == pytest.approx(0.6)


@pytest.mark.parametrize("name", list(DATASETS))
def test_scores_match_sklearn(name: str) -> None:
    c, y = DATASETS[name]
    assert m.auroc(c, y) == pytest.approx(roc_auc_score(y, c), abs=1e-12)
    assert m.brier_score(c, y) == pytest.approx(brier_score_loss(y, c), abs=1e-12)
    clipped = np.clip(c, 1e-7, 1 - 1e-7)
    assert m.negative_log_likelihood(c, y) == pytest.approx(log_loss(y, clipped, labels=[0, 1]), rel=1e-10)


def test_nll_clips_with_the_stated_eps() -> None:
    assert m.negative_log_likelihood([0.0], [1], eps=1e-3) == pytest.approx(-math.log(1e-3))
    assert m.negative_log_likelihood([1.0], [1], eps=1e-3) == pytest.approx(-math.log(1 - 1e-3))


def test_auroc_ties_count_one_half() -> None:
    assert m.auroc([0.5, 0.5], [0, 1]) == 0.5
    assert m.auroc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(
        roc_auc_score([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9])
    )


@pytest.mark.parametrize(("labels", "word"), [([1, 1, 1], "1s"), ([0, 0, 0], "0s")])
def test_auroc_single_class_is_a_clear_error(labels: list[int], word: str) -> None:
    with pytest.raises(CalibrationError, match=f"AUROC needs both classes in `correct`, got only {word}"):
        m.auroc([0.1, 0.5, 0.9], labels)


@pytest.mark.parametrize("name", list(DATASETS))
def test_risk_coverage_and_aurc_match_reference(name: str) -> None:
    c, y = DATASETS[name]
    curve = m.risk_coverage_curve(c, y)
    risks = ref_risks(c, y)
    np.testing.assert_allclose(curve.risk, risks, atol=1e-12)
    np.testing.assert_allclose(curve.coverage, np.arange(1, len(c) + 1) / len(c))
    assert m.aurc(c, y) == pytest.approx(np.mean(risks), abs=1e-12)
    oracle = ref_risks(y.astype(float), y)  # the correct answers first
    assert m.eaurc(c, y) == pytest.approx(np.mean(risks) - np.mean(oracle), abs=1e-12)


def test_eaurc_is_zero_for_a_perfect_ranking() -> None:
    y = np.array([1, 0, 1, 1, 0], dtype=float)
    assert m.eaurc(0.1 + 0.8 * y, y) == pytest.approx(0.0, abs=1e-15)
    assert m.eaurc(0.9 - 0.8 * y, y) > 0


def test_risk_coverage_sort_is_stable() -> None:
    curve = m.risk_coverage_curve([0.5, 0.5, 0.5], [0, 1, 1])
    assert curve.risk.tolist() == [1.0, 0.5, 1 / 3]  # input order among ties


@pytest.mark.parametrize(("coverage", "expected"), [(0.5, 5 / 5), (0.8, 7 / 8), (0.9, 7 / 9), (1.0, 7 / 10)])
def test_selective_accuracy_takes_exactly_ceil_coverage_n(coverage: float, expected: float) -> None:
    c = np.linspace(1.0, 0.1, 10)
    y = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 0], dtype=float)
    assert m.selective_accuracy(c, y, coverage) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------------------
# Validation and hygiene


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: m.expected_calibration_error([0.5], [1], n_bins=0), r"`n_bins` must be an int >= 1, got 0"),
        (lambda: m.expected_calibration_error([0.5], [1], n_bins=True), r"`n_bins` must be an int >= 1, got True"),
        (lambda: m.brier_score([1.2], [1]), r"`confidence` must hold probabilities in \[0, 1\], got 1.2"),
        (lambda: m.brier_score([float("nan")], [1]), r"`confidence` must hold probabilities in \[0, 1\], got nan"),
        (lambda: m.brier_score([0.5], [2]), r"`correct` must hold 0/1 labels, got 2.0"),
        (lambda: m.brier_score([0.5, 0.1], [1]), r"same length, got 2 and 1"),
        (lambda: m.brier_score([], []), r"`confidence` must not be empty"),
        (lambda: m.brier_score([[0.5]], [[1]]), r"`confidence` must be a 1-D array, got shape \(1, 1\)"),
        (lambda: m.negative_log_likelihood([0.5], [1], eps=0.5), r"`eps` must be a float in \(0, 0.5\), got 0.5"),
        (lambda: m.selective_accuracy([0.5], [1], 0.0), r"`coverage` must be a float in \(0, 1\], got 0.0"),
        (lambda: sm.ece_noise_floor([0.5], n_draws=0), r"`n_draws` must be an int >= 1, got 0"),
        (lambda: sm.bootstrap_ci(m.auroc, [0.5], [1], alpha=1.0), r"`alpha` must be a float in \(0, 1\), got 1.0"),
    ],
)
def test_bad_arguments_name_parameter_value_and_expectation(call: object, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        call()  # type: ignore[operator]


def test_inputs_are_untouched_and_read_only_inputs_work() -> None:
    c, y = sign_changing(200, seed=9)
    c_before, y_before = c.copy(), y.copy()
    c.flags.writeable = False
    y.flags.writeable = False
    sm.calibration_summary(c, y, noise_draws=20)
    sm.bootstrap_ci(m.brier_score, c, y, n_boot=5)
    m.risk_coverage_curve(c, y)
    np.testing.assert_array_equal(c, c_before)
    np.testing.assert_array_equal(y, y_before)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=60),
    st.integers(1, 20),
)
def test_properties_on_grid_values(rows: list[tuple[int, bool]], n_bins: int) -> None:
    c = np.array([k / 20 for k, _ in rows])
    y = np.array([float(b) for _, b in rows])
    ece = m.expected_calibration_error(c, y, n_bins)
    assert ece == pytest.approx(ref_ece(c, y, n_bins), abs=1e-12)
    assert 0.0 <= ece <= m.maximum_calibration_error(c, y, n_bins) + 1e-12 <= 1.0 + 1e-12
    assert m.adaptive_calibration_error(c, y, n_bins) == pytest.approx(ref_adaptive(c, y, n_bins), abs=1e-12)
    assert m.eaurc(c, y) >= -1e-12
