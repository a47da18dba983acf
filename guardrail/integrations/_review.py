"""What integrations say back to an agent, and the human review of an escalation, shared by all of them.

A ``GuardResult`` becomes one ``AIMessage``:

- accepted: the answer as content; the confidences in ``response_metadata["guardrail"]``;
- abstained: a sentence that says the model was not confident enough and why: never the rejected answer;
- escalated: the escalation is put to a human through ``interrupt(payload)``; the payload (``review_payload``) is
  plain JSON, everything a reviewer needs to judge the answer:

  ``question``, ``candidate_answer``, ``confidence`` (every component, ``None`` where unknown), ``reason``,
  ``policy``, ``allowed_decisions``; ``rule`` (the policy rule that escalated, e.g. ``rules[0] both-low``,
  ``on_exhausted``, ``on_error``), ``components`` (the confidence components that rule tested),
  ``decision_confidence`` (every component as the rule that escalated saw it: the latest attempt's, while
  ``confidence`` is the candidate's, which may come from an earlier attempt), ``error`` (the
  failure that ended the call, or ``None``); ``perception`` and ``reasoning`` (the candidate's ``<vision>`` and
  ``<reasoning>`` text, ``None`` without the tag; ``response``, the whole text, when it has neither); ``images``
  (one reference per image, see :mod:`guardrail.integrations.image_store`: ``ref``, ``sha256``, ``mime_type``,
  ``size``, ``source``: ``request`` for the question's images, ``view`` for views the candidate was given).
  Payloads saved before a key existed lack it; readers use ``.get``.

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
from ..responses import parse_response
from ..types import COMPONENTS, Attempt, Confidence, GuardResult, Request
from .image_store import ImageStore, image_reference

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
    "format_confidence",
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


def review_payload(
    result: GuardResult,
    *,
    request: Request | None = None,
    image_store: ImageStore | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON ``interrupt`` value shown to the reviewer of an escalated result (keys in the module docstring).

    ``request`` is the guarded request, whose images the payload names; inline images are written to
    ``image_store`` (without one, only small images travel inline, as ``data:`` URLs).
    """
    assert result.escalation is not None
    escalation = result.escalation
    attempt = _candidate_attempt(result)
    decision = result.final_decision
    return {
        "kind": ESCALATION_KIND,
        "question": escalation.question,
        "candidate_answer": escalation.candidate_answer,
        "confidence": confidences_of(escalation.confidence),
        "reason": escalation.reason,
        "policy": result.policy,
        "rule": decision.rule,
        "components": list(decision.components),
        "decision_confidence": confidences_of(escalation.decision_confidence),
        "error": None if result.error is None else result.error.model_dump(mode="json"),
        **_response_parts(attempt),
        "images": _image_references(request, attempt, image_store),
        "allowed_decisions": ["approve", "edit", "answer", "reject"]
        if escalation.candidate_answer
        else ["answer", "reject"],
        **extra,
    }


def _candidate_attempt(result: GuardResult) -> Attempt | None:
    """The attempt whose answer the escalation puts to the reviewer (``None`` when there is no candidate)."""
    escalation = result.escalation
    if escalation is None or escalation.candidate_answer is None:
        return None
    for attempt in result.attempts:
        generation = attempt.generation
        if (
            generation is not None
            and generation.final_answer == escalation.candidate_answer
            and attempt.confidence == escalation.confidence
        ):
            return attempt
    return None


_RESPONSE_LIMIT = 8000
"""Characters of a model's text a payload keeps (a runaway generation must not bloat every checkpoint)."""


def _response_parts(attempt: Attempt | None) -> dict[str, str | None]:
    """The candidate's perception and reasoning text; the whole response when it has neither tag."""
    if attempt is None or attempt.generation is None:
        return {"perception": None, "reasoning": None, "response": None}
    text = attempt.generation.text
    parsed = parse_response(text)
    perception = parsed.perception_text if parsed.has_vision_tag else None
    reasoning = text[parsed.reasoning[0] : parsed.reasoning[1]].strip() if parsed.has_reasoning_tag else None
    whole = None if parsed.has_vision_tag or parsed.has_reasoning_tag else text.strip()
    return {name: None if value is None else value[:_RESPONSE_LIMIT] for name, value in
            (("perception", perception), ("reasoning", reasoning), ("response", whole))}  # fmt: skip


def _image_references(
    request: Request | None, attempt: Attempt | None, store: ImageStore | None
) -> list[dict[str, Any]]:
    """The request's images, then any other images the candidate's attempt was shown (views), each once."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    sources = (
        ("request", request.images if request is not None else ()),
        ("view", attempt.request.images if attempt is not None and attempt.request is not None else ()),
    )
    for source, images in sources:
        for image in images:
            reference = image_reference(image, store=store)
            key = reference["sha256"] or reference["ref"] or f"{source}-{len(found)}"
            if key not in seen:
                seen.add(key)
                found.append({**reference, "source": source})
    return found


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
    unlike the calibration data) must not read ``0.00``. ``stability`` is shown only where it was measured (an
    artifact without the stability probe never measures it)."""
    shown = [name for name in COMPONENTS if name != "stability" or values.get(name) is not None]
    return ", ".join(f"{name} {format_confidence(values.get(name))}" for name in shown)


def format_confidence(value: float | None) -> str:
    """One confidence as :func:`confidences_text` shows it: ``0.20``, ``0.0031``, ``unknown``."""
    return "unknown" if value is None else f"{value:.2g}" if 0.0 < value < 0.01 else f"{value:.2f}"


def _format_confidences(confidence: Confidence | None) -> str:
    return "confidence " + confidences_text(confidences_of(confidence))
