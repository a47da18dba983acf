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

from guardrail import Confidence, Generation, GenerationOptions, Request, Signals
from guardrail.backends.base import Backend
from guardrail.calibration import PassThroughCalibrator


@dataclass(frozen=True)
class Step:
    """What the scripted model does on one attempt."""

    answer: str = "yes"
    visual: float | None = 0.9
    reasoning: float | None = 0.9
    delay: float = 0.0
    fail: type[Exception] | None = None
    fail_in: str = "backend"  # or "estimator"


@dataclass
class ScriptedModel:
    """Plays ``steps`` in order (the last one repeats); records every request it was called with."""

    steps: Sequence[Step] = (Step(),)
    name: str = "scripted"
    calls: list[tuple[Request, GenerationOptions]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
        return Generation(
            text=f"<think><vision>v</vision><reasoning>r</reasoning></think> \\boxed{{{step.answer}}}",
            answer=step.answer,
            model=self.name,
            token_logprobs=(-0.1,),
            token_ids=(options.attempt,),
        )

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        step = self._step(GenerationOptions(attempt=generation.token_ids[0]))
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
    """Passes the scripted scores through and reports a fixed input ``familiarity`` (a measured p-value)."""

    familiarity: float | None

    def calibrate(self, signals: Signals) -> Confidence:
        confidence = PassThroughCalibrator().calibrate(signals)
        return confidence.model_copy(update={"familiarity": self.familiarity})
