"""Setting telemetry up: ``configure_telemetry(...)`` explicitly, or the standard ``OTEL_*`` variables.

Nothing is exported and no connection is made unless the user asks for it:

- ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``: a comma-separated list of ``otlp``, ``console``, ``none``.
  Unset, they are ``otlp`` only when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or the per-signal
  ``..._TRACES_ENDPOINT`` / ``..._METRICS_ENDPOINT``), else ``none``: unlike the SDK's own default, a guard never
  starts sending to ``localhost:4318`` because nobody said otherwise.
- ``OTEL_EXPORTER_OTLP_PROTOCOL`` (and per signal): ``http/protobuf`` (default) or ``grpc`` (needs
  ``opentelemetry-exporter-otlp-proto-grpc``); endpoint, headers, timeout, compression and certificates are read
  by the OTLP exporters themselves from their usual variables.
- ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``: the resource (service name ``guardrail`` when neither is
  set); ``OTEL_BSP_*`` / ``OTEL_METRIC_EXPORT_*``: batching and export intervals; ``OTEL_SDK_DISABLED=true``: off.
- ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``: content capture (see ``_content``).
- ``OTEL_METRICS_EXEMPLAR_FILTER``: exemplars are off unless set (the SDK's trace-based default would attach one
  to every measurement taken inside a span, about a third of the cost of recording a metric).

An unreachable or failing exporter never blocks a guarded call: spans go through the SDK's batch processor
(ending a span only appends to a bounded queue; a background thread exports, dropping the oldest when full) and
metrics through a periodic reader; at exit the providers are shut down on a helper thread that is waited for at
most ``shutdown_timeout`` seconds. A bad setting (an unknown exporter name, a missing optional package) logs a
warning that names the variable and its value, and that exporter is left out.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_METRICS_EXEMPLAR_FILTER,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SDK_DISABLED,
    OTEL_SERVICE_NAME,
)
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME

from ._content import CAPTURE_CONTENT_ENV
from ._hooks import Telemetry
from ._otel import OtelTelemetry

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["configure_telemetry", "default_telemetry"]

_log = logging.getLogger("guardrail.telemetry")

_EXPORTERS = ("otlp", "console", "none")
_PROTOCOLS = ("http/protobuf", "grpc")
_DEFAULT_SERVICE_NAME = "guardrail"
_ENV_KEYS = (
    OTEL_SDK_DISABLED,
    OTEL_TRACES_EXPORTER,
    OTEL_METRICS_EXPORTER,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES,
    CAPTURE_CONTENT_ENV,
)


class ConfiguredTelemetry(OtelTelemetry):
    """An ``OtelTelemetry`` that owns its providers (and shows their exporters and readers): ``shutdown()``
    flushes and closes them, bounded in time."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        span_exporters: Sequence[SpanExporter],
        metric_readers: Sequence[MetricReader],
        capture_content: bool | None,
        shutdown_timeout: float,
    ) -> None:
        super().__init__(
            tracer_provider=tracer_provider, meter_provider=meter_provider, capture_content=capture_content
        )
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.span_exporters = tuple(span_exporters)
        self.metric_readers = tuple(metric_readers)
        self.shutdown_timeout = shutdown_timeout
        self._closed = False

    def shutdown(self, timeout: float | None = None) -> bool:
        """Export what is queued and close the exporters, waiting at most ``timeout`` seconds (default
        ``shutdown_timeout``). Returns False when the exporters had not finished in time (they are abandoned on a
        daemon thread: a dead collector never holds the process)."""
        if self._closed:
            return True
        self._closed = True
        wait = self.shutdown_timeout if timeout is None else timeout

        def close() -> None:
            for provider in (self.tracer_provider, self.meter_provider):
                try:
                    provider.shutdown()
                except Exception as exc:
                    _log.warning("guardrail telemetry: shutting down %s failed: %s", type(provider).__name__, exc)

        worker = threading.Thread(target=close, name="guardrail-telemetry-shutdown", daemon=True)
        worker.start()
        worker.join(wait)
        if worker.is_alive():
            _log.warning("guardrail telemetry: exporters did not finish within %.1f s; abandoning them", wait)
            return False
        return True


