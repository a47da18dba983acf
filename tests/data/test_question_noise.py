"""Garbled-question copies for calibration: seeded, word-level, intent (image and answer) kept."""

from __future__ import annotations

import numpy as np
import pytest

from guardrail.data.labelled import LabelledItem
from guardrail.data.question_noise import QUESTION_NOISE, garble_question, with_question_noise
from guardrail.errors import InputError
from guardrail.types import ImageBlock, Request


def _item(question: str, answer: str = "red") -> LabelledItem:
    image = ImageBlock.from_bytes(b"not decoded here")
    return LabelledItem(request=Request.from_question(question, [image]), answer=answer, tags={"image_id": "x"})


@pytest.mark.parametrize("kind", QUESTION_NOISE)
def test_each_kind_changes_the_words_as_documented(kind: str) -> None:
    question = "what color is the shape ?"
    words = question.split()
    out = garble_question(question, kind, np.random.default_rng(3)).split()
    if kind == "drop_word":
        assert len(out) == len(words) - 1
    elif kind == "swap_words":
        assert sorted(out) == sorted(words)
        assert out != words
    elif kind == "repeat_word":
        assert len(out) == len(words) + 1
        assert set(out) == set(words)
    elif kind == "nonce_word":
        assert len(out) == len(words) + 1
        assert len(set(out) - set(words)) == 1
    else:
        assert 1 <= len(out) < len(words)
        assert out == words[: len(out)]


def test_one_word_questions_gain_a_nonce_word_and_empty_ones_are_refused() -> None:
    assert len(garble_question("shape?", "drop_word", np.random.default_rng(0)).split()) == 2
    with pytest.raises(InputError, match="empty"):
        garble_question("   ", "drop_word", np.random.default_rng(0))
    with pytest.raises(InputError, match="must be one of"):
        garble_question("what shape", "paraphrase", np.random.default_rng(0))


def test_copies_keep_image_and_answer_and_are_seeded() -> None:
    items = [_item(f"is there a shape number {i} here ?", answer=str(i)) for i in range(40)]
    out = with_question_noise(items, 0.25, seed=1)
    assert out[:40] == items
    copies = out[40:]
    assert len(copies) == 10
    for copy in copies:
        original = items[int(copy.answer)]
        assert copy.request.images == original.request.images
        assert copy.request.question != original.request.question
        assert copy.tags["question_noise"] in QUESTION_NOISE
        assert copy.tags["image_id"] == "x"
    assert with_question_noise(items, 0.25, seed=1) == out
    assert with_question_noise(items, 0.25, seed=2) != out
    assert with_question_noise(items, 0.0) == items
    with pytest.raises(InputError, match="fraction"):
        with_question_noise(items, 1.5)
