"""``TransformersBackend.generate_batch``: one left-padded generation, each answer what ``generate`` gives alone."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from guardrail import GenerationOptions, Request
from guardrail.backends import BatchBackend, TransformersBackend
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
