"""``OtelTelemetry``: the guard's hooks as OpenTelemetry spans, GenAI evaluation events and metrics.

One guarded call gives this tree (names in ``_names``)::

    guardrail.guard {model}        INTERNAL, current for the whole call: policy, final decision, confidences, overhead
      chat {model}                 CLIENT, one per attempt, current while the model runs (a backend's own spans
        gen_ai.evaluation.result     nest under it): usage, decision of that attempt, and one evaluation event
        gen_ai.evaluation.result     per confidence component (visual, reasoning, overall, familiarity)
        gen_ai.evaluation.result
        gen_ai.evaluation.result
      chat {model}                 a re-ask, more views, or a fallback model

Decisions: evaluation results are span events on the attempt span they evaluate (the conventions ask for them to be
parented to that span; trace backends such as Phoenix store span events, while log-based events would need a
separate logs pipeline). An unknown confidence component still gets its evaluation event, labelled ``unknown`` and
without a score, so "not measured" stays visible next to the measured ones (the guard never invents a value); an
attempt that produced no confidence at all (the model or the estimator failed) gets no evaluation events and an
ERROR status. ``guardrail.overhead.duration`` (seconds, like the histogram of the same name) is the call's wall time
minus the model's own time: per attempt, the time the backend reports (``Generation.seconds``), or the whole
attempt (model and confidence measurement) when it reports none.

An attempt span carries what the conventions ask of an inference span, as far as the backend reports it: the
request settings it generated with (``gen_ai.request.max_tokens``, ``temperature``, ``seed``, ``stop_sequences``,
from ``Generation.options``), ``gen_ai.output.type`` (``text``), ``gen_ai.response.finish_reasons`` (``length``
when the token limit cut the answer off; absent when the backend could not tell), and the token usage, also
recorded in the ``gen_ai.client.token.usage`` histogram (one point per token type).

A call aborted by an exception (a LangGraph interrupt, a cancellation) ends every span it left open with an ERROR
status and the exception's type as ``error.type``, and re-raises the exception untouched.

Telemetry never breaks a guarded call: every hook body is guarded; the first failure is logged as a warning
(later ones at debug level) and that hook's record is dropped, while the call goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._version import __version__
from ..types import COMPONENTS, Attempt, Component, ErrorInfo, Generation, GuardResult, Request
from . import _names as n
from ._content import capture_content_from_env, input_messages, output_messages
from ._hooks import NO_TRACE, CallTrace, Telemetry

__all__ = ["OtelTelemetry"]

_log = logging.getLogger("guardrail.telemetry")


class _Instruments:
    """The metric instruments, created once per ``OtelTelemetry``."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.decisions = meter.create_counter(
            n.GUARDRAIL_DECISIONS, unit="{decision}", description="Policy decisions, by action."
        )
        self.confidence = meter.create_histogram(
            n.GUARDRAIL_CONFIDENCE,
            unit="1",
            description="Calibrated confidence of each attempt, by component.",
            explicit_bucket_boundaries_advisory=n.CONFIDENCE_BUCKETS,
        )
        self.overhead = meter.create_histogram(
            n.GUARDRAIL_OVERHEAD_DURATION,
            unit="s",
            description="Wall time of a guarded call minus the model's own time.",
            explicit_bucket_boundaries_advisory=n.OVERHEAD_BUCKETS,
        )
        self.duration = meter.create_histogram(
            n.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=n.DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            n.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=n.TOKEN_BUCKETS,
        )