def configure_telemetry(
    *,
    traces: str | Sequence[str] | SpanExporter | None = None,
    metrics: str | Sequence[str] | MetricExporter | MetricReader | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    service_name: str | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    capture_content: bool | None = None,
    set_global: bool = False,
    shutdown_timeout: float = 5.0,
) -> Telemetry:
    """Build the guard's telemetry pipeline; every argument left ``None`` comes from its ``OTEL_*`` variable.

    ``traces`` / ``metrics``: exporter names (``"otlp"``, ``"console"``, ``"none"``, or a list) or an SDK
    exporter (or, for metrics, a reader) of your own. ``endpoint``: the OTLP base URL (``http://host:4318``; the
    signal paths are added for HTTP). ``timeout``: seconds per export request. ``set_global`` also installs the
    providers as OpenTelemetry's global ones, so other instrumentation (a backend's HTTP client) shares them.

    Returns an ``OtelTelemetry`` to pass as ``Guard(..., telemetry=...)`` (with a ``shutdown()``, also run at
    exit), or the no-op ``Telemetry`` when nothing is to be exported or ``OTEL_SDK_DISABLED`` is true.
    """
    if _env_true(OTEL_SDK_DISABLED):
        return Telemetry()
    span_exporters = _span_exporters(traces, endpoint, protocol, headers, timeout)
    readers = _metric_readers(metrics, endpoint, protocol, headers, timeout)
    if not span_exporters and not readers:
        return Telemetry()

    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, Any] = dict(resource_attributes or {})
    if service_name is not None:
        attributes[SERVICE_NAME] = service_name
    elif not os.environ.get(OTEL_SERVICE_NAME) and f"{SERVICE_NAME}=" not in os.environ.get(
        OTEL_RESOURCE_ATTRIBUTES, ""
    ):
        attributes.setdefault(SERVICE_NAME, _DEFAULT_SERVICE_NAME)
    resource = Resource.create(attributes)
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for exporter in span_exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    exemplars = None if os.environ.get(OTEL_METRICS_EXEMPLAR_FILTER) else AlwaysOffExemplarFilter()
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, exemplar_filter=exemplars, shutdown_on_exit=False
    )
    telemetry = ConfiguredTelemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        span_exporters=span_exporters,
        metric_readers=readers,
        capture_content=capture_content,
        shutdown_timeout=shutdown_timeout,
    )
    atexit.register(telemetry.shutdown)
    if set_global:
        from opentelemetry import metrics as otel_metrics

        trace.set_tracer_provider(tracer_provider)
        otel_metrics.set_meter_provider(meter_provider)
    return telemetry


# -- exporters ------------------------------------------------------------------------------------------------


def _names(
    value: str | Sequence[str] | None, variable: str, endpoint: str | None, endpoint_variables: tuple[str, ...]
) -> list[str]:
    """Exporter names from the argument, else the variable, else ``otlp`` if an endpoint is set, else none."""
    if value is None:
        raw = os.environ.get(variable)
        if raw is None:
            configured = endpoint is not None or any(os.environ.get(v) for v in endpoint_variables)
            return ["otlp"] if configured else []
        value = raw
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        name = item.strip().lower()
        if name in ("", "none"):
            continue
        if name not in _EXPORTERS:
            _log.warning(
                "guardrail telemetry: %s=%r names an unknown exporter %r (expected one of %s); it is left out",
                variable,
                value,
                name,
                ", ".join(_EXPORTERS),
            )
            continue
        names.append(name)
    return names


def _protocol(protocol: str | None, signal_variable: str) -> str:
    value = protocol or os.environ.get(signal_variable) or os.environ.get(OTEL_EXPORTER_OTLP_PROTOCOL)
    chosen = (value or "http/protobuf").strip().lower()
    if chosen not in _PROTOCOLS:
        _log.warning(
            "guardrail telemetry: OTLP protocol %r is not supported (expected one of %s); using http/protobuf",
            value,
            ", ".join(_PROTOCOLS),
        )
        chosen = "http/protobuf"
    return chosen


