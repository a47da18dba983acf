"""``TransformersBackend.generate_batch``: one left-padded generation, each answer what ``generate`` gives alone; a
prompt longer than the model takes is refused alone, before any model call."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from PIL import Image

from guardrail import Generation, GenerationOptions, InputError, Request
from guardrail.backends import BatchBackend, TransformersBackend
from guardrail.backends.batching import answer_each
from tests.support.model_outputs import assert_same_model_output


def _requests() -> list[Request]:
    rng = np.random.default_rng(3)
    questions = ["What colour is the shape?", "Is there a circle?", "What shape is it, and is it red or blue?"]
    return [
        Request.from_question(q, [Image.fromarray(rng.integers(0, 256, size=(40 + 8 * i, 50, 3), dtype=np.uint8))])
        for i, q in enumerate(questions * 2)
    ]


def test_each_family_answers_a_batch_as_it_answers_one_request(family_backend: TransformersBackend) -> None:
    assert isinstance(family_backend, BatchBackend)
    requests = _requests()
    alone = [family_backend.generate(r, GenerationOptions()) for r in requests]
    together = family_backend.generate_batch(requests, [GenerationOptions()] * len(requests))
    assert len({len(r.question) for r in requests}) > 1  # prompts of different lengths: padding is exercised
    # text, token ids, usage, finish reason and options exactly; log-probs within the model-output tolerance
    assert_same_model_output(together, alone, name="batched")


def test_sampled_or_stopping_requests_are_answered_one_by_one(llava_backend: TransformersBackend) -> None:
    requests = _requests()[:3]
    options = [GenerationOptions(), GenerationOptions(temperature=0.9, seed=4), GenerationOptions(stop=("x",))]
    together = llava_backend.generate_batch(requests, options)
    alone = [llava_backend.generate(r, o) for r, o in zip(requests, options, strict=True)]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]


def test_mismatched_options_are_refused(llava_backend: TransformersBackend) -> None:
    with pytest.raises(ValueError, match="2 requests but 1 options"):
        llava_backend.generate_batch(_requests()[:2], [GenerationOptions()])


# -- prompts longer than the model takes -----------------------------------------------------------------------


def _sized(like: TransformersBackend, max_positions: int) -> TransformersBackend:
    """Another backend over ``like``'s model that takes ``max_positions`` positions."""
    return TransformersBackend(
        like.model, like.processor, device="cpu", max_new_tokens=12, max_positions=max_positions, name=like.name
    )


@contextmanager
def _forward_widths(backend: TransformersBackend) -> Iterator[list[int]]:
    """The width (positions) of every forward pass of the model while open."""
    widths: list[int] = []

    def record(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids")
        widths.append(0 if ids is None else int(ids.shape[1]))

    handle = backend.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield widths
    finally:
        handle.remove()


def test_the_prompt_limit_counts_the_images_tokens_on_every_family(
    family_backend: TransformersBackend, question: Request
) -> None:
    tokens = int(
        family_backend._encode(family_backend._prompt(question), family_backend.images(question))["input_ids"].shape[1]
    )
    fits = _sized(family_backend, tokens + 12)  # 12 positions kept for the answer (its token limit)
    assert fits.prompt_limit() == tokens
    fits.check_request(question)
    tight = _sized(family_backend, tokens + 11)
    assert tight.prompt_limit() == tokens - 1
    message = (
        f"the question is too long for {family_backend.name}: its prompt takes {tokens} tokens, over the limit of "
        f"{tokens - 1} (the model's {tokens + 11} positions less 12 kept for the answer; images count too)"
    )
    with pytest.raises(InputError, match=re.escape(message)):
        tight.check_request(question)
    with _forward_widths(tight) as widths, pytest.raises(InputError, match=re.escape(message)):
        tight.generate(question, GenerationOptions())
    assert widths == []  # refused before the model ran
    # A smaller answer budget leaves more room for the prompt.
    tight.check_request(question, GenerationOptions(max_new_tokens=11))


def test_the_answer_room_is_at_most_a_quarter_of_the_positions(llava_backend: TransformersBackend) -> None:
    assert llava_backend.max_positions == llava_backend.model.config.text_config.max_position_embeddings == 512
    assert llava_backend.prompt_limit() == 500  # 12 for the answer
    assert llava_backend.prompt_limit(1000) == 384  # 512 less a quarter
    assert _sized(llava_backend, 64).prompt_limit(1000) == 48
    with pytest.raises(ValueError, match="`max_positions` must be an int >= 2 or None, got 0"):
        _sized(llava_backend, 0)


def test_a_question_longer_than_the_model_takes_fails_alone_and_the_batch_goes_on(
    llava_backend: TransformersBackend,
) -> None:
    requests = _requests()[:3]
    long = Request.from_question("What colour is the shape? " * 400, [Image.new("RGB", (40, 50))])
    assert len(long.question) > 10_000  # a byte-level tokenizer: over 10,000 tokens, the model takes 512
    alone = [llava_backend.generate(r, GenerationOptions()) for r in requests]
    with _forward_widths(llava_backend) as widths:
        answered = answer_each(llava_backend, [requests[0], long, *requests[1:]], [GenerationOptions()] * 4)
    assert answered.batched
    refused = answered.results[1]
    assert isinstance(refused, InputError)
    assert re.search(
        r"its prompt takes at least [\d,]+ tokens of text, over the limit of 500 \(the model's 512", str(refused)
    )
    together = [r for r in answered.results if isinstance(r, Generation)]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    assert max(widths) <= 500  # the padded pass is as wide as the longest accepted prompt (and the answers' steps)
