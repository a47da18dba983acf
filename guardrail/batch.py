"""Many guarded calls at once: each request keeps its own plan, and attempts due together share one batched pass.

Every request runs the same loop as ``Guard.run`` (``loop.py``): its own policy decisions, budget, re-asks, more
views and fallbacks, exactly. The requests wait in a queue, unstarted; the driver performs one group of model
attempts at a time (``Effects.perform_batch``: one padded generation of up to ``batch_size`` requests when the
backend is a ``BatchBackend``). A group holds first the calls already under way that wait for their next attempt
(a re-ask, an attempt with more views, a fallback), on the backend of the one that has waited longest, then, while
there is room, requests taken from the queue. A request's plan starts (and with it its time budget) only when it is
taken into a group: a request queued behind others never spends its budget waiting for them, and a call under way
never waits behind requests that have not started. View fetches are performed one by one, as soon as a plan asks
for them (tiles likewise, each tile's answers one batch of their own). Plans that are decided drop out.

Each call keeps its own telemetry span, current in its own ``contextvars`` context (its plan runs inside it, as a
``_drive.Stepper``); the batched model call itself runs outside every call's context, so a backend's own spans do
not nest under one attempt.
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from ._drive import Stepper
from .effects import Effects
from .loop import AttemptCall, AttemptOutcome, Effect, Outcome, Plan, TilesCall, ViewsCall
from .telemetry import CallTrace
from .types import GuardResult, Request

__all__ = ["run_batch"]

Open = Callable[[Request], AbstractContextManager[CallTrace]]
"""Opens one call's telemetry span (``Telemetry.call`` with the guard's model and policy)."""
Planner = Callable[[Request, CallTrace], Plan]
"""One call's plan (``GuardedCall(...).plan()`` with the guard's parts)."""


@dataclass
class _Call:
    """One request's plan (stepped inside the context its telemetry lives in) and its open span."""

    step: Stepper[Effect, Outcome, GuardResult]
    context: contextvars.Context
    span: AbstractContextManager[CallTrace]

    @property
    def attempt(self) -> AttemptCall | None:
        """The model attempt the plan waits for, if it waits for one."""
        effect = self.step.effect
        return effect if isinstance(effect, AttemptCall) else None

    def advance(self, outcome: AttemptOutcome, effects: Effects) -> None:
        """Hand the plan its attempt's outcome, then :meth:`settle` it."""
        self.step.send(outcome)
        self.settle(effects)

    def settle(self, effects: Effects) -> None:
        """Fetch the views (and tiles) the plan asks for (in its context) until it waits for a model attempt or is
        decided; close the span of a decided call."""
        while isinstance(self.step.effect, ViewsCall | TilesCall):
            self.step.perform(effects.perform)  # the stepper runs it in the call's context
        if self.step.done:
            self.context.run(self.span.__exit__, None, None, None)

    def abort(self, exc: BaseException) -> None:
        """End the span of a call left undecided because the batch raised (LangGraph control flow)."""
        self.context.run(self.span.__exit__, type(exc), exc, exc.__traceback__)
        self.context.run(self.step.plan.close)


def _start(request: Request, open_span: Open, planner: Planner) -> _Call:
    """Open ``request``'s span and start its plan: its clock, and so its time budget, starts here."""
    context = contextvars.copy_context()
    span = open_span(request)
    trace = context.run(span.__enter__)
    try:
        step = Stepper(planner(request, trace), context)
    except BaseException as exc:
        context.run(span.__exit__, type(exc), exc, exc.__traceback__)
        raise
    return _Call(step=step, context=context, span=span)


def run_batch(
    requests: Sequence[Request], *, open_span: Open, planner: Planner, effects: Effects, batch_size: int
) -> list[GuardResult]:
    """The guarded results of ``requests``, in order (see the module docstring)."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size}")
    queued = deque(requests)
    calls: list[_Call] = []  # the started ones, in request order
    try:
        while True:
            group = _under_way(calls, batch_size)
            while queued and len(group) < batch_size:
                call = _start(queued.popleft(), open_span, planner)
                calls.append(call)
                call.settle(effects)
                if call.attempt is None:  # decided without a model call (an empty question)
                    continue
                if group and call.attempt.backend is not group[0].attempt.backend:
                    break  # it waits for a group of its own backend
                group.append(_Waiting(call, call.attempt))
            if not group:
                break
            outcomes = effects.perform_batch([waiting.attempt for waiting in group])
            for waiting, outcome in zip(group, outcomes, strict=True):
                waiting.call.advance(outcome, effects)
    except BaseException as exc:
        for call in reversed(calls):
            if not call.step.done:
                call.abort(exc)
        raise
    return [call.step.result for call in calls]


@dataclass(frozen=True)
class _Waiting:
    """A call in a group, with the model attempt it waits for."""

    call: _Call
    attempt: AttemptCall


def _under_way(calls: list[_Call], size: int) -> list[_Waiting]:
    """The started calls that wait for an attempt on the backend of the first of them, in request order, ``size``
    at most."""
    waiting = [_Waiting(call, call.attempt) for call in calls if call.attempt is not None]
    return [w for w in waiting if w.attempt.backend is waiting[0].attempt.backend][:size]
