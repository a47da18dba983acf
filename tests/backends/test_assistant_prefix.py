"""``GenerationOptions.assistant_prefix`` on the shipped reference model: the answer continues from the given text,
and its token ids and log-probs cover the whole answer, the prefix's tokens teacher-forced.

The reference model writes easy-VQA percepts (``<think><vision>I see a red circle.</vision>...``); prefilled with
another percept it reasons on that one. Log-probs are compared with teacher-forced re-scoring (``score``) within
1e-4 (float32 on the CPU; the two passes differ only in how the attention is batched).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from guardrail import GenerationOptions, Request
from guardrail.backends.transformers import TransformersBackend
from guardrail.confidence.estimator import DecoupledEstimator
from guardrail.errors import BackendError
from guardrail.pretrained import load_backend
from guardrail.responses import parse_response

TOLERANCE = 1e-4
PERCEPT = "<think><vision>I see a blue circle.</vision>"


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    loaded = load_backend()
    assert isinstance(loaded, TransformersBackend)
    return loaded


def circle(colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=colour)
    return image


RED = Request.from_question("What color is the shape?", [circle((255, 0, 0))])
GREEN = Request.from_question("What shape is it?", [circle((0, 160, 0))])


def logprob_gap(
    backend: TransformersBackend, request: Request, token_ids: tuple[int, ...], logprobs: tuple[float, ...]
) -> float:
    scored = backend.score(request, token_ids).token_logprobs[0]
    return float((torch.tensor(logprobs) - scored).abs().max())


def test_the_answer_starts_with_the_prefix_and_reasons_on_it(backend: TransformersBackend) -> None:
    plain = backend.generate(RED)
    assert parse_response(plain.text).perception_text == "I see a red circle."
    prefilled = backend.generate(RED, GenerationOptions(assistant_prefix=PERCEPT))
    assert prefilled.text.startswith(PERCEPT)
    assert len(prefilled.text) > len(PERCEPT)  # it continued
    assert parse_response(prefilled.text).perception_text == "I see a blue circle."
    assert prefilled.answer == "blue"  # reasoned on the given percept, not on the pixels
    assert prefilled.options is not None
    assert prefilled.options.assistant_prefix == PERCEPT


def test_the_prefix_tokens_carry_their_teacher_forced_logprobs(backend: TransformersBackend) -> None:
    prefilled = backend.generate(RED, GenerationOptions(assistant_prefix=PERCEPT))
    prefix_ids = backend.tokenizer(PERCEPT, add_special_tokens=False)["input_ids"]
    assert prefilled.token_ids[: len(prefix_ids)] == tuple(prefix_ids)
    assert len(prefilled.token_logprobs) == len(prefilled.token_ids)
    assert logprob_gap(backend, RED, prefilled.token_ids, prefilled.token_logprobs) < TOLERANCE
    # The prefix tells the model something its image contradicts: its tokens are not all near-certain.
    assert min(prefilled.token_logprobs[: len(prefix_ids)]) < -1.0
    assert prefilled.usage.output_tokens == len(prefilled.token_ids) - len(prefix_ids)


def test_a_prefix_that_matches_the_model_gives_its_own_answer(backend: TransformersBackend) -> None:
    plain = backend.generate(RED)
    head = "<think><vision>I see a"
    continued = backend.generate(RED, GenerationOptions(assistant_prefix=head))
    assert continued.token_ids == plain.token_ids
    assert max(abs(a - b) for a, b in zip(continued.token_logprobs, plain.token_logprobs, strict=True)) < TOLERANCE


def test_a_batch_continues_each_row_from_its_own_prefix(backend: TransformersBackend) -> None:
    options = [GenerationOptions(assistant_prefix=PERCEPT), GenerationOptions(assistant_prefix="<think><vision>I see")]
    batched = backend.generate_batch([RED, GREEN], options)
    for request, opts, generation in zip([RED, GREEN], options, batched, strict=True):
        assert opts.assistant_prefix is not None
        assert generation.text.startswith(opts.assistant_prefix)
        alone = backend.generate(request, opts)
        assert generation.token_ids == alone.token_ids
        assert logprob_gap(backend, request, generation.token_ids, generation.token_logprobs) < TOLERANCE


def test_the_estimator_measures_a_prefilled_answer_as_rescoring_would(backend: TransformersBackend) -> None:
    """Row 0 kept from generation (prefix included) gives the signals that re-scoring everything gives."""
    estimator = DecoupledEstimator()
    prefilled = backend.generate(RED, GenerationOptions(assistant_prefix=PERCEPT))
    assert backend.reference(RED, prefilled) is not None
    kept = estimator.estimate(backend, RED, prefilled)
    rescored = estimator.estimate(backend, RED, prefilled.model_copy())  # a copy finds no kept reference
    assert kept.visual is not None
    assert rescored.visual is not None
    assert kept.visual == pytest.approx(rescored.visual, abs=TOLERANCE)
    assert kept.reasoning == pytest.approx(rescored.reasoning, abs=TOLERANCE)
    assert not any("vision" in problem for problem in kept.problems)


def test_a_prefix_that_does_not_start_at_a_token_boundary_is_refused(backend: TransformersBackend) -> None:
    """After ``ASSISTANT:`` a ``:`` joins the prompt's last token: its ids would not be the prompt's continuation."""

    def ids(text: str) -> list[int]:
        return list(backend.tokenizer(text, add_special_tokens=False)["input_ids"])

    prompt = backend._prompt(RED)
    assert ids(prompt + ":") != ids(prompt) + ids(":")
    with pytest.raises(BackendError, match="tokenises differently after the prompt than alone"):
        backend.generate(RED, GenerationOptions(assistant_prefix=":"))


def test_an_empty_prefix_is_refused_by_the_options() -> None:
    with pytest.raises(ValueError, match="assistant_prefix must be a non-empty string or None"):
        GenerationOptions(assistant_prefix="")
