"""OtelTelemetry over a real guarded call: span tree, GenAI attributes, evaluation events, decisions, metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from guardrail import BackendError, Generation, GenerationOptions, Guard, Request
from guardrail.telemetry._names import confidence_label, familiarity_label, score_label
from tests.support.fakes import FamiliarityCalibrator, ScriptedModel, Step
from tests.support.guards import image_request, make_policy
from tests.support.telemetry import Recorded, make_recorded


def events(span: ReadableSpan, name: str = "gen_ai.evaluation.result") -> dict[str, dict[str, Any]]:
    """Evaluation events of a span, keyed by ``gen_ai.evaluation.name``."""
    out: dict[str, dict[str, Any]] = {}
    for event in span.events:
        if event.name == name:
            attributes = dict(event.attributes or {})
            out[str(attributes["gen_ai.evaluation.name"])] = attributes
    return out


def test_one_call_span_with_one_chat_span_per_attempt(recorded: Recorded) -> None:
    guard = recorded.guard([Step(visual=0.2, reasoning=0.9), Step(answer="red", visual=0.9, reasoning=0.8)])
    result = guard.run(image_request())
    assert result.status == "accepted"

    call = recorded.call_span()
    attempts = recorded.attempt_spans()
    assert call.name == "guardrail.guard scripted"
    assert call.kind is SpanKind.INTERNAL
    assert [s.name for s in attempts] == ["chat scripted", "chat scripted"]
    for index, span in enumerate(attempts):
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == call.context.span_id
        attributes = dict(span.attributes or {})
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.request.model"] == "scripted"
        assert attributes["gen_ai.response.model"] == "scripted"
        assert attributes["gen_ai.provider.name"] == "_OTHER"
        assert attributes["gen_ai.usage.input_tokens"] == 0
        assert attributes["gen_ai.usage.output_tokens"] == 0
        assert attributes["guardrail.attempt"] == index
    # The guarded-call span is no GenAI operation: no gen_ai.* key, so backends never count it as an LLM call.
    assert not [key for key in (call.attributes or {}) if key.startswith("gen_ai.")]


def test_evaluation_events_carry_each_calibrated_confidence(recorded: Recorded) -> None:
    guard = recorded.guard([Step(visual=0.9, reasoning=0.6)])
    result = guard.run(image_request())
    assert result.confidence is not None
    assert result.confidence.overall is not None

    evaluations = events(recorded.attempt_spans()[0])
    assert set(evaluations) == {
        "visual_confidence",
        "reasoning_confidence",
        "overall_confidence",
        "familiarity_confidence",
        "stability_confidence",
    }
    assert evaluations["visual_confidence"]["gen_ai.evaluation.score.value"] == pytest.approx(0.9)
    assert evaluations["visual_confidence"]["gen_ai.evaluation.score.label"] == "high"
    assert evaluations["reasoning_confidence"]["gen_ai.evaluation.score.value"] == pytest.approx(0.6)
    assert evaluations["reasoning_confidence"]["gen_ai.evaluation.score.label"] == "medium"
    assert evaluations["overall_confidence"]["gen_ai.evaluation.score.value"] == pytest.approx(
        result.confidence.overall
    )


def test_an_unknown_component_is_an_unknown_event_without_a_score(recorded: Recorded) -> None:
    guard = recorded.guard([Step(visual=0.9, reasoning=None)], policy=make_policy(rules=[]))
    guard.run(image_request())
    evaluations = events(recorded.attempt_spans()[0])
    for name in ("reasoning_confidence", "overall_confidence", "familiarity_confidence"):
        assert evaluations[name]["gen_ai.evaluation.score.label"] == "unknown"
        assert "gen_ai.evaluation.score.value" not in evaluations[name]
        assert evaluations[name]["gen_ai.evaluation.explanation"] == "not measured"
    assert evaluations["visual_confidence"]["gen_ai.evaluation.score.value"] == pytest.approx(0.9)
    call = dict(recorded.call_span().attributes or {})
    assert call["guardrail.confidence.visual"] == pytest.approx(0.9)
    assert "guardrail.confidence.reasoning" not in call
    assert "guardrail.confidence.familiarity" not in call


@pytest.mark.parametrize(("familiarity", "label"), [(0.004, "low"), (0.03, "medium"), (0.4, "high")])
def test_familiarity_is_an_evaluation_event_and_a_call_attribute(
    recorded: Recorded, familiarity: float, label: str
) -> None:
    guard = recorded.guard([Step(visual=0.9, reasoning=0.9)], calibrator=FamiliarityCalibrator(familiarity))
    result = guard.run(image_request())
    assert result.confidence is not None
    assert result.confidence.familiarity == familiarity

    evaluation = events(recorded.attempt_spans()[0])["familiarity_confidence"]
    assert evaluation["gen_ai.evaluation.score.value"] == pytest.approx(familiarity)
    assert evaluation["gen_ai.evaluation.score.label"] == label
    call = dict(recorded.call_span().attributes or {})
    assert call["guardrail.confidence.familiarity"] == pytest.approx(familiarity)
    points = {p.attributes["guardrail.confidence.component"]: p for p in recorded.metrics()["guardrail.confidence"]}
    assert points["familiarity"].count == 1
    assert points["familiarity"].sum == pytest.approx(familiarity)


def test_an_unfamiliar_input_decision_is_traced_with_its_reason(recorded: Recorded) -> None:
    unfamiliar = {"name": "unfamiliar", "when": {"familiarity": {"below": 0.01}}, "do": "abstain"}
    guard = recorded.guard(
        [Step(visual=0.99, reasoning=0.99)],
        policy=make_policy(rules=[unfamiliar]),
        calibrator=FamiliarityCalibrator(0.002),
    )
    assert guard.run(image_request()).status == "abstained"
    attempt = dict(recorded.attempt_spans()[0].attributes or {})
    assert attempt["guardrail.decision.rule"] == "rules[0] unfamiliar"
    assert attempt["guardrail.decision.reason"] == "familiarity 0.002 < 0.01"


def test_familiarity_labels_use_p_value_bands_not_probability_bands() -> None:
    assert [familiarity_label(v) for v in (None, 0.0, 0.0099, 0.01, 0.0499, 0.05, 0.3)] == [
        "unknown", "low", "low", "medium", "medium", "high", "high"
    ]  # fmt: skip
    assert score_label("familiarity", 0.3) == "high"  # an ordinary in-distribution p-value
    for component in ("visual", "reasoning", "overall"):
        assert score_label(component, 0.3) == confidence_label(0.3) == "low"


def test_decision_attributes_name_action_rule_reason_policy_and_overhead(recorded: Recorded) -> None:
    guard = recorded.guard([Step(visual=0.9, reasoning=0.2), Step(answer="red", visual=0.9, reasoning=0.9)])
    guard.run(image_request())

    first, second = (dict(s.attributes or {}) for s in recorded.attempt_spans())
    assert first["guardrail.decision.action"] == "re_ask"
    assert first["guardrail.decision.rule"] == "rules[1] reasoning"
    assert first["guardrail.decision.reason"] == "visual 0.9 >= 0.5 and reasoning 0.2 < 0.5"
    assert second["guardrail.decision.action"] == "accept"
    assert second["guardrail.decision.rule"] == "otherwise"

    call = dict(recorded.call_span().attributes or {})
    assert call["guardrail.model"] == "scripted"
    assert call["guardrail.policy.name"] == "test"
    assert call["guardrail.policy.version"] == 1
    assert call["guardrail.status"] == "accepted"
    assert call["guardrail.decision.action"] == "accept"
    assert call["guardrail.decision.rule"] == "otherwise"
    assert call["guardrail.attempts"] == 2
    assert isinstance(call["guardrail.overhead.duration"], float)
    assert 0.0 <= call["guardrail.overhead.duration"] < 5.0  # seconds, like the metric of the same name


def test_exhausted_budget_is_recorded_as_the_final_decision(recorded: Recorded) -> None:
    guard = recorded.guard([Step(visual=0.9, reasoning=0.2)])
    result = guard.run(image_request())
    assert result.status == "abstained"
    call = dict(recorded.call_span().attributes or {})
    assert call["guardrail.status"] == "abstained"
    assert call["guardrail.decision.rule"] == "on_exhausted"
    assert call["guardrail.attempts"] == 3
    assert len(recorded.attempt_spans()) == 3


def test_a_failed_attempt_is_an_error_span_without_evaluations(recorded: Recorded) -> None:
    guard = recorded.guard([Step(fail=BackendError)])
    result = guard.run(image_request())
    assert result.status == "abstained"

    (attempt,) = recorded.attempt_spans()
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.status.description is not None
    assert attempt.status.description.startswith("backend: ")
    attributes = dict(attempt.attributes or {})
    assert attributes["error.type"] == "BackendError"
    assert attributes["guardrail.error.stage"] == "backend"
    assert attributes["guardrail.decision.rule"] == "on_error"
    assert events(attempt) == {}
    call = recorded.call_span()
    assert dict(call.attributes or {})["error.type"] == "BackendError"
    assert call.status.status_code is StatusCode.UNSET  # the guard handled it: a fail-closed result, not a crash


def test_views_fetched_is_an_event_on_the_call_span(recorded: Recorded) -> None:
    guard = recorded.guard([Step(visual=0.2, reasoning=0.9), Step(visual=0.9, reasoning=0.9)])
    guard.run(image_request())
    (event,) = [e for e in recorded.call_span().events if e.name == "guardrail.views.fetched"]
    assert dict(event.attributes or {}) == {"guardrail.views.provider": "zoom", "guardrail.views.count": 2}


class SpyingModel(ScriptedModel):
    """Records the current span while it runs, and opens a span of its own as an instrumented client would."""

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__(steps=[Step()])
        self.tracer = tracer
        self.seen: list[trace.Span] = []

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        self.seen.append(trace.get_current_span())
        with self.tracer.start_as_current_span("backend.inner"):
            return super().generate(request, options)


def test_the_attempt_span_is_current_while_the_model_runs_on_a_worker(recorded: Recorded) -> None:
    model = SpyingModel(recorded.tracer_provider.get_tracer("backend"))
    # The policy has a time budget, so the model runs on a worker thread.
    Guard(model, estimator=model, policy=make_policy(), telemetry=recorded.telemetry).run(image_request())
    (attempt,) = recorded.attempt_spans()
    assert model.seen[0].get_span_context().span_id == attempt.context.span_id
    (inner,) = recorded.named("backend.inner")
    assert inner.parent is not None
    assert inner.parent.span_id == attempt.context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # the caller's context is restored


def test_metrics_decisions_confidence_overhead_and_operation_duration(recorded: Recorded) -> None:
    guard = recorded.guard([Step(visual=0.9, reasoning=0.2), Step(answer="red", visual=0.9, reasoning=None)])
    guard.run(image_request())
    metrics = recorded.metrics()

    decisions = {
        (p.attributes["guardrail.decision.action"], p.attributes["guardrail.decision.terminal"]): p.value
        for p in metrics["guardrail.decisions"]
    }
    assert decisions == {("re_ask", False): 1, ("accept", True): 1}
    confidence = {p.attributes["guardrail.confidence.component"]: p.count for p in metrics["guardrail.confidence"]}
    assert confidence == {"visual": 2, "reasoning": 1, "overall": 1}
    (overhead,) = metrics["guardrail.overhead.duration"]
    assert overhead.count == 1
    assert overhead.attributes == {"guardrail.policy.name": "test"}
    (duration,) = metrics["gen_ai.client.operation.duration"]
    assert duration.count == 2
    assert duration.attributes["gen_ai.operation.name"] == "chat"
    assert duration.attributes["gen_ai.request.model"] == "scripted"
    assert list(duration.explicit_bounds)[:3] == [0.01, 0.02, 0.04]


def test_no_content_is_recorded_unless_opted_in(recorded: Recorded) -> None:
    request = image_request("What colour is the secret shape?")
    recorded.guard([Step(answer="secret-answer")]).run(request)
    dump = json.dumps([dict(s.attributes or {}) for s in recorded.spans()])
    assert "secret" not in dump
    assert "gen_ai.input.messages" not in dump
    assert "gen_ai.output.messages" not in dump


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_opted_in_content_has_messages_but_images_only_as_hashes(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "environment":
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
        rec = make_recorded()
    else:
        monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
        rec = make_recorded(capture_content=True)
    request = image_request("What colour is the shape?")
    image = request.images[0]
    assert image.base64 is not None
    rec.guard([Step(answer="red")]).run(request)

    attributes = dict(rec.attempt_spans()[0].attributes or {})
    (message,) = json.loads(str(attributes["gen_ai.input.messages"]))
    assert message["role"] == "user"
    image_part, text_part = message["parts"]
    assert text_part == {"type": "text", "content": "What colour is the shape?"}
    assert image_part["type"] == "file"
    assert image_part["modality"] == "image"
    assert image_part["file_id"].startswith("sha256:")
    assert len(image_part["file_id"]) == len("sha256:") + 64
    assert image_part["size"] == len(image.data())
    (output,) = json.loads(str(attributes["gen_ai.output.messages"]))
    assert output["role"] == "assistant"
    assert "\\boxed{red}" in output["parts"][0]["content"]
    everything = json.dumps([dict(s.attributes or {}) for s in rec.spans()])
    assert image.base64[:64] not in everything
    rec.tracer_provider.shutdown()
    rec.meter_provider.shutdown()


def test_sampled_out_calls_still_count_in_the_metrics() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from guardrail.telemetry import OtelTelemetry

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = OtelTelemetry(tracer_provider=TracerProvider(sampler=ALWAYS_OFF), meter_provider=meter_provider)
    model = ScriptedModel(steps=[Step(answer="red")])
    result = Guard(model, estimator=model, policy=make_policy(), telemetry=telemetry).run(image_request())
    assert result.answer == "red"
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
    assert names == {"guardrail.decisions", "guardrail.confidence", "guardrail.overhead.duration",
                     "gen_ai.client.operation.duration", "gen_ai.client.token.usage"}  # fmt: skip
    meter_provider.shutdown()
