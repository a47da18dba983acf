"""Performing the loop's effects: model attempts, view fetches and tiles, on this thread or awaited, within the budget.

``Effects.perform`` runs one effect synchronously; with a time budget it runs on a daemon worker of the shared pool
and stops waiting when the budget is spent (``_pool.run_within``: the one way a call runs under a time limit).
``Effects.aperform`` awaits it (natively for an ``AsyncBackend``, else on a worker). Every exception of the
backend, estimator, calibrator or view provider is recorded with its stage on the outcome, for the loop's
``on_error``; LangGraph control flow is re-raised. The caller's ``contextvars`` (trace spans, LangChain config) are
copied into workers.

An attempt with ``samples`` K > 1 generates K answers (one batch where the backend batches) and keeps the one most
of them give (``responses.majority_answer``), which alone is measured. A ``TilesCall`` asks a tile provider for
tiles, answers each tile alone (batched likewise), takes each answer's ``<vision>`` body and merges them with the
percept merger; a tile answer without a ``<vision>`` block fails the fetch (its percept cannot be merged).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from ._pool import OutOfTime, arun_within, await_within, run_within, shared_pool
from .backends.base import AsyncBackend, Backend, BatchBackend
from .backends.batching import answer_each, checked_generation
from .calibration.base import Calibrator
from .confidence.base import AsyncEstimator, BatchEstimator, Estimator
from .errors import BackendError, BackendTimeout, WorkerLimitError, is_control_flow
from .loop import AttemptCall, AttemptOutcome, Effect, Outcome, TilesCall, TilesOutcome, ViewsCall, ViewsOutcome
from .responses import majority_answer, parse_response, percept_head
from .types import ErrorInfo, ErrorStage, Generation, GenerationOptions, ImageBlock, Request, Signals, TilePercept
from .views import Tiling

__all__ = ["Effects"]


class Effects:
    """Performs a guarded call's effects with one estimator and calibrator (the guard's)."""

    def __init__(self, estimator: Estimator, calibrator: Calibrator) -> None:
        self.estimator = estimator
        self.calibrator = calibrator

    def perform(self, effect: Effect) -> Outcome:
        """Perform ``effect`` on this thread, or on a pool worker waited for at most its ``timeout``."""
        try:
            return run_within(self._work(effect), effect.timeout)
        except WorkerLimitError as exc:
            return _not_started(effect, exc)
        except OutOfTime as out:
            return _timed_out(effect, started=out.started)

    async def aperform(self, effect: Effect) -> Outcome:
        """Await ``effect``: natively for an async backend, else on a pool worker; at most its ``timeout``."""
        try:
            if isinstance(effect, AttemptCall) and isinstance(effect.backend, AsyncBackend):
                return await await_within(self._attempt_async(effect), effect.timeout)
            return await arun_within(self._work(effect), effect.timeout)
        except WorkerLimitError as exc:
            return _not_started(effect, exc)
        except OutOfTime as out:
            return _timed_out(effect, started=out.started)

    def perform_batch(self, calls: Sequence[AttemptCall]) -> list[AttemptOutcome]:
        """Perform model attempts that are due together on one backend: one batched generation when the backend
        is a ``BatchBackend``, then the answers measured together when the estimator is a ``BatchEstimator`` (else
        one by one), each calibrated alone. Within the smallest of their time budgets (on a pool worker); otherwise
        one by one, as :meth:`perform` would."""
        backend = calls[0].backend
        if len(calls) == 1 or not isinstance(backend, BatchBackend) or any(call.samples > 1 for call in calls):
            return [_attempt_outcome(self.perform(call)) for call in calls]
        timeouts = [call.timeout for call in calls if call.timeout is not None]
        timeout = max(min(timeouts), 0.0) if timeouts else None
        try:
            return run_within(lambda: self._attempt_batch(backend, calls), timeout)
        except WorkerLimitError as exc:
            return [_attempt_outcome(_not_started(call, exc)) for call in calls]
        except OutOfTime as out:
            return [_attempt_outcome(_timed_out(_within(call, out.timeout), started=out.started)) for call in calls]

    def _work(self, effect: Effect) -> Callable[[], Outcome]:
        if isinstance(effect, AttemptCall):
            return lambda: self._attempt(effect)
        if isinstance(effect, TilesCall):
            return lambda: self._tiles(effect)
        return lambda: self._views(effect)

    # -- the I/O itself ---------------------------------------------------------------------------------------

    def _attempt(self, call: AttemptCall) -> AttemptOutcome:
        start = time.perf_counter()
        outcome = AttemptOutcome()
        try:
            if call.samples > 1:
                outcome.generation, outcome.sampled_answers = _majority(
                    _answers(call.backend, [call.request] * call.samples, _sample_options(call))
                )
            else:
                outcome.generation = checked_generation(call.backend.generate(call.request, call.options), call.options)
        except Exception as exc:
            _record_failure(outcome, "backend", exc)
        else:
            self._measure(call, outcome)
        outcome.seconds = time.perf_counter() - start
        return outcome

    def _attempt_batch(self, backend: BatchBackend, calls: Sequence[AttemptCall]) -> list[AttemptOutcome]:
        """One batched generation, then the answers measured together where the estimator can (``BatchEstimator``:
        their re-scoring passes batched), else one by one; each answer calibrated alone."""
        answered = answer_each(backend, [call.request for call in calls], [call.options for call in calls])
        outcomes = [AttemptOutcome() for _ in calls]
        for outcome, result in zip(outcomes, answered.results, strict=True):
            if isinstance(result, Exception):
                _record_failure(outcome, "backend", result)
            else:
                outcome.generation = result
        answers = [i for i, outcome in enumerate(outcomes) if outcome.generation is not None]
        start = time.perf_counter()
        measured = self._estimates(backend, [calls[i] for i in answers], [outcomes[i] for i in answers])
        together = dict(zip(answers, measured, strict=True)) if measured is not None else {}
        shared = time.perf_counter() - start if measured is not None else 0.0
        for i, outcome in enumerate(outcomes):
            own = time.perf_counter()
            if i in together:
                self._take_signals(outcome, together[i])
            elif outcome.generation is not None:
                self._measure(calls[i], outcome)
            waited = answered.seconds[i] + (shared if i in together else 0.0)
            outcome.seconds = waited + time.perf_counter() - own  # as long as this answer was waited for
        return outcomes

    def _estimates(
        self, backend: BatchBackend, calls: Sequence[AttemptCall], outcomes: Sequence[AttemptOutcome]
    ) -> list[Signals | Exception] | None:
        """The answers' signals (or each one's failure) from one ``estimate_batch``; ``None`` when the estimator
        cannot measure several at once or its batch failed as a whole (then each answer is measured alone)."""
        if len(calls) < 2 or not isinstance(self.estimator, BatchEstimator):
            return None
        generations = [outcome.generation for outcome in outcomes if outcome.generation is not None]
        try:
            measured = self.estimator.estimate_batch(backend, [call.request for call in calls], generations)
            if len(measured) != len(calls):
                raise TypeError(f"estimate_batch returned {len(measured)} results for {len(calls)} answers")
        except Exception as exc:
            if is_control_flow(exc):
                raise
            return None
        return list(measured)

    def _take_signals(self, outcome: AttemptOutcome, measured: object) -> None:
        """One answer's part of a batched estimate: its signals, calibrated, or its own failure (an estimator stage
        error, so the policy's ``on_error`` decides: an answer is never let through unmeasured)."""
        if isinstance(measured, Signals):
            outcome.signals = measured
            self._calibrate(outcome)
        elif isinstance(measured, Exception):
            _record_failure(outcome, "estimator", measured)
        else:
            error = TypeError(f"estimate_batch returned {type(measured).__name__}, expected guardrail.Signals")
            _record_failure(outcome, "estimator", error)

    async def _attempt_async(self, call: AttemptCall) -> AttemptOutcome:
        """A native async attempt: ``agenerate``, then ``aestimate`` when the estimator has one (else the sync
        estimator on a worker thread), then the calibrator inline (a pure, microsecond-scale map)."""
        start = time.perf_counter()
        outcome = AttemptOutcome()
        assert isinstance(call.backend, AsyncBackend)
        try:
            if call.samples > 1:
                sampled = _sample_options(call)
                answers = await asyncio.gather(*(call.backend.agenerate(call.request, o) for o in sampled))
                generation, outcome.sampled_answers = _majority(
                    [checked_generation(g, o) for g, o in zip(answers, sampled, strict=True)]
                )
            else:
                generation = checked_generation(await call.backend.agenerate(call.request, call.options), call.options)
            outcome.generation = generation
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

    async def _measure_on_worker(self, call: AttemptCall, outcome: AttemptOutcome) -> None:
        """A sync estimator under an async backend: on a worker, abandoned if the awaiting task is cancelled."""
        try:
            await arun_within(lambda: self._measure(call, outcome), None)
        except WorkerLimitError as exc:
            _record_failure(outcome, "estimator", exc)

    def _measure(self, call: AttemptCall, outcome: AttemptOutcome) -> AttemptOutcome:
        """Estimator then calibrator on a generation; errors are recorded with their stage."""
        assert outcome.generation is not None
        try:
            outcome.signals = self.estimator.estimate(call.backend, call.request, outcome.generation)
        except Exception as exc:
            _record_failure(outcome, "estimator", exc)
        else:
            self._calibrate(outcome)
        return outcome

    def _calibrate(self, outcome: AttemptOutcome) -> None:
        assert outcome.signals is not None
        try:
            outcome.confidence = self.calibrator.calibrate(outcome.signals)
        except Exception as exc:
            _record_failure(outcome, "calibrator", exc)

    def _tiles(self, call: TilesCall) -> TilesOutcome:
        """Tiles of the source, each answered alone, their percepts merged (see the module docstring)."""
        try:
            tiling = call.provider.tiles(call.request, call.count)
            _check_tiling(call.name, tiling)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            return TilesOutcome(error=ErrorInfo.from_exception("view_provider", exc))
        requests = [call.request.replacing_images([tile.image]) for tile in tiling.tiles]
        try:
            answers = _answers(call.backend, requests, [call.options] * len(requests))
            heads = [percept_head(answer.text) for answer in answers]
            missing = [i for i, head in enumerate(heads) if head is None]
            if missing:
                raise BackendError(
                    f"{call.backend.name}: the answer to tile {missing[0]} (box {tiling.tiles[missing[0]].box}) has no "
                    f"<vision> block, so the tiles' percepts cannot be merged: {answers[missing[0]].text[:80]!r}"
                )
        except Exception as exc:
            if is_control_flow(exc):
                raise
            return TilesOutcome(error=ErrorInfo.from_exception("backend", exc))
        percepts = tuple(
            TilePercept(box=tile.box, percept=parse_response(answer.text).perception_text)
            for tile, answer in zip(tiling.tiles, answers, strict=True)
        )
        try:
            merged = call.merger([(p.box, p.percept) for p in percepts], tiling.width, tiling.height)
            if not isinstance(merged, str) or not merged.strip():
                raise TypeError(f"percept merger {call.merger_name!r} returned {merged!r}, expected a non-empty str")
        except Exception as exc:
            if is_control_flow(exc):
                raise
            return TilesOutcome(percepts=percepts, error=ErrorInfo.from_exception("view_provider", exc))
        prefix = percept_head(answers[0].text, merged.strip())
        return TilesOutcome(percepts=percepts, merged=merged.strip(), prefix=prefix)

    def _views(self, call: ViewsCall) -> ViewsOutcome:
        try:
            views = tuple(call.provider(call.request, call.count))[: call.count]  # "up to count" images
            if not views:
                raise ValueError(f"view provider {call.name!r} returned no images")
            bad = [type(v).__name__ for v in views if not isinstance(v, ImageBlock)]
            if bad:
                raise TypeError(f"view provider {call.name!r} returned {bad[0]} where ImageBlock was expected")
            return ViewsOutcome(views=views)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            return ViewsOutcome(error=ErrorInfo.from_exception("view_provider", exc))


