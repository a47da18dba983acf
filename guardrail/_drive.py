"""Driving an effect plan: a generator that yields the I/O it needs and receives the outcome back.

The guarded call (``loop.py``) and the agreement estimator write their logic once, as such a generator; these two
drivers perform the effects synchronously or with ``await``. An exception raised while performing an effect is
thrown back into the plan at the ``yield`` that asked for it, so the plan decides what a failure means.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TypeVar

_E = TypeVar("_E")
_O = TypeVar("_O")
_R = TypeVar("_R")

__all__ = ["adrive", "drive"]


def drive(plan: Generator[_E, _O, _R], perform: Callable[[_E], _O]) -> _R:
    """Run ``plan`` to its result, performing each effect it yields on this thread."""
    try:
        effect = next(plan)
        while True:
            try:
                outcome = perform(effect)
            except Exception as exc:
                effect = plan.throw(exc)
            else:
                effect = plan.send(outcome)
    except StopIteration as stop:
        result: _R = stop.value
        return result
    finally:
        plan.close()


async def adrive(plan: Generator[_E, _O, _R], perform: Callable[[_E], Awaitable[_O]]) -> _R:
    """The async twin of :func:`drive`: each effect awaited."""
    try:
        effect = next(plan)
        while True:
            try:
                outcome = await perform(effect)
            except Exception as exc:
                effect = plan.throw(exc)
            else:
                effect = plan.send(outcome)
    except StopIteration as stop:
        result: _R = stop.value
        return result
    finally:
        plan.close()
