"""Configuration by ``configure_telemetry(...)`` and the standard ``OTEL_*`` variables."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guardrail.telemetry import ConfiguredTelemetry, OtelTelemetry, Telemetry, configure_telemetry, default_telemetry
from guardrail.telemetry._content import capture_content_from_env

ROOT = Path(__file__).resolve().parents[2]
OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def span_exporters(telemetry: Telemetry) -> list[object]:
    assert isinstance(telemetry, ConfiguredTelemetry)
    return list(telemetry.span_exporters)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        check=False,
    )


def test_nothing_configured_is_the_no_op_and_imports_no_sdk() -> None:
    out = run_python(
        """
        import sys, threading
        from guardrail.telemetry import default_telemetry, configure_telemetry
        print(type(default_telemetry()).__name__, type(configure_telemetry()).__name__,
              "opentelemetry.sdk.trace" in sys.modules, threading.active_count())
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Telemetry", "Telemetry", "False", "1"]


def test_console_exporter_prints_spans_with_evaluation_events() -> None:
    code = """
        from guardrail import Guard
        from guardrail.telemetry import default_telemetry
        from tests.support.fakes import ScriptedModel
        from tests.support.guards import image_request, make_policy
        model = ScriptedModel()
        print(Guard(model, estimator=model, policy=make_policy(), telemetry=default_telemetry())
              .run(image_request()).status)
        """
    out = run_python(code, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="guard-test")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("accepted")
    for expected in ('"name": "guardrail.guard scripted"', '"name": "chat scripted"', '"gen_ai.evaluation.result"',
                     '"gen_ai.evaluation.name": "visual_confidence"', '"service.name": "guard-test"'):  # fmt: skip
        assert expected in out.stdout, expected


def test_an_application_s_global_provider_is_used_by_default() -> None:
    code = """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from guardrail import Guard
        from guardrail.telemetry import default_telemetry
        from tests.support.fakes import ScriptedModel
        from tests.support.guards import image_request, make_policy
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        model = ScriptedModel()
        Guard(model, estimator=model, policy=make_policy(), telemetry=default_telemetry()).run(image_request())
        print(type(default_telemetry()).__name__, sorted(s.name for s in exporter.get_finished_spans()))
        """
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OtelTelemetry ['chat scripted', 'guardrail.guard scripted']"


def test_exporter_names_come_from_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    telemetry = configure_telemetry()
    exporters = span_exporters(telemetry)
    assert [type(e) for e in exporters] == [ConsoleSpanExporter, OTLPSpanExporter]
    assert isinstance(telemetry, ConfiguredTelemetry)
    assert telemetry.metric_readers == ()
    assert telemetry.shutdown(timeout=5)


def test_an_otlp_endpoint_alone_turns_otlp_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    telemetry = configure_telemetry(metrics="none")
    (exporter,) = span_exporters(telemetry)
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://127.0.0.1:9/v1/traces"
    assert isinstance(telemetry, ConfiguredTelemetry)
    assert telemetry.shutdown(timeout=5)


def test_explicit_arguments_build_otlp_exporters_with_their_paths() -> None:
    telemetry = configure_telemetry(endpoint="http://127.0.0.1:9/", timeout=1.0, service_name="svc")
    assert isinstance(telemetry, ConfiguredTelemetry)
    (exporter,) = span_exporters(telemetry)
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://127.0.0.1:9/v1/traces"
    (reader,) = telemetry.metric_readers
    assert isinstance(reader._exporter, OTLPMetricExporter)  # type: ignore[attr-defined]
    assert telemetry.tracer_provider.resource.attributes["service.name"] == "svc"
    assert telemetry.shutdown(timeout=5)


def test_own_exporter_and_reader_are_accepted() -> None:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry = configure_telemetry(traces=exporter, metrics=reader, capture_content=True)
    assert isinstance(telemetry, ConfiguredTelemetry)
    assert telemetry.capture_content
    assert span_exporters(telemetry) == [exporter]
    assert telemetry.tracer_provider.resource.attributes["service.name"] == "guardrail"
    assert telemetry.shutdown(timeout=5)


def test_an_unknown_exporter_warns_with_the_variable_and_is_left_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with caplog.at_level(logging.WARNING, logger="guardrail.telemetry"):
        telemetry = configure_telemetry()
    assert type(telemetry) is Telemetry
    (record,) = caplog.records
    assert "OTEL_TRACES_EXPORTER='jaeger' names an unknown exporter 'jaeger'" in record.getMessage()
    assert "expected one of otlp, console, none" in record.getMessage()


def test_sdk_disabled_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert type(configure_telemetry()) is Telemetry
    assert type(default_telemetry()) is Telemetry


def test_default_telemetry_is_shared_per_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    first = default_telemetry()
    assert isinstance(first, OtelTelemetry)
    assert default_telemetry() is first


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("SPAN_ONLY", True), ("span_and_event", True), ("false", False),
     ("NO_CONTENT", False), ("EVENT_ONLY", False), ("", False)],
)  # fmt: skip
def test_content_capture_switch(value: str, expected: bool) -> None:
    assert capture_content_from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value}) is expected
