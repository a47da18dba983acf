"""The OpenTelemetry GenAI semantic conventions' own strings, for the names guardrail emits.

Copied from the conventions' model (the open-telemetry/semantic-conventions-genai repository):
``model/gen-ai/registry.yaml`` at commit 002c8a6ea1c8a42b14a4527db83b3cabcded610a, ``model/gen-ai/metrics.yaml``
at 004902b8cb70aa5ae6ca4ae07132b7daabcd3e10 (attribute keys with their types and the members of the enums used;
metric names with instrument and unit), and the evaluation event of ``model/gen-ai/events.yaml``. Only what
guardrail uses: ``test_names.py`` checks that every GenAI constant in ``guardrail.telemetry._names`` is one of
these, spelled the same.
"""

from __future__ import annotations

ATTRIBUTES: dict[str, str] = {
    "gen_ai.operation.name": "enum",
    "gen_ai.provider.name": "enum",
    "gen_ai.request.model": "string",
    "gen_ai.request.max_tokens": "int",
    "gen_ai.request.temperature": "double",
    "gen_ai.request.seed": "int",
    "gen_ai.request.stop_sequences": "string[]",
    "gen_ai.output.type": "enum",
    "gen_ai.response.model": "string",
    "gen_ai.response.finish_reasons": "string[]",
    "gen_ai.usage.input_tokens": "int",
    "gen_ai.usage.output_tokens": "int",
    "gen_ai.token.type": "enum",
    "gen_ai.input.messages": "any",
    "gen_ai.output.messages": "any",
    "gen_ai.evaluation.name": "string",
    "gen_ai.evaluation.score.value": "double",
    "gen_ai.evaluation.score.label": "string",
    "gen_ai.evaluation.explanation": "string",
}

ENUM_MEMBERS: dict[str, frozenset[str]] = {
    "gen_ai.operation.name": frozenset({"chat", "generate_content", "text_completion", "embeddings", "invoke_agent"}),
    "gen_ai.output.type": frozenset({"text", "json", "image", "speech"}),
    "gen_ai.token.type": frozenset({"input", "output"}),
}
"""Members of each enum (those of ``gen_ai.operation.name`` abridged to the inference ones)."""

METRICS: dict[str, tuple[str, str]] = {
    "gen_ai.client.operation.duration": ("histogram", "s"),
    "gen_ai.client.token.usage": ("histogram", "{token}"),
}

EVENTS = frozenset({"gen_ai.evaluation.result"})

FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_call", "error"})
"""``FinishReason`` of the output-messages JSON schema (``compaction`` left out: no model here compacts)."""
