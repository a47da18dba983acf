"""Garbled copies of calibration questions, so that calibration sees questions the model may not understand.

Calibration data usually asks its questions one way. Without other questions in it, a calibrator cannot learn that
an unfamiliar question makes the model's answer less reliable, and it would report in-distribution confidence for
any wording. ``with_question_noise`` therefore adds seeded copies of some items whose question is garbled at the
word level (the image and the right answer stay those of the original: the user's intent did not change):

=================  ==============================================================
``drop_word``      one word left out
``swap_words``     two neighbouring words exchanged
``repeat_word``    one word said twice
``nonce_word``     a made-up word (random letters) put in at a random place
``truncate``       the question cut off after a random number of words (>= 1)
=================  ==============================================================

These are noise, not paraphrases: nothing here knows a language, a data set or a vocabulary, and none of them
writes the kind of natural rewording (synonyms, other sentence forms, other case) that the shift benchmark
evaluates on, so the benchmark measures how calibration generalises rather than what it memorised.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..types import Message, Request, TextBlock
from .labelled import LabelledItem

__all__ = ["QUESTION_NOISE", "garble_question", "with_question_noise"]

QUESTION_NOISE: tuple[str, ...] = ("drop_word", "swap_words", "repeat_word", "nonce_word", "truncate")
"""Every kind of word-level question noise."""


def garble_question(question: str, kind: str, rng: np.random.Generator) -> str:
    """``question`` with one kind of word-level noise (a question of one word can only gain a nonce word)."""
    if kind not in QUESTION_NOISE:
        raise InputError(f"`kind` must be one of {list(QUESTION_NOISE)}, got {kind!r}")
    words = question.split()
    if not words:
        raise InputError("cannot garble an empty question")
    if len(words) < 2 and kind != "nonce_word":
        kind = "nonce_word"
    if kind == "drop_word":
        del words[int(rng.integers(len(words)))]
    elif kind == "swap_words":
        i = int(rng.integers(len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    elif kind == "repeat_word":
        i = int(rng.integers(len(words)))
        words.insert(i, words[i])
    elif kind == "nonce_word":
        letters = rng.choice(list(string.ascii_lowercase), size=int(rng.integers(3, 9)))
        words.insert(int(rng.integers(len(words) + 1)), "".join(letters))
    else:
        words = words[: int(rng.integers(1, len(words)))]
    return " ".join(words)


def _with_question(request: Request, question: str) -> Request:
    """``request`` whose last user message has ``question`` as its only text (images kept in place)."""
    messages = list(request.messages)
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            blocks = [b for b in messages[i].content if not isinstance(b, TextBlock)]
            messages[i] = Message(role="user", content=(*blocks, TextBlock(text=question)))
            return request.model_copy(update={"messages": tuple(messages)})
    raise InputError("the request has no user message to garble")


def with_question_noise(
    items: Sequence[LabelledItem], fraction: float, *, seed: int = 0, kinds: Sequence[str] = QUESTION_NOISE
) -> list[LabelledItem]:
    """``items`` followed by garbled copies of a seeded ``fraction`` of them (tagged ``question_noise: KIND``)."""
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"`fraction` must be in [0, 1], got {fraction}")
    rng = np.random.default_rng([seed, 7919])
    count = round(fraction * len(items))
    chosen = np.sort(rng.choice(len(items), size=count, replace=False)) if count else np.array([], dtype=int)
    extra = []
    for index in chosen:
        item = items[int(index)]
        kind = str(kinds[int(rng.integers(len(kinds)))])
        question = garble_question(item.request.question, kind, rng)
        extra.append(
            dataclasses.replace(
                item,
                request=_with_question(item.request, question),
                tags={**item.tags, "question_noise": kind},
            )
        )
    return [*items, *extra]
