"""Verbalized scores in the decoupled calibrator: blended with the measured probe, alone without one, and
ignored (the measured calibration unchanged) where a model wrote none or a malformed one."""

from __future__ import annotations

import numpy as np
import pytest

from guardrail import Signals
from guardrail.calibration import DecoupledCalibrator
from guardrail.calibration.metrics import auroc, brier_score
from guardrail.policy.engine import decide
from guardrail.policy.loader import load_policy

POLICY = """
version: 1
name: verbal
rules:
  - when: {visual: {below: 0.5}}
    do: abstain
otherwise: accept
on_exhausted: abstain
on_error: abstain
"""


def _data(n: int, seed: int) -> dict[str, np.ndarray]:
    """Perception right with chance 0.6; the probe is a weak signal of it, the verbalized score a strong one."""
    rng = np.random.default_rng(seed)
    perception = (rng.random(n) < 0.6).astype(float)
    answer = np.where(perception == 1.0, (rng.random(n) < 0.8).astype(float), (rng.random(n) < 0.2).astype(float))
    measured = np.clip(0.5 + 0.15 * (perception - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    verbal = np.round(np.clip(0.5 + 0.6 * (perception - 0.5) + rng.normal(0, 0.15, n), 0, 1) * 10) / 10
    reasoning = np.clip(0.5 + 0.3 * (answer - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    return {"v": measured, "w": verbal, "r": reasoning, "y": answer, "p": perception}


def _fit(data: dict[str, np.ndarray], *, verbal: bool) -> DecoupledCalibrator:
    return DecoupledCalibrator().fit(
        data["v"],
        data["r"],
        answer_correct=data["y"],
        perception_correct=data["p"],
        verbalized={"visual": data["w"]} if verbal else None,
    )


def test_the_blend_beats_the_probe_alone_when_the_model_knows() -> None:
    train, test = _data(2000, 0), _data(4000, 1)
    alone = _fit(train, verbal=False).predict_components(test["v"], test["r"])["visual"]
    blended = _fit(train, verbal=True).predict_components(test["v"], test["r"], verbalized={"visual": test["w"]})
    assert auroc(blended["visual"], test["p"]) > auroc(alone, test["p"]) + 0.1
    assert brier_score(blended["visual"], test["p"]) < brier_score(alone, test["p"])


def test_rows_without_a_verbalized_score_keep_the_measured_calibration() -> None:
    train, test = _data(1000, 2), _data(50, 3)
    missing = np.full(50, np.nan)
    without = _fit(train, verbal=False).predict_components(test["v"], test["r"])
    blended = _fit(train, verbal=True).predict_components(test["v"], test["r"], verbalized={"visual": missing})
    np.testing.assert_allclose(blended["visual"], without["visual"])


def test_round_trip_and_sources() -> None:
    calibrator = _fit(_data(1000, 4), verbal=True)
    again = DecoupledCalibrator.from_dict(calibrator.to_dict())
    signals = Signals(visual=0.5, reasoning=0.6, features={"verbalized_vision": 0.9}, sources={"visual": ("probe",)})
    assert again.calibrate(signals) == calibrator.calibrate(signals)
    assert calibrator.calibrate(signals).sources["visual"] == (
        "probe",
        "calibrator:platt",
        "verbalized_vision",
        "verbalized:blend",
    )
    malformed = Signals(visual=0.5, reasoning=0.6, sources={"visual": ("probe",)})  # the score was not parsed
    assert calibrator.calibrate(malformed).sources["visual"] == ("probe", "calibrator:platt")
    assert "verbalized" not in _fit(_data(200, 5), verbal=False).to_dict()["fitted"]


def test_a_verbalized_score_alone_when_the_probe_could_not_measure() -> None:
    calibrator = _fit(_data(1000, 6), verbal=True)
    low = calibrator.calibrate(Signals(visual=None, reasoning=0.6, features={"verbalized_vision": 0.1}))
    high = calibrator.calibrate(Signals(visual=None, reasoning=0.6, features={"verbalized_vision": 1.0}))
    assert low.visual is not None
    assert high.visual is not None
    assert low.visual < 0.5 < high.visual
    assert high.sources["visual"] == ("verbalized_vision", "verbalized:platt")


def test_a_policy_relies_on_what_the_model_says() -> None:
    calibrator = _fit(_data(2000, 7), verbal=True)
    policy = load_policy(POLICY.encode())
    actions = {
        said: decide(
            policy,
            calibrator.calibrate(Signals(visual=0.5, reasoning=0.6, features={"verbalized_vision": said})),
            attempt=0,
        ).action
        for said in (0.1, 1.0)
    }
    assert actions == {0.1: "abstain", 1.0: "accept"}


def test_unknown_components_are_refused() -> None:
    from guardrail.errors import CalibrationError

    data = _data(100, 8)
    with pytest.raises(CalibrationError, match="unknown components"):
        DecoupledCalibrator().fit(data["v"], data["r"], answer_correct=data["y"], verbalized={"overall": data["w"]})