class OtelTelemetry(Telemetry):
    """Records guarded calls with OpenTelemetry.

    >>> guard = Guard(backend, estimator=estimator, telemetry=OtelTelemetry())   # doctest: +SKIP

    ``tracer_provider`` / ``meter_provider`` default to the global ones (so an application that configured
    OpenTelemetry gets the guard's spans in its own pipeline; see ``configure_telemetry`` for one built from
    ``OTEL_*`` variables). ``capture_content`` records prompts and answers (never image bytes); ``None`` reads
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (default off).
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        capture_content: bool | None = None,
    ) -> None:
        self.capture_content = capture_content_from_env() if capture_content is None else capture_content
        self._tracer = trace.get_tracer(n.INSTRUMENTATION_SCOPE, __version__, tracer_provider)
        self._instruments = _Instruments(metrics.get_meter(n.INSTRUMENTATION_SCOPE, __version__, meter_provider))
        self._providers: dict[str, str] = {}  # model name -> provider, learned from generations
        self._warned = False
        self._warn_lock = threading.Lock()

    @contextmanager
    def call(self, request: Request, *, model: str, policy: str, policy_version: int) -> Iterator[CallTrace]:
        """The trace of one guarded call; its span is current inside the ``with`` block."""
        try:
            opened: _OtelCallTrace | None = _OtelCallTrace(self, request, model, policy, policy_version)
        except Exception as exc:
            self._failed("call", exc)
            opened = None
        if opened is None:
            yield NO_TRACE
            return
        try:
            yield opened
        except BaseException as exc:
            opened.close(exc)
            raise
        opened.close(None)

    def _failed(self, hook: str, exc: Exception) -> None:
        """Log a hook failure: a warning the first time, debug afterwards; never raise."""
        with self._warn_lock:
            first, self._warned = not self._warned, True
        level = logging.WARNING if first else logging.DEBUG
        _log.log(
            level,
            "guardrail telemetry hook %r failed (%s: %s); its record is dropped, the guarded call goes on",
            hook,
            type(exc).__name__,
            exc,
            exc_info=first,
        )


class _OtelCallTrace(CallTrace):
    """The spans of one guarded call. Each hook is guarded: a failure is logged and its record dropped."""

    def __init__(self, owner: OtelTelemetry, request: Request, model: str, policy: str, policy_version: int) -> None:
        self._owner = owner
        self._request = request
        self._start = time.perf_counter()
        self._model_seconds = 0.0
        self._policy_name = policy
        self._attempt_span: trace.Span | None = None
        self._attempt_token: Token[Context] | None = None
        self._attempt_provider = n.PROVIDER_OTHER
        attributes: dict[str, Any] = {
            n.GUARDRAIL_MODEL: model,
            n.GUARDRAIL_POLICY_NAME: policy,
            n.GUARDRAIL_POLICY_VERSION: policy_version,
        }
        self._span = owner._tracer.start_span(
            f"{n.CALL_SPAN_PREFIX} {model}", kind=SpanKind.INTERNAL, attributes=attributes
        )
        self._token: Token[Context] | None = otel_context.attach(trace.set_span_in_context(self._span))

    # -- hooks -----------------------------------------------------------------------------------------------

    def attempt_started(self, index: int, model: str) -> None:
        """Open the attempt's ``chat {model}`` span and make it current (the driver copies the context)."""
        try:
            self._end_attempt(None, "attempt superseded before it finished")
            provider = self._owner._providers.get(model, n.PROVIDER_OTHER)
            self._attempt_provider = provider
            span = self._owner._tracer.start_span(
                f"{n.CHAT} {model}",
                kind=SpanKind.CLIENT,
                attributes={
                    n.GEN_AI_OPERATION_NAME: n.CHAT,
                    n.GEN_AI_PROVIDER_NAME: provider,
                    n.GEN_AI_REQUEST_MODEL: model,
                    n.GEN_AI_OUTPUT_TYPE: n.OUTPUT_TYPE_TEXT,
                    n.GUARDRAIL_ATTEMPT: index,
                },
            )
            self._attempt_span = span
            self._attempt_token = otel_context.attach(trace.set_span_in_context(span))
        except Exception as exc:
            self._owner._failed("attempt_started", exc)

    def attempt_finished(self, attempt: Attempt) -> None:
        """Record the attempt's usage, decision and confidences on its span, then end it."""
        span = self._attempt_span
        try:
            self._record_attempt(span if span is not None else trace.INVALID_SPAN, attempt)
        except Exception as exc:
            self._owner._failed("attempt_finished", exc)
        finally:
            self._end_attempt(None, None)

    def views_fetched(self, provider: str, count: int, error: ErrorInfo | None) -> None:
        """An event on the guarded-call span."""
        try:
            attributes: dict[str, Any] = {n.GUARDRAIL_VIEWS_PROVIDER: provider, n.GUARDRAIL_VIEWS_COUNT: count}
            if error is not None:
                attributes[n.ERROR_TYPE] = error.type
            self._span.add_event(n.GUARDRAIL_VIEWS_FETCHED, attributes)
        except Exception as exc:
            self._owner._failed("views_fetched", exc)

    def finished(self, result: GuardResult) -> None:
        """The outcome on the guarded-call span; decision and overhead metrics."""
        try:
            self._record_result(result)
        except Exception as exc:
            self._owner._failed("finished", exc)

    # -- recording -------------------------------------------------------------------------------------------

    def _record_attempt(self, span: trace.Span, attempt: Attempt) -> None:
        """The attempt's outcome on its span (unless it is not recording, e.g. sampled out) and in the metrics."""
        owner, generation = self._owner, attempt.generation
        provider = self._attempt_provider
        if generation is not None and generation.provider and generation.provider != provider:
            provider = owner._providers[attempt.model] = generation.provider
        seconds = generation.seconds if generation is not None and generation.seconds > 0 else attempt.seconds
        self._model_seconds += seconds
        if span.is_recording():
            self._annotate_attempt(span, attempt, provider)

        instruments = owner._instruments
        metric_attributes: dict[str, Any] = {
            n.GEN_AI_OPERATION_NAME: n.CHAT,
            n.GEN_AI_PROVIDER_NAME: provider,
            n.GEN_AI_REQUEST_MODEL: attempt.model,
        }
        if generation is not None and generation.model:
            metric_attributes[n.GEN_AI_RESPONSE_MODEL] = generation.model
        if attempt.error is not None:
            metric_attributes[n.ERROR_TYPE] = attempt.error.type
        instruments.duration.record(seconds, metric_attributes)
        if generation is not None:
            usage = generation.usage
            token_attributes = {k: v for k, v in metric_attributes.items() if k != n.ERROR_TYPE}
            instruments.tokens.record(usage.input_tokens, {**token_attributes, n.GEN_AI_TOKEN_TYPE: n.TOKEN_TYPE_INPUT})
            instruments.tokens.record(
                usage.output_tokens, {**token_attributes, n.GEN_AI_TOKEN_TYPE: n.TOKEN_TYPE_OUTPUT}
            )
        if attempt.confidence is not None:
            for component in COMPONENTS:
                value = attempt.confidence.get(component)
                if value is not None:
                    instruments.confidence.record(value, {n.GUARDRAIL_CONFIDENCE_COMPONENT: component})

    def _annotate_attempt(self, span: trace.Span, attempt: Attempt, provider: str) -> None:
        generation, decision = attempt.generation, attempt.decision
        attributes: dict[str, Any] = {
            n.GUARDRAIL_DECISION_ACTION: decision.action.value,
            n.GUARDRAIL_DECISION_RULE: decision.rule,
            n.GUARDRAIL_DECISION_REASON: decision.reason,
        }
        if provider != self._attempt_provider:
            attributes[n.GEN_AI_PROVIDER_NAME] = provider
        if generation is not None:
            attributes[n.GEN_AI_USAGE_INPUT_TOKENS] = generation.usage.input_tokens
            attributes[n.GEN_AI_USAGE_OUTPUT_TOKENS] = generation.usage.output_tokens
            if generation.model:
                attributes[n.GEN_AI_RESPONSE_MODEL] = generation.model
            if generation.finish_reason is not None:
                attributes[n.GEN_AI_RESPONSE_FINISH_REASONS] = (generation.finish_reason,)
            attributes.update(_request_attributes(generation))
            if self._owner.capture_content:
                attributes[n.GEN_AI_INPUT_MESSAGES] = input_messages(attempt.request or self._request)
                attributes[n.GEN_AI_OUTPUT_MESSAGES] = output_messages(generation)
        attributes.update(self._remedy_attributes(attempt))
        if attempt.error is not None:
            attributes[n.ERROR_TYPE] = attempt.error.type
            attributes[n.GUARDRAIL_ERROR_STAGE] = attempt.error.stage
            span.set_status(Status(StatusCode.ERROR, f"{attempt.error.stage}: {attempt.error.message}"))
        confidence = attempt.confidence
        if confidence is not None:
            attributes[n.GUARDRAIL_CALIBRATED] = confidence.calibrated
        span.set_attributes(attributes)
        if confidence is not None:
            for component in COMPONENTS:
                evaluation = _evaluation(component, confidence.get(component), confidence.sources)
                span.add_event(n.GEN_AI_EVALUATION_RESULT, evaluation)

    def _remedy_attributes(self, attempt: Attempt) -> dict[str, Any]:
        """How a remedy shaped the attempt: tiles, samples, a prefilled percept (their texts only with content
        capture on)."""
        attributes: dict[str, Any] = {}
        content = self._owner.capture_content
        if attempt.tile_percepts:
            attributes[n.GUARDRAIL_ATTEMPT_TILES] = len(attempt.tile_percepts)
            if content:
                attributes[n.GUARDRAIL_ATTEMPT_TILE_PERCEPTS] = tuple(t.percept for t in attempt.tile_percepts)
        if attempt.sampled_answers:
            attributes[n.GUARDRAIL_ATTEMPT_SAMPLES] = len(attempt.sampled_answers)
            if content:
                attributes[n.GUARDRAIL_ATTEMPT_SAMPLED_ANSWERS] = tuple(a or "" for a in attempt.sampled_answers)
        if attempt.percept is not None:
            attributes[n.GUARDRAIL_ATTEMPT_PREFILLED] = True
            if content:
                attributes[n.GUARDRAIL_ATTEMPT_PERCEPT] = attempt.percept
        return attributes

    def _record_result(self, result: GuardResult) -> None:
        overhead = max(time.perf_counter() - self._start - self._model_seconds, 0.0)
        final = result.final_decision
        attributes: dict[str, Any] = {
            n.GUARDRAIL_STATUS: result.status,
            n.GUARDRAIL_DECISION_ACTION: final.action.value,
            n.GUARDRAIL_DECISION_RULE: final.rule,
            n.GUARDRAIL_DECISION_REASON: final.reason,
            n.GUARDRAIL_ATTEMPTS: len(result.attempts),
            n.GUARDRAIL_OVERHEAD_DURATION: overhead,
        }
        if result.confidence is not None:
            attributes[n.GUARDRAIL_CALIBRATED] = result.confidence.calibrated
            for component in COMPONENTS:
                value = result.confidence.get(component)
                if value is not None:
                    attributes[n.CONFIDENCE_ATTRIBUTES[component]] = value
        if result.error is not None:
            attributes[n.ERROR_TYPE] = result.error.type
            attributes[n.GUARDRAIL_ERROR_STAGE] = result.error.stage
        if self._span.is_recording():
            self._span.set_attributes(attributes)

        instruments = self._owner._instruments
        policy = {n.GUARDRAIL_POLICY_NAME: self._policy_name}
        instruments.overhead.record(overhead, policy)
        for decision in result.decisions:
            instruments.decisions.add(
                1,
                {
                    n.GUARDRAIL_DECISION_ACTION: decision.action.value,
                    n.GUARDRAIL_DECISION_TERMINAL: decision.action.is_terminal,
                    **policy,
                },
            )

    # -- ending ----------------------------------------------------------------------------------------------

    def _end_attempt(self, exc: BaseException | None, unfinished: str | None) -> None:
        """Detach and end the open attempt span, if any; ``unfinished`` marks it as an error."""
        span, token = self._attempt_span, self._attempt_token
        self._attempt_span = self._attempt_token = None
        if span is None:
            return
        try:
            if unfinished is not None:
                error_type = type(exc).__name__ if exc is not None else "AttemptNotFinished"
                span.set_attribute(n.ERROR_TYPE, error_type)
                span.set_status(Status(StatusCode.ERROR, unfinished))
        except Exception as failure:
            self._owner._failed("end_attempt", failure)
        finally:
            _end(span, token, self._owner)

    def close(self, exc: BaseException | None) -> None:
        """End every span this call opened; with ``exc`` (the call was aborted) they end as errors."""
        self._end_attempt(exc, "attempt did not finish" if exc is None else f"aborted by {type(exc).__name__}")
        span, token = self._span, self._token
        self._token = None
        try:
            if exc is not None:
                span.set_attribute(n.ERROR_TYPE, type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, f"guarded call aborted by {type(exc).__name__}"))
        except Exception as failure:
            self._owner._failed("close", failure)
        finally:
            _end(span, token, self._owner)


