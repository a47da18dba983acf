"""Answering (and re-scoring) several requests: one batch where the backend can, one by one where the batch fails.

The one rule shared by ``Guard.run_batch`` (``effects.py``), batched calibration scoring (``calibration/collect.py``)
and dynamic batching (``coalescing.py``): a ``BatchBackend`` answers several requests with one ``generate_batch``;
when that call fails (a request that cannot be padded with the others, an image that cannot be decoded) or returns
something other than one ``Generation`` per request, every request is answered again alone, so that the one that
broke the batch fails alone with its own error. LangGraph control flow raised by the batch is re-raised.

``score_each`` applies the same rule to teacher-forced re-scoring (``BatchScoringBackend.score_batch``), for the
decoupled estimator's batched estimates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import is_control_flow
from ..types import Generation, GenerationOptions, Request
from .base import (
    Backend,
    BatchBackend,
    BatchScoringBackend,
    ReferenceScoringBackend,
    ScoringBackend,
    ScoringItem,
    TeacherForcedScores,
)

__all__ = ["Answered", "answer_each", "checked_generation", "score_each", "score_item"]


def checked_generation(generation: object) -> Generation:
    """``generation`` if a backend returned a ``Generation``; a ``TypeError`` naming what it returned otherwise."""
    if not isinstance(generation, Generation):
        raise TypeError(f"backend returned {type(generation).__name__}, expected guardrail.Generation")
    return generation


@dataclass(frozen=True)
class Answered:
    """The requests' answers (or each one's failure), in order; ``seconds``: the wall time each was waited for (the
    whole batch's time when ``batched``, else its own call's)."""

    results: list[Generation | Exception]
    seconds: list[float]
    batched: bool


def answer_each(backend: Backend, requests: Sequence[Request], options: Sequence[GenerationOptions]) -> Answered:
    """Answer ``requests`` (see the module docstring); a lone request, or a backend without batches, one by one."""
    if len(requests) > 1 and isinstance(backend, BatchBackend):
        start = time.perf_counter()
        try:
            generations = [checked_generation(g) for g in backend.generate_batch(requests, options)]
            if len(generations) != len(requests):
                raise TypeError(f"generate_batch returned {len(generations)} generations for {len(requests)} requests")
        except Exception as exc:
            if is_control_flow(exc):
                raise
        else:
            elapsed = time.perf_counter() - start
            return Answered(list(generations), [elapsed] * len(requests), batched=True)
    results: list[Generation | Exception] = []
    seconds: list[float] = []
    for request, option in zip(requests, options, strict=True):
        start = time.perf_counter()
        try:
            results.append(checked_generation(backend.generate(request, option)))
        except Exception as exc:
            results.append(exc)
        seconds.append(time.perf_counter() - start)
    return Answered(results, seconds, batched=False)


def score_item(backend: ScoringBackend, item: ScoringItem, *, distributions: bool = False) -> TeacherForcedScores:
    """``item`` scored alone: with its reference on a ``ReferenceScoringBackend``, else row 0 scored too."""
    if item.reference is not None and isinstance(backend, ReferenceScoringBackend):
        return backend.score(
            item.request, item.token_ids, item.variants, distributions=distributions, reference=item.reference
        )
    return backend.score(item.request, item.token_ids, item.variants, distributions=distributions)


def score_each(
    backend: ScoringBackend, items: Sequence[ScoringItem], *, distributions: bool = False
) -> list[TeacherForcedScores | Exception]:
    """Each item's scores (or its failure), in order: one ``score_batch`` where the backend offers it, else (or
    when the batch fails or returns anything but one ``TeacherForcedScores`` per item) each item alone."""
    if len(items) > 1 and isinstance(backend, BatchScoringBackend):
        try:
            scored = backend.score_batch(items, distributions=distributions)
            if len(scored) != len(items) or not all(isinstance(s, TeacherForcedScores) for s in scored):
                raise TypeError(f"score_batch returned {len(scored)} results for {len(items)} items")
        except Exception as exc:
            if is_control_flow(exc):
                raise
        else:
            return list(scored)
    results: list[TeacherForcedScores | Exception] = []
    for item in items:
        try:
            results.append(score_item(backend, item, distributions=distributions))
        except Exception as exc:
            if is_control_flow(exc):
                raise
            results.append(exc)
    return results
