"""The guarded call, written once: a generator that yields the I/O it needs and decides on what comes back.

``GuardedCall.plan`` is the whole loop: budget accounting, the policy's decision after every attempt (the pure
``guardrail.policy.engine.decide``), the remedies (re-ask, more views, fallback), the records and the telemetry
hooks. It performs no I/O itself: it *yields* an ``AttemptCall`` (generate + estimate + calibrate on one backend)
or a ``ViewsCall`` (ask a view provider) and receives an ``AttemptOutcome`` / ``ViewsOutcome`` back. The drivers
in ``guard.py`` perform those effects (``effects.py``) synchronously or with ``await``, so the sync and async
guards cannot drift apart.

More views (``fetch_more_views``): the view provider is always asked about the caller's original request; the
views it returns are appended to the request's images or replace them (``views_placement``; ``auto`` replaces
when the backend's optional ``max_images`` would otherwise be exceeded, e.g. for a one-image model). In mode
``tile`` the loop yields a ``TilesCall`` instead: tiles of the source, each answered alone, their percepts merged;
the next attempt answers the original request continuing from the merged percept (``assistant_prefix``).

Reasoning again (``re_ask`` with ``keep_percept``): the next attempt continues from the previous attempt's own
``<vision>`` block; with ``samples`` K it is K sampled answers, the majority's kept (``AttemptCall.samples``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from .backends.base import Backend
from .policy.engine import decide, decide_on_error, decide_on_exhausted
from .policy.schema import Policy
from .responses import parse_response, percept_head
from .telemetry import CallTrace
from .types import (
    Action,
    Attempt,
    Confidence,
    Decision,
    ErrorInfo,
    Escalation,
    Generation,
    GenerationOptions,
    GuardResult,
    ImageBlock,
    Request,
    Signals,
    TilePercept,
)
from .views import PerceptMerger, TileProvider, ViewProvider

__all__ = [
    "AttemptCall",
    "AttemptOutcome",
    "Effect",
    "GuardedCall",
    "Outcome",
    "Plan",
    "TilesCall",
    "TilesOutcome",
    "ViewsCall",
    "ViewsOutcome",
    "max_images",
    "views_placement",
]


# ---------------------------------------------------------------------------------------------------------------
# The effects the loop asks its driver to perform, and what comes back.


@dataclass(frozen=True, slots=True)
class AttemptCall:
    """Ask the driver for one model attempt: generate on ``backend``, then estimate and calibrate. With ``samples``
    K > 1: K sampled answers, the one most of them give kept (``responses.majority_answer``) and measured."""

    backend: Backend
    request: Request
    options: GenerationOptions
    timeout: float | None
    samples: int = 1


@dataclass(frozen=True, slots=True)
class ViewsCall:
    """Ask the driver for up to ``count`` more views of ``request`` from a view provider."""

    provider: ViewProvider
    name: str
    request: Request
    count: int
    timeout: float | None


@dataclass(frozen=True, slots=True)
class TilesCall:
    """Ask the driver for tiles of ``request``'s source from a tile provider, each answered alone on ``backend``
    (with ``options``), and their percepts merged by ``merger``."""

    provider: TileProvider
    name: str
    merger: PerceptMerger
    merger_name: str
    backend: Backend
    request: Request
    count: int
    options: GenerationOptions
    timeout: float | None


@dataclass(slots=True)
class AttemptOutcome:
    """What an attempt produced, up to the stage that failed (``error``); ``sampled_answers``: the final answers of
    its samples, when it had several."""

    generation: Generation | None = None
    signals: Signals | None = None
    confidence: Confidence | None = None
    error: ErrorInfo | None = None
    seconds: float = 0.0
    sampled_answers: tuple[str | None, ...] = ()


@dataclass(slots=True)
class ViewsOutcome:
    """The fetched views, or why there are none."""

    views: tuple[ImageBlock, ...] = ()
    error: ErrorInfo | None = None


@dataclass(slots=True)
class TilesOutcome:
    """The tiles' percepts, the merged percept and the assistant prefix that carries it (the first tile answer's
    opening up to its ``<vision>`` block, the block's body the merged percept), or why there are none."""

    percepts: tuple[TilePercept, ...] = ()
    merged: str | None = None
    prefix: str | None = None
    error: ErrorInfo | None = None


Effect: TypeAlias = AttemptCall | ViewsCall | TilesCall
Outcome: TypeAlias = AttemptOutcome | ViewsOutcome | TilesOutcome
Plan: TypeAlias = Generator[Effect, Outcome, GuardResult]