def _end(span: trace.Span, token: Token[Context] | None, owner: OtelTelemetry) -> None:
    """Detach ``token`` (restoring the caller's current span) and end ``span``; never raise."""
    try:
        if token is not None:
            otel_context.detach(token)
    except Exception as exc:
        owner._failed("detach", exc)
    try:
        span.end()
    except Exception as exc:
        owner._failed("end", exc)


def _request_attributes(generation: Generation) -> dict[str, Any]:
    """``gen_ai.request.*`` of the settings the backend generated with, those it reports."""
    options = generation.options
    if options is None:
        return {}
    attributes: dict[str, Any] = {}
    if options.max_new_tokens is not None:
        attributes[n.GEN_AI_REQUEST_MAX_TOKENS] = options.max_new_tokens
    if options.temperature is not None:
        attributes[n.GEN_AI_REQUEST_TEMPERATURE] = options.temperature
    if options.seed is not None:
        attributes[n.GEN_AI_REQUEST_SEED] = options.seed
    if options.stop:
        attributes[n.GEN_AI_REQUEST_STOP_SEQUENCES] = options.stop
    return attributes


def _evaluation(component: Component, value: float | None, sources: Any) -> dict[str, Any]:
    """The attributes of one ``gen_ai.evaluation.result`` event."""
    attributes: dict[str, Any] = {
        n.GEN_AI_EVALUATION_NAME: n.EVALUATION_NAMES[component],
        n.GEN_AI_EVALUATION_SCORE_LABEL: n.score_label(component, value),
    }
    if value is not None:
        attributes[n.GEN_AI_EVALUATION_SCORE_VALUE] = value
    used = sources.get(component) if sources else None
    if used:
        attributes[n.GEN_AI_EVALUATION_EXPLANATION] = "from " + ", ".join(used)
    elif value is None:
        attributes[n.GEN_AI_EVALUATION_EXPLANATION] = "not measured"
    return attributes
