"""Fakes for unit tests of one piece: a scripted model that also scores itself, and a calibrator that reports a
fixed familiarity.

These stand in for a real model only where a test checks the loop's control flow. Tests that claim a feature
works end to end use the real reference model instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from guardrail import Confidence, Generation, GenerationOptions, Request, Signals
from guardrail.backends.base import Backend
from guardrail.calibration import PassThroughCalibrator

T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    """What the scripted model does on one attempt."""

    answer: str = "yes"
    visual: float | None = 0.9
    reasoning: float | None = 0.9
    delay: float = 0.0
    fail: type[Exception] | None = None
    fail_in: str = "backend"  # or "estimator"


class Answered(Generic[T]):
    """What a fake model noted about each generation it returned, found again from the generation itself.

    The guard hands ``estimate`` the very ``Generation`` object that ``generate`` returned, so a fake that is its own
    estimator can look up, by identity, what it decided when it answered (which scripted step, which attempt)
    instead of smuggling that through fields a real backend fills with something else. Thread-safe; the
    generations are kept alive, so an identity is never reused while noted.
    """

    def __init__(self) -> None:
        self._notes: dict[int, tuple[Generation, T]] = {}
        self._lock = threading.Lock()

    def note(self, generation: Generation, value: T) -> Generation:
        """Remember ``value`` for ``generation``; returns ``generation``."""
        with self._lock:
            self._notes[id(generation)] = (generation, value)
        return generation

    def __getitem__(self, generation: Generation) -> T:
        with self._lock:
            noted = self._notes.get(id(generation))
        if noted is None or noted[0] is not generation:
            raise LookupError(f"this model never returned the generation {generation.text!r}")
        return noted[1]


@dataclass
class ScriptedModel:
    """Plays ``steps`` in order, one per attempt (``options.attempt``; the last one repeats): a backend that is also
    its own estimator. Records every request it was called with (``calls``); ``estimate`` scores a generation with
    the step that produced it (``answered``)."""

    steps: Sequence[Step] = (Step(),)
    name: str = "scripted"
    calls: list[tuple[Request, GenerationOptions]] = field(default_factory=list)
    answered: Answered[Step] = field(default_factory=Answered, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _step(self, options: GenerationOptions) -> Step:
        return self.steps[min(options.attempt, len(self.steps) - 1)]

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        delay = self._step(options).delay
        if delay:
            time.sleep(delay)
        return self._answer(request, options)

    def _answer(self, request: Request, options: GenerationOptions) -> Generation:
        with self._lock:
            self.calls.append((request, options))
        step = self._step(options)
        if step.fail is not None and step.fail_in == "backend":
            raise step.fail(f"scripted failure on attempt {options.attempt}")
        generation = Generation(  # no tokenizer, so no token ids: like a remote backend, one log-prob
            text=f"<think><vision>v</vision><reasoning>r</reasoning></think> \\boxed{{{step.answer}}}",
            answer=step.answer,
            model=self.name,
            token_logprobs=(-0.1,),
        )
        return self.answered.note(generation, step)

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        step = self.answered[generation]
        if step.fail is not None and step.fail_in == "estimator":
            raise step.fail("scripted estimator failure")
        return Signals(visual=step.visual, reasoning=step.reasoning)


@dataclass
class AsyncScriptedModel(ScriptedModel):
    """The same script behind an async ``agenerate``."""

    async def agenerate(self, request: Request, options: GenerationOptions) -> Generation:
        delay = self._step(options).delay
        if delay:
            await asyncio.sleep(delay)
        return self._answer(request, options)


@dataclass
class EchoModel:
    """Answers each question with a deterministic function of it, after a small question-dependent delay."""

    name: str = "echo"

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        question = request.question
        time.sleep((hash(question) % 5) / 2000)
        return Generation(text=f"\\boxed{{answer to {question}}}", answer=f"answer to {question}", model=self.name)

    async def agenerate(self, request: Request, options: GenerationOptions) -> Generation:
        question = request.question
        await asyncio.sleep((hash(question) % 5) / 2000)
        return Generation(text=f"\\boxed{{answer to {question}}}", answer=f"answer to {question}", model=self.name)

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        number = int(request.question.split()[-1])
        return Signals(visual=(number % 10) / 10 + 0.05, reasoning=0.9)


@dataclass(frozen=True)
class FamiliarityCalibrator:
    """Passes the scripted scores through as calibrated ones and reports a fixed input ``familiarity`` (a measured
    p-value): a stand-in for a fitted calibrator."""

    familiarity: float | None

    def calibrate(self, signals: Signals) -> Confidence:
        confidence = PassThroughCalibrator(calibrated=True).calibrate(signals)
        return confidence.model_copy(update={"familiarity": self.familiarity})
