"""Familiarity evidence end to end on the real reference model: unknown words, question and image features."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from PIL import Image, ImageOps

from guardrail.data.easyvqa import load_easyvqa
from guardrail.types import GenerationOptions, Request

if TYPE_CHECKING:
    from guardrail.backends.base import TeacherForcedScores
    from guardrail.backends.transformers import TransformersBackend

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    from guardrail.backends.transformers import TransformersBackend
    from guardrail.reference import reference_model_path

    return TransformersBackend.from_pretrained(reference_model_path())


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return load_easyvqa("test")[0].image()


def _scores(backend: TransformersBackend, question: str, image: Image.Image) -> TeacherForcedScores:
    request = Request.from_question(question, [image])
    return backend.score(request, backend.generate(request, GenerationOptions()).token_ids)


def test_words_the_tokenizer_cannot_represent_are_counted(backend: TransformersBackend, image: Image.Image) -> None:
    known = _scores(backend, "what color is the shape?", image)
    unknown = _scores(backend, "which colour does the shape have?", image)
    assert known.prompt_unknown == 0
    assert unknown.prompt_unknown == 3  # which, colour, have
    assert unknown.prompt_logprobs is not None
    assert known.prompt_logprobs is not None
    assert unknown.prompt_logprobs.numel() == known.prompt_logprobs.numel() + 1


def test_case_is_treated_as_in_training(backend: TransformersBackend, image: Image.Image) -> None:
    lower = _scores(backend, "what color is the shape?", image)
    upper = _scores(backend, "What Color is the SHAPE?", image)
    assert upper.prompt_unknown == 0
    assert upper.prompt_features is not None
    assert lower.prompt_features is not None
    assert bool((upper.prompt_features == lower.prompt_features).all())


def test_the_estimator_keeps_the_features_for_calibration_and_the_prompt_statistics(
    backend: TransformersBackend, image: Image.Image
) -> None:
    from guardrail.confidence import DecoupledEstimator

    request = Request.from_question("which colour does the shape have?", [ImageOps.invert(image)])
    signals = DecoupledEstimator().estimate(backend, request, backend.generate(request, GenerationOptions()))
    assert set(signals.embeddings) == {"text", "image"}
    assert len(signals.embeddings["image"]) == backend.model.config.get_text_config().hidden_size
    assert signals.features["prompt_unknown_fraction"] == pytest.approx(3 / signals.features["prompt_tokens"])
    assert signals.features["prompt_max_surprisal"] >= signals.features["prompt_mean_surprisal"] > 0
    assert signals.familiarity is None  # no reference: not measured, never invented
    assert "embeddings" not in signals.model_dump()
