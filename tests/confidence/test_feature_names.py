"""The feature names the estimators write are the ones the calibrators read: one definition on both sides."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from guardrail.calibration import decoupled
from guardrail.confidence import feature_names as names
from guardrail.confidence.familiarity import FamiliarityReference


def test_the_familiarity_reference_writes_the_named_features() -> None:
    rng = np.random.default_rng(0)
    features: dict[str, npt.NDArray[np.float64]] = {side: rng.normal(size=(40, 6)) for side in names.SIDES}
    reference = FamiliarityReference.fit(features, features)
    measured = reference.assess({side: rng.normal(size=6).tolist() for side in names.SIDES})
    assert set(measured) == {
        names.TEXT_DISTANCE,
        names.TEXT_SHIFT,
        names.TEXT_FAMILIARITY,
        names.IMAGE_DISTANCE,
        names.IMAGE_SHIFT,
        names.IMAGE_FAMILIARITY,
        names.FAMILIARITY,
    }


def test_the_calibrator_reads_the_same_names() -> None:
    assert decoupled.SHIFT_COVARIATES is names.SHIFT_COVARIATES
    assert decoupled.SHIFT_COVARIATES == ("text_shift", "image_shift", "stability_drop")  # the names artifacts hold
    assert decoupled.VERBALIZED_FEATURES == {"visual": "verbalized_vision", "reasoning": "verbalized_reasoning"}


def test_side_features_are_the_side_and_the_measure() -> None:
    for side in names.SIDES:
        for measure in ("distance", "shift", "familiarity"):
            assert names.side_feature(side, measure) == f"{side}_{measure}"
