"""An ``OtelTelemetry`` over the OpenTelemetry SDK's in-memory span exporter and metric reader, and what it recorded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guardrail import Guard, Policy
from guardrail.telemetry import OtelTelemetry
from tests.support.fakes import ScriptedModel, Step
from tests.support.guards import make_policy


@dataclass
class Recorded:
    """What one test's telemetry recorded."""

    telemetry: OtelTelemetry
    tracer_provider: TracerProvider
    spans_exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    meter_provider: MeterProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.spans_exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if (s.name or "").startswith(prefix)]

    def call_span(self) -> ReadableSpan:
        (span,) = self.named("guardrail.guard ")
        return span

    def attempt_spans(self) -> list[ReadableSpan]:
        return sorted(self.named("chat "), key=lambda s: s.start_time or 0)

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> its data points."""
        data = self.reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        if data is None:
            return out
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out[metric.name] = list(metric.data.data_points)
        return out

    def guard(self, steps: Sequence[Step], policy: Policy | None = None, **kwargs: Any) -> Guard:
        model = ScriptedModel(steps=steps)
        return Guard(model, estimator=model, policy=policy or make_policy(), telemetry=self.telemetry, **kwargs)


def make_recorded(**kwargs: Any) -> Recorded:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = OtelTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider, **kwargs)
    return Recorded(telemetry, tracer_provider, exporter, reader, meter_provider)
