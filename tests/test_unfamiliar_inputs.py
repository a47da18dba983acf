"""Off the calibration data, the shipped guard knows it does not know (issue 13), on the real reference model.

The quick-start question, asked as a user would write it, is answered and accepted; questions in words the model
never saw, empty questions and images unlike any calibration image are not accepted with in-distribution
confidence. ``bench/shift.py`` measures the same at scale.
"""

from __future__ import annotations

import pytest
from PIL import Image, ImageOps

from guardrail import Guard, InputError, Request
from guardrail.data.easyvqa import Scene, load_easyvqa
from guardrail.types import Message, TextBlock

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def guard() -> Guard:
    from guardrail.pretrained import load_guard

    return load_guard()


@pytest.fixture(scope="module")
def scene() -> tuple[Image.Image, Scene]:
    example = next(e for e in load_easyvqa("test") if e.question_type == "color")
    return example.image(), example.scene


def test_the_readme_question_as_a_user_writes_it_is_answered_right_and_accepted(
    guard: Guard, scene: tuple[Image.Image, Scene]
) -> None:
    image, truth = scene
    result = guard.run(Request.from_question("What color is the shape?", [image]))
    assert result.status == "accepted", result.final_decision
    assert result.answer == truth.color
    assert result.confidence is not None
    assert result.confidence.familiarity is not None
    assert result.confidence.familiarity > 0.01


@pytest.mark.parametrize("question", ["Which colour does the shape have?", "Tell me what hue you see, please."])
def test_a_question_in_words_the_model_never_saw_is_unfamiliar_and_not_accepted(
    guard: Guard, scene: tuple[Image.Image, Scene], question: str
) -> None:
    image, _ = scene
    result = guard.run(Request.from_question(question, [image]))
    first = result.attempts[0].confidence
    assert first is not None
    assert first.familiarity is not None
    assert first.familiarity < 0.01
    assert result.status != "accepted", result.answer
    signals = result.attempts[0].signals
    assert signals is not None
    features = signals.features
    assert features["prompt_unknown_fraction"] > 0
    assert features["text_shift"] > features.get("image_shift", 0.0)


def test_an_image_unlike_any_calibration_image_lowers_confidence(
    guard: Guard, scene: tuple[Image.Image, Scene]
) -> None:
    image, _ = scene
    usual = guard.run(Request.from_question("what shape is in the image?", [image]))
    odd = guard.run(Request.from_question("what shape is in the image?", [ImageOps.solarize(image, 100)]))
    assert usual.status == "accepted"
    assert odd.status != "accepted"
    first, plain = odd.attempts[0], usual.attempts[0]
    assert first.signals is not None
    assert plain.signals is not None
    assert first.signals.features["image_shift"] > plain.signals.features["image_shift"] + 1.0
    assert first.confidence is not None
    assert plain.confidence is not None
    assert first.confidence.familiarity is not None
    assert first.confidence.familiarity < 0.01
    assert first.confidence.overall is not None
    assert plain.confidence.overall is not None
    assert first.confidence.visual is not None
    assert plain.confidence.visual is not None
    # the percept of a solarised image is doubted (the stability probe and the shift), and so is the answer
    assert first.confidence.visual < plain.confidence.visual - 0.3
    assert first.confidence.overall < plain.confidence.overall - 0.1


def test_an_empty_question_is_an_input_error_never_an_answer(guard: Guard, scene: tuple[Image.Image, Scene]) -> None:
    image, _ = scene
    with pytest.raises(InputError, match="empty"):
        Request.from_question("   ", [image])
    request = Request.from_question("x", [image])
    blank = Message(role="user", content=(*request.messages[0].images, TextBlock(text=" \n ")))
    result = guard.run(Request(messages=(blank,)))
    assert result.status == "abstained"
    assert result.answer is None
    assert result.attempts == ()
    assert result.error is not None
    assert result.error.stage == "input"


def test_an_image_only_request_without_any_question_is_refused_too(guard: Guard) -> None:
    image = Image.new("RGB", (64, 64), "white")
    request = Request(messages=(Message(role="user", content=(Request.from_question("x", [image]).images[0],)),))
    result = guard.run(request)
    assert result.status == "abstained"
    assert result.error is not None
    assert result.error.stage == "input"
