"""Every name the guard's telemetry emits, defined once.

GenAI names are the project's own constants, spelled as in the OpenTelemetry GenAI semantic conventions (the
``semantic-conventions-genai`` repository, where they moved; the semconv package's ``_incubating`` copies are
private and marked deprecated, and no maintained Python package ships them). ``tests/telemetry/test_names.py``
checks every one against the conventions' own strings. ``error.type`` is stable and comes from the semconv
package. The project's own ``guardrail.*`` namespace is spelled here and nowhere else. Durations are in seconds,
on spans and in metrics alike.

Span names:
- ``guardrail.guard {model}`` (INTERNAL): one guarded call. The GenAI conventions have no operation for it: it
  is not one inference (``chat``), nor an agent (``invoke_agent``: it neither plans nor calls tools), so it
  carries no ``gen_ai.*`` attribute at all (its model is ``guardrail.model``): GenAI-aware backends classify
  any span with ``gen_ai.request.model`` as an LLM call (Phoenix does), which would count its time twice.
- ``chat {model}`` (CLIENT): one model attempt, a GenAI inference span (``gen_ai.operation.name=chat``).
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE

from ..types import Component

__all__ = [
    "CALL_SPAN_PREFIX",
    "CHAT",
    "CONFIDENCE_ATTRIBUTES",
    "CONFIDENCE_BUCKETS",
    "DURATION_BUCKETS",
    "ERROR_TYPE",
    "EVALUATION_NAMES",
    "GEN_AI_CLIENT_OPERATION_DURATION",
    "GEN_AI_CLIENT_TOKEN_USAGE",
    "GEN_AI_EVALUATION_EXPLANATION",
    "GEN_AI_EVALUATION_NAME",
    "GEN_AI_EVALUATION_RESULT",
    "GEN_AI_EVALUATION_SCORE_LABEL",
    "GEN_AI_EVALUATION_SCORE_VALUE",
    "GEN_AI_INPUT_MESSAGES",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_OUTPUT_MESSAGES",
    "GEN_AI_OUTPUT_TYPE",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MAX_TOKENS",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_REQUEST_SEED",
    "GEN_AI_REQUEST_STOP_SEQUENCES",
    "GEN_AI_REQUEST_TEMPERATURE",
    "GEN_AI_RESPONSE_FINISH_REASONS",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_TOKEN_TYPE",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "GUARDRAIL_ATTEMPT",
    "GUARDRAIL_ATTEMPTS",
    "GUARDRAIL_ATTEMPT_PERCEPT",
    "GUARDRAIL_ATTEMPT_PREFILLED",
    "GUARDRAIL_ATTEMPT_SAMPLED_ANSWERS",
    "GUARDRAIL_ATTEMPT_SAMPLES",
    "GUARDRAIL_ATTEMPT_TILES",
    "GUARDRAIL_ATTEMPT_TILE_PERCEPTS",
    "GUARDRAIL_CALIBRATED",
    "GUARDRAIL_CONFIDENCE",
    "GUARDRAIL_CONFIDENCE_COMPONENT",
    "GUARDRAIL_DECISIONS",
    "GUARDRAIL_DECISION_ACTION",
    "GUARDRAIL_DECISION_REASON",
    "GUARDRAIL_DECISION_RULE",
    "GUARDRAIL_DECISION_TERMINAL",
    "GUARDRAIL_ERROR_STAGE",
    "GUARDRAIL_MODEL",
    "GUARDRAIL_OVERHEAD_DURATION",
    "GUARDRAIL_POLICY_NAME",
    "GUARDRAIL_POLICY_VERSION",
    "GUARDRAIL_STATUS",
    "GUARDRAIL_VIEWS_COUNT",
    "GUARDRAIL_VIEWS_FETCHED",
    "GUARDRAIL_VIEWS_PROVIDER",
    "INSTRUMENTATION_SCOPE",
    "LABEL_HIGH",
    "LABEL_LOW",
    "LABEL_MEDIUM",
    "LABEL_UNKNOWN",
    "OUTPUT_TYPE_TEXT",
    "OVERHEAD_BUCKETS",
    "PROVIDER_OTHER",
    "TOKEN_BUCKETS",
    "TOKEN_TYPE_INPUT",
    "TOKEN_TYPE_OUTPUT",
    "confidence_label",
    "familiarity_label",
    "score_label",
]

INSTRUMENTATION_SCOPE: Final = "guardrail"

# -- GenAI names (OpenTelemetry GenAI semantic conventions) -------------------------------------------------------

GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
GEN_AI_OUTPUT_TYPE: Final = "gen_ai.output.type"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_EVALUATION_NAME: Final = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_VALUE: Final = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL: Final = "gen_ai.evaluation.score.label"
GEN_AI_EVALUATION_EXPLANATION: Final = "gen_ai.evaluation.explanation"
GEN_AI_EVALUATION_RESULT: Final = "gen_ai.evaluation.result"
"""The GenAI evaluation event, recorded on the attempt span it evaluates."""
GEN_AI_CLIENT_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
GEN_AI_CLIENT_TOKEN_USAGE: Final = "gen_ai.client.token.usage"

CHAT: Final = "chat"
"""``gen_ai.operation.name`` of a model attempt."""
OUTPUT_TYPE_TEXT: Final = "text"
"""``gen_ai.output.type`` of every attempt: the guard asks vision-language models for text."""
TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"
PROVIDER_OTHER: Final = "_OTHER"
"""``gen_ai.provider.name`` when the backend did not say which provider it is."""

DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""The bucket boundaries the GenAI conventions advise for ``gen_ai.client.operation.duration`` (seconds)."""
TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
"""The bucket boundaries the GenAI conventions advise for ``gen_ai.client.token.usage``."""

