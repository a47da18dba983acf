"""The telemetry hooks of the guarded call, and their no-op default.

The guard reports what happens through a ``CallTrace``, one per guarded call:

    with telemetry.call(request, model=m, policy=name, policy_version=v) as trace:  # the call span, current throughout
        trace.attempt_started(index, model)                 # a model-call span, current while the model runs
        trace.attempt_finished(attempt)                     # its outcome: usage, confidences, decision; span ends
        trace.views_fetched(provider, count, error)
        trace.finished(result)

``Telemetry`` records nothing and exports nothing: it is what a guard uses unless telemetry is configured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..types import Attempt, ErrorInfo, GuardResult, Request

__all__ = ["CallTrace", "Telemetry"]


class CallTrace:
    """Receives the events of one guarded call. This base class records nothing."""

    def attempt_started(self, index: int, model: str) -> None:
        """A model attempt begins (its span becomes current until ``attempt_finished``)."""

    def attempt_finished(self, attempt: Attempt) -> None:
        """A model attempt ended, with its generation, signals, confidence, decision or error."""

    def views_fetched(self, provider: str, count: int, error: ErrorInfo | None) -> None:
        """A view provider was asked for ``count`` views."""

    def finished(self, result: GuardResult) -> None:
        """The guarded call ended with ``result``."""


NO_TRACE = CallTrace()
"""The shared do-nothing trace (it keeps no state, so one serves every call)."""


class Telemetry:
    """Produces a ``CallTrace`` per guarded call. This base class is the no-op default."""

    @contextmanager
    def call(self, request: Request, *, model: str, policy: str, policy_version: int) -> Iterator[CallTrace]:
        """The trace of one guarded call (``policy``: the policy's name); its span, if any, is current inside."""
        yield NO_TRACE
