"""Certified thresholds in policies: stated as (max_error, delta), taken from the calibration artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrail import Confidence, ConfigurationError, Guard, decide, load_policy
from guardrail.calibration.fit import fit_artifact
from guardrail.pretrained import resolve_certified
from tests.support.calibration import decoupled_world
from tests.support.fakes import ScriptedModel

CERTIFIED = """
version: 1
name: certified
rules:
  - name: not-certainly-right
    when: {overall: {below: {max_error: 0.35, delta: 0.1}}}
    do: escalate
otherwise: accept
"""


def artifact(targets: list[tuple[float, float]]) -> object:
    world = decoupled_world(4000, seed=5)
    return fit_artifact(
        visual_scores=world["visual"],
        reasoning_scores=world["reasoning"],
        answer_correct=world["answer"],
        perception_correct=world["perception"],
        model_fingerprint="sha256:m",
        data_fingerprint="sha256:d",
        targets=targets,
    )


def test_a_guard_refuses_a_policy_with_unresolved_certified_thresholds() -> None:
    model = ScriptedModel()
    with pytest.raises(ConfigurationError, match=r"rules\[0\]\.when\.overall\.below \(max_error 0\.35, delta 0\.1\)"):
        Guard(model, estimator=model, policy=load_policy(CERTIFIED))


def test_certified_threshold_comes_from_the_artifact() -> None:
    fitted = artifact([(0.35, 0.1)])
    policy = resolve_certified(load_policy(CERTIFIED), fitted)  # type: ignore[arg-type]
    certified = fitted.certified("overall", max_error=0.35, delta=0.1)  # type: ignore[attr-defined]
    assert certified is not None
    assert certified.feasible
    threshold = policy.rules[0].when.overall
    assert threshold is not None
    assert threshold.below == certified.threshold
    assert decide(policy, Confidence(overall=certified.threshold - 1e-6), attempt=0).action.value == "escalate"
    assert decide(policy, Confidence(overall=certified.threshold), attempt=0).action.value == "accept"


def test_a_target_the_artifact_did_not_certify_is_a_clear_error() -> None:
    with pytest.raises(
        ConfigurationError, match=r"certified overall only at \(max_error, delta\) in \[\(0\.3, 0\.1\)\]"
    ):
        resolve_certified(load_policy(CERTIFIED), artifact([(0.3, 0.1)]))  # type: ignore[arg-type]


def test_an_infeasible_certification_refuses_to_build_rather_than_promise() -> None:
    strict = CERTIFIED.replace("max_error: 0.35", "max_error: 0.001")
    with pytest.raises(ConfigurationError, match=r"cannot certify overall at max_error 0\.001"):
        resolve_certified(load_policy(strict), artifact([(0.001, 0.1)]))  # type: ignore[arg-type]


@pytest.mark.slow  # loads the reference model and its artifact (about 10 s on a busy 2-core machine)
def test_the_reference_model_is_named_by_its_name_not_its_folder() -> None:
    """Traces once read ``chat model``: the shipped folder is called ``model``."""
    from guardrail import Request, load_guard
    from guardrail.reference import REFERENCE_MODEL_NAME, reference_model_name, reference_model_path
    from tests.support.integration import png_bytes
    from tests.support.telemetry import make_recorded

    assert reference_model_name(reference_model_path()) == REFERENCE_MODEL_NAME == "guardrail-reference-llava"
    assert reference_model_name(reference_model_path().parent) is None
    rec = make_recorded()
    guard = load_guard(telemetry=rec.telemetry)
    assert guard.backend.name == REFERENCE_MODEL_NAME
    guard.run(Request.from_question("What color is the shape?", [png_bytes(size=64)]))
    assert [s.name for s in rec.attempt_spans()] == ["chat guardrail-reference-llava"]
    assert rec.call_span().name == "guardrail.guard guardrail-reference-llava"
    rec.tracer_provider.shutdown()
    rec.meter_provider.shutdown()


def test_a_shipped_model_may_be_named_where_no_folder_of_that_name_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guardrail.pretrained import model_path
    from guardrail.reference import reference_model_path, scenes_model_path, verbalized_model_path

    monkeypatch.chdir(str(tmp_path))
    assert model_path("reference") == reference_model_path()
    assert model_path("verbalized") == verbalized_model_path()
    assert not (scenes_model_path() / "config.json").exists()  # not shipped yet: a name that says how to get one
    with pytest.raises(ConfigurationError, match=r"ships no scenes model .*guardrail train reference --world scenes"):
        model_path("scenes")
    Path("scenes").mkdir()  # a folder of that name wins: a user's own model is never shadowed
    assert model_path("scenes") == Path("scenes")
    assert model_path("elsewhere") == Path("elsewhere")  # not a name: a folder, reported missing where it is loaded
