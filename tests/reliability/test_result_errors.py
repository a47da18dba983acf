"""The result's ``error`` is the error that ended the call; an attempt's own error stays on its attempt record.

The issue: after a failed first attempt and a successful re-ask, the accepted result still had ``error`` set.
"""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from guardrail import BackendError, Guard, GuardResult, Request
from tests.support.faults import FlakyModel, policy


def request() -> Request:
    return Request.from_question("What colour is the shape?", [Image.new("RGB", (16, 16), (200, 30, 30))])


def run(guard: Guard, mode: str) -> GuardResult:
    return guard.run(request()) if mode == "sync" else asyncio.run(guard.arun(request()))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("max_seconds", [None, 5.0])
def test_an_accepted_result_after_a_failed_attempt_has_no_error(mode: str, max_seconds: float | None) -> None:
    model = FlakyModel(fail_on=frozenset({0}), error=BackendError)
    result = run(Guard(model, estimator=model, policy=policy(max_seconds=max_seconds)), mode)
    assert result.status == "accepted"
    assert result.error is None
    assert result.attempts[0].error is not None
    assert result.attempts[0].error.type == "BackendError"
    assert "injected failure on attempt 0" in result.attempts[0].error.message
    assert result.attempts[1].error is None


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_error_that_ended_the_call_is_the_results_error(mode: str) -> None:
    model = FlakyModel(fail_on=frozenset({0, 1, 2}), error=BackendError)
    result = run(Guard(model, estimator=model, policy=policy()), mode)
    assert result.status == "abstained"
    assert result.error is not None
    assert result.error.message == "injected failure on attempt 2"
    assert [a.error is not None for a in result.attempts] == [True, True, True]


def test_a_failing_view_provider_then_a_good_answer_leaves_no_error() -> None:
    def provider(req: Request, count: int) -> list[object]:
        raise RuntimeError("camera offline")

    model = FlakyModel(fail_on=frozenset())
    views_policy = policy(
        rules=[
            {"when": {"attempt": {"at_least": 1}}, "do": "accept"},
            {"when": {"visual": {"below": 0.95}}, "do": "fetch_more_views", "with": {"views": 1, "provider": "camera"}},
        ],
        on_error="re_ask",
    )
    guard = Guard(model, estimator=model, policy=views_policy, view_providers={"camera": provider})  # type: ignore[dict-item]
    result = guard.run(request())
    assert result.status == "accepted"
    assert result.error is None
    on_error = [d for d in result.decisions if d.rule == "on_error"]
    assert len(on_error) == 1
    assert "camera offline" in on_error[0].reason