# -- The project's own namespace ------------------------------------------------------------------------------

CALL_SPAN_PREFIX: Final = "guardrail.guard"

GUARDRAIL_MODEL: Final = "guardrail.model"
"""The model a guarded call starts with (fallbacks show as their own ``chat {model}`` spans)."""
GUARDRAIL_POLICY_NAME: Final = "guardrail.policy.name"
GUARDRAIL_POLICY_VERSION: Final = "guardrail.policy.version"
GUARDRAIL_ATTEMPT: Final = "guardrail.attempt"
"""0-based index of the attempt a span or decision belongs to."""
GUARDRAIL_ATTEMPTS: Final = "guardrail.attempts"
"""How many model attempts a guarded call made."""
GUARDRAIL_CALIBRATED: Final = "guardrail.calibrated"
"""Whether the confidences were calibrated (``false``: raw scores, the guard has no calibration artifact), on the
call span (of its final confidence) and on each attempt span; absent when no confidence was measured."""
GUARDRAIL_DECISION_ACTION: Final = "guardrail.decision.action"
GUARDRAIL_DECISION_RULE: Final = "guardrail.decision.rule"
"""Which part of the policy fired: ``rules[2] name``, ``otherwise``, ``on_error``, ``on_exhausted``,
``on_uncalibrated``."""
GUARDRAIL_DECISION_REASON: Final = "guardrail.decision.reason"
"""Why, with the thresholds compared: ``visual 0.31 < 0.5 and reasoning 0.9 >= 0.5``."""
GUARDRAIL_DECISION_TERMINAL: Final = "guardrail.decision.terminal"
GUARDRAIL_STATUS: Final = "guardrail.status"
"""``accepted``, ``abstained`` or ``escalated``."""
GUARDRAIL_ERROR_STAGE: Final = "guardrail.error.stage"
GUARDRAIL_CONFIDENCE_COMPONENT: Final = "guardrail.confidence.component"
GUARDRAIL_VIEWS_FETCHED: Final = "guardrail.views.fetched"
"""Event on the guarded-call span: a view provider was asked for more images."""
GUARDRAIL_VIEWS_PROVIDER: Final = "guardrail.views.provider"
GUARDRAIL_VIEWS_COUNT: Final = "guardrail.views.count"
GUARDRAIL_ATTEMPT_TILES: Final = "guardrail.attempt.tiles"
"""How many tiles were answered alone before an attempt that reasons on their merged percept (mode ``tile``)."""
GUARDRAIL_ATTEMPT_SAMPLES: Final = "guardrail.attempt.samples"
"""How many answers a self-consistency attempt sampled (the majority's is the attempt's)."""
GUARDRAIL_ATTEMPT_PREFILLED: Final = "guardrail.attempt.prefilled"
"""``true`` when the attempt's answer continued from a given percept (merged from tiles, or its previous own)."""
GUARDRAIL_ATTEMPT_PERCEPT: Final = "guardrail.attempt.percept"
"""The percept the answer continued from (content: recorded only when content capture is on)."""
GUARDRAIL_ATTEMPT_TILE_PERCEPTS: Final = "guardrail.attempt.tile_percepts"
"""Each tile's percept, in tile order (content: recorded only when content capture is on)."""
GUARDRAIL_ATTEMPT_SAMPLED_ANSWERS: Final = "guardrail.attempt.sampled_answers"
"""Each sample's final answer, ``""`` for none (content: recorded only when content capture is on)."""

