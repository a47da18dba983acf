"""Driving an effect plan: a generator that yields the I/O it needs and receives the outcome back.

The guarded call (``loop.py``) and the agreement estimator write their logic once, as such a generator. A
``Stepper`` holds one plan and advances it one effect at a time: it performs the effect the plan waits for (or is
handed its outcome) and keeps the next effect, or the plan's result. An exception raised while performing an effect
is thrown back into the plan at the ``yield`` that asked for it, so the plan decides what a failure means.

``drive`` and ``adrive`` run one plan to its result, each effect performed on this thread or awaited; the batch
driver (``batch.py``) holds a ``Stepper`` per request, each inside its own ``contextvars`` context, and hands the
model attempts of many their outcomes together.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

_E = TypeVar("_E")
_O = TypeVar("_O")
_R = TypeVar("_R")

__all__ = ["Stepper", "adrive", "drive"]


class Stepper(Generic[_E, _O, _R]):
    """One plan, started at construction (it runs up to its first effect) and advanced by its caller.

    ``effect`` is what the plan waits for (``None`` once it is done); ``result`` what it returned. With a
    ``context``, the plan runs inside it (its hooks see that context's trace span), and so does the work of
    :meth:`perform`. An exception the plan raises (other than its return) goes to the caller.
    """

    def __init__(self, plan: Generator[_E, _O, _R], context: contextvars.Context | None = None) -> None:
        self.plan = plan
        self._context = context
        self.effect: _E | None = None
        self._result: tuple[_R] | None = None
        self._resume(next, plan)

    @property
    def done(self) -> bool:
        """Whether the plan has returned its result."""
        return self._result is not None

    @property
    def result(self) -> _R:
        """What the plan returned (only once it is done)."""
        if self._result is None:
            raise RuntimeError("the plan is not done: it still waits for an effect")
        return self._result[0]

    def send(self, outcome: _O) -> None:
        """Hand the plan the outcome of the effect it waits for."""
        self._resume(self.plan.send, outcome)

    def throw(self, exc: Exception) -> None:
        """Raise ``exc`` in the plan at the ``yield`` that asked for the effect (the plan may handle it)."""
        self._resume(self.plan.throw, exc)

    def perform(self, perform: Callable[[_E], _O]) -> None:
        """Perform the effect the plan waits for on this thread; its outcome is sent, its exception thrown in."""
        effect = self._waiting()
        try:
            outcome = self._run(perform, effect)
        except Exception as exc:
            self.throw(exc)
        else:
            self.send(outcome)

    async def aperform(self, perform: Callable[[_E], Awaitable[_O]]) -> None:
        """The async twin of :meth:`perform`: the effect awaited."""
        effect = self._waiting()
        try:
            outcome = await perform(effect)
        except Exception as exc:
            self.throw(exc)
        else:
            self.send(outcome)

    def _waiting(self) -> _E:
        if self.effect is None:
            raise RuntimeError("the plan waits for no effect: it is done")
        return self.effect

    def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        return function(*args) if self._context is None else self._context.run(function, *args)

    def _resume(self, step: Callable[..., _E], *args: Any) -> None:
        try:
            self.effect = self._run(step, *args)
        except StopIteration as stop:
            self.effect, self._result = None, (stop.value,)


def drive(plan: Generator[_E, _O, _R], perform: Callable[[_E], _O]) -> _R:
    """Run ``plan`` to its result, performing each effect it yields on this thread."""
    try:
        stepper = Stepper(plan)
        while not stepper.done:
            stepper.perform(perform)
        return stepper.result
    finally:
        plan.close()


async def adrive(plan: Generator[_E, _O, _R], perform: Callable[[_E], Awaitable[_O]]) -> _R:
    """The async twin of :func:`drive`: each effect awaited."""
    try:
        stepper = Stepper(plan)
        while not stepper.done:
            await stepper.aperform(perform)
        return stepper.result
    finally:
        plan.close()
