"""Metrics against straightforward reference implementations and public libraries (METHOD.md section 6)."""

from __future__ import annotations

import itertools
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
from tests.support.reference_metrics import ref_adaptive, ref_ece, ref_mce, ref_risks, stable_risks

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
    oracle = stable_risks(y.astype(float), y)  # the correct answers first
    assert m.eaurc(c, y, oracle="exact") == pytest.approx(np.mean(risks) - np.mean(oracle), abs=1e-12)
    r = 1 - y.mean()
    assert m.eaurc(c, y) == pytest.approx(np.mean(risks) - (r + (1 - r) * math.log(1 - r)), abs=1e-12)


def test_eaurc_exact_is_zero_for_a_perfect_ranking_and_the_closed_form_is_the_published_one() -> None:
    y = np.array([1, 0, 1, 1, 0], dtype=float)
    assert m.eaurc(0.1 + 0.8 * y, y, oracle="exact") == pytest.approx(0.0, abs=1e-15)
    assert m.eaurc(0.9 - 0.8 * y, y, oracle="exact") > 0
    # Geifman et al. (2019): AURC* = r + (1 - r) ln(1 - r); above it at finite n, so E-AURC > 0 even when perfect.
    closed = m.eaurc(0.1 + 0.8 * y, y)
    assert closed == pytest.approx(m.aurc(0.1 + 0.8 * y, y) - (0.4 + 0.6 * math.log(0.6)))
    assert closed > 0
    assert m.eaurc([0.5, 0.5], [0, 0]) == pytest.approx(m.aurc([0.5, 0.5], [0, 0]) - 1.0)  # r = 1: the limit
    with pytest.raises(CalibrationError, match="`oracle` must be 'closed_form' or 'exact'"):
        m.eaurc([0.5], [1], oracle="other")  # type: ignore[arg-type]


def test_ties_share_their_errors_evenly() -> None:
    curve = m.risk_coverage_curve([0.5, 0.5, 0.5], [0, 1, 1])
    np.testing.assert_allclose(curve.risk, [1 / 3, 1 / 3, 1 / 3])  # whatever the input order
    # a tie at the selective-accuracy cut counts pro rata: top 2 of (0.9: right), (0.5: wrong, right)
    assert m.selective_accuracy([0.5, 0.9, 0.5], [0, 1, 1], 2 / 3) == pytest.approx((1 + 0.5) / 2)


def test_tied_aurc_is_the_mean_over_every_order_of_the_tied_answers() -> None:
    c = np.array([0.9, 0.5, 0.5, 0.5, 0.2, 0.2])
    y = np.array([1, 0, 1, 1, 0, 1], dtype=float)
    areas = [np.mean(stable_risks(c[list(p)], y[list(p)])) for p in itertools.permutations(range(len(c)))]
    assert m.aurc(c, y) == pytest.approx(np.mean(areas), abs=1e-12)


@pytest.mark.parametrize("name", list(DATASETS))
def test_ranking_metrics_do_not_depend_on_the_input_order(name: str) -> None:
    c, y = DATASETS[name]
    c = np.round(c, 1)  # many ties, as after isotonic calibration
    first = (m.aurc(c, y), m.eaurc(c, y), m.selective_accuracy(c, y, 0.8), m.adaptive_calibration_error(c, y))
    rng = np.random.default_rng(0)
    for _ in range(20):
        order = rng.permutation(len(c))
        again = (
            m.aurc(c[order], y[order]),
            m.eaurc(c[order], y[order]),
            m.selective_accuracy(c[order], y[order], 0.8),
            m.adaptive_calibration_error(c[order], y[order]),
        )
        assert again == pytest.approx(first, abs=1e-12)
        np.testing.assert_allclose(m.risk_coverage_curve(c[order], y[order]).risk, m.risk_coverage_curve(c, y).risk)


def test_left_closed_bins_reproduce_torchmetrics_on_edge_values() -> None:
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.classification import binary_calibration_error

    c, y = DATASETS["quantized"]  # every confidence on a 0.1 edge
    for n_bins in (10, 15):
        theirs = float(binary_calibration_error(torch.tensor(c), torch.tensor(y).long(), n_bins=n_bins, norm="l1"))
        assert m.expected_calibration_error(c, y, n_bins, edges="left") == pytest.approx(theirs, abs=1e-6)
        theirs_max = float(binary_calibration_error(torch.tensor(c), torch.tensor(y).long(), n_bins=n_bins, norm="max"))
        assert m.maximum_calibration_error(c, y, n_bins, edges="left") == pytest.approx(theirs_max, abs=1e-6)
    # The conventions differ when edge values of opposite miscalibration meet in one bin: 0.2 joins 0.1 in
    # (0, 0.2] here, but opens [0.2, 0.4) there. This is why the module docstring says which one a figure uses.
    edge_c, edge_y = [0.1, 0.1, 0.2, 0.2], [1, 1, 0, 0]
    assert m.expected_calibration_error(edge_c, edge_y, 5) == pytest.approx((2 - 0.6) / 4)
    assert m.expected_calibration_error(edge_c, edge_y, 5, edges="left") == pytest.approx((1.8 + 0.4) / 4)
    at_edges = float(binary_calibration_error(torch.tensor(edge_c), torch.tensor(edge_y), n_bins=5, norm="l1"))
    assert at_edges == pytest.approx((1.8 + 0.4) / 4, abs=1e-6)
    with pytest.raises(CalibrationError, match="`edges` must be 'right' or 'left'"):
        m.expected_calibration_error(c, y, 10, edges="middle")  # type: ignore[arg-type]


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
