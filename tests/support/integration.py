"""Named inputs for the integration, CLI and telemetry tests: a small policy, images, and guards over the scripted
fakes."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage
from PIL import Image

from guardrail import Guard, Policy
from tests.support.fakes import EchoModel, ScriptedModel, Step

POLICY: dict[str, Any] = {
    "version": 1,
    "name": "integration",
    "budget": {"max_attempts": 1, "max_seconds": None},
    "rules": [
        {"name": "both-low", "when": {"overall": {"below": 0.3}}, "do": "escalate",
         "with": {"reason": "both visual and reasoning confidence are low"}},
        {"name": "doubt", "when": {"overall": {"below": 0.6}}, "do": "abstain",
         "with": {"message": "the shape could not be seen clearly"}},
    ],
    "otherwise": "accept",
    "accept_uncalibrated": True,  # the scripted numbers stand for calibrated confidences; the guards have no calibrator
}  # fmt: skip

ACCEPT = Step(answer="red", visual=0.9, reasoning=0.9)
ABSTAIN = Step(answer="blue", visual=0.5, reasoning=0.5)
ESCALATE = Step(answer="green", visual=0.2, reasoning=0.2)


def policy(**overrides: Any) -> Policy:
    return Policy.model_validate({**POLICY, **overrides})


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def png_b64(colour: tuple[int, int, int] = (200, 30, 30)) -> str:
    return base64.b64encode(png_bytes(colour)).decode("ascii")


def image_message(question: str = "What colour is the shape?") -> HumanMessage:
    return HumanMessage(
        content=[
            {"type": "image", "base64": png_b64(), "mime_type": "image/png"},
            {"type": "text", "text": question},
        ]
    )


def scripted_guard(step: Step, **kwargs: Any) -> tuple[Guard, ScriptedModel]:
    model = ScriptedModel(steps=(step,))
    return Guard(model, estimator=model, policy=kwargs.pop("policy", policy()), **kwargs), model


LATER_ESCALATION: dict[str, Any] = {
    "version": 1,
    "name": "later",
    "budget": {"max_attempts": 3, "max_seconds": None},
    "rules": [
        {"name": "both-doubtful", "when": {"visual": {"below": 0.4}, "reasoning": {"below": 0.4}}, "do": "escalate",
         "with": {"reason": "both visual and reasoning confidence are low"}},
        {"name": "perception-doubt", "when": {"visual": {"below": 0.5}}, "do": "fetch_more_views",
         "with": {"views": 1, "provider": "zoom"}},
    ],
    "otherwise": "accept",
    "accept_uncalibrated": True,
}  # fmt: skip
"""A policy whose escalation fires on a later attempt: more views first, then both confidences low."""

FIRST_DOUBT = Step(answer="red", visual=0.45, reasoning=0.53)  # the best attempt: the reviewer's candidate
THEN_BOTH_LOW = Step(answer="teal", visual=0.3, reasoning=0.35)  # what the escalating rule tested


def later_escalation_guard() -> Guard:
    """Escalates on its second attempt (``THEN_BOTH_LOW``) while its best attempt is the first (``FIRST_DOUBT``)."""
    model = ScriptedModel(steps=(FIRST_DOUBT, THEN_BOTH_LOW))
    return Guard(model, estimator=model, policy=Policy.model_validate(LATER_ESCALATION))


def echo_guard() -> Guard:
    model = EchoModel()
    return Guard(model, estimator=model, policy=policy())


def serve_suite_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """langchain-tests' image tests download an image with ``httpx.get``; serve a local PNG instead (tests never
    use the network)."""

    def get(url: str, **kwargs: Any) -> httpx.Response:
        return httpx.Response(200, content=png_bytes(size=64), request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", get)


OLD_PAYLOAD_KEYS = ("kind", "question", "candidate_answer", "confidence", "reason", "policy", "allowed_decisions")
"""What an escalation payload held before it carried images, perception and the rule."""


def escalate_as_before_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the review node save payloads as they were before images and rules (``OLD_PAYLOAD_KEYS`` only)."""
    import guardrail.integrations.langgraph as langgraph
    from guardrail.integrations._review import review_payload

    monkeypatch.setattr(
        langgraph,
        "review_payload",
        lambda result, **_: {k: v for k, v in review_payload(result).items() if k in OLD_PAYLOAD_KEYS},
    )
