"""OpenTelemetry traces and metrics of the guarded call.

The guard reports each call through the hooks of ``Telemetry`` / ``CallTrace``: the base classes record nothing,
and stay the default unless telemetry is configured. ``OtelTelemetry`` turns the hooks into GenAI-convention
spans, ``gen_ai.evaluation.result`` events and metrics; ``configure_telemetry`` builds one from arguments or the
standard ``OTEL_*`` variables; ``default_telemetry`` is what a guard uses when given none.

Modules: ``_hooks`` (the interface), ``_names`` (every emitted name, once), ``_otel`` (spans, events, metrics),
``_content`` (opt-in message capture, images as hashes), ``_config`` (providers and exporters).
"""

from __future__ import annotations

from ._config import ConfiguredTelemetry, configure_telemetry, default_telemetry
from ._hooks import CallTrace, Telemetry
from ._otel import OtelTelemetry

__all__ = [
    "CallTrace",
    "ConfiguredTelemetry",
    "OtelTelemetry",
    "Telemetry",
    "configure_telemetry",
    "default_telemetry",
]
