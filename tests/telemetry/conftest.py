"""Shared fixture: a ``Recorded`` telemetry (``tests.support.telemetry``), shut down after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.telemetry import Recorded, make_recorded


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    rec = make_recorded()
    yield rec
    rec.tracer_provider.shutdown()
    rec.meter_provider.shutdown()