# Metrics
GUARDRAIL_DECISIONS: Final = "guardrail.decisions"
GUARDRAIL_CONFIDENCE: Final = "guardrail.confidence"
GUARDRAIL_OVERHEAD_DURATION: Final = "guardrail.overhead.duration"
"""The guarded call's wall time minus the model's own time, in seconds: a call-span attribute and a histogram of
the same name and unit (see ``OtelTelemetry``)."""
CONFIDENCE_BUCKETS: Final = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
"""Histogram boundaries of ``guardrail.confidence``; 0.01 and 0.05 resolve the small familiarity p-values."""
OVERHEAD_BUCKETS: Final = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CONFIDENCE_ATTRIBUTES: Final[dict[Component, str]] = {
    "visual": f"{GUARDRAIL_CONFIDENCE}.visual",
    "reasoning": f"{GUARDRAIL_CONFIDENCE}.reasoning",
    "overall": f"{GUARDRAIL_CONFIDENCE}.overall",
    "familiarity": f"{GUARDRAIL_CONFIDENCE}.familiarity",
    "stability": f"{GUARDRAIL_CONFIDENCE}.stability",
}
"""Call-span attributes with the final calibrated value of each component (absent when unknown)."""

# -- Evaluation names and labels --------------------------------------------------------------------------------

EVALUATION_NAMES: Final[dict[Component, str]] = {
    "visual": "visual_confidence",
    "reasoning": "reasoning_confidence",
    "overall": "overall_confidence",
    "familiarity": "familiarity_confidence",
    "stability": "stability_confidence",
}
"""``gen_ai.evaluation.name`` of each confidence component (``familiarity_confidence``: how familiar the input is,
a conformal p-value, not a probability of being right; ``stability_confidence``: the share of the percept's
probability that survives views that must not change it, measured, not calibrated)."""

LABEL_LOW: Final = "low"
LABEL_MEDIUM: Final = "medium"
LABEL_HIGH: Final = "high"
LABEL_UNKNOWN: Final = "unknown"
_MEDIUM_FROM: Final = 0.5
_HIGH_FROM: Final = 0.8
_FAMILIAR_MEDIUM_FROM: Final = 0.01
_FAMILIAR_HIGH_FROM: Final = 0.05


def confidence_label(value: float | None) -> str:
    """``gen_ai.evaluation.score.label`` of a calibrated probability: ``low`` (< 0.5), ``medium`` (< 0.8),
    ``high``, or ``unknown`` when the component could not be measured.

    Fixed bands, not the policy's thresholds: the label stays comparable across policies and low-cardinality,
    as the conventions ask; what the policy made of the value is in ``guardrail.decision.*``.
    """
    if value is None:
        return LABEL_UNKNOWN
    if value < _MEDIUM_FROM:
        return LABEL_LOW
    return LABEL_MEDIUM if value < _HIGH_FROM else LABEL_HIGH


def familiarity_label(value: float | None) -> str:
    """``gen_ai.evaluation.score.label`` of a familiarity p-value: ``low`` (< 0.01), ``medium`` (< 0.05), ``high``,
    or ``unknown`` when it was not measured.

    A p-value is uniform on inputs like the calibration data, so the probability bands of
    :func:`confidence_label` would call half of them ``low``; these bands are the usual significance levels
    instead (``low`` on at most 1% of calibration-like inputs, ``medium`` on at most 4% more).
    """
    if value is None:
        return LABEL_UNKNOWN
    if value < _FAMILIAR_MEDIUM_FROM:
        return LABEL_LOW
    return LABEL_MEDIUM if value < _FAMILIAR_HIGH_FROM else LABEL_HIGH


def score_label(component: Component, value: float | None) -> str:
    """The ``gen_ai.evaluation.score.label`` of ``component``'s value: :func:`familiarity_label` for
    ``familiarity``, :func:`confidence_label` for the calibrated probabilities."""
    return familiarity_label(value) if component == "familiarity" else confidence_label(value)
