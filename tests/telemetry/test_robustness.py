"""Telemetry never breaks a guarded call: failing hooks degrade, aborted calls still end their spans."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from langgraph.errors import GraphInterrupt
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from guardrail import Generation, GenerationOptions, Guard, Request
from guardrail.telemetry import OtelTelemetry
from tests.support.fakes import ScriptedModel, Step
from tests.support.guards import image_request, make_policy
from tests.support.telemetry import Recorded, make_recorded


class FailingProcessor(SpanProcessor):
    """A span processor that raises when spans whose name starts with ``prefix`` start or end."""

    def __init__(self, prefix: str, *, on: str) -> None:
        self.prefix, self.on = prefix, on

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.on == "start" and (span.name or "").startswith(self.prefix):
            raise RuntimeError("processor broke on start")

    def on_end(self, span: ReadableSpan) -> None:
        if self.on == "end" and (span.name or "").startswith(self.prefix):
            raise RuntimeError("processor broke on end")


@pytest.mark.parametrize(("prefix", "on"), [("guardrail.guard", "start"), ("chat", "start"), ("", "end")])
def test_a_failing_hook_never_fails_the_call_and_warns_once(
    prefix: str, on: str, caplog: pytest.LogCaptureFixture
) -> None:
    rec = make_recorded()
    rec.tracer_provider.add_span_processor(FailingProcessor(prefix, on=on))
    guard = rec.guard([Step(visual=0.9, reasoning=0.2), Step(answer="red")])
    with caplog.at_level(logging.DEBUG, logger="guardrail.telemetry"):
        first = guard.run(image_request())
        second = guard.run(image_request())
    assert (first.status, first.answer) == (second.status, second.answer) == ("accepted", "red")
    warnings = [r for r in caplog.records if r.name == "guardrail.telemetry" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "the guarded call goes on" in warnings[0].getMessage()
    assert trace.get_current_span() is trace.INVALID_SPAN
    rec.tracer_provider.shutdown()
    rec.meter_provider.shutdown()


class BrokenTelemetry(OtelTelemetry):
    """Instruments that raise on every record: the metrics half of a hook fails after the span half."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

        class Broken:
            def record(self, *args: Any, **kwargs: Any) -> None:
                raise ValueError("instrument broke")

            add = record

        for name in ("decisions", "confidence", "overhead", "duration", "tokens"):
            setattr(self._instruments, name, Broken())


def test_failing_metrics_never_fail_the_call_and_spans_still_end(recorded: Recorded) -> None:
    telemetry = BrokenTelemetry(tracer_provider=recorded.tracer_provider)
    model = ScriptedModel(steps=[Step(answer="red")])
    result = Guard(model, estimator=model, policy=make_policy(), telemetry=telemetry).run(image_request())
    assert result.answer == "red"
    assert [s.name for s in recorded.spans()] == ["chat scripted", "guardrail.guard scripted"]


class InterruptingModel(ScriptedModel):
    """Raises LangGraph's interrupt from inside the model call, as a human-in-the-loop tool would."""

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        raise GraphInterrupt(())


@pytest.mark.parametrize("max_seconds", [5.0, None], ids=["worker-thread", "calling-thread"])
def test_an_aborted_call_ends_its_open_spans_with_an_error(recorded: Recorded, max_seconds: float | None) -> None:
    policy = make_policy(budget={"max_attempts": 3, "max_seconds": max_seconds})
    model = InterruptingModel()
    guard = Guard(model, estimator=model, policy=policy, telemetry=recorded.telemetry)
    tracer = recorded.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("app") as app:
        with pytest.raises(GraphInterrupt):
            guard.run(image_request())
        assert trace.get_current_span() is app  # the guard's spans are detached again
    (attempt,) = recorded.attempt_spans()
    call = recorded.call_span()
    for span in (attempt, call):
        assert span.end_time is not None
        assert span.status.status_code is StatusCode.ERROR
        assert dict(span.attributes or {})["error.type"] == "GraphInterrupt"
    assert attempt.status.description == "aborted by GraphInterrupt"
    assert trace.get_current_span() is trace.INVALID_SPAN
