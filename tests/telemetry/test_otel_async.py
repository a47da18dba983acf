"""The async twin: ``Guard.arun`` produces the same span tree, with the attempt span current in ``agenerate``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langgraph.errors import GraphInterrupt
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from guardrail import Generation, GenerationOptions, Guard, Request
from tests.support.fakes import AsyncScriptedModel, Step
from tests.support.guards import image_request, make_policy
from tests.support.telemetry import Recorded


class TracingAsyncModel(AsyncScriptedModel):
    """Opens a span of its own inside ``agenerate``, as an instrumented HTTP client would."""

    tracer: Any = None
    seen: list[int] | None = None

    async def agenerate(self, request: Request, options: GenerationOptions) -> Generation:
        assert self.seen is not None
        self.seen.append(trace.get_current_span().get_span_context().span_id)
        with self.tracer.start_as_current_span("backend.inner"):
            return await super().agenerate(request, options)


@pytest.mark.parametrize("max_seconds", [5.0, None], ids=["wait_for", "no-budget"])
def test_arun_nests_the_backend_span_under_the_attempt_span(recorded: Recorded, max_seconds: float | None) -> None:
    model = TracingAsyncModel(steps=[Step(visual=0.9, reasoning=0.2), Step(answer="red")])
    model.tracer, model.seen = recorded.tracer_provider.get_tracer("backend"), []
    policy = make_policy(budget={"max_attempts": 3, "max_seconds": max_seconds})
    guard = Guard(model, estimator=model, policy=policy, telemetry=recorded.telemetry)

    result = asyncio.run(guard.arun(image_request()))
    assert result.answer == "red"
    attempts = recorded.attempt_spans()
    assert [s.name for s in attempts] == ["chat scripted", "chat scripted"]
    assert model.seen == [s.context.span_id for s in attempts]
    inner = sorted(recorded.named("backend.inner"), key=lambda s: s.start_time or 0)
    assert [s.parent.span_id if s.parent else None for s in inner] == [s.context.span_id for s in attempts]
    call = recorded.call_span()
    assert all(s.parent is not None and s.parent.span_id == call.context.span_id for s in attempts)


class InterruptingAsyncModel(AsyncScriptedModel):
    async def agenerate(self, request: Request, options: GenerationOptions) -> Generation:
        raise GraphInterrupt(())


def test_an_aborted_arun_ends_its_open_spans_with_an_error(recorded: Recorded) -> None:
    model = InterruptingAsyncModel()
    guard = Guard(model, estimator=model, policy=make_policy(), telemetry=recorded.telemetry)
    with pytest.raises(GraphInterrupt):
        asyncio.run(guard.arun(image_request()))
    for span in (*recorded.attempt_spans(), recorded.call_span()):
        assert span.end_time is not None
        assert span.status.status_code is StatusCode.ERROR
        assert dict(span.attributes or {})["error.type"] == "GraphInterrupt"
