"""The guarded call: generate, measure, calibrate, decide, act; loop until a terminal decision.

The loop itself is written once, as a generator (``_GuardedCall.plan``) that *yields* the I/O it needs (a model
attempt, a view fetch) and receives the outcome back. ``Guard.run`` and ``Guard.arun`` are thin drivers that
perform that I/O synchronously or with ``await``: the twins cannot drift apart, and the policy decision itself
is the pure ``guardrail.policy.engine.decide``.

Guarantees:
- at most ``budget.max_attempts`` model calls, and never waiting past ``budget.max_seconds``;
- any exception in the backend, estimator, calibrator or a view provider ends in ``on_error`` with the error
  kept in the result: never an unchecked answer;
- LangGraph control flow (interrupts) is re-raised, never swallowed;
- no state shared between calls: safe under threads and asyncio.

More views (``fetch_more_views``): the view provider is always asked about the caller's original request; the
views it returns are appended to the request's images or replace them (``mode``; ``auto`` replaces when the
backend's optional ``max_images`` would otherwise be exceeded, e.g. for a one-image model).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from ._pool import shared_pool
from .backends.base import AsyncBackend, Backend
from .calibration.base import Calibrator, PassThroughCalibrator
from .confidence.base import AsyncEstimator, Estimator
from .errors import BackendTimeout, ConfigurationError, WorkerLimitError
from .policy.engine import decide, decide_on_error, decide_on_exhausted
from .policy.schema import Policy
from .telemetry import CallTrace, Telemetry, default_telemetry
from .types import (
    Action,
    Attempt,
    Confidence,
    Decision,
    ErrorInfo,
    ErrorStage,
    Escalation,
    Generation,
    GenerationOptions,
    GuardResult,
    ImageBlock,
    Request,
    Signals,
)
from .views import ViewProvider, ZoomProvider

_T = TypeVar("_T")

__all__ = ["Guard"]


# ---------------------------------------------------------------------------------------------------------------
# The effects the loop asks its driver to perform, and what comes back.


@dataclass(frozen=True, slots=True)
class _AttemptCall:
    backend: Backend
    request: Request
    options: GenerationOptions
    timeout: float | None


@dataclass(frozen=True, slots=True)
class _ViewsCall:
    provider: ViewProvider
    name: str
    request: Request
    count: int
    timeout: float | None


@dataclass(slots=True)
class _AttemptOutcome:
    generation: Generation | None = None
    signals: Signals | None = None
    confidence: Confidence | None = None
    error: ErrorInfo | None = None
    seconds: float = 0.0


@dataclass(slots=True)
class _ViewsOutcome:
    views: tuple[ImageBlock, ...] = ()
    error: ErrorInfo | None = None


_Effect: TypeAlias = _AttemptCall | _ViewsCall
_Outcome: TypeAlias = _AttemptOutcome | _ViewsOutcome
_Plan: TypeAlias = Generator[_Effect, _Outcome, GuardResult]


def _is_control_flow(exc: BaseException) -> bool:
    """LangGraph's interrupts and other bubble-up signals must pass through the guard untouched."""
    return any(cls.__name__ == "GraphBubbleUp" for cls in type(exc).__mro__)


# ---------------------------------------------------------------------------------------------------------------


