"""Many guarded calls at once: each request keeps its own plan, and attempts due together share one batched pass.

Every request runs the same loop as ``Guard.run`` (``loop.py``): its own policy decisions, budget, re-asks, more
views and fallbacks, exactly. The driver advances all plans in rounds: in each round, every plan that is waiting for
a model attempt has it performed together with the others on the same backend (``Effects.perform_batch``: one
padded generation per ``batch_size`` requests when the backend is a ``BatchBackend``), and view fetches are
performed one by one. A plan that needs another attempt (a re-ask, more views) simply takes part in the next round;
plans that are decided drop out, so no request waits for another's remedies to start or finish its own.

Each call keeps its own telemetry span, current in its own ``contextvars`` context (the plans' hooks run inside
it); the batched model call itself runs outside every call's context, so a backend's own spans do not nest under
one attempt.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from .effects import Effects
from .loop import AttemptCall, Effect, Outcome, Plan
from .telemetry import CallTrace
from .types import GuardResult, Request

__all__ = ["run_batch"]

Open = Callable[[Request], AbstractContextManager[CallTrace]]
"""Opens one call's telemetry span (``Telemetry.call`` with the guard's model and policy)."""
Planner = Callable[[Request, CallTrace], Plan]
"""One call's plan (``GuardedCall(...).plan()`` with the guard's parts)."""


@dataclass
class _Call:
    """One request's plan, the context its telemetry lives in, and where it stands."""

    plan: Plan
    context: contextvars.Context
    span: AbstractContextManager[CallTrace]
    effect: Effect | None = None
    result: GuardResult | None = field(default=None)

    def advance(self, outcome: Outcome | None) -> None:
        """Send ``outcome`` (``None`` to start) and keep the next effect, or the result and close the span."""
        try:
            if outcome is None:
                self.effect = self.context.run(next, self.plan)
            else:
                self.effect = self.context.run(self.plan.send, outcome)
        except StopIteration as stop:
            self.effect, self.result = None, stop.value
            self.context.run(self.span.__exit__, None, None, None)

    def abort(self, exc: BaseException) -> None:
        """End the span of a call left undecided because the batch raised (LangGraph control flow)."""
        self.context.run(self.span.__exit__, type(exc), exc, exc.__traceback__)
        self.context.run(self.plan.close)


def _start(request: Request, open_span: Open, planner: Planner) -> _Call:
    context = contextvars.copy_context()
    span = open_span(request)
    trace = context.run(span.__enter__)
    call = _Call(plan=planner(request, trace), context=context, span=span)
    call.advance(None)
    return call


def run_batch(
    requests: Sequence[Request], *, open_span: Open, planner: Planner, effects: Effects, batch_size: int
) -> list[GuardResult]:
    """The guarded results of ``requests``, in order (see the module docstring)."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size}")
    calls: list[_Call] = []
    try:
        for request in requests:
            calls.append(_start(request, open_span, planner))
        while pending := [c for c in calls if c.result is None]:
            for call in pending:
                if call.effect is not None and not isinstance(call.effect, AttemptCall):
                    call.advance(call.context.run(effects.perform, call.effect))
            due = [c for c in pending if isinstance(c.effect, AttemptCall)]
            for group in _groups(due, batch_size):
                attempts = [c.effect for c in group if isinstance(c.effect, AttemptCall)]
                for call, outcome in zip(group, effects.perform_batch(attempts), strict=True):
                    call.advance(outcome)
    except BaseException as exc:
        for call in reversed(calls):
            if call.result is None:
                call.abort(exc)
        raise
    return [c.result for c in calls if c.result is not None]


def _groups(calls: list[_Call], size: int) -> list[list[_Call]]:
    """Calls waiting for an attempt on the same backend, in request order, ``size`` at most per group."""
    by_backend: dict[int, list[_Call]] = {}
    for call in calls:
        assert isinstance(call.effect, AttemptCall)
        by_backend.setdefault(id(call.effect.backend), []).append(call)
    return [group[i : i + size] for group in by_backend.values() for i in range(0, len(group), size)]
