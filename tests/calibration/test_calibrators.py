"""One shared check suite over every calibrator (scikit-learn's estimator-checks pattern), then specifics."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from guardrail.calibration import (
    HistogramBinning,
    IsotonicCalibrator,
    PlattScaling,
    ScoreCalibrator,
    TemperatureScaling,
    auroc,
    expected_calibration_error,
)
from guardrail.calibration.calibrators import CALIBRATORS, calibrator_from_dict, make_calibrator
from guardrail.errors import CalibrationError
from tests.support.calibration import logit, overconfident, sigmoid

FACTORIES: dict[str, Callable[[], ScoreCalibrator]] = {
    "temperature": TemperatureScaling,
    "platt": PlattScaling,
    "platt-unsmoothed": lambda: PlattScaling(smoothing=False),
    "isotonic": IsotonicCalibrator,
    "histogram": HistogramBinning,
    "histogram-5": lambda: HistogramBinning(n_bins=5),
}
TRAIN = overconfident(3000, seed=2)
TEST = overconfident(20000, seed=3)


@pytest.fixture(params=list(FACTORIES))
def calibrator(request: pytest.FixtureRequest) -> ScoreCalibrator:
    return FACTORIES[request.param]()


def test_every_kind_is_checked() -> None:
    assert {f().kind for f in FACTORIES.values()} == set(CALIBRATORS)


# ---------------------------------------------------------------------------------------------------------------
# The shared checks


def test_predict_before_fit_says_not_fitted(calibrator: ScoreCalibrator) -> None:
    assert not calibrator.is_fitted
    with pytest.raises(CalibrationError, match=f"{type(calibrator).__name__} is not fitted, call fit first"):
        calibrator.predict([0.5])


def test_fit_returns_self_and_sets_only_underscore_attributes(calibrator: ScoreCalibrator) -> None:
    before = dict(vars(calibrator))
    assert calibrator.fit(*TRAIN) is calibrator
    added = set(vars(calibrator)) - set(before)
    assert added
    assert all(name.endswith("_") for name in added)
    assert {k: vars(calibrator)[k] for k in before} == before  # parameters are not rewritten by fit
    assert calibrator.is_fitted


def test_map_is_monotone_and_in_unit_interval(calibrator: ScoreCalibrator) -> None:
    grid = np.linspace(0.0, 1.0, 2001)
    out = calibrator.fit(*TRAIN).predict(grid)
    assert np.all(np.diff(out) >= 0.0)
    assert np.all((out >= 0.0) & (out <= 1.0))


def test_ece_improves_on_miscalibrated_data(calibrator: ScoreCalibrator) -> None:
    s, y = TEST
    before = expected_calibration_error(s, y, 10)
    after = expected_calibration_error(calibrator.fit(*TRAIN).predict(s), y, 10)
    assert before > 0.08
    assert after < 0.03
    assert after < before / 3


def test_ranking_is_kept(calibrator: ScoreCalibrator) -> None:
    s, y = TEST
    after = auroc(calibrator.fit(*TRAIN).predict(s), y)
    if isinstance(calibrator, TemperatureScaling | PlattScaling):  # strictly increasing: the same ranking
        assert after == pytest.approx(auroc(s, y), abs=1e-12)
    else:  # step maps only merge neighbouring ranks into ties, which costs a little AUROC (5 bins: ~0.015)
        assert after == pytest.approx(auroc(s, y), abs=0.02)


def test_dict_round_trip_is_exact(calibrator: ScoreCalibrator) -> None:
    unfitted = calibrator_from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert not unfitted.is_fitted
    assert unfitted.get_params() == calibrator.get_params()
    calibrator.fit(*TRAIN)
    text = json.dumps(calibrator.to_dict())
    restored = calibrator_from_dict(json.loads(text))
    assert type(restored) is type(calibrator)
    np.testing.assert_array_equal(restored.predict(TEST[0]), calibrator.predict(TEST[0]))
    assert json.dumps(restored.to_dict()) == text


def test_inputs_are_untouched(calibrator: ScoreCalibrator) -> None:
    s, y = overconfident(300, seed=7)
    s_before, y_before = s.copy(), y.copy()
    s.flags.writeable = False
    y.flags.writeable = False
    calibrator.fit(s, y).predict(s)
    np.testing.assert_array_equal(s, s_before)
    np.testing.assert_array_equal(y, y_before)


def test_bad_inputs_name_the_parameter(calibrator: ScoreCalibrator) -> None:
    with pytest.raises(CalibrationError, match=r"`labels` must hold 0/1 labels, got 2\.0"):
        calibrator.fit([0.2, 0.8], [0, 2])
    with pytest.raises(CalibrationError, match=r"`labels` must have the length of `scores` \(2\), got 3"):
        calibrator.fit([0.2, 0.8], [0, 1, 1])
    with pytest.raises(CalibrationError, match="`scores` must be finite, got nan"):
        calibrator.fit([0.2, float("nan")], [0, 1])


def test_single_class_and_tiny_data_still_give_probabilities(calibrator: ScoreCalibrator) -> None:
    out = calibrator.fit([0.3, 0.9], [1, 1]).predict([0.0, 0.5, 1.0])
    assert np.all((out >= 0.0) & (out <= 1.0))


# ---------------------------------------------------------------------------------------------------------------
# Specifics


@pytest.mark.parametrize(
    ("calibrator", "message"),
    [
        (TemperatureScaling(eps=0), r"`eps` must be a float in \(0, 0.5\), got 0"),
        (PlattScaling(scale="logits"), r"`scale` must be 'probability' or 'logit', got 'logits'"),
        (PlattScaling(smoothing=1), r"`smoothing` must be a bool, got 1"),  # type: ignore[arg-type]
        (HistogramBinning(n_bins=0), r"`n_bins` must be an int >= 1, got 0"),
        (HistogramBinning(n_bins=2.5), r"`n_bins` must be an int >= 1, got 2.5"),  # type: ignore[arg-type]
    ],
)
def test_parameters_are_checked_at_fit(calibrator: ScoreCalibrator, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        calibrator.fit([0.2, 0.8], [0, 1])


def test_parameters_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        TemperatureScaling(0.1)  # type: ignore[call-arg]


def test_probability_calibrators_refuse_scores_outside_unit_interval() -> None:
    with pytest.raises(CalibrationError, match=r"`scores` must be in \[0, 1\] for PlattScaling, got 3.0"):
        PlattScaling().fit([0.2, 3.0], [0, 1])


def test_real_valued_scores_with_logit_scale_and_isotonic() -> None:
    s, y = TRAIN
    z = logit(s) * 3.0
    for calibrator in (PlattScaling(scale="logit"), TemperatureScaling(scale="logit"), IsotonicCalibrator()):
        out = calibrator.fit(z, y).predict(z)
        assert expected_calibration_error(out, y, 10) < 0.05


def test_temperature_and_platt_recover_the_generating_map() -> None:
    rng = np.random.default_rng(0)
    s = rng.random(40000)
    y = (rng.random(40000) < sigmoid(logit(s) / 2.0)).astype(float)
    assert TemperatureScaling().fit(s, y).temperature_ == pytest.approx(2.0, rel=0.05)
    platt = PlattScaling().fit(s, y)
    assert platt.a_ == pytest.approx(0.5, rel=0.05)
    assert platt.b_ == pytest.approx(0.0, abs=0.05)


def test_platt_never_reverses_the_ranking() -> None:
    s = np.linspace(0.05, 0.95, 50)
    platt = PlattScaling().fit(s, (s < 0.5).astype(float))  # anti-correlated score
    assert platt.a_ == 0.0
    assert np.all(np.diff(platt.predict(s)) >= 0)


def test_histogram_binning_pools_decreasing_bins_unless_classic() -> None:
    s = np.array([0.1, 0.3, 0.3, 0.6, 0.6, 0.9])
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    monotone = HistogramBinning(n_bins=4).fit(s, y)
    assert np.all(np.diff(monotone.values_) >= 0)
    classic = HistogramBinning(n_bins=4, monotone=False).fit(s, y)
    assert classic.values_.tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "nope"}, "calibrator dict `type` must be one of"),
        ({"type": "platt", "params": {}}, "'platt' calibrator dict must have params"),
        (
            {"type": "temperature", "params": {"eps": 1e-6, "scale": "probability"}, "fitted": {"t": 1.0}},
            "must have fitted",
        ),
        (
            {"type": "temperature", "params": {"eps": 1e-6, "scale": "probability"}, "fitted": {"temperature_": "x"}},
            "fitted value `temperature_` must be a finite number",
        ),
        ({"type": "histogram", "params": {"n_bins": 0, "monotone": True}, "fitted": None}, "`n_bins` must be"),
        ({"type": "isotonic", "params": {}, "fitted": {"x_": [0.0, 1.0], "y_": [0.9, 0.1]}}, "must be non-decreasing"),
    ],
)
def test_malformed_dicts_are_calibration_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        calibrator_from_dict(data).predict([0.5])  # malformed fitted state may only show when used


def test_make_calibrator() -> None:
    assert isinstance(make_calibrator("histogram", n_bins=3), HistogramBinning)
    with pytest.raises(CalibrationError, match=r"`kind` must be one of \['histogram', 'isotonic', 'platt'"):
        make_calibrator("beta")
    with pytest.raises(CalibrationError, match="bad parameters for a 'isotonic' calibrator"):
        make_calibrator("isotonic", n_bins=3)