def _record_failure(outcome: AttemptOutcome, stage: ErrorStage, exc: Exception) -> None:
    """Keep a stage's failure on the outcome; LangGraph control flow is re-raised, never recorded."""
    if is_control_flow(exc):
        raise exc
    outcome.error = ErrorInfo.from_exception(stage, exc)


def _timed_out(effect: Effect, *, started: bool) -> Outcome:
    what = (
        "model attempt"
        if isinstance(effect, AttemptCall)
        else f"view provider {effect.name!r}"
        if isinstance(effect, ViewsCall)
        else f"tiles of view provider {effect.name!r}"
    )
    if started:
        message = f"{what} did not finish within the remaining {effect.timeout:.3f} s of the budget"
    else:
        stats = shared_pool().stats()
        message = (
            f"{what} did not start within the remaining {effect.timeout:.3f} s of the budget: all "
            f"{stats.max_workers} workers were busy ({stats.queued} calls queued)"
        )
    error = ErrorInfo.from_exception("budget", BackendTimeout(message))
    if isinstance(effect, AttemptCall):
        return AttemptOutcome(error=error, seconds=max(effect.timeout or 0.0, 0.0))
    if isinstance(effect, TilesCall):
        return TilesOutcome(error=error)
    return ViewsOutcome(error=error)


