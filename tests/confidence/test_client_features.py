"""Client features: deterministic, stable, measured from the request alone, and telling shifted inputs apart on real
easy-VQA data (no model anywhere in this file)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from guardrail import Request
from guardrail.confidence.client_features import (
    IMAGE_DIM,
    TEXT_DIM,
    image_features,
    measure_familiarity,
    request_features,
    text_features,
)
from guardrail.confidence.familiarity import FamiliarityReference
from guardrail.data.labelled import easyvqa_items
from guardrail.data.question_noise import with_question_noise
from guardrail.data.reworded import reworded_items
from guardrail.errors import CalibrationError
from guardrail.types import Signals

TOLERANCE = 1e-12
"""Features of the same input, recomputed: equal up to float rounding (they are exactly equal in practice)."""
QUESTION = "What color is the shape?"


def picture(seed: int = 0, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.full((size, size, 3), 230, dtype=np.uint8)
    pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = rng.integers(0, 256, size=3, dtype=np.uint8)
    return Image.fromarray(pixels)


def test_question_features_are_deterministic_and_the_same_in_another_process() -> None:
    here = text_features(QUESTION)
    assert here.shape == (TEXT_DIM,)
    assert np.all(np.isfinite(here))
    np.testing.assert_allclose(text_features(QUESTION), here, atol=TOLERANCE)
    code = (
        "from guardrail.confidence.client_features import text_features;"
        f"print(repr(text_features({QUESTION!r}).tolist()))"
    )
    # another interpreter with another str-hash seed: the hashing must not be Python's hash()
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "12345"}
    )
    np.testing.assert_allclose(np.array(eval(other.stdout)), here, atol=TOLERANCE)


def test_question_features_ignore_whitespace_runs_and_change_with_the_words() -> None:
    base = text_features(QUESTION)
    np.testing.assert_allclose(text_features("  What   color is\tthe shape? "), base, atol=TOLERANCE)
    assert np.linalg.norm(text_features("Which hue does the figure have?") - base) > 0.5
    assert np.linalg.norm(text_features("what color is the shape?") - base) > 0.05  # case is part of the wording


def test_image_features_are_deterministic_and_stable_under_re_encoding_and_tiny_changes() -> None:
    image = picture()
    features = image_features([image])
    assert features is not None
    assert features.shape == (IMAGE_DIM,)
    assert np.all(np.isfinite(features))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    again = image_features([decoded])
    assert again is not None
    np.testing.assert_allclose(again, features, atol=TOLERANCE)  # lossless: the same pixels
    nudged = np.asarray(image).copy()
    nudged[0, 0] = nudged[0, 0] + 1  # one channel of one pixel, by one level
    moved = image_features([Image.fromarray(nudged)])
    assert moved is not None
    assert np.max(np.abs(moved - features)) < 0.05
    blurred = image_features([image.filter(ImageFilter.GaussianBlur(2))])
    assert blurred is not None
    assert np.linalg.norm(blurred - features) > 10 * np.linalg.norm(moved - features)


def test_large_images_are_measured_at_the_working_resolution_and_images_are_mean_pooled() -> None:
    small, large = picture(1, 64), picture(1, 1024)
    assert image_features([large]) is not None
    both = image_features([small, picture(2, 64)])
    one, two = image_features([small]), image_features([picture(2, 64)])
    assert both is not None
    assert one is not None
    assert two is not None
    np.testing.assert_allclose(both, (one + two) / 2, atol=TOLERANCE)
    assert image_features([]) is None


def test_request_features_measure_what_the_request_carries() -> None:
    image = picture()
    with_image = request_features(Request.from_question(QUESTION, [image]))
    assert set(with_image) == {"text", "image"}
    np.testing.assert_allclose(with_image["text"], text_features(QUESTION), atol=TOLERANCE)
    np.testing.assert_allclose(with_image["image"], image_features([image]), atol=TOLERANCE)  # type: ignore[arg-type]
    assert set(request_features(Request.from_question(QUESTION))) == {"text"}


def test_a_reference_says_which_features_it_was_fitted_on() -> None:
    rng = np.random.default_rng(0)
    fit = {"text": rng.normal(size=(30, TEXT_DIM))}
    held = {"text": rng.normal(size=(10, TEXT_DIM))}
    assert FamiliarityReference.fit(fit, held).features == "model"
    client = FamiliarityReference.fit(fit, held, features="client")
    assert client.features == "client"
    assert FamiliarityReference.model_validate(client.model_dump(mode="json")) == client
    with pytest.raises(CalibrationError, match="`features` must be one of model, client, got 'both'"):
        FamiliarityReference.fit(fit, held, features="both")  # type: ignore[arg-type]


def test_measure_familiarity_uses_the_kind_the_reference_was_fitted_on() -> None:
    rng = np.random.default_rng(1)
    request = Request.from_question(QUESTION, [picture()])
    model_signals = Signals(embeddings={"text": tuple(rng.normal(size=8).tolist())})
    model = FamiliarityReference.fit({"text": rng.normal(size=(20, 8))}, {"text": rng.normal(size=(10, 8))})
    measured = measure_familiarity(model, model_signals, request)
    assert measured == model.apply(model_signals)
    questions = [f"What color is shape number {i}?" for i in range(40)]
    client = FamiliarityReference.fit(
        {"text": [text_features(q) for q in questions[:30]]},
        {"text": [text_features(q) for q in questions[30:]]},
        features="client",
    )
    measured = measure_familiarity(client, model_signals, request)  # the model's vectors are not what it reads
    assert measured.familiarity is not None
    assert measured.features["text_distance"] == pytest.approx(
        float(client.text.distance(text_features(QUESTION))),  # type: ignore[union-attr]
        rel=1e-12,
    )
    np.testing.assert_allclose(measured.embeddings["text"], text_features(QUESTION), atol=TOLERANCE)


def test_unreadable_images_leave_the_image_side_unmeasured_with_a_reason() -> None:
    questions = [f"What color is shape number {i}?" for i in range(40)]
    images = [np.asarray(image_features([picture(i)])) for i in range(40)]
    client = FamiliarityReference.fit(
        {"text": [text_features(q) for q in questions[:30]], "image": images[:30]},
        {"text": [text_features(q) for q in questions[30:]], "image": images[30:]},
        features="client",
    )
    broken = Request.from_question(QUESTION, [b"not an image at all"])
    measured = measure_familiarity(client, Signals(), broken)
    assert "text_familiarity" in measured.features
    assert "image_familiarity" not in measured.features
    assert any("image familiarity not measured" in p for p in measured.problems)


# -- on real data: shifted questions and images are less familiar than calibration-like ones ----------------------


@pytest.fixture(scope="module")
def reference() -> FamiliarityReference:
    calibration = [request_features(item.request) for item in easyvqa_items("calibration", limit=400, seed=0)]
    return FamiliarityReference.fit(
        {side: [f[side] for f in calibration[:200]] for side in ("text", "image")},
        {side: [f[side] for f in calibration[200:]] for side in ("text", "image")},
        features="client",
    )


def _familiarity(reference: FamiliarityReference, items: list, side: str) -> np.ndarray:  # type: ignore[type-arg]
    return np.array([reference.assess(request_features(item.request))[f"{side}_familiarity"] for item in items])


def test_reworded_and_garbled_questions_are_less_familiar_than_calibration_like_ones(
    reference: FamiliarityReference,
) -> None:
    usual = _familiarity(reference, easyvqa_items("test", limit=100, seed=1), "text")
    reworded = _familiarity(reference, reworded_items("test", group="evaluation", limit=100, seed=0), "text")
    garbled_items = [
        item for item in with_question_noise(easyvqa_items("test", limit=200, seed=2), 0.5, seed=0)
        if "question_noise" in item.tags
    ]  # fmt: skip
    garbled = _familiarity(reference, garbled_items, "text")
    assert np.median(usual) > 0.2
    assert np.mean(usual < 0.01) <= 0.05  # conformal: about 1 % of calibration-like questions
    assert np.median(reworded) < 0.01
    assert np.mean(reworded < 0.01) > 0.9
    assert np.median(garbled) < 0.05
    assert np.median(garbled) < np.median(usual) / 10


def test_images_under_a_corruption_calibration_never_saw_are_less_familiar(reference: FamiliarityReference) -> None:
    usual = _familiarity(reference, easyvqa_items("test", limit=100, seed=1), "image")
    noisy = _familiarity(
        reference, easyvqa_items("test", limit=100, seed=3, corruptions=("salt_pepper",), severities=(4, 5)), "image"
    )
    assert np.median(noisy) < np.median(usual) / 5
