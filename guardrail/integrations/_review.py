"""What integrations say back to an agent, and the human review of an escalation, shared by all of them.

A ``GuardResult`` becomes one ``AIMessage``:

- accepted: the answer as content; the confidences in ``response_metadata["guardrail"]``;
- abstained: a sentence that says the model was not confident enough and why: never the rejected answer;
- escalated: the escalation is put to a human through ``interrupt(payload)``; the payload (``review_payload``) is
  plain JSON: the question, the candidate answer, the confidences and the reason.

The human answers with ``Command(resume=decision)``, one of::

    {"type": "approve"}                      # the candidate answer is right
    {"type": "edit", "answer": "..."}        # the candidate is close: here is the corrected answer
    {"type": "answer", "answer": "..."}      # the reviewer answers the question directly
    {"type": "reject", "reason": "..."}      # no answer is given (reason optional)

``parse_review`` validates it and raises :class:`ReviewError` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeAlias

from langchain_core.messages import AIMessage
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..errors import InputError
from ..types import COMPONENTS, Confidence, GuardResult

__all__ = [
    "ESCALATION_KIND",
    "Approve",
    "DirectAnswer",
    "Edit",
    "Reject",
    "ReviewDecision",
    "ReviewError",
    "abstention_text",
    "confidences_of",
    "confidences_text",
    "decision_schema",
    "parse_review",
    "resolved_message",
    "result_json",
    "result_message",
    "review_payload",
]

ESCALATION_KIND = "guardrail.escalation"
"""The ``kind`` of every interrupt payload guardrail raises; how pending escalations are recognised."""


class _Decision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Approve(_Decision):
    """The reviewer confirms the candidate answer."""

    type: Literal["approve"] = "approve"


class Edit(_Decision):
    """The reviewer corrects the candidate answer."""

    type: Literal["edit"] = "edit"
    answer: str = Field(min_length=1)


class DirectAnswer(_Decision):
    """The reviewer answers the question themselves."""

    type: Literal["answer"] = "answer"
    answer: str = Field(min_length=1)


class Reject(_Decision):
    """The reviewer refuses to give an answer."""

    type: Literal["reject"] = "reject"
    reason: str | None = None


ReviewDecision: TypeAlias = Annotated[Approve | Edit | DirectAnswer | Reject, Field(discriminator="type")]
_DECISION: TypeAdapter[Approve | Edit | DirectAnswer | Reject] = TypeAdapter(ReviewDecision)

NoCandidateDecision: TypeAlias = Annotated[DirectAnswer | Reject, Field(discriminator="type")]
"""The decisions possible when the escalation has no candidate answer (nothing to approve or edit)."""


def decision_schema(candidate_answer: str | None) -> Any:
    """The ``response_schema`` LangGraph validates a resume value against (invalid ones are not saved)."""
    return ReviewDecision if candidate_answer else NoCandidateDecision


class ReviewError(InputError):
    """A human review decision (the ``Command(resume=...)`` payload) is malformed or does not fit the escalation."""


def parse_review(value: object, *, candidate_answer: str | None = None) -> Approve | Edit | DirectAnswer | Reject:
    """Validate a resume payload; ``approve`` needs a candidate answer to approve."""
    if isinstance(value, Approve | Edit | DirectAnswer | Reject):
        decision = value
    else:
        if not isinstance(value, Mapping):
            raise ReviewError(
                "review decision must be a dict such as {'type': 'approve'}, {'type': 'edit', 'answer': ...}, "
                f"{{'type': 'answer', 'answer': ...}} or {{'type': 'reject'}}, got {type(value).__name__}: {value!r}"
            )
        try:
            decision = _DECISION.validate_python(dict(value))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'decision'}: {e['msg']}" for e in exc.errors()
            )
            raise ReviewError(
                f"invalid review decision {dict(value)!r}: {problems} (type must be one of "
                "'approve', 'edit' (with 'answer'), 'answer' (with 'answer'), 'reject')"
            ) from exc
    if isinstance(decision, Approve | Edit) and not candidate_answer:
        raise ReviewError(f"cannot {decision.type}: the escalation has no candidate answer; use 'answer' or 'reject'")
    return decision


# ---------------------------------------------------------------------------------------------------------------


def result_json(result: GuardResult) -> dict[str, Any]:
    """A GuardResult as JSON-able data for graph state (attempt requests, which repeat the images, left out)."""
    data: dict[str, Any] = result.model_dump(mode="json", exclude={"attempts": {"__all__": {"request"}}})
    return data


def confidences_of(confidence: Confidence | None) -> dict[str, float | None]:
    """Every confidence component, in ``COMPONENTS`` order: ``visual``, ``reasoning``, ``overall`` and
    ``familiarity`` (``None`` where unknown)."""
    return {name: None if confidence is None else confidence.get(name) for name in COMPONENTS}


def abstention_text(result: GuardResult) -> str:
    """Why the guard gave no answer, in a sentence a user can read."""
    decision = result.final_decision
    reason = decision.params.get("message") or decision.reason
    conf = _format_confidences(result.confidence)
    return f"I am not confident enough to answer this ({reason}; {conf})."


def result_message(result: GuardResult, *, message_id: str | None = None) -> AIMessage:
    """The AI message an agent sees for an accepted or abstained result (escalations are reviewed first).

    ``response_metadata["finish_reason"]``: for an accepted answer, why the model stopped generating it (``length``
    when the token limit cut it off; absent when the backend could not tell); for the guard's own sentences
    (abstained, escalated), ``stop``: they are complete.
    """
    meta: dict[str, Any] = {"guardrail": _metadata(result)}
    finish_reason = result.finish_reason if result.status == "accepted" else "stop"
    if finish_reason is not None:
        meta["finish_reason"] = finish_reason
    if result.status == "accepted":
        assert result.answer is not None
        return AIMessage(content=result.answer, response_metadata=meta, id=message_id)
    if result.status == "abstained":
        return AIMessage(content=abstention_text(result), response_metadata=meta, id=message_id)
    assert result.escalation is not None
    return AIMessage(
        content=f"This question was escalated to a human reviewer ({result.escalation.reason}).",
        response_metadata=meta,
        id=message_id,
    )


def review_payload(result: GuardResult, **extra: Any) -> dict[str, Any]:
    """The JSON ``interrupt`` value shown to the reviewer of an escalated result."""
    assert result.escalation is not None
    escalation = result.escalation
    return {
        "kind": ESCALATION_KIND,
        "question": escalation.question,
        "candidate_answer": escalation.candidate_answer,
        "confidence": confidences_of(escalation.confidence),
        "reason": escalation.reason,
        "policy": result.policy,
        "allowed_decisions": ["approve", "edit", "answer", "reject"]
        if escalation.candidate_answer
        else ["answer", "reject"],
        **extra,
    }


def resolved_message(
    payload: Mapping[str, Any], decision: Approve | Edit | DirectAnswer | Reject, *, message_id: str | None = None
) -> AIMessage:
    """The AI message after a human decided: the approved, edited or human answer, or a rejection."""
    review = {"decision": decision.model_dump(mode="json"), "reason": payload.get("reason")}
    meta: dict[str, Any] = {
        "guardrail": {"status": "reviewed", "confidence": payload.get("confidence"), "review": review}
    }
    if isinstance(decision, Approve):
        return AIMessage(content=str(payload["candidate_answer"]), response_metadata=meta, id=message_id)
    if isinstance(decision, Edit | DirectAnswer):
        return AIMessage(content=decision.answer, response_metadata=meta, id=message_id)
    why = f": {decision.reason}" if decision.reason else ""
    return AIMessage(
        content=f"A human reviewer rejected the answer to this question{why}. No answer is given.",
        response_metadata=meta,
        id=message_id,
    )


def _metadata(result: GuardResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "confidence": confidences_of(result.confidence),
        "policy": result.policy,
        "decision": result.final_decision.rule,
        "attempts": len(result.attempts),
    }


def confidences_text(values: Mapping[str, float | None]) -> str:
    """``visual 0.20, reasoning 0.20, overall 0.20, familiarity 0.003`` for a :func:`confidences_of` mapping (a
    component missing from it, as in a payload saved before that component existed, reads ``unknown``).

    Two decimals, except a value below 0.01, which keeps two significant digits: a familiarity of 0.003 (an input
    unlike the calibration data) must not read ``0.00``."""
    parts = []
    for name in COMPONENTS:
        value = values.get(name)
        shown = "unknown" if value is None else f"{value:.2g}" if 0.0 < value < 0.01 else f"{value:.2f}"
        parts.append(f"{name} {shown}")
    return ", ".join(parts)


def _format_confidences(confidence: Confidence | None) -> str:
    return "confidence " + confidences_text(confidences_of(confidence))
