"""A guarded call end to end through the public API: tiny LLaVA backend, decoupled estimator, default policy.

The tiny model has no calibration: the guards opt in to raw scores (``allow_uncalibrated``) so that the policy's
rules, remedies included, run as they would on calibrated ones.
"""

from __future__ import annotations

import asyncio

from guardrail import Guard, Request
from guardrail.backends.transformers import TransformersBackend
from guardrail.confidence import DecoupledEstimator


def test_guarded_call_measures_every_attempt(llava_backend: TransformersBackend, question: Request) -> None:
    result = Guard(llava_backend, estimator=DecoupledEstimator(), allow_uncalibrated=True).run(question)
    assert result.error is None
    assert result.attempts
    for attempt in result.attempts:
        if attempt.signals is None:  # attempts that only fetched views
            continue
        assert attempt.signals.visual is not None
        assert 0.0 <= attempt.signals.visual <= 1.0
        assert attempt.generation is not None
        assert len(attempt.generation.token_ids) == len(attempt.generation.token_logprobs)


def test_async_guarded_call(llava_backend: TransformersBackend, question: Request) -> None:
    guard = Guard(llava_backend, estimator=DecoupledEstimator(), allow_uncalibrated=True)
    result = asyncio.run(guard.arun(question))
    assert result.error is None
    assert result.status in ("accepted", "abstained", "escalated")