def _otlp_kwargs(
    endpoint: str | None, path: str, protocol: str, headers: Mapping[str, str] | None, timeout: float | None
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if endpoint is not None:
        base = endpoint.rstrip("/")
        kwargs["endpoint"] = base if protocol == "grpc" else f"{base}/{path}"
    if headers is not None:
        kwargs["headers"] = dict(headers)
    if timeout is not None:
        kwargs["timeout"] = timeout
    return kwargs


def _span_exporters(
    traces: str | Sequence[str] | SpanExporter | None,
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> list[SpanExporter]:
    if traces is not None and not isinstance(traces, (str, Sequence)):
        return [traces]  # the caller's own exporter
    endpoints = (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    names = _names(traces, OTEL_TRACES_EXPORTER, endpoint, endpoints)
    if not names:
        return []  # nothing asked for: the SDK is not even imported
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    exporters: list[SpanExporter] = []
    for name in names:
        if name == "console":
            exporters.append(ConsoleSpanExporter())
            continue
        chosen = _protocol(protocol, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
        kwargs = _otlp_kwargs(endpoint, "v1/traces", chosen, headers, timeout)
        try:
            if chosen == "grpc":  # optional package, imported by name
                grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
                exporters.append(grpc.OTLPSpanExporter(**kwargs))
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

                exporters.append(HttpSpans(**kwargs))
        except ImportError as exc:
            _missing(chosen, exc)
    return exporters


def _metric_readers(
    metrics: str | Sequence[str] | MetricExporter | MetricReader | None,
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> list[MetricReader]:
    if metrics is not None and not isinstance(metrics, (str, Sequence)):
        from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

        return [metrics if isinstance(metrics, MetricReader) else PeriodicExportingMetricReader(metrics)]
    endpoints = (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
    names = _names(metrics, OTEL_METRICS_EXPORTER, endpoint, endpoints)
    if not names:
        return []
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

    readers: list[MetricReader] = []
    for name in names:
        if name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
            continue
        chosen = _protocol(protocol, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL)
        kwargs = _otlp_kwargs(endpoint, "v1/metrics", chosen, headers, timeout)
        try:
            if chosen == "grpc":
                grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.metric_exporter")
                readers.append(PeriodicExportingMetricReader(grpc.OTLPMetricExporter(**kwargs)))
            else:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter as HttpMetrics,
                )

                readers.append(PeriodicExportingMetricReader(HttpMetrics(**kwargs)))
        except ImportError as exc:
            _missing(chosen, exc)
    return readers


def _missing(protocol: str, exc: ImportError) -> None:
    package = "opentelemetry-exporter-otlp-proto-" + ("grpc" if protocol == "grpc" else "http")
    _log.warning(
        "guardrail telemetry: the OTLP %s exporter is not installed (%s); `pip install %s` to export over it",
        protocol,
        exc,
        package,
    )


def _env_true(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() == "true"


# -- the guard's default ----------------------------------------------------------------------------------------

_defaults: dict[tuple[str | None, ...], Telemetry] = {}
_global: OtelTelemetry | None = None
_defaults_lock = threading.Lock()


def default_telemetry() -> Telemetry:
    """The telemetry a ``Guard`` uses when given none.

    - ``OTEL_SDK_DISABLED=true``: the no-op ``Telemetry``;
    - the application installed an OpenTelemetry SDK tracer provider globally: an ``OtelTelemetry`` on the global
      providers (the guard's spans join the application's own pipeline);
    - else the ``OTEL_*`` variables ask for an exporter: one pipeline built from them by ``configure_telemetry``,
      shared by every guard with the same settings;
    - else the no-op ``Telemetry``: nothing recorded, nothing exported, no SDK imported.

    Never raises: a failure here logs a warning and gives the no-op.
    """
    global _global
    try:
        if _env_true(OTEL_SDK_DISABLED):
            return Telemetry()
        if not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            with _defaults_lock:
                if _global is None:
                    _global = OtelTelemetry()
                return _global
        key = tuple(os.environ.get(variable) for variable in _ENV_KEYS)
        with _defaults_lock:
            telemetry = _defaults.get(key)
            if telemetry is None:
                telemetry = _defaults[key] = configure_telemetry()
            return telemetry
    except Exception as exc:
        _log.warning("guardrail telemetry: could not set up from the environment (%s); telemetry is off", exc)
        return Telemetry()
