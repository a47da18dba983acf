"""``Guard.run_batch``: every request decided exactly as ``Guard.run`` decides it, its attempts batched."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from guardrail import (
    BackendError,
    BatchEstimator,
    Generation,
    GenerationOptions,
    Guard,
    GuardResult,
    Request,
    Signals,
)
from guardrail.backends.base import Backend, BatchBackend
from tests.support.fakes import Answered, Step
from tests.support.guards import image_request, make_policy
from tests.support.telemetry import Recorded, make_recorded

ACCEPT = Step("red")
REASK = Step("blue", visual=0.9, reasoning=0.2)  # reasoning doubt: re-ask
VIEWS = Step("green", visual=0.2, reasoning=0.9)  # perception doubt: more views
ESCALATE = Step("teal", visual=0.1, reasoning=0.1)

SCRIPTS: dict[str, Sequence[Step]] = {
    "accept": (ACCEPT,),
    "re-ask then accept": (REASK, ACCEPT),
    "views then accept": (VIEWS, ACCEPT),
    "escalate": (ESCALATE,),
    "backend fails": (Step(fail=BackendError),),
    "estimator fails": (Step(fail=ValueError, fail_in="estimator"),),
    "re-ask, views, then escalate": (REASK, VIEWS, ESCALATE),
}


def _key(request: Request) -> str:
    """The first question asked (a re-ask appends a line to it, views change only images)."""
    return next(m.text for m in request.messages if m.role == "user").split("\n")[0]


@dataclass
class PerQuestion:
    """Each question plays its own script, one step per attempt; ``generate_batch`` records how many it got.

    A backend and its own estimator, like ``ScriptedModel``, but batched: ``batches`` lists the size of every
    batched call; ``break_batches`` makes every batched call fail (the guard must then answer one by one).
    """

    name: str = "per-question"
    batches: list[int] = field(default_factory=list)
    singles: int = 0
    break_batches: bool = False
    batch_delay: float = 0.0
    answered: Answered[Step] = field(default_factory=Answered, repr=False)

    def _step(self, request: Request, options: GenerationOptions) -> Step:
        steps = SCRIPTS[_key(request)]
        return steps[min(options.attempt, len(steps) - 1)]

    def _answer(self, request: Request, options: GenerationOptions) -> Generation:
        step = self._step(request, options)
        if step.fail is not None and step.fail_in == "backend":
            raise step.fail(f"scripted failure on attempt {options.attempt}")
        generation = Generation(text=f"\\boxed{{{step.answer}}}", answer=step.answer, model=self.name)
        return self.answered.note(generation, step)

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        self.singles += 1
        return self._answer(request, options)

    def generate_batch(self, requests: Sequence[Request], options: Sequence[GenerationOptions]) -> list[Generation]:
        self.batches.append(len(requests))
        if self.batch_delay:
            time.sleep(self.batch_delay)
        if self.break_batches:
            raise BackendError("the batch cannot be padded")
        return [self._answer(r, o) for r, o in zip(requests, options, strict=True)]

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        step = self.answered[generation]
        if step.fail is not None and step.fail_in == "estimator":
            raise step.fail("scripted estimator failure")
        return Signals(visual=step.visual, reasoning=step.reasoning)


def _requests() -> list[Request]:
    return [image_request(question) for question in SCRIPTS]


def _guard(model: PerQuestion, **kwargs: object) -> Guard:
    return Guard(model, estimator=model, policy=make_policy(), **kwargs)  # type: ignore[arg-type]


def _summary(result: GuardResult) -> tuple[object, ...]:
    return (
        result.status,
        result.answer,
        result.confidence,
        [(d.action, d.rule) for d in result.decisions],
        [(a.index, None if a.generation is None else a.generation.answer) for a in result.attempts],
        None if result.error is None else (result.error.stage, result.error.type),
    )


def test_a_batch_is_decided_exactly_as_one_call_at_a_time() -> None:
    alone = [_guard(PerQuestion()).run(r) for r in _requests()]
    model = PerQuestion()
    batched = _guard(model).run_batch(_requests(), batch_size=16)
    assert [_summary(r) for r in batched] == [_summary(r) for r in alone]
    assert [r.status for r in batched] == [
        "accepted", "accepted", "accepted", "escalated", "abstained", "abstained", "escalated",
    ]  # fmt: skip
    assert isinstance(model, BatchBackend)
    # Round 1: all seven at once; the failing backend breaks that batch, so the seven are answered again one by one.
    # Round 2: the re-ask, the views and the three-step script together. Round 3: the last one, alone.
    assert model.batches == [7, 3]
    assert model.singles == 7 + 1


def test_batches_are_cut_at_batch_size_and_later_rounds_hold_only_the_undecided() -> None:
    model = PerQuestion()
    _guard(model).run_batch(_requests(), batch_size=3)
    # Round 1: 3 + 3 + 1 (the second three hold the failing backend: answered one by one; one alone is a single
    # call). Round 2: the three undecided. Round 3: the last one, alone.
    assert model.batches == [3, 3, 3]
    assert model.singles == 3 + 1 + 1


def test_a_request_that_breaks_the_batch_fails_alone() -> None:
    model = PerQuestion(break_batches=True)
    batched = _guard(model).run_batch(_requests())
    assert [_summary(r) for r in batched] == [_summary(_guard(PerQuestion()).run(r)) for r in _requests()]
    assert model.singles == 7 + 3 + 1  # every batch answered again one by one


def test_a_backend_without_batches_is_called_one_by_one() -> None:
    @dataclass
    class Plain:
        inner: PerQuestion = field(default_factory=PerQuestion)
        name: str = "plain"

        def generate(self, request: Request, options: GenerationOptions) -> Generation:
            return self.inner.generate(request, options)

        def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
            return self.inner.estimate(backend, request, generation)

    plain = Plain()
    guard = Guard(plain, estimator=plain, policy=make_policy())
    assert not isinstance(plain, BatchBackend)
    batched = guard.run_batch(_requests())
    assert [_summary(r) for r in batched] == [_summary(_guard(PerQuestion()).run(r)) for r in _requests()]
    assert plain.inner.batches == []


def test_the_async_batch_matches() -> None:
    model = PerQuestion()
    batched = asyncio.run(_guard(model).arun_batch(_requests(), batch_size=16))
    assert [_summary(r) for r in batched] == [_summary(_guard(PerQuestion()).run(r)) for r in _requests()]
    assert model.batches == [7, 3]


def test_a_batch_past_the_time_budget_ends_every_member_in_on_exhausted() -> None:
    model = PerQuestion(batch_delay=0.5)
    guard = Guard(model, estimator=model, policy=make_policy(budget={"max_attempts": 3, "max_seconds": 0.2}))
    results = guard.run_batch([image_request("accept"), image_request("escalate")])
    for result in results:
        assert result.status == "abstained"
        assert result.error is not None
        assert result.error.stage == "budget"
        assert result.answer is None


def test_bad_batch_size_is_refused() -> None:
    with pytest.raises(ValueError, match="`batch_size` must be an int >= 1"):
        _guard(PerQuestion()).run_batch(_requests(), batch_size=0)


def test_every_request_keeps_its_own_trace() -> None:
    recorded = make_recorded()
    try:
        _guard(PerQuestion(), telemetry=recorded.telemetry).run_batch(_requests())
        _check_traces(recorded)
    finally:
        recorded.tracer_provider.shutdown()
        recorded.meter_provider.shutdown()


@dataclass
class MeasuringTogether(PerQuestion):
    """``PerQuestion`` whose estimator also measures several answers at once (a ``BatchEstimator``): ``measured``
    lists the size of every batched estimate; ``breaks`` says how the batched estimate misbehaves."""

    measured: list[int] = field(default_factory=list)
    breaks: str | None = None  # "raises", "short", "not signals"

    def estimate_batch(
        self, backend: Backend, requests: Sequence[Request], generations: Sequence[Generation]
    ) -> list[Signals | Exception]:
        self.measured.append(len(generations))
        if self.breaks == "raises":
            raise RuntimeError("the estimates cannot be batched")
        results: list[Signals | Exception] = []
        for request, generation in zip(requests, generations, strict=True):
            try:
                results.append(self.estimate(backend, request, generation))
            except Exception as exc:
                results.append(exc)
        if self.breaks == "short":
            return results[:-1]
        if self.breaks == "not signals":
            return [object() if isinstance(r, Signals) else r for r in results]  # type: ignore[misc]
        return results


def test_answers_generated_together_are_measured_together() -> None:
    model = MeasuringTogether()
    assert isinstance(model, BatchEstimator)
    batched = _guard(model).run_batch(_requests(), batch_size=16)
    assert [_summary(r) for r in batched] == [_summary(_guard(PerQuestion()).run(r)) for r in _requests()]
    # Round 1: six answers (the seventh's generation failed) measured together, the estimator's own failure kept
    # on its answer alone; round 2: three; round 3: the last one, alone.
    assert model.measured == [6, 3]


@pytest.mark.parametrize("breaks", ["raises", "short"])
def test_a_batched_estimate_that_fails_as_a_whole_is_measured_one_by_one(breaks: str) -> None:
    model = MeasuringTogether(breaks=breaks)
    batched = _guard(model).run_batch(_requests(), batch_size=16)
    assert [_summary(r) for r in batched] == [_summary(_guard(PerQuestion()).run(r)) for r in _requests()]
    assert model.measured == [6, 3]


def test_an_answer_without_signals_is_never_accepted() -> None:
    model = MeasuringTogether(breaks="not signals")
    results = _guard(model).run_batch(_requests()[:3], batch_size=16)
    for result in results:
        assert result.status != "accepted"
        assert result.error is not None
        assert (result.error.stage, result.error.type) == ("estimator", "TypeError")


def _check_traces(recorded: Recorded) -> None:
    calls = recorded.named("guardrail.guard ")
    assert len(calls) == len(SCRIPTS)
    attempts = recorded.attempt_spans()
    assert len(attempts) == 7 + 3 + 1
    call_ids = {span.context.span_id for span in calls if span.context is not None}
    assert all(a.parent is not None and a.parent.span_id in call_ids for a in attempts)
    traces = {span.context.trace_id for span in calls if span.context is not None}
    assert len(traces) == len(SCRIPTS)  # one trace per request, none nested in another


@dataclass
class SlowBatches(PerQuestion):
    """``PerQuestion`` whose every batched generation takes ``batch_seconds`` on the guard's clock (``now``)."""

    now: float = 0.0
    batch_seconds: float = 0.2

    def clock(self) -> float:
        return self.now

    def generate_batch(self, requests: Sequence[Request], options: Sequence[GenerationOptions]) -> list[Generation]:
        self.now += self.batch_seconds
        return super().generate_batch(requests, options)


