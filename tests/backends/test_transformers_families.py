"""End to end on tiny random LLaVA, Idefics3/SmolVLM, Qwen2-VL and Qwen2.5-VL models.

The key invariant: teacher-forced re-scoring of a generated answer under the original image, batched with
perturbed variants, reproduces the log-probs the model produced while generating it (within the model-output
tolerance: another forward pass, not the same floats).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from guardrail import Generation, GenerationOptions, Request
from guardrail.backends.transformers import TransformersBackend
from guardrail.confidence import DecoupledEstimator
from guardrail.confidence.perturb import perturb_image
from tests.support.model_outputs import assert_same_model_output

STRUCTURED = (
    "<vision>red circle</vision><reasoning>so red</reasoning>\\boxed{red}"
    "<vision_confidence>8</vision_confidence><reasoning_confidence>6</reasoning_confidence>"
)


def test_generate(family_backend: TransformersBackend, question: Request) -> None:
    gen = family_backend.generate(question, GenerationOptions())
    assert 1 <= len(gen.token_ids) <= 12
    assert len(gen.token_logprobs) == len(gen.token_ids)
    assert all(lp <= 0 for lp in gen.token_logprobs)
    visible = [i for i in gen.token_ids if i < 256]  # the byte tokens; every special token is hidden
    assert gen.text == family_backend.tokenizer.decode(visible)
    assert gen.provider == "transformers"
    assert gen.usage.output_tokens == len(gen.token_ids)
    assert gen.usage.input_tokens > 0
    assert gen.seconds > 0


def test_rescoring_reproduces_generation_logprobs(family_backend: TransformersBackend, question: Request) -> None:
    gen = family_backend.generate(question, GenerationOptions())
    images = family_backend.model_images(question)
    blacked = [perturb_image(im, "blackout", patch_size=family_backend.patch_size, seed=1) for im in images]
    scores = family_backend.score(question, gen.token_ids, [blacked, family_backend.images(question)])
    rows = scores.token_logprobs
    assert rows.shape == (3, len(gen.token_ids))
    assert_same_model_output(tuple(rows[0].tolist()), gen.token_logprobs, name="row 0")
    assert_same_model_output(rows[2], rows[0], name="the original again, as a variant")
    assert not torch.allclose(rows[1], rows[0], atol=1e-6)  # the blackened image changes the answer's odds
    assert scores.entropy is None


def test_rescoring_distribution_reductions(family_backend: TransformersBackend, question: Request) -> None:
    gen = family_backend.generate(question, GenerationOptions(max_new_tokens=5))
    images = family_backend.model_images(question)
    grey = [perturb_image(im, "grey") for im in images]
    scores = family_backend.score(question, gen.token_ids, [grey], distributions=True)
    assert scores.entropy is not None
    assert scores.margin is not None
    assert scores.kl_full is not None
    n = len(gen.token_ids)
    assert scores.entropy.shape == scores.margin.shape == scores.kl_full.shape == (2, n)
    assert (scores.entropy >= 0).all()
    assert ((scores.margin >= 0) & (scores.margin <= 1)).all()
    torch.testing.assert_close(scores.kl_full[0], torch.zeros(n), atol=1e-6, rtol=0)
    assert (scores.kl_full[1] > 0).all()


def test_estimator_on_a_structured_answer(family_backend: TransformersBackend, question: Request) -> None:
    ids = family_backend.tokenizer.encode(STRUCTURED, add_special_tokens=False)
    logprobs = family_backend.score(question, ids).token_logprobs[0]
    gen = Generation(text=STRUCTURED, token_ids=tuple(ids), token_logprobs=tuple(logprobs.tolist()))
    signals = DecoupledEstimator(draws=2, full_distribution=True).estimate(family_backend, question, gen)
    for value in (signals.visual, signals.reasoning, signals.holistic):
        assert value is not None
        assert 0.0 <= value <= 1.0
    assert signals.problems == ()
    assert signals.features["vision_tokens"] == len("red circle")  # byte-level tokenizer: one token a character
    assert signals.features["answer_tokens"] == len("red")
    assert signals.features["vision_kl"] > 0
    assert signals.features["verbalized_reasoning"] == pytest.approx(0.6)


def test_model_images_are_at_the_encoders_resolution(family_backend: TransformersBackend, question: Request) -> None:
    (image,) = family_backend.model_images(question)
    assert image.width % family_backend.patch_size == 0 or family_backend.name == "idefics3"
    assert max(image.size) == 28 or family_backend.name.startswith("qwen")


def test_model_resolution_is_what_the_processor_sees(family_backend: TransformersBackend, photo: Image.Image) -> None:
    """Processing the model-resolution image gives the original's pixel values: perturbations hit those pixels."""
    large = photo.resize((500, 400))
    request = Request.from_question("?", [large])
    (image,) = family_backend.model_images(request)
    process = family_backend.processor.image_processor
    original = process(images=[large], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(process(images=[image], return_tensors="pt")["pixel_values"], original)


def test_two_images_rescore_consistently(family_backend: TransformersBackend, photo: Image.Image) -> None:
    request = Request.from_question("Which differs?", [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    gen = family_backend.generate(request, GenerationOptions(max_new_tokens=4))
    images = family_backend.model_images(request)
    assert len(images) == 2
    grey = [perturb_image(im, "grey") for im in images]
    rows = family_backend.score(request, gen.token_ids, [grey]).token_logprobs
    assert_same_model_output(tuple(rows[0].tolist()), gen.token_logprobs, name="row 0")
    assert not torch.allclose(rows[1], rows[0], atol=1e-6)


def test_generation_never_emits_image_placeholders(family_backend: TransformersBackend, question: Request) -> None:
    # A random model would happily emit its image token; an answer holding one cannot be re-scored.
    gen = family_backend.generate(question, GenerationOptions(max_new_tokens=64))
    assert family_backend._placeholder_ids  # every family declares at least its image token
    assert not set(gen.token_ids) & family_backend._placeholder_ids


def test_the_scoring_pass_also_returns_familiarity_evidence(
    family_backend: TransformersBackend, question: Request
) -> None:
    gen = family_backend.generate(question, GenerationOptions(max_new_tokens=4))
    scores = family_backend.score(question, gen.token_ids)
    hidden = family_backend.model.config.get_text_config().hidden_size
    assert scores.image_features is not None
    assert scores.prompt_features is not None
    assert scores.image_features.shape == scores.prompt_features.shape == (hidden,)
    assert not torch.allclose(scores.image_features, scores.prompt_features)
    assert scores.prompt_logprobs is not None
    assert scores.prompt_logprobs.numel() >= len(question.question.encode()) // 4  # the question's own tokens
    assert (scores.prompt_logprobs <= 0).all()
    other = question.replacing_images([question.images[0]]).with_text(" and what else?")
    assert family_backend.score(other, gen.token_ids).prompt_logprobs.numel() > scores.prompt_logprobs.numel()  # type: ignore[union-attr]
    # another image: other image features, the same question features
    black = Request.from_question(question.question, [Image.new("RGB", (32, 32), "black")])
    again = family_backend.score(black, gen.token_ids)
    assert again.prompt_features is not None
    assert again.image_features is not None
    assert_same_model_output(again.prompt_features, scores.prompt_features, name="question features")
    assert not torch.allclose(again.image_features, scores.image_features)
