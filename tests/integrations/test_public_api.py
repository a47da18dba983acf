"""The public surface of ``guardrail.integrations`` is deliberate: this test fails when it changes by accident."""

from __future__ import annotations

import guardrail.integrations as integrations

EXPECTED = {
    "Approve", "CallableViewProvider", "DirectAnswer", "Edit", "GuardSource", "GuardState", "GuardrailChatModel",
    "GuardrailMiddleware", "PendingEscalation", "RecaptureProvider", "Reject", "ReviewDecision", "ReviewError",
    "ToolViewProvider", "add_guardrail_nodes", "aresume_escalation", "as_view_provider", "guardrail_graph",
    "list_escalations", "load_graph_factory", "messages_from_request", "open_saver", "parse_review",
    "pending_payload", "request_from_messages", "resolve_escalation", "resume_escalation",
}  # fmt: skip


def test_exported_names_are_pinned() -> None:
    assert set(integrations.__all__) == EXPECTED
    assert all(hasattr(integrations, name) for name in EXPECTED)


def test_review_errors_are_guardrail_input_errors() -> None:
    from guardrail import GuardrailError, InputError

    assert issubclass(integrations.ReviewError, InputError)
    assert issubclass(integrations.ReviewError, GuardrailError)