def test_a_request_s_budget_starts_when_it_is_taken_into_a_batch_not_when_it_is_queued() -> None:
    # Eight requests that each need a re-ask, two at a time, 0.2 s a batch, 0.7 s each: started all at once, the
    # last pair's first answer would come 0.8 s after they were queued (and every re-ask after that). Taken from the
    # queue into a batch, each request needs two batches: 0.4 s of its own, whatever waits before it.
    model = SlowBatches()
    policy = make_policy(budget={"max_attempts": 3, "max_seconds": 0.7})
    guard = Guard(model, estimator=model, policy=policy, clock=model.clock)
    results = guard.run_batch([image_request("re-ask then accept") for _ in range(8)], batch_size=2)
    assert [r.status for r in results] == ["accepted"] * 8
    assert all(len(r.attempts) == 2 for r in results)
    assert all(r.seconds == pytest.approx(0.4) for r in results)
    assert model.batches == [2] * 8  # each pair's re-ask goes before the next pair starts
    assert model.now == pytest.approx(1.6)


def test_requests_that_wait_longer_than_their_budget_in_the_queue_still_get_their_own() -> None:
    model = SlowBatches(batch_seconds=0.3)
    policy = make_policy(budget={"max_attempts": 3, "max_seconds": 0.5})
    guard = Guard(model, estimator=model, policy=policy, clock=model.clock)
    results = guard.run_batch([image_request("accept") for _ in range(6)], batch_size=2)
    assert [r.status for r in results] == ["accepted"] * 6  # the last pair was queued 0.6 s before it started
    assert all(r.seconds == pytest.approx(0.3) for r in results)  # each counts its own batch, not the queue
    assert model.now == pytest.approx(0.9)
