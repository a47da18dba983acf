"""``backends/batching``: a request a ``CheckingBackend`` refuses fails alone, before the batch, which goes on
without it (``answer_each``, ``score_each``); backends that cannot check are batched as before."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from PIL import Image

from guardrail import Generation, GenerationOptions, InputError, Request
from guardrail.backends import BatchBackend, BatchScoringBackend, CheckingBackend, ScoringItem, TeacherForcedScores
from guardrail.backends.batching import answer_each, score_each


class Model:
    """Answers each question with itself; refuses a question holding "long" when ``checks`` (as too long)."""

    name = "fake"
    patch_size = 8

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.singles: list[str] = []
        self.scored: list[list[str]] = []
        self.checked: list[tuple[str, int | None]] = []

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        if "long" in request.question:
            raise InputError(f"{request.question!r} is too long")
        self.singles.append(request.question)
        return Generation(text=request.question)

    def generate_batch(self, requests: Sequence[Request], options: Sequence[GenerationOptions]) -> list[Generation]:
        self.batches.append([r.question for r in requests])
        if any("long" in r.question for r in requests):
            raise MemoryError("the padded batch is as long as its longest member")  # what a checked batch avoids
        return [Generation(text=r.question) for r in requests]

    def model_images(self, request: Request) -> list[Image.Image]:
        return []

    def token_offsets(self, token_ids: Sequence[int]) -> list[tuple[int, int]]:
        return [(0, 0)] * len(token_ids)

    def reference(self, request: Request, generation: Generation, *, distributions: bool = False) -> None:
        return None

    def score(
        self,
        request: Request,
        token_ids: Sequence[int],
        variants: Sequence[Sequence[Image.Image]] = (),
        *,
        distributions: bool = False,
        reference: object = None,
    ) -> TeacherForcedScores:
        if "long" in request.question:
            raise InputError(f"{request.question!r} is too long")
        return TeacherForcedScores(token_logprobs=torch.zeros(1, len(token_ids)))

    def score_batch(self, items: Sequence[ScoringItem], *, distributions: bool = False) -> list[TeacherForcedScores]:
        self.scored.append([item.request.question for item in items])
        return [self.score(item.request, item.token_ids) for item in items]


class CheckingModel(Model):
    def check_request(self, request: Request, options: GenerationOptions | None = None) -> None:
        self.checked.append((request.question, None if options is None else options.max_new_tokens))
        if "long" in request.question:
            raise InputError(f"{request.question!r} is too long")


def ask(*questions: str) -> list[Request]:
    return [Request.from_question(q) for q in questions]


def test_a_refused_request_fails_alone_and_the_others_are_answered_in_one_batch() -> None:
    model = CheckingModel()
    assert isinstance(model, CheckingBackend)
    assert isinstance(model, BatchBackend)
    answered = answer_each(model, ask("a", "long b", "c", "d"), [GenerationOptions(max_new_tokens=9)] * 4)
    assert answered.batched
    assert model.batches == [["a", "c", "d"]]  # one batch, without the refused one
    assert model.singles == []
    assert [r.text if isinstance(r, Generation) else None for r in answered.results] == ["a", None, "c", "d"]
    refused = answered.results[1]
    assert isinstance(refused, InputError)
    assert "'long b' is too long" in str(refused)
    assert model.checked == [("a", 9), ("long b", 9), ("c", 9), ("d", 9)]  # each with its own call's options
    assert len(answered.seconds) == 4


def test_one_request_left_after_the_checks_is_answered_alone() -> None:
    model = CheckingModel()
    answered = answer_each(model, ask("long a", "b", "long c"), [GenerationOptions()] * 3)
    assert not answered.batched
    assert (model.batches, model.singles) == ([], ["b"])
    assert [type(r).__name__ for r in answered.results] == ["InputError", "Generation", "InputError"]


def test_without_checks_a_failing_batch_is_answered_one_by_one_as_before() -> None:
    model = Model()
    assert not isinstance(model, CheckingBackend)
    answered = answer_each(model, ask("a", "long b", "c"), [GenerationOptions()] * 3)
    assert not answered.batched
    assert model.batches == [["a", "long b", "c"]]
    assert model.singles == ["a", "c"]
    assert [type(r).__name__ for r in answered.results] == ["Generation", "InputError", "Generation"]


def test_score_each_checks_the_items_without_a_reference_with_their_answers_length() -> None:
    model = CheckingModel()
    assert isinstance(model, BatchScoringBackend)
    items = [ScoringItem(request, (1, 2, 3)) for request in ask("a", "long b", "c")]
    scored = score_each(model, items)
    assert model.scored == [["a", "c"]]
    assert [type(s).__name__ for s in scored] == ["TeacherForcedScores", "InputError", "TeacherForcedScores"]
    assert model.checked == [("a", 3), ("long b", 3), ("c", 3)]  # the room the answer at hand needs


@pytest.mark.parametrize("checks", [False, True])
def test_a_lone_request_is_not_checked_twice(checks: bool) -> None:
    model = CheckingModel() if checks else Model()
    answered = answer_each(model, ask("a"), [GenerationOptions()])
    assert (model.checked, model.singles) == ([], ["a"])  # generate checks its own request
    assert isinstance(answered.results[0], Generation)
