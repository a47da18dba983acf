"""The async twin of the guarded-call loop: same decisions, real concurrency, bounded waiting."""

from __future__ import annotations

import asyncio
import time

import pytest

from guardrail import Guard, Request
from tests.support.fakes import AsyncScriptedModel, EchoModel, ScriptedModel, Step
from tests.support.guards import image_request, make_policy

THRESHOLD_POLICY = make_policy(
    rules=[{"when": {"visual": {"below": 0.5}}, "do": "abstain"}], budget={"max_attempts": 2, "max_seconds": 10}
)


@pytest.mark.parametrize("model_class", [ScriptedModel, AsyncScriptedModel])
def test_arun_takes_the_same_decisions_as_run(model_class: type[ScriptedModel]) -> None:
    steps = [Step(visual=0.2, reasoning=0.9), Step(visual=0.9, reasoning=0.1), Step(visual=0.9, reasoning=0.1)]
    sync_model, async_model = ScriptedModel(steps=steps), model_class(steps=steps)
    sync_result = Guard(sync_model, estimator=sync_model, policy=make_policy()).run(image_request())
    async_result = asyncio.run(Guard(async_model, estimator=async_model, policy=make_policy()).arun(image_request()))
    assert [(d.action, d.rule) for d in async_result.decisions] == [(d.action, d.rule) for d in sync_result.decisions]
    assert async_result.status == sync_result.status == "abstained"


@pytest.mark.parametrize("native_async", [True, False])
def test_200_concurrent_calls_lose_and_cross_nothing(native_async: bool) -> None:
    model = EchoModel()
    if not native_async:
        model = ScriptedEcho()
    guard = Guard(model, estimator=model, policy=THRESHOLD_POLICY)

    async def main() -> list[tuple[str, str | None, str]]:
        requests = [Request.from_question(f"question {i}") for i in range(200)]
        results = await asyncio.gather(*(guard.arun(r) for r in requests))
        return [(r.question, res.answer, res.status) for r, res in zip(requests, results, strict=True)]

    outcomes = asyncio.run(main())
    assert len(outcomes) == 200
    for i, (question, answer, status) in enumerate(outcomes):
        assert question == f"question {i}"
        expected_visual = (i % 10) / 10 + 0.05
        if expected_visual < 0.5:
            assert (status, answer) == ("abstained", None)
        else:
            assert (status, answer) == ("accepted", f"answer to question {i}")


class ScriptedEcho(EchoModel):
    """EchoModel without ``agenerate``: exercises the worker-thread path of ``arun``."""

    agenerate = None  # type: ignore[assignment]


def test_arun_stops_waiting_on_a_slow_async_model() -> None:
    model = AsyncScriptedModel(steps=[Step(delay=5.0)])
    policy = make_policy(budget={"max_attempts": 2, "max_seconds": 0.2})
    guard = Guard(model, estimator=model, policy=policy)
    start = time.perf_counter()
    result = asyncio.run(guard.arun(image_request()))
    assert time.perf_counter() - start < 1.0
    assert result.status == "abstained"
    assert result.error is not None
    assert result.error.type == "BackendTimeout"


def test_arun_stops_waiting_on_a_slow_sync_model() -> None:
    model = ScriptedModel(steps=[Step(delay=5.0)])
    policy = make_policy(budget={"max_attempts": 2, "max_seconds": 0.2})
    guard = Guard(model, estimator=model, policy=policy)
    start = time.perf_counter()
    result = asyncio.run(guard.arun(image_request()))
    assert time.perf_counter() - start < 1.0
    assert result.final_decision.rule == "on_exhausted"


def test_arun_awaits_an_async_estimator_and_keeps_its_errors() -> None:
    from guardrail import Generation, Signals

    class AsyncEstimatorFake:
        def __init__(self, fail: bool) -> None:
            self.fail = fail
            self.awaited = 0

        def estimate(self, backend: object, request: Request, generation: Generation) -> Signals:
            raise AssertionError("the sync estimate must not be used when aestimate exists")

        async def aestimate(self, backend: object, request: Request, generation: Generation) -> Signals:
            self.awaited += 1
            await asyncio.sleep(0)
            if self.fail:
                raise ConnectionError("scoring server unreachable")
            return Signals(visual=0.9, reasoning=0.9)

    model = AsyncScriptedModel(steps=[Step(answer="red")])
    good = AsyncEstimatorFake(fail=False)
    result = asyncio.run(Guard(model, estimator=good, policy=make_policy()).arun(image_request()))
    assert (result.status, result.answer, good.awaited) == ("accepted", "red", 1)

    bad = AsyncEstimatorFake(fail=True)
    result = asyncio.run(Guard(model, estimator=bad, policy=make_policy()).arun(image_request()))
    assert result.status == "abstained"
    assert result.error is not None
    assert (result.error.stage, result.error.type) == ("estimator", "ConnectionError")
