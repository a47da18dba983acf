"""Never silently uncalibrated: a guard without a calibration warns, says ``calibrated: false`` on its results and
traces, and does not accept raw scores unless its policy opted in.

End to end on the shipped reference model copied to a folder without its ``guardrail_calibration.json`` (the
situation of a user who forgot to calibrate); the same model with its artifact is the calibrated counterpart.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from guardrail import Guard, GuardResult, PassThroughCalibrator, Request, UncalibratedWarning, load_guard
from guardrail.calibration.fit import MIN_FIT_ROWS, MIN_ROWS
from guardrail.reference import reference_model_path
from guardrail.telemetry import _names as n
from tests.support.fakes import ScriptedModel, Step
from tests.support.guards import image_request, make_policy
from tests.support.integration import png_bytes
from tests.support.telemetry import make_recorded
from tests.support.uncalibrated import bare_reference_model

QUESTION = "What color is the shape?"


@pytest.fixture(scope="module")
def bare_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bare_reference_model(tmp_path_factory.mktemp("bare"))


def red_circle() -> Request:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((14, 14, 50, 50), fill="red")
    return Request.from_question(QUESTION, [image])


def test_the_model_without_its_artifact_warns_saying_how_to_calibrate(bare_model: Path) -> None:
    with pytest.warns(UncalibratedWarning) as caught:
        guard = load_guard(bare_model)
    (warning,) = caught
    message = str(warning.message)
    assert "has no calibration: its confidences are raw scores, not probabilities" in message
    assert "policy 'default' will accept no answer (each ends in on_uncalibrated: abstain)" in message
    assert "`guardrail calibrate --model FOLDER --data labelled.jsonl --out FOLDER/guardrail_calibration.json`" in (
        message
    )
    assert f"at the very least {MIN_ROWS} labelled items" in message  # the real minimum, from calibration/fit.py
    assert f"each component with {MIN_FIT_ROWS} labelled rows" in message
    assert "a few hundred items at least in practice" in message
    assert "allow_uncalibrated=True" in message
    assert "accept_uncalibrated: true" in message
    assert warning.filename == __file__  # the user's load_guard line, not guardrail's own
    assert guard.calibrated is False


def test_its_answers_are_not_accepted_and_say_calibrated_false(bare_model: Path) -> None:
    with pytest.warns(UncalibratedWarning):
        guard = load_guard(bare_model)
    result = guard.run(red_circle())
    assert (result.status, result.answer) == ("abstained", None)
    assert len(result.attempts) == 1  # no remedy is tried on numbers that can never be accepted
    decision = result.final_decision
    assert (decision.action.value, decision.rule) == ("abstain", "on_uncalibrated")
    assert decision.reason.startswith("uncalibrated: the guard has no calibration, so its confidences are raw scores")
    assert result.calibrated is False
    assert result.confidence is not None
    assert result.confidence.overall is not None  # measured: raw, not missing
    assert result.attempts[0].generation is not None
    again = GuardResult.model_validate_json(result.model_dump_json())
    assert again.confidence is not None
    assert again.confidence.calibrated is False
    assert '"calibrated":false' in result.model_dump_json()


def test_the_explicit_opt_in_lets_the_rules_accept_on_raw_scores(bare_model: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the opt-in is the user's acknowledgement: no warning
        guard = load_guard(bare_model, allow_uncalibrated=True)
    assert guard.policy.accept_uncalibrated
    assert guard.policy.name == "default"
    result = guard.run(red_circle())
    assert result.final_decision.rule != "on_uncalibrated"
    assert (result.status, result.answer) == ("accepted", "red")  # the case: the rules accept raw scores
    assert result.calibrated is False  # still said


def test_the_reference_model_with_its_artifact_is_calibrated_and_unchanged() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard = load_guard(reference_model_path())
    assert guard.calibrated
    result = guard.run(red_circle())
    assert result.calibrated is True
    assert result.final_decision.rule != "on_uncalibrated"


def test_the_trace_says_calibrated_false(bare_model: Path) -> None:
    recorded = make_recorded()
    with pytest.warns(UncalibratedWarning):
        guard = load_guard(bare_model, telemetry=recorded.telemetry)
    guard.run(Request.from_question(QUESTION, [png_bytes(size=64)]))
    call = dict(recorded.call_span().attributes or {})
    assert n.GUARDRAIL_CALIBRATED == "guardrail.calibrated"
    assert call[n.GUARDRAIL_CALIBRATED] is False
    assert call[n.GUARDRAIL_DECISION_RULE] == "on_uncalibrated"
    assert [dict(s.attributes or {})[n.GUARDRAIL_CALIBRATED] for s in recorded.attempt_spans()] == [False]
    recorded.tracer_provider.shutdown()
    recorded.meter_provider.shutdown()


# -- the guard's own rules, on a scripted model -------------------------------------------------------------------


def test_a_guard_without_a_calibrator_warns_and_goes_to_on_uncalibrated() -> None:
    model = ScriptedModel(steps=(Step(answer="red", visual=0.99, reasoning=0.99),))
    policy = make_policy(accept_uncalibrated=False, on_uncalibrated={"do": "escalate", "with": {"reason": "raw"}})
    with pytest.warns(UncalibratedWarning, match=r"each ends in on_uncalibrated: escalate"):
        guard = Guard(model, estimator=model, policy=policy)
    result = guard.run(image_request())
    assert (result.status, result.final_decision.rule, result.calibrated) == ("escalated", "on_uncalibrated", False)
    assert result.escalation is not None
    assert result.escalation.candidate_answer == "red"


def test_a_calibrator_that_declares_calibrated_signals_is_trusted() -> None:
    model = ScriptedModel(steps=(Step(answer="red", visual=0.99, reasoning=0.99),))
    policy = make_policy(accept_uncalibrated=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard = Guard(model, estimator=model, policy=policy, calibrator=PassThroughCalibrator(calibrated=True))
    result = guard.run(image_request())
    assert (guard.calibrated, result.status, result.calibrated) == (True, "accepted", True)


def test_allow_uncalibrated_copies_the_policy_without_changing_the_callers() -> None:
    model = ScriptedModel(steps=(Step(answer="red", visual=0.99, reasoning=0.99),))
    policy = make_policy(accept_uncalibrated=False)
    guard = Guard(model, estimator=model, policy=policy, allow_uncalibrated=True)
    assert guard.policy.accept_uncalibrated
    assert not policy.accept_uncalibrated
    assert guard.run(image_request()).status == "accepted"


# -- a remote model, built by the LangChain chat model ------------------------------------------------------------


def test_a_chat_model_over_a_server_without_an_artifact_is_uncalibrated_and_says_so() -> None:
    from guardrail.integrations import GuardrailChatModel
    from tests.support.fake_openai_server import closed_port

    base_url = f"http://127.0.0.1:{closed_port()}/v1"  # nothing is called: the guard is only built
    with pytest.warns(UncalibratedWarning, match="the guard over model 'served-vlm' has no calibration"):
        bare = GuardrailChatModel(model="served-vlm", base_url=base_url)  # type: ignore[call-arg]  # alias
    assert bare.guard is not None
    assert bare.guard.calibrated is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        artifact = reference_model_path() / "guardrail_calibration.json"
        calibrated = GuardrailChatModel(model="served-vlm", base_url=base_url, artifact=artifact)  # type: ignore[call-arg]
        opted_in = GuardrailChatModel(model="served-vlm", base_url=base_url, policy=make_policy())  # type: ignore[call-arg]
    assert calibrated.guard is not None
    assert calibrated.guard.calibrated
    assert opted_in.guard is not None
    assert (opted_in.guard.calibrated, opted_in.guard.policy.accept_uncalibrated) == (False, True)
