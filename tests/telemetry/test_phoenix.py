"""End to end: guarded calls traced into a real Arize Phoenix over OTLP/HTTP, read back through its REST API."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guardrail import BackendError, Guard
from guardrail.telemetry import ConfiguredTelemetry, configure_telemetry
from tests.support.fakes import ScriptedModel, Step
from tests.support.guards import image_request, make_policy
from tests.support.phoenix import Phoenix, running_phoenix

pytestmark = pytest.mark.slow

PHOENIX_PROJECT = "openinference.project.name"
"""The resource attribute Phoenix files spans under (its own convention)."""


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    with running_phoenix(Path(tmp_path_factory.mktemp("phoenix"))) as server:
        yield server


def wait_for_spans(phoenix: Phoenix, project: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        spans = phoenix.spans(project)
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def test_phoenix_receives_the_guard_spans_with_evaluation_events(phoenix: Phoenix) -> None:
    project = f"guardrail-{uuid.uuid4().hex[:8]}"
    telemetry = configure_telemetry(
        traces="otlp",
        metrics="none",
        endpoint=phoenix.url,
        service_name="guardrail-tests",
        resource_attributes={PHOENIX_PROJECT: project},
    )
    assert isinstance(telemetry, ConfiguredTelemetry)

    def guard(*steps: Step) -> Guard:
        model = ScriptedModel(steps=steps)
        return Guard(model, estimator=model, policy=make_policy(), telemetry=telemetry)

    views_then_accept = guard(Step(visual=0.2, reasoning=0.9), Step(answer="red", visual=0.9, reasoning=None))
    failing = guard(Step(fail=BackendError))
    assert views_then_accept.run(image_request()).status == "accepted"
    assert failing.run(image_request()).status == "abstained"
    assert telemetry.shutdown(timeout=30)  # flushes the batch processor

    spans = wait_for_spans(phoenix, project, count=5)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    assert sorted((name, len(group)) for name, group in by_name.items()) == [
        ("chat scripted", 3),
        ("guardrail.guard scripted", 2),
    ]

    calls = {span["attributes"]["guardrail.status"]: span for span in by_name["guardrail.guard scripted"]}
    accepted, abstained = calls["accepted"], calls["abstained"]
    assert accepted["parent_span_id"] is None
    assert accepted["attributes"]["guardrail.policy.name"] == "test"
    assert accepted["attributes"]["guardrail.policy.version"] == 1
    assert accepted["attributes"]["guardrail.decision.rule"] == "otherwise"
    assert accepted["attributes"]["guardrail.attempts"] == 2
    assert accepted["attributes"]["guardrail.confidence.visual"] == pytest.approx(0.9)
    assert accepted["attributes"]["guardrail.overhead.duration"] >= 0
    assert [e["name"] for e in accepted["events"]] == ["guardrail.views.fetched"]
    assert abstained["attributes"]["guardrail.decision.rule"] == "on_error"
    assert abstained["attributes"]["error.type"] == "BackendError"

    attempts = sorted(
        (s for s in by_name["chat scripted"] if s["parent_span_id"] == accepted["span_id"]),
        key=lambda s: s["attributes"]["guardrail.attempt"],
    )
    assert [a["attributes"]["guardrail.decision.action"] for a in attempts] == ["fetch_more_views", "accept"]
    for attempt in attempts:
        assert attempt["trace_id"] == accepted["trace_id"]
        assert attempt["attributes"]["gen_ai.operation.name"] == "chat"
        assert attempt["attributes"]["gen_ai.request.model"] == "scripted"
        assert attempt["attributes"]["gen_ai.provider.name"] == "_OTHER"
        assert attempt["attributes"]["gen_ai.usage.input_tokens"] == 0
        assert "gen_ai.input.messages" not in attempt["attributes"]  # no content unless opted in
    first_events = {e["attributes"]["gen_ai.evaluation.name"]: e for e in attempts[0]["events"]}
    assert {e["name"] for e in attempts[0]["events"]} == {"gen_ai.evaluation.result"}
    assert first_events["visual_confidence"]["attributes"]["gen_ai.evaluation.score.value"] == pytest.approx(0.2)
    assert first_events["visual_confidence"]["attributes"]["gen_ai.evaluation.score.label"] == "low"
    assert first_events["reasoning_confidence"]["attributes"]["gen_ai.evaluation.score.label"] == "high"
    second_events = {e["attributes"]["gen_ai.evaluation.name"]: e["attributes"] for e in attempts[1]["events"]}
    assert second_events["reasoning_confidence"]["gen_ai.evaluation.score.label"] == "unknown"
    assert "gen_ai.evaluation.score.value" not in second_events["reasoning_confidence"]

    (failed,) = [s for s in by_name["chat scripted"] if s["parent_span_id"] == abstained["span_id"]]
    assert failed["status"]["code"] == 2  # ERROR
    assert failed["attributes"]["error.type"] == "BackendError"
    assert failed["events"] == []