def _attempt_outcome(outcome: Outcome) -> AttemptOutcome:
    assert isinstance(outcome, AttemptOutcome)
    return outcome


def _within(call: AttemptCall, timeout: float) -> AttemptCall:
    """``call`` as waited for in a batch: the batch's (smallest) budget is what ran out."""
    return AttemptCall(call.backend, call.request, call.options, timeout, call.samples)


def _not_started(effect: Effect, exc: WorkerLimitError) -> Outcome:
    """The pool refused the work: an error of the stage that could not run, handled by ``on_error``."""
    if isinstance(effect, AttemptCall):
        return AttemptOutcome(error=ErrorInfo.from_exception("backend", exc))
    if isinstance(effect, TilesCall):
        return TilesOutcome(error=ErrorInfo.from_exception("view_provider", exc))
    return ViewsOutcome(error=ErrorInfo.from_exception("view_provider", exc))


SAMPLE_SEED_STRIDE = 1000
"""Sample k of an attempt with seed s is drawn with seed ``s * SAMPLE_SEED_STRIDE + k``: the samples of one
attempt differ from each other and from every other attempt's."""


def _sample_options(call: AttemptCall) -> list[GenerationOptions]:
    """The options of each of ``call``'s samples: its own, each with a seed of its own."""
    base = call.options.seed if call.options.seed is not None else call.options.attempt
    return [call.options.model_copy(update={"seed": base * SAMPLE_SEED_STRIDE + k}) for k in range(call.samples)]


def _answers(backend: Backend, requests: list[Request], options: list[GenerationOptions]) -> list[Generation]:
    """Every request's answer (one batch where the backend batches); the first failure is raised."""
    answered = answer_each(backend, requests, options)
    for result in answered.results:
        if isinstance(result, Exception):
            raise result
    return [result for result in answered.results if isinstance(result, Generation)]


def _majority(answers: list[Generation]) -> tuple[Generation, tuple[str | None, ...]]:
    """The sample whose final answer most samples give, and every sample's final answer."""
    finals = tuple(answer.answer for answer in answers)
    return answers[majority_answer(finals)], finals


def _check_tiling(name: str, tiling: object) -> None:
    """A ``TypeError``/``ValueError`` naming what is wrong with a tile provider's result."""
    if not isinstance(tiling, Tiling):
        raise TypeError(f"view provider {name!r} returned {type(tiling).__name__} from tiles(), expected a Tiling")
    if not tiling.tiles:
        raise ValueError(f"view provider {name!r} returned no tiles")
    bad = [type(t.image).__name__ for t in tiling.tiles if not isinstance(t.image, ImageBlock)]
    if bad:
        raise TypeError(f"view provider {name!r} returned a tile of {bad[0]} where ImageBlock was expected")
