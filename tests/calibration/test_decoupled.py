"""The decoupled calibrator: per-component targets, unknowns never invented, combiners measured."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest

from guardrail.calibration import Calibrator, DecoupledCalibrator, IsotonicCalibrator, auroc, expected_calibration_error
from guardrail.calibration.base import harmonic_mean
from guardrail.calibration.decoupled import COMBINERS, harmonic_mean_array
from guardrail.errors import CalibrationError
from guardrail.types import Signals
from tests.support.calibration import decoupled_world

TRAIN = decoupled_world(3000, seed=0)
TEST = decoupled_world(20000, seed=1)


def fresh_fit(combiner: str) -> DecoupledCalibrator:
    return DecoupledCalibrator(combiner=combiner).fit(
        TRAIN["visual"],
        TRAIN["reasoning"],
        answer_correct=TRAIN["answer"],
        perception_correct=TRAIN["perception"],
        holistic_scores=TRAIN["holistic"],
    )


@cache
def _fitted(combiner: str) -> str:
    return json.dumps(fresh_fit(combiner).to_dict())


def fit(combiner: str = "harmonic") -> DecoupledCalibrator:
    """A calibrator fitted on TRAIN (fitted once per combiner, a fresh object each call)."""
    return DecoupledCalibrator.from_dict(json.loads(_fitted(combiner)))


def test_is_a_calibrator_and_says_not_fitted() -> None:
    calibrator = DecoupledCalibrator()
    assert isinstance(calibrator, Calibrator)
    with pytest.raises(CalibrationError, match="DecoupledCalibrator is not fitted, call fit first"):
        calibrator.calibrate(Signals(visual=0.5, reasoning=0.5))


def test_each_component_is_calibrated_against_its_own_target() -> None:
    out = fit().predict_components(TEST["visual"], TEST["reasoning"])
    perceived = TEST["perception"] == 1
    assert expected_calibration_error(TEST["visual"], TEST["perception"], 10) > 0.05
    assert expected_calibration_error(out["visual"], TEST["perception"], 10) < 0.02
    assert expected_calibration_error(TEST["reasoning"][perceived], TEST["answer"][perceived], 10) > 0.05
    assert expected_calibration_error(out["reasoning"][perceived], TEST["answer"][perceived], 10) < 0.02


def test_harmonic_combiner_is_the_harmonic_mean_of_the_calibrated_parts() -> None:
    calibrator = fit("harmonic")
    out = calibrator.predict_components(TEST["visual"][:50], TEST["reasoning"][:50])
    np.testing.assert_allclose(out["overall"], harmonic_mean_array(out["visual"], out["reasoning"]))
    c = calibrator.calibrate(Signals(visual=0.7, reasoning=0.4))
    assert c.overall == pytest.approx(harmonic_mean(c.visual, c.reasoning))


def test_combiners_measured_fitted_ones_repair_the_harmonic_mean() -> None:
    """The measurement behind the default's documentation (also in bench/calibration_combiners.py).

    With both parts calibrated the harmonic mean exceeds v*r, the chance both are right, so it is over-confident
    as P(answer correct); a fitted map on it repairs calibration and keeps its ranking.
    """
    ece, area = {}, {}
    for combiner in COMBINERS:
        overall = fit(combiner).predict_components(TEST["visual"], TEST["reasoning"])["overall"]
        ece[combiner] = expected_calibration_error(overall, TEST["answer"], 10)
        area[combiner] = auroc(overall, TEST["answer"])
    assert ece["harmonic"] > 0.08
    for combiner in ("platt_harmonic", "isotonic_harmonic", "logistic"):
        assert ece[combiner] < 0.03 < ece["harmonic"]
    assert area["platt_harmonic"] == pytest.approx(area["harmonic"], abs=1e-9)  # a monotone map of it


def test_unknown_components_stay_unknown_and_sources_say_what_made_each() -> None:
    calibrator = fit()
    both = calibrator.calibrate(Signals(visual=0.8, reasoning=0.6, sources={"visual": ("kl", "entropy")}))
    assert both.sources["visual"] == ("kl", "entropy", "calibrator:platt")
    assert both.sources["reasoning"] == ("reasoning", "calibrator:platt")
    assert both.sources["overall"] == ("visual", "reasoning", "combiner:harmonic")

    no_reasoning = calibrator.calibrate(Signals(visual=0.8, holistic=0.6))
    assert no_reasoning.reasoning is None
    assert no_reasoning.visual is not None
    assert no_reasoning.overall is not None  # from the calibrated holistic score
    assert no_reasoning.sources["overall"] == ("holistic", "calibrator:holistic")
    assert "reasoning" not in no_reasoning.sources

    nothing = calibrator.calibrate(Signals(visual=0.8))
    assert (nothing.reasoning, nothing.overall) == (None, None)
    empty = calibrator.calibrate(Signals())
    assert (empty.visual, empty.reasoning, empty.overall) == (None, None, None)


def test_missing_values_are_left_out_of_the_fits() -> None:
    n = 400
    r = TRAIN["reasoning"][:n].copy()
    perception: list[float | None] = list(TRAIN["perception"][:n])
    v: list[float | None] = list(TRAIN["visual"][:n])
    v[:100] = [None] * 100
    r[100:200] = np.nan
    perception[200:300] = [None] * 100
    calibrator = DecoupledCalibrator().fit(v, r, answer_correct=TRAIN["answer"][:n], perception_correct=perception)
    assert calibrator.n_["visual"] == 200  # visual known and perception label known
    assert calibrator.n_["reasoning"] == int(np.sum(TRAIN["perception"][:n][np.r_[0:100, 300:400]] == 1))
    assert calibrator.reasoning_target_ == "answer_correct_given_perception_correct"


def test_without_perception_labels_visual_is_unknown_and_reasoning_targets_the_answer() -> None:
    calibrator = DecoupledCalibrator().fit(TRAIN["visual"], TRAIN["reasoning"], answer_correct=TRAIN["answer"])
    assert calibrator.visual_ is None
    assert calibrator.reasoning_target_ == "answer_correct"
    assert any("no perception labels" in note for note in calibrator.notes_)
    c = calibrator.calibrate(Signals(visual=0.9, reasoning=0.9))
    assert c.visual is None
    assert c.overall is None
    assert c.reasoning is not None


def test_too_few_rows_leave_a_component_unfitted() -> None:
    calibrator = DecoupledCalibrator(min_samples=50).fit(
        TRAIN["visual"][:20],
        TRAIN["reasoning"][:20],
        answer_correct=TRAIN["answer"][:20],
        perception_correct=TRAIN["perception"][:20],
    )
    assert calibrator.visual_ is None
    assert any("min_samples=50" in note for note in calibrator.notes_)


@pytest.mark.parametrize("combiner", COMBINERS)
def test_dict_round_trip_is_exact(combiner: str) -> None:
    calibrator = fresh_fit(combiner)
    text = json.dumps(calibrator.to_dict())
    restored = DecoupledCalibrator.from_dict(json.loads(text))
    got = restored.predict_components(TEST["visual"][:500], TEST["reasoning"][:500], TEST["holistic"][:500])
    want = calibrator.predict_components(TEST["visual"][:500], TEST["reasoning"][:500], TEST["holistic"][:500])
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    assert json.dumps(restored.to_dict()) == text
    signals = Signals(visual=0.3, reasoning=0.9)
    assert restored.calibrate(signals) == calibrator.calibrate(signals)


def test_template_calibrators_and_unfitted_round_trip() -> None:
    calibrator = DecoupledCalibrator(visual=IsotonicCalibrator(), reasoning="histogram", combiner="logistic")
    assert not DecoupledCalibrator.from_dict(json.loads(json.dumps(calibrator.to_dict()))).is_fitted
    calibrator.fit(
        TRAIN["visual"], TRAIN["reasoning"], answer_correct=TRAIN["answer"], perception_correct=TRAIN["perception"]
    )
    assert isinstance(calibrator.visual_, IsotonicCalibrator)
    assert calibrator.visual_ is not calibrator.visual  # the template is not fitted in place
    restored = DecoupledCalibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert restored.calibrate(Signals(visual=0.5, reasoning=0.5)) == calibrator.calibrate(
        Signals(visual=0.5, reasoning=0.5)
    )


def test_inputs_are_untouched() -> None:
    arrays = {k: TRAIN[k][:300].copy() for k in ("visual", "reasoning", "holistic", "answer", "perception")}
    before = {k: a.copy() for k, a in arrays.items()}
    for a in arrays.values():
        a.flags.writeable = False
    DecoupledCalibrator(combiner="logistic").fit(
        arrays["visual"],
        arrays["reasoning"],
        answer_correct=arrays["answer"],
        perception_correct=arrays["perception"],
        holistic_scores=arrays["holistic"],
    ).predict_components(arrays["visual"], arrays["reasoning"], arrays["holistic"])
    for k, a in arrays.items():
        np.testing.assert_array_equal(a, before[k])


@pytest.mark.parametrize(
    ("kwargs", "fit_kwargs", "message"),
    [
        ({"combiner": "mean"}, {}, r"`combiner` must be one of \['harmonic', 'product'"),
        ({"min_samples": 0}, {}, r"`min_samples` must be an int >= 1, got 0"),
        ({"visual": "beta"}, {}, r"`kind` must be one of"),
        ({}, {"answer_correct": [1, 0, 2]}, r"`answer_correct` must hold 0/1 labels .*, got 2.0"),
        ({}, {"visual_scores": [0.1, 1.5, 0.2]}, r"`visual_scores` must hold scores in \[0, 1\] .*, got 1.5"),
        ({}, {"reasoning_scores": [0.1, 0.2]}, r"`reasoning_scores` must be 1-D of length 3, got shape \(2,\)"),
    ],
)
def test_bad_parameters_and_inputs(kwargs: dict[str, object], fit_kwargs: dict[str, object], message: str) -> None:
    data: dict[str, object] = {
        "visual_scores": [0.1, 0.5, 0.9],
        "reasoning_scores": [0.2, 0.6, 0.8],
        "answer_correct": [0, 1, 1],
        "perception_correct": [0, 1, 1],
    }
    data.update(fit_kwargs)
    with pytest.raises(CalibrationError, match=message):
        DecoupledCalibrator(**{"min_samples": 1, **kwargs}).fit(  # type: ignore[arg-type]
            data.pop("visual_scores"),  # type: ignore[arg-type]
            data.pop("reasoning_scores"),  # type: ignore[arg-type]
            **data,  # type: ignore[arg-type]
        )


def test_malformed_dict_is_a_calibration_error() -> None:
    good = fit().to_dict()
    del good["fitted"]["n"]
    with pytest.raises(CalibrationError, match="malformed decoupled calibrator dict"):
        DecoupledCalibrator.from_dict(good)
    bad_combiner = fit().to_dict()
    bad_combiner["params"]["combiner"] = "mean"
    with pytest.raises(CalibrationError, match=r"`combiner` must be one of"):
        DecoupledCalibrator.from_dict(bad_combiner)
    with pytest.raises(CalibrationError, match="expected a 'decoupled' calibrator dict"):
        DecoupledCalibrator.from_dict({"type": "platt", "params": {}, "fitted": None})