class Guard:
    """Guards calls to one vision-language model with a policy.

    >>> guard = Guard(backend, estimator=estimator, policy="default")   # doctest: +SKIP
    >>> result = guard.run(Request.from_question("What colour is the shape?", [image]))   # doctest: +SKIP
    >>> result.status, result.answer, result.confidence   # doctest: +SKIP
    """

    def __init__(
        self,
        backend: Backend,
        *,
        estimator: Estimator,
        calibrator: Calibrator | None = None,
        policy: Policy | str | Path = "default",
        view_providers: Mapping[str, ViewProvider] | None = None,
        fallbacks: Mapping[str, Backend] | None = None,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.estimator = estimator
        self.calibrator: Calibrator = calibrator if calibrator is not None else PassThroughCalibrator()
        self.policy = policy if isinstance(policy, Policy) else _load_policy(policy)
        self.view_providers: dict[str, ViewProvider] = {"zoom": ZoomProvider(), **(view_providers or {})}
        self.fallbacks: dict[str, Backend] = dict(fallbacks or {})
        self.telemetry = telemetry if telemetry is not None else default_telemetry()
        self.clock = clock
        self._check_references()

    def _check_references(self) -> None:
        """Fail at construction, not mid-call, when the policy names parts the guard does not have."""
        unresolved = self.policy.certified_bounds()
        if unresolved:
            where = ", ".join(f"{w} (max_error {b.max_error:g}, delta {b.delta:g})" for w, _, _, b in unresolved)
            raise ConfigurationError(
                f"policy {self.policy.name!r} asks for certified thresholds at {where}, but they have not been "
                "taken from a calibration artifact: build the guard with guardrail.load_guard(..., artifact=...) "
                "or resolve them with Policy.with_certified(...)"
            )
        specs: list[tuple[str, Any]] = [(self.policy.rule_label(i), r) for i, r in enumerate(self.policy.rules)]
        specs += [("otherwise", self.policy.otherwise), ("on_error", self.policy.on_error)]
        for where, spec in specs:
            if spec.action is Action.FETCH_MORE_VIEWS and spec.params["provider"] not in self.view_providers:
                raise ConfigurationError(
                    f"policy {self.policy.name!r} {where} uses view provider {spec.params['provider']!r}, but the "
                    f"guard has only {sorted(self.view_providers)}; pass view_providers={{...}}"
                )
            if spec.action is Action.FALLBACK and spec.params["model"] not in self.fallbacks:
                raise ConfigurationError(
                    f"policy {self.policy.name!r} {where} falls back to model {spec.params['model']!r}, but the "
                    f"guard has {sorted(self.fallbacks) or 'no fallbacks'}; pass fallbacks={{...}}"
                )

    # -- drivers ---------------------------------------------------------------------------------------------

    def run(self, request: Request) -> GuardResult:
        """Run one guarded call on the calling thread (model calls run on a worker when there is a time budget)."""
        with self.telemetry.call(
            request, model=self.backend.name, policy=self.policy.name, policy_version=self.policy.version
        ) as trace:
            plan = _GuardedCall(self, request, trace).plan()
            try:
                effect = next(plan)
                while True:
                    effect = plan.send(self._perform(effect))
            except StopIteration as stop:
                result: GuardResult = stop.value
                return result
            finally:
                plan.close()

    async def arun(self, request: Request) -> GuardResult:
        """The async twin of :meth:`run`: the same plan, with the I/O awaited."""
        with self.telemetry.call(
            request, model=self.backend.name, policy=self.policy.name, policy_version=self.policy.version
        ) as trace:
            plan = _GuardedCall(self, request, trace).plan()
            try:
                effect = next(plan)
                while True:
                    effect = plan.send(await self._aperform(effect))
            except StopIteration as stop:
                result: GuardResult = stop.value
                return result
            finally:
                plan.close()

    def _perform(self, effect: _Effect) -> _Outcome:
        work = self._work(effect)
        if effect.timeout is None:
            return work()
        pool = shared_pool()
        try:
            future = pool.submit(_in_current_context(work))
        except WorkerLimitError as exc:
            return _not_started(effect, exc)
        try:
            return future.result(timeout=max(effect.timeout, 0.0))
        except concurrent.futures.TimeoutError:
            return _timed_out(effect, started=pool.abandon(future))

    async def _aperform(self, effect: _Effect) -> _Outcome:
        awaitable: Awaitable[_Outcome]
        future: concurrent.futures.Future[_Outcome] | None = None
        pool = shared_pool()
        if isinstance(effect, _AttemptCall) and isinstance(effect.backend, AsyncBackend):
            awaitable = self._attempt_async(effect)
        else:
            try:
                future = pool.submit(_in_current_context(self._work(effect)))
            except WorkerLimitError as exc:
                return _not_started(effect, exc)
            awaitable = asyncio.wrap_future(future)
        try:
            if effect.timeout is None:
                return await awaitable
            return await asyncio.wait_for(awaitable, timeout=max(effect.timeout, 0.0))
        except asyncio.TimeoutError:
            return _timed_out(effect, started=True if future is None else pool.abandon(future))
        except asyncio.CancelledError:
            if future is not None:  # the caller's task was cancelled: nobody waits for the worker any more
                pool.abandon(future)
            raise

    def _work(self, effect: _Effect) -> Callable[[], _Outcome]:
        if isinstance(effect, _AttemptCall):
            return lambda: self._attempt(effect)
        return lambda: self._views(effect)

    # -- the I/O itself ----------------------------------------------------------------------------------------

    def _attempt(self, call: _AttemptCall) -> _AttemptOutcome:
        start = time.perf_counter()
        outcome = _AttemptOutcome()
        try:
            outcome.generation = _checked(call.backend.generate(call.request, call.options))
        except Exception as exc:
            _record_failure(outcome, "backend", exc)
        else:
            self._measure(call, outcome)
        outcome.seconds = time.perf_counter() - start
        return outcome

    async def _attempt_async(self, call: _AttemptCall) -> _AttemptOutcome:
        """A native async attempt: ``agenerate``, then ``aestimate`` when the estimator has one (else the sync
        estimator on a worker thread), then the calibrator inline (a pure, microsecond-scale map)."""
        start = time.perf_counter()
        outcome = _AttemptOutcome()
        assert isinstance(call.backend, AsyncBackend)
        try:
            outcome.generation = generation = _checked(await call.backend.agenerate(call.request, call.options))
        except Exception as exc:
            _record_failure(outcome, "backend", exc)
        else:
            if isinstance(self.estimator, AsyncEstimator):
                try:
                    outcome.signals = await self.estimator.aestimate(call.backend, call.request, generation)
                except Exception as exc:
                    _record_failure(outcome, "estimator", exc)
                else:
                    self._calibrate(outcome)
            else:
                await self._measure_on_worker(call, outcome)
        outcome.seconds = time.perf_counter() - start
        return outcome

    async def _measure_on_worker(self, call: _AttemptCall, outcome: _AttemptOutcome) -> None:
        """A sync estimator under an async backend: on a worker, abandoned if the awaiting task is cancelled."""
        pool = shared_pool()
        try:
            future = pool.submit(_in_current_context(lambda: self._measure(call, outcome)))
        except WorkerLimitError as exc:
            _record_failure(outcome, "estimator", exc)
            return
        try:
            await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            pool.abandon(future)
            raise

    def _measure(self, call: _AttemptCall, outcome: _AttemptOutcome) -> _AttemptOutcome:
        """Estimator then calibrator on a generation; errors are recorded with their stage."""
        assert outcome.generation is not None
        try:
            outcome.signals = self.estimator.estimate(call.backend, call.request, outcome.generation)
        except Exception as exc:
            _record_failure(outcome, "estimator", exc)
        else:
            self._calibrate(outcome)
        return outcome

    def _calibrate(self, outcome: _AttemptOutcome) -> None:
        assert outcome.signals is not None
        try:
            outcome.confidence = self.calibrator.calibrate(outcome.signals)
        except Exception as exc:
            _record_failure(outcome, "calibrator", exc)

    def _views(self, call: _ViewsCall) -> _ViewsOutcome:
        try:
            views = tuple(call.provider(call.request, call.count))[: call.count]  # "up to count" images
            if not views:
                raise ValueError(f"view provider {call.name!r} returned no images")
            bad = [type(v).__name__ for v in views if not isinstance(v, ImageBlock)]
            if bad:
                raise TypeError(f"view provider {call.name!r} returned {bad[0]} where ImageBlock was expected")
            return _ViewsOutcome(views=views)
        except Exception as exc:
            if _is_control_flow(exc):
                raise
            return _ViewsOutcome(error=ErrorInfo.from_exception("view_provider", exc))


def _in_current_context(work: Callable[[], _T]) -> Callable[[], _T]:
    """Run ``work`` on a worker thread inside a copy of the caller's context (trace spans, LangChain config)."""
    context = contextvars.copy_context()
    return lambda: context.run(work)


def _record_failure(outcome: _AttemptOutcome, stage: ErrorStage, exc: Exception) -> None:
    """Keep a stage's failure on the outcome; LangGraph control flow is re-raised, never recorded."""
    if _is_control_flow(exc):
        raise exc
    outcome.error = ErrorInfo.from_exception(stage, exc)


def _checked(generation: object) -> Generation:
    if not isinstance(generation, Generation):
        raise TypeError(f"backend returned {type(generation).__name__}, expected guardrail.Generation")
    return generation


def _answer_of(generation: Generation) -> str:
    """The parsed final answer, or the whole text when the model wrote none in the structured format."""
    return generation.answer if generation.answer is not None else generation.text.strip()


def _timed_out(effect: _Effect, *, started: bool) -> _Outcome:
    what = "model attempt" if isinstance(effect, _AttemptCall) else f"view provider {effect.name!r}"
    if started:
        message = f"{what} did not finish within the remaining {effect.timeout:.3f} s of the budget"
    else:
        stats = shared_pool().stats()
        message = (
            f"{what} did not start within the remaining {effect.timeout:.3f} s of the budget: all "
            f"{stats.max_workers} workers were busy ({stats.queued} calls queued)"
        )
    error = ErrorInfo.from_exception("budget", BackendTimeout(message))
    if isinstance(effect, _AttemptCall):
        return _AttemptOutcome(error=error, seconds=max(effect.timeout or 0.0, 0.0))
    return _ViewsOutcome(error=error)


def _max_images(backend: Backend) -> int | None:
    """The backend's optional ``max_images`` (the most images one prompt may carry); ``None`` when it declares
    none or something other than a positive int."""
    value = getattr(backend, "max_images", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def _views_placement(mode: str, views: int, *, max_images: int | None, present: int) -> tuple[bool, int]:
    """Whether fetched views replace the request's images (else they are appended), and how many to ask for.

    ``auto`` replaces when appending ``views`` to the ``present`` images would exceed ``max_images``; replacing
    asks for at most ``max_images`` views. ``append`` does what it says, whatever ``max_images``.
    """
    if mode == "auto":
        mode = "replace" if max_images is not None and present + views > max_images else "append"
    if mode == "replace":
        return True, views if max_images is None else min(views, max_images)
    return False, views


def _not_started(effect: _Effect, exc: WorkerLimitError) -> _Outcome:
    """The pool refused the work: an error of the stage that could not run, handled by ``on_error``."""
    if isinstance(effect, _AttemptCall):
        return _AttemptOutcome(error=ErrorInfo.from_exception("backend", exc))
    return _ViewsOutcome(error=ErrorInfo.from_exception("view_provider", exc))


def _load_policy(policy: str | Path) -> Policy:
    from .policy.loader import load_policy

    return load_policy(policy)


# ---------------------------------------------------------------------------------------------------------------
# The loop, written once.


@dataclass
class _GuardedCall:
    guard: Guard
    request: Request
    trace: CallTrace
    attempts: list[Attempt] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    error: ErrorInfo | None = None
    """The failure of the latest step (attempt or view fetch), if it failed: what ended the call, if anything."""

    def plan(self) -> _Plan:
        """Yield the effects of one guarded call and return its result."""
        guard, policy = self.guard, self.guard.policy
        budget = policy.budget
        start = guard.clock()
        deadline = None if budget.max_seconds is None else start + budget.max_seconds
        backend = guard.backend
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

        for index in range(budget.max_attempts):
            remaining = None if deadline is None else deadline - guard.clock()
            if remaining is not None and remaining <= 0:
                decision = decide_on_exhausted(
                    policy, attempt=index, reason=f"time budget of {budget.max_seconds:g} s spent"
                )
                return self._finish(decision, start)
            self.trace.attempt_started(index, backend.name)
            outcome = yield _AttemptCall(backend, current, options, remaining)
            assert isinstance(outcome, _AttemptOutcome)
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
            )
            self.attempts.append(attempt)
            self.trace.attempt_finished(attempt)

            # Apply a remedy; a failing view provider turns into on_error, decided again for this attempt.
            while True:
                self.decisions.append(decision)
                if decision.action.is_terminal:
                    return self._finish(decision, start)
                if decision.action is Action.FETCH_MORE_VIEWS:
                    name = decision.params["provider"]
                    replace, count = _views_placement(
                        decision.params.get("mode", "auto"),
                        decision.params["views"],
                        max_images=_max_images(backend),
                        present=len(views_request.images),
                    )
                    remaining = None if deadline is None else deadline - guard.clock()
                    # The provider sees the original request: zoom crops the original image, not an earlier view.
                    fetched = yield _ViewsCall(guard.view_providers[name], name, self.request, count, remaining)
                    assert isinstance(fetched, _ViewsOutcome)
                    self.trace.views_fetched(name, count, fetched.error)
                    if fetched.error is not None:
                        self.error = fetched.error
                        decision = (
                            decide_on_exhausted(policy, attempt=index, reason=fetched.error.message)
                            if fetched.error.stage == "budget"
                            else decide_on_error(policy, fetched.error, attempt=index)
                        )
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
                elif decision.action is Action.FALLBACK:
                    backend = guard.fallbacks[decision.params["model"]]
                    current = views_request
                options = GenerationOptions(
                    attempt=index + 1, seed=index + 1, temperature=decision.params.get("temperature")
                )
                break

        # Unreachable in practice: ``decide`` turns a remedy on the last attempt into on_exhausted.
        decision = decide_on_exhausted(policy, attempt=budget.max_attempts - 1, reason="attempt budget spent")
        self.decisions.append(decision)
        return self._finish(decision, start)

    def _decide(self, outcome: _AttemptOutcome, index: int) -> Decision:
        policy = self.guard.policy
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
            answer = _answer_of(last.generation)
            status = "accepted"
        elif decision.action is Action.ESCALATE:
            best = self._best_attempt()
            escalation = Escalation(
                question=self.request.question,
                candidate_answer=None if best is None or best.generation is None else _answer_of(best.generation),
                confidence=None if best is None else best.confidence,
                reason=decision.params.get("reason") or decision.reason,
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
            policy=self.guard.policy.name,
            seconds=max(self.guard.clock() - start, 0.0),
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
