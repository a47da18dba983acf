"""The guarded-call loop: actions, budgets, failures, and concurrency, with a scripted model."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from guardrail import (
    BackendError,
    Confidence,
    ConfigurationError,
    EstimatorError,
    Guard,
    ImageBlock,
    Request,
    Signals,
)
from guardrail.calibration.base import PassThroughCalibrator
from guardrail.types import Action
from tests.support.fakes import EchoModel, ScriptedModel, Step
from tests.support.guards import image_request, make_guard, make_policy


def test_confident_answer_is_accepted_with_its_confidence() -> None:
    guard, model = make_guard([Step(answer="red", visual=0.9, reasoning=0.8)])
    result = guard.run(image_request())
    assert result.status == "accepted"
    assert result.answer == "red"
    assert result.confidence is not None
    assert (result.confidence.visual, result.confidence.reasoning) == (0.9, 0.8)
    assert result.confidence.overall == pytest.approx(2 * 0.9 * 0.8 / 1.7)
    assert [d.rule for d in result.decisions] == ["otherwise"]
    assert len(model.calls) == 1


def test_perception_doubt_fetches_views_and_calls_again_with_them() -> None:
    guard, model = make_guard([Step(visual=0.2, reasoning=0.9), Step(answer="red", visual=0.9, reasoning=0.9)])
    result = guard.run(image_request())
    assert result.status == "accepted"
    assert result.answer == "red"
    assert [d.action for d in result.decisions] == [Action.FETCH_MORE_VIEWS, Action.ACCEPT]
    assert result.decisions[0].rule == "rules[0] perception"
    second_request = model.calls[1][0]
    assert len(second_request.images) == 3  # the original and two zoomed views
    assert second_request.question == "What colour is the shape?"


def test_reasoning_doubt_re_asks_with_the_follow_up_prompt() -> None:
    guard, model = make_guard([Step(visual=0.9, reasoning=0.1), Step(answer="no", visual=0.9, reasoning=0.9)])
    result = guard.run(image_request())
    assert result.answer == "no"
    request, options = model.calls[1]
    assert request.question.endswith("Think again.")
    assert options.attempt == 1
    assert len(request.images) == 1


def test_low_confidence_on_every_attempt_exhausts_the_budget_and_abstains() -> None:
    guard, model = make_guard([Step(visual=0.9, reasoning=0.1)])
    result = guard.run(image_request())
    assert result.status == "abstained"
    assert result.answer is None
    assert len(model.calls) == 3
    assert result.final_decision.rule == "on_exhausted"
    assert "budget of 3 attempts spent" in result.final_decision.reason


def test_escalation_carries_the_best_candidate_but_never_returns_it_as_the_answer() -> None:
    guard, _ = make_guard([Step(answer="blue", visual=0.1, reasoning=0.2)])
    result = guard.run(image_request())
    assert result.status == "escalated"
    assert result.answer is None
    assert result.escalation is not None
    assert result.escalation.candidate_answer == "blue"
    assert result.escalation.question == "What colour is the shape?"


def test_unknown_component_follows_its_explicit_rule() -> None:
    guard, _ = make_guard([Step(visual=None, reasoning=0.95)])
    result = guard.run(image_request())
    assert result.status == "abstained"
    assert result.final_decision.rule == "rules[3] unknown"
    assert result.confidence is not None
    assert result.confidence.visual is None
    assert result.confidence.overall is None


@pytest.mark.parametrize("fail_in", ["backend", "estimator"])
def test_a_failing_stage_ends_in_on_error_with_the_error_kept(fail_in: str) -> None:
    guard, _ = make_guard([Step(fail=RuntimeError, fail_in=fail_in)])
    result = guard.run(image_request())
    assert result.status == "abstained"
    assert result.answer is None
    assert result.final_decision.rule == "on_error"
    assert result.error is not None
    assert result.error.stage == fail_in
    assert result.error.type == "RuntimeError"
    assert "scripted" in result.error.message


class BrokenCalibrator:
    def calibrate(self, signals: Signals) -> Confidence:
        raise ValueError("calibrator exploded")


def test_a_failing_calibrator_ends_in_on_error() -> None:
    guard, _ = make_guard([Step()], calibrator=BrokenCalibrator())
    result = guard.run(image_request())
    assert result.status == "abstained"
    assert result.error is not None
    assert result.error.stage == "calibrator"


def test_on_error_re_ask_retries_within_the_budget() -> None:
    policy = make_policy(on_error="re_ask")
    guard, model = make_guard([Step(fail=BackendError), Step(answer="red")], policy=policy)
    result = guard.run(image_request())
    assert result.status == "accepted"
    assert result.answer == "red"
    assert len(model.calls) == 2
    assert result.attempts[0].error is not None
    assert result.attempts[0].error.type == "BackendError"


def test_on_error_re_ask_never_exceeds_max_attempts() -> None:
    policy = make_policy(on_error="re_ask")
    guard, model = make_guard([Step(fail=EstimatorError)], policy=policy)
    result = guard.run(image_request())
    assert result.status == "abstained"
    assert len(model.calls) == 3


def test_a_slow_model_stops_being_waited_on_at_max_seconds() -> None:
    policy = make_policy(budget={"max_attempts": 3, "max_seconds": 0.2})
    guard, _ = make_guard([Step(delay=2.0)], policy=policy)
    start = time.perf_counter()
    result = guard.run(image_request())
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert result.status == "abstained"
    assert result.final_decision.rule == "on_exhausted"
    assert result.error is not None
    assert result.error.type == "BackendTimeout"


def test_fallback_switches_to_the_registered_model() -> None:
    policy = make_policy(rules=[{"when": {"overall": {"below": 0.5}}, "do": "fallback", "with": {"model": "big"}}])
    small = ScriptedModel(steps=[Step(answer="small says blue")], name="small")
    big = ScriptedModel(steps=[Step(answer="big says red")], name="big")

    class TrustsOnlyBig:
        def estimate(self, backend: Any, request: Request, generation: Any) -> Signals:
            score = 0.9 if generation.model == "big" else 0.2
            return Signals(visual=score, reasoning=score)

    guard = Guard(small, estimator=TrustsOnlyBig(), policy=policy, fallbacks={"big": big})
    result = guard.run(image_request())
    assert result.answer == "big says red"
    assert [a.model for a in result.attempts] == ["small", "big"]


def test_policy_naming_unregistered_parts_fails_at_construction() -> None:
    fallback_policy = make_policy(
        rules=[{"when": {"overall": {"below": 0.5}}, "do": "fallback", "with": {"model": "x"}}]
    )
    model = ScriptedModel()
    with pytest.raises(ConfigurationError, match=r"falls back to model 'x'.*no fallbacks"):
        Guard(model, estimator=model, policy=fallback_policy)
    views_policy = make_policy(
        rules=[{"when": {"visual": {"below": 0.5}}, "do": "fetch_more_views", "with": {"provider": "camera"}}]
    )
    with pytest.raises(ConfigurationError, match=r"view provider 'camera'.*\['tiles', 'zoom'\]"):
        Guard(model, estimator=model, policy=views_policy)


class EmptyProvider:
    def __call__(self, request: Request, count: int) -> Sequence[ImageBlock]:
        return []


class FailingProvider:
    def __call__(self, request: Request, count: int) -> Sequence[ImageBlock]:
        raise OSError("camera offline")


@pytest.mark.parametrize(
    ("provider", "message"), [(EmptyProvider(), "returned no images"), (FailingProvider(), "camera offline")]
)
def test_a_view_provider_failure_falls_through_to_on_error(provider: Any, message: str) -> None:
    policy = make_policy(
        rules=[{"when": {"visual": {"below": 0.5}}, "do": "fetch_more_views", "with": {"provider": "cam"}}]
    )
    guard, model = make_guard([Step(visual=0.1)], policy=policy, view_providers={"cam": provider})
    result = guard.run(image_request())
    assert result.status == "abstained"
    assert result.final_decision.rule == "on_error"
    assert result.error is not None
    assert result.error.stage == "view_provider"
    assert message in result.error.message
    assert len(model.calls) == 1


def test_zoom_without_an_image_is_a_view_provider_error() -> None:
    guard, _ = make_guard([Step(visual=0.1)])
    result = guard.run(Request.from_question("What is it?"))
    assert result.status == "abstained"
    assert result.error is not None
    assert result.error.stage == "view_provider"


def test_a_backend_returning_the_wrong_type_is_a_backend_error() -> None:
    class Wrong(ScriptedModel):
        def generate(self, request: Request, options: Any) -> Any:
            return "plain text"

    model = Wrong()
    result = Guard(model, estimator=model, policy=make_policy()).run(image_request())
    assert result.status == "abstained"
    assert result.error is not None
    assert result.error.stage == "backend"
    assert "expected guardrail.Generation" in result.error.message


def test_graph_interrupts_pass_through_the_guard() -> None:
    from langgraph.errors import GraphInterrupt

    guard, _ = make_guard([Step(fail=GraphInterrupt)])
    with pytest.raises(GraphInterrupt):
        guard.run(image_request())


def test_results_round_trip_through_json() -> None:
    guard, _ = make_guard([Step(visual=0.2, reasoning=0.9), Step(answer="red")])
    result = guard.run(image_request())
    again = type(result).model_validate_json(result.model_dump_json())
    assert again == result


def test_no_time_budget_runs_on_the_calling_thread() -> None:
    seen: list[str] = []

    class ThreadRecorder(ScriptedModel):
        def generate(self, request: Request, options: Any) -> Any:
            seen.append(threading.current_thread().name)
            return super().generate(request, options)

    model = ThreadRecorder()
    policy = make_policy(budget={"max_attempts": 1, "max_seconds": None})
    Guard(model, estimator=model, policy=policy).run(image_request())
    assert seen == [threading.current_thread().name]


def test_guard_is_safe_under_threads() -> None:
    model = EchoModel()
    guard = Guard(model, estimator=model, policy=make_policy(rules=[]), calibrator=PassThroughCalibrator())
    results: dict[int, str | None] = {}

    def worker(i: int) -> None:
        results[i] = guard.run(Request.from_question(f"question {i}")).answer

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"answer to question {i}" for i in range(50)}
