"""Answering (and re-scoring) several requests: one batch where the backend can, one by one where the batch fails.

The one rule shared by ``Guard.run_batch`` (``effects.py``), batched calibration scoring (``calibration/collect.py``)
and dynamic batching (``coalescing.py``): a ``BatchBackend`` answers several requests with one ``generate_batch``;
when that call fails (a request that cannot be padded with the others, an image that cannot be decoded) or returns
something other than one ``Generation`` per request, every request is answered again alone, so that the one that
broke the batch fails alone with its own error. LangGraph control flow raised by the batch is re-raised.

Before the batch, a ``CheckingBackend`` checks each request alone (``check_request``: a question longer than the
model takes, an image that cannot be read): a request it refuses fails with that error and the batch goes on
without it, so that one bad member neither fails the others nor makes the padded pass as long as itself.

``score_each`` applies the same rules to teacher-forced re-scoring (``BatchScoringBackend.score_batch``), for the
decoupled estimator's batched estimates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import BackendError, is_control_flow
from ..types import Generation, GenerationOptions, Request
from .base import (
    Backend,
    BatchBackend,
    BatchScoringBackend,
    CheckingBackend,
    ReferenceScoringBackend,
    ScoringBackend,
    ScoringItem,
    TeacherForcedScores,
)

__all__ = ["Answered", "answer_each", "checked_generation", "score_each", "score_item"]


def checked_generation(generation: object, options: GenerationOptions | None = None) -> Generation:
    """``generation`` if a backend returned a ``Generation``; a ``TypeError`` naming what it returned otherwise.

    With ``options`` carrying an assistant prefix, a ``BackendError`` when the answer does not start with it: the
    backend ignored the prefix and answered afresh (a guard must not measure that as the continuation asked for).
    """
    if not isinstance(generation, Generation):
        raise TypeError(f"backend returned {type(generation).__name__}, expected guardrail.Generation")
    prefix = None if options is None else options.assistant_prefix
    if prefix is not None and not generation.text.startswith(prefix):
        raise BackendError(
            f"{generation.model or 'the backend'} did not continue from the assistant prefix {prefix[:40]!r}: its "
            f"answer starts {generation.text[:40]!r} (a backend that cannot continue one must refuse it)"
        )
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
    results: list[Generation | Exception | None] = [None] * len(requests)
    seconds = [0.0] * len(requests)
    alone = list(range(len(requests)))
    batched = False
    if len(requests) > 1 and isinstance(backend, BatchBackend):
        for i, refused in _refusals(backend, requests, options, seconds).items():
            results[i] = refused
        members = [i for i in alone if results[i] is None]
        alone = members
        if len(members) > 1:
            start = time.perf_counter()
            try:
                returned = list(backend.generate_batch([requests[i] for i in members], [options[i] for i in members]))
                if len(returned) != len(members):
                    raise TypeError(f"generate_batch returned {len(returned)} generations for {len(members)} requests")
                generations = [checked_generation(g, options[i]) for i, g in zip(members, returned, strict=True)]
            except Exception as exc:
                if is_control_flow(exc):
                    raise
            else:
                elapsed = time.perf_counter() - start
                for i, generation in zip(members, generations, strict=True):
                    results[i], seconds[i] = generation, seconds[i] + elapsed
                alone, batched = [], True
    for i in alone:
        start = time.perf_counter()
        try:
            results[i] = checked_generation(backend.generate(requests[i], options[i]), options[i])
        except Exception as exc:
            results[i] = exc
        seconds[i] += time.perf_counter() - start
    answered = [r for r in results if r is not None]
    assert len(answered) == len(requests)
    return Answered(answered, seconds, batched=batched)


def _refusals(
    backend: Backend, requests: Sequence[Request], options: Sequence[GenerationOptions], seconds: list[float]
) -> dict[int, Exception]:
    """The requests a ``CheckingBackend`` refuses (by index, with its error); none for another backend. Each
    check's time is added to ``seconds``."""
    if not isinstance(backend, CheckingBackend):
        return {}
    refused: dict[int, Exception] = {}
    for i, (request, option) in enumerate(zip(requests, options, strict=True)):
        start = time.perf_counter()
        try:
            backend.check_request(request, option)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            refused[i] = exc
        seconds[i] += time.perf_counter() - start
    return refused


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
    when the batch fails or returns anything but one ``TeacherForcedScores`` per item) each item alone. Items
    without a reference that a ``CheckingBackend`` refuses (an answer's room being its own length) fail alone
    first."""
    results: list[TeacherForcedScores | Exception | None] = [None] * len(items)
    alone = list(range(len(items)))
    if len(items) > 1 and isinstance(backend, BatchScoringBackend):
        # An item with a reference was checked when it was generated (its prompt inputs are generation's own).
        unchecked = [i for i in alone if items[i].reference is None]
        requests = [items[i].request for i in unchecked]
        budgets = [GenerationOptions(max_new_tokens=max(1, len(items[i].token_ids))) for i in unchecked]
        for j, refused in _refusals(backend, requests, budgets, [0.0] * len(unchecked)).items():
            results[unchecked[j]] = refused
        members = [i for i in alone if results[i] is None]
        alone = members
        if len(members) > 1:
            try:
                scored = backend.score_batch([items[i] for i in members], distributions=distributions)
                if len(scored) != len(members) or not all(isinstance(s, TeacherForcedScores) for s in scored):
                    raise TypeError(f"score_batch returned {len(scored)} results for {len(members)} items")
            except Exception as exc:
                if is_control_flow(exc):
                    raise
            else:
                for i, scores in zip(members, scored, strict=True):
                    results[i] = scores
                alone = []
    for i in alone:
        try:
            results[i] = score_item(backend, items[i], distributions=distributions)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            results[i] = exc
    done = [r for r in results if r is not None]
    assert len(done) == len(items)
    return done
