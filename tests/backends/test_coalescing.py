"""``CoalescingBackend``: concurrent calls answered together, each with its own answer; failures stay its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from guardrail import BackendError, Generation, GenerationOptions, Request
from guardrail.backends import CoalescingBackend, ScoringBackend


@dataclass
class Echo:
    """Answers each question with itself; batches are recorded; a question "boom" breaks any batch it is in."""

    name: str = "echo"
    batches: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        if request.question == "boom":
            raise BackendError("boom")
        return Generation(text=request.question, answer=request.question)

    def generate_batch(self, requests: Sequence[Request], options: Sequence[GenerationOptions]) -> list[Generation]:
        with self.lock:
            self.batches.append(len(requests))
        if any(r.question == "boom" for r in requests):
            raise BackendError("the batch broke")
        return [self.generate(r, o) for r, o in zip(requests, options, strict=True)]


def _ask_all(backend: CoalescingBackend, questions: list[str]) -> list[Generation | BaseException]:
    barrier = threading.Barrier(len(questions))

    def ask(question: str) -> Generation | BaseException:
        barrier.wait()  # all at once
        try:
            return backend.generate(Request.from_question(question), GenerationOptions())
        except BackendError as exc:
            return exc

    with ThreadPoolExecutor(len(questions)) as pool:
        return list(pool.map(ask, questions))


def test_concurrent_calls_share_batches_and_each_gets_its_own_answer() -> None:
    inner = Echo()
    backend = CoalescingBackend(inner, max_batch=4, max_wait=0.2)
    questions = [f"q{i}" for i in range(8)]
    answers = _ask_all(backend, questions)
    assert [a.answer for a in answers if isinstance(a, Generation)] == questions
    assert sum(inner.batches) == 8
    assert max(inner.batches) == 4  # never more than max_batch
    assert len(inner.batches) <= 4  # and they did meet


def test_a_request_that_breaks_a_batch_fails_alone() -> None:
    inner = Echo()
    backend = CoalescingBackend(inner, max_batch=8, max_wait=0.2)
    answers = _ask_all(backend, ["a", "boom", "c"])
    assert isinstance(answers[1], BackendError)
    assert str(answers[1]) == "boom"  # its own error, not the batch's
    assert [a.answer for a in (answers[0], answers[2]) if isinstance(a, Generation)] == ["a", "c"]


def test_a_lone_call_is_a_plain_call_after_the_wait() -> None:
    inner = Echo()
    backend = CoalescingBackend(inner, max_batch=8, max_wait=0.0)
    assert backend.generate(Request.from_question("alone"), GenerationOptions()).answer == "alone"
    assert inner.batches == []
    assert backend.batches == [1]


def test_async_callers_coalesce_too() -> None:
    inner = Echo()
    backend = CoalescingBackend(inner, max_batch=8, max_wait=0.3)

    async def main() -> list[Generation]:
        calls = [backend.agenerate(Request.from_question(f"q{i}"), GenerationOptions()) for i in range(5)]
        return list(await asyncio.gather(*calls))

    assert [g.answer for g in asyncio.run(main())] == [f"q{i}" for i in range(5)]
    assert sum(inner.batches) == 5
    assert max(inner.batches) > 1


def test_the_wrapped_backend_shows_through() -> None:
    class Scoring(Echo):
        patch_size = 14

        def model_images(self, request: Request) -> list[object]:
            return []

        def token_offsets(self, token_ids: Sequence[int]) -> list[tuple[int, int]]:
            return []

        def score(self, *args: object, **kwargs: object) -> object:
            return "scored"

    backend = CoalescingBackend(Scoring())
    assert backend.name == "echo"
    assert isinstance(backend, ScoringBackend)  # the estimator still re-scores through it
    assert backend.score() == "scored"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="`max_batch` must be an int >= 1"):
        CoalescingBackend(Echo(), max_batch=0)
    with pytest.raises(TypeError, match="cannot answer batches"):
        CoalescingBackend(object())  # type: ignore[arg-type]
