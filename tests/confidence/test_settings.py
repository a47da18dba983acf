"""The typed probe settings: what an artifact records under ``info["estimator"]``, read back the same way by
calibration and by ``load_guard``; old records load with the paper's defaults, bad ones name their field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from guardrail.calibration.artifact import load_artifact
from guardrail.calibration.perturbation_choice import PAPER_DEFAULT as CALIBRATION_PAPER_DEFAULT
from guardrail.calibration.perturbation_choice import ProbeSetting as CalibrationProbeSetting
from guardrail.confidence.settings import (
    PAPER_DEFAULT,
    EstimatorSetting,
    ProbeSetting,
    StabilitySetting,
    parse_estimator_info,
)
from guardrail.confidence.stability import StabilitySetting as StabilityModuleSetting
from guardrail.pretrained import estimator_for
from guardrail.reference import reference_model_path, verbalized_model_path

SHIPPED = {
    "model": EstimatorSetting(
        draws=1,
        probe=ProbeSetting(
            blackout_probability=1.0,
            grounding_weight=0.1,
            stability=StabilitySetting(family="geometric", count=8, seed=0),
            stability_weight=8.0,
        ),
    ),
    "verbalized_model": EstimatorSetting(draws=1, probe=ProbeSetting(blackout_probability=1.0, grounding_weight=0.1)),
}


@pytest.mark.parametrize("folder", ["model", "verbalized_model"])
def test_the_shipped_artifacts_load_unchanged(folder: str) -> None:
    path = (reference_model_path() if folder == "model" else verbalized_model_path()) / "guardrail_calibration.json"
    artifact = load_artifact(path)
    assert artifact.estimator_setting == SHIPPED[folder]
    # written back, the record reads the same; every key it had keeps its value (an older record gains the
    # stability probe's defaults, off)
    written = artifact.estimator_setting.as_info()
    assert parse_estimator_info(written) == artifact.estimator_setting
    recorded = json.loads(path.read_text())["info"]["estimator"]
    assert {key: written[key] for key in recorded} == recorded
    estimator = estimator_for(artifact)
    assert (estimator.draws, estimator.perturbation, estimator.blackout_probability) == (1, "blackout", 1.0)
    assert estimator.normalization == artifact.visual_normalization
    assert estimator.stability == SHIPPED[folder].probe.stability


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (None, EstimatorSetting()),
        ({}, EstimatorSetting()),
        ({"draws": 3, "perturbation": "noise"}, EstimatorSetting(draws=3, probe=ProbeSetting(perturbation="noise"))),
        (
            {"draws": 1, "perturbation": "blackout", "blackout_probability": 1.0},
            EstimatorSetting(probe=ProbeSetting(blackout_probability=1.0)),
        ),
        (
            {"draws": 1, "perturbation": "grey", "blackout_probability": 0.8, "grounding_weight": 0.25},
            EstimatorSetting(probe=ProbeSetting(perturbation="grey", grounding_weight=0.25)),
        ),
    ],
    ids=["none", "empty", "draws-and-kind", "with-probability", "with-weight"],
)
def test_records_written_before_a_setting_existed_take_its_default(
    record: dict[str, Any] | None, expected: EstimatorSetting
) -> None:
    assert parse_estimator_info(record) == expected
    assert parse_estimator_info(record).probe.stability.count == 0  # no stability probe before it existed


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"draws": 0}, r"^info\.estimator\.draws: Input should be greater than or equal to 1 \(got 0\)$"),
        ({"blackout_probability": 1.5}, r"^info\.estimator\.blackout_probability: .* less than or equal to 1"),
        ({"grounding_weight": "heavy"}, r"^info\.estimator\.grounding_weight: .*valid number.* \(got 'heavy'\)$"),
        ({"stability": {"count": 99}}, r"^info\.estimator\.stability\.count: .* less than or equal to 32 \(got 99\)"),
        ({"stability": {"family": "warp"}}, r"^info\.estimator\.stability\.family: Input should be 'photometric'"),
        ({"stability_weight": -1}, r"^info\.estimator\.stability_weight: .* greater than or equal to 0"),
        ({"perturbations": "noise"}, r"^info\.estimator\.perturbations: unknown setting$"),
        ("blackout", r"^info\.estimator: expected an object of probe settings, got str$"),
    ],
)
def test_a_bad_record_is_an_error_naming_the_field(record: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_estimator_info(record)


def test_settings_are_frozen_and_changed_only_through_checked_copies() -> None:
    with pytest.raises(ValidationError):
        PAPER_DEFAULT.grounding_weight = 0.5
    assert PAPER_DEFAULT.weighted(0.5).grounding_weight == 0.5
    assert PAPER_DEFAULT.grounding_weight == 1.0
    with pytest.raises(ValidationError, match="grounding_weight"):
        PAPER_DEFAULT.weighted(2.0)
    with pytest.raises(ValidationError, match="perturbation"):
        PAPER_DEFAULT.replaced(perturbation="zoom")
    off = PAPER_DEFAULT.with_stability(StabilitySetting(count=0), 5.0)
    assert off.stability_weight == 0.0  # no views: nothing to weigh
    assert len({PAPER_DEFAULT, ProbeSetting(), PAPER_DEFAULT.weighted(0.5)}) == 2  # hashable, equal by value


def test_one_definition_serves_calibration_and_the_stability_probe() -> None:
    assert CalibrationProbeSetting is ProbeSetting
    assert CALIBRATION_PAPER_DEFAULT is PAPER_DEFAULT
    assert StabilityModuleSetting is StabilitySetting
    assert ProbeSetting(perturbation="blackout", blackout_probability=0.8, grounding_weight=1.0) == PAPER_DEFAULT


def test_an_unknown_override_of_the_perturbation_is_a_configuration_error() -> None:
    from guardrail.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"`perturbation` must be one of blackout, noise, grey, blur"):
        estimator_for(None, perturbation="zoom")
    assert estimator_for(None, perturbation="grey", draws=2).perturbation == "grey"


def test_black_box_setting_round_trips_and_names_bad_values() -> None:
    from guardrail.confidence.settings import BlackBoxSetting, parse_blackbox_info

    setting = BlackBoxSetting(draws=4, logprobs=False, reask_draws=4)
    assert parse_blackbox_info(setting.as_info()) == setting
    assert parse_blackbox_info(None) is None
    assert setting.requests_per_call == 9
    assert BlackBoxSetting(draws=2).requests_per_call == 3
    estimator = setting.estimator()
    assert (estimator.draws, estimator.reask_draws, estimator.use_logprobs, estimator.server_scoring) == (
        4, 4, False, False,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"^info.blackbox.draws: Input should be greater than or equal to 1 \(got 0\)"):
        parse_blackbox_info({"draws": 0})
    with pytest.raises(ValueError, match=r"^info.blackbox.drawz: unknown setting$"):
        parse_blackbox_info({"drawz": 2})