def max_images(backend: Backend) -> int | None:
    """The backend's optional ``max_images`` (the most images one prompt may carry); ``None`` when it declares
    none or something other than a positive int."""
    value = getattr(backend, "max_images", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def views_placement(mode: str, views: int, *, max_images: int | None, present: int) -> tuple[bool, int]:
    """Whether fetched views replace the request's images (else they are appended), and how many to ask for.

    ``auto`` replaces when appending ``views`` to the ``present`` images would exceed ``max_images``; replacing
    asks for at most ``max_images`` views. ``append`` does what it says, whatever ``max_images``.
    """
    if mode == "auto":
        mode = "replace" if max_images is not None and present + views > max_images else "append"
    if mode == "replace":
        return True, views if max_images is None else min(views, max_images)
    return False, views


# ---------------------------------------------------------------------------------------------------------------
# The loop.


@dataclass
class GuardedCall:
    """One guarded call's state; :meth:`plan` is the loop. Needs the guard's parts, never the guard itself."""

    policy: Policy
    backend: Backend
    view_providers: Mapping[str, ViewProvider]
    fallbacks: Mapping[str, Backend]
    clock: Callable[[], float]
    request: Request
    trace: CallTrace
    percept_mergers: Mapping[str, PerceptMerger] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    error: ErrorInfo | None = None
    """The failure of the latest step (attempt or view fetch), if it failed: what ended the call, if anything."""

    def plan(self) -> Plan:
        """Yield the effects of one guarded call and return its result."""
        policy = self.policy
        budget = policy.budget
        start = self.clock()
        deadline = None if budget.max_seconds is None else start + budget.max_seconds
        backend = self.backend
        views_request = self.request  # the request with the views fetched so far (added or in place of its images)
        current = self.request
        options = GenerationOptions(attempt=0)
        if not self.request.question.strip():
            # Nothing to answer: an input error, decided by on_error without calling the model (a remedy such as a
            # re-ask cannot help, so it becomes on_exhausted).
            self.error = ErrorInfo(stage="input", type="InputError", message="the question is empty: nothing to answer")
            decision = decide_on_error(policy, self.error, attempt=0)
            if not decision.action.is_terminal:
                decision = decide_on_exhausted(policy, attempt=0, reason=self.error.message)
            return self._finish(decision, start)

        shaped = _Shape()  # how the next attempt is shaped by the remedy before it (prefill, tiles, samples)
        for index in range(budget.max_attempts):
            remaining = None if deadline is None else deadline - self.clock()
            if remaining is not None and remaining <= 0:
                decision = decide_on_exhausted(
                    policy, attempt=index, reason=f"time budget of {budget.max_seconds:g} s spent"
                )
                return self._finish(decision, start)
            self.trace.attempt_started(index, backend.name)
            outcome = yield AttemptCall(backend, current, options, remaining, shaped.samples)
            assert isinstance(outcome, AttemptOutcome)
            decision = self._decide(outcome, index)
            attempt = Attempt(
                index=index,
                model=backend.name,
                request=current if index > 0 else None,
                generation=outcome.generation,
                signals=outcome.signals,
                confidence=outcome.confidence,
                decision=decision,
                error=outcome.error,
                seconds=outcome.seconds,
                tile_percepts=shaped.tiles,
                percept=shaped.percept,
                sampled_answers=outcome.sampled_answers,
            )
            self.attempts.append(attempt)
            self.trace.attempt_finished(attempt)

            # Apply a remedy; a failing view provider turns into on_error, decided again for this attempt.
            while True:
                self.decisions.append(decision)
                if decision.action.is_terminal:
                    return self._finish(decision, start)
                shaped = _Shape()
                if decision.action is Action.FETCH_MORE_VIEWS and decision.params.get("mode") == "tile":
                    name, merger = decision.params["provider"], decision.params["merger"]
                    provider = self.view_providers[name]
                    assert isinstance(provider, TileProvider)  # the guard checked the policy at construction
                    count = decision.params["views"]
                    remaining = None if deadline is None else deadline - self.clock()
                    # Each tile answered greedily, as the first look was: the tiles differ in what they show.
                    tile_options = GenerationOptions(attempt=index + 1, seed=index + 1, temperature=0.0)
                    tiled = yield TilesCall(
                        provider, name, self.percept_mergers[merger], merger, backend, self.request, count,
                        tile_options, remaining,
                    )  # fmt: skip
                    assert isinstance(tiled, TilesOutcome)
                    self.trace.views_fetched(name, count, tiled.error)
                    if tiled.error is not None:
                        self.error = tiled.error
                        decision = self._decide_failure(tiled.error, index)
                        continue
                    # The original request (the whole source, downscaled by the backend), reasoned on the merge.
                    current = self.request
                    shaped = _Shape(prefix=tiled.prefix, percept=tiled.merged, tiles=tiled.percepts)
                elif decision.action is Action.FETCH_MORE_VIEWS:
                    name = decision.params["provider"]
                    replace, count = views_placement(
                        decision.params.get("mode", "auto"),
                        decision.params["views"],
                        max_images=max_images(backend),
                        present=len(views_request.images),
                    )
                    remaining = None if deadline is None else deadline - self.clock()
                    # The provider sees the original request: zoom crops the original image, not an earlier view.
                    fetched = yield ViewsCall(self.view_providers[name], name, self.request, count, remaining)
                    assert isinstance(fetched, ViewsOutcome)
                    self.trace.views_fetched(name, count, fetched.error)
                    if fetched.error is not None:
                        self.error = fetched.error
                        decision = self._decide_failure(fetched.error, index)
                        continue
                    views_request = (
                        views_request.replacing_images(fetched.views)
                        if replace
                        else views_request.with_images(fetched.views)
                    )
                    current = views_request
                elif decision.action is Action.RE_ASK:
                    prompt = decision.params.get("prompt")
                    current = views_request.with_text(prompt) if prompt else views_request
                    shaped = _Shape(samples=decision.params.get("samples", 1))
                    if decision.params.get("keep_percept"):
                        shaped = _kept_percept(attempt.generation, shaped.samples)
                elif decision.action is Action.FALLBACK:
                    backend = self.fallbacks[decision.params["model"]]
                    current = views_request
                options = GenerationOptions(
                    attempt=index + 1,
                    seed=index + 1,
                    temperature=decision.params.get("temperature"),
                    assistant_prefix=shaped.prefix,
                )
                break

        # Unreachable in practice: ``decide`` turns a remedy on the last attempt into on_exhausted.
        decision = decide_on_exhausted(policy, attempt=budget.max_attempts - 1, reason="attempt budget spent")
        self.decisions.append(decision)
        return self._finish(decision, start)

    def _decide_failure(self, error: ErrorInfo, index: int) -> Decision:
        """A failed view fetch: ``on_exhausted`` when the budget ran out, else ``on_error``."""
        if error.stage == "budget":
            return decide_on_exhausted(self.policy, attempt=index, reason=error.message)
        return decide_on_error(self.policy, error, attempt=index)

    def _decide(self, outcome: AttemptOutcome, index: int) -> Decision:
        policy = self.policy
        # The result's error is the one that ended the call: a later successful attempt clears an earlier
        # failure, which stays recorded on its own Attempt.
        self.error = outcome.error
        if outcome.error is not None:
            if outcome.error.stage == "budget":
                return decide_on_exhausted(policy, attempt=index, reason=outcome.error.message)
            return decide_on_error(policy, outcome.error, attempt=index)
        assert outcome.confidence is not None
        return decide(policy, outcome.confidence, attempt=index)

    def _finish(self, decision: Decision, start: float) -> GuardResult:
        if not self.decisions or self.decisions[-1] is not decision:
            self.decisions.append(decision)
        last = self.attempts[-1] if self.attempts else None
        confidence = last.confidence if last is not None else None
        answer: str | None = None
        escalation: Escalation | None = None
        if decision.action is Action.ACCEPT:
            assert last is not None
            assert last.generation is not None
            answer = last.generation.final_answer
            status = "accepted"
        elif decision.action is Action.ESCALATE:
            best = self._best_attempt()
            escalation = Escalation(
                question=self.request.question,
                candidate_answer=None if best is None or best.generation is None else best.generation.final_answer,
                confidence=None if best is None else best.confidence,
                reason=decision.params.get("reason") or decision.reason,
                decision_confidence=confidence,  # the latest attempt's: what the deciding rule tested
            )
            status = "escalated"
        else:
            status = "abstained"
        result = GuardResult(
            status=status,
            answer=answer,
            confidence=confidence,
            decisions=tuple(self.decisions),
            attempts=tuple(self.attempts),
            error=self.error,
            escalation=escalation,
            policy=self.policy.name,
            seconds=max(self.clock() - start, 0.0),
        )
        self.trace.finished(result)
        return result

    def _best_attempt(self) -> Attempt | None:
        """The attempt with the highest overall confidence (unknown ranks lowest), for a human reviewer."""
        scored = [a for a in self.attempts if a.generation is not None]
        if not scored:
            return None
        return max(
            scored, key=lambda a: -1.0 if a.confidence is None or a.confidence.overall is None else a.confidence.overall
        )


@dataclass(frozen=True, slots=True)
class _Shape:
    """How a remedy shapes the next attempt: the assistant ``prefix`` it continues from (carrying ``percept``), the
    tiles' percepts behind a merged one, and how many answers to sample."""

    prefix: str | None = None
    percept: str | None = None
    tiles: tuple[TilePercept, ...] = ()
    samples: int = 1


def _kept_percept(generation: Generation | None, samples: int) -> _Shape:
    """The next attempt continuing from ``generation``'s own ``<vision>`` block; re-asked from the start when it has
    none (a failed attempt, or an answer without the tag)."""
    head = None if generation is None else percept_head(generation.text)
    if head is None or generation is None:
        return _Shape(samples=samples)
    return _Shape(prefix=head, percept=parse_response(generation.text).perception_text, samples=samples)
