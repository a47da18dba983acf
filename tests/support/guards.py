"""The loop tests' policy, request and scripted guard: what most tests of ``Guard`` start from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from guardrail import Guard, Policy, Request
from tests.support.fakes import ScriptedModel, Step

RULES: list[dict[str, Any]] = [
    {"name": "perception", "when": {"visual": {"below": 0.5}, "reasoning": {"at_least": 0.5}},
     "do": "fetch_more_views", "with": {"views": 2}},
    {"name": "reasoning", "when": {"reasoning": {"below": 0.5}, "visual": {"at_least": 0.5}},
     "do": "re_ask", "with": {"prompt": "Think again."}},
    {"name": "both-low", "when": {"overall": {"below": 0.3}}, "do": "escalate"},
    {"name": "unknown", "when": {"visual": {"unknown": True}}, "do": "abstain"},
]  # fmt: skip


def make_policy(**overrides: Any) -> Policy:
    """Three attempts in five seconds: more views on perception doubt, a re-ask on reasoning doubt, escalate when
    both are low, abstain when the visual confidence is unknown, else accept; ``overrides`` replace top-level keys.

    The scripted models' numbers stand for calibrated confidences, but the guards built over them have no
    calibrator: the policy opts in to deciding on them (``accept_uncalibrated``)."""
    data: dict[str, Any] = {
        "version": 1,
        "name": "test",
        "budget": {"max_attempts": 3, "max_seconds": 5},
        "rules": RULES,
        "otherwise": "accept",
        "accept_uncalibrated": True,
    }
    data.update(overrides)
    return Policy.model_validate(data)


def image_request(question: str = "What colour is the shape?") -> Request:
    """``question`` about one 32 x 32 red image."""
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    return Request.from_question(question, [image])


def make_guard(steps: Sequence[Step], **kwargs: Any) -> tuple[Guard, ScriptedModel]:
    """A guard over a ``ScriptedModel`` playing ``steps`` (model and estimator), with ``make_policy()`` unless
    ``policy`` is given; the other ``kwargs`` go to ``Guard``."""
    model = ScriptedModel(steps=steps)
    policy = kwargs.pop("policy", make_policy())
    return Guard(model, estimator=model, policy=policy, **kwargs), model
