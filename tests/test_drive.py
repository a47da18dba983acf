"""The effect-plan drivers: results, failures thrown back into the plan, sync and async alike."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Generator

import pytest

from guardrail._drive import Stepper, adrive, drive


def _plan(log: list[str]) -> Generator[int, int, str]:
    """Ask for 1 and 2; a failure of 2 is handled by the plan itself, any other failure ends it."""
    first = yield 1
    try:
        second = yield 2
    except KeyError as exc:
        log.append(f"recovered from {exc}")
        second = -1
    return f"{first},{second}"


def _double(effect: int) -> int:
    return effect * 2


def _fail_on_2(effect: int) -> int:
    if effect == 2:
        raise KeyError("two")
    return effect


def _fail_on_1(effect: int) -> int:
    if effect == 1:
        raise ValueError("one")
    return effect


async def _adouble(effect: int) -> int:
    await asyncio.sleep(0)
    return _double(effect)


async def _afail_on_2(effect: int) -> int:
    return _fail_on_2(effect)


async def _afail_on_1(effect: int) -> int:
    return _fail_on_1(effect)


def test_drive_returns_the_plan_result() -> None:
    assert drive(_plan([]), _double) == "2,4"
    assert asyncio.run(adrive(_plan([]), _adouble)) == "2,4"


def test_a_failed_effect_is_thrown_into_the_plan_at_its_yield() -> None:
    log: list[str] = []
    assert drive(_plan(log), _fail_on_2) == "1,-1"
    assert asyncio.run(adrive(_plan(log), _afail_on_2)) == "1,-1"
    assert log == ["recovered from 'two'", "recovered from 'two'"]


def test_a_failure_the_plan_does_not_handle_propagates() -> None:
    with pytest.raises(ValueError, match="one"):
        drive(_plan([]), _fail_on_1)
    with pytest.raises(ValueError, match="one"):
        asyncio.run(adrive(_plan([]), _afail_on_1))


def test_a_plan_without_effects_returns_at_once() -> None:
    def nothing() -> Generator[int, int, str]:
        return "done"
        yield 0  # pragma: no cover - makes this a generator

    assert drive(nothing(), _double) == "done"
    assert asyncio.run(adrive(nothing(), _adouble)) == "done"


_WHERE: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="outside")


def _seen_where() -> Generator[str, str, list[str]]:
    """Yields where it runs; returns that and what its two effects saw."""
    seen = [_WHERE.get()]
    seen.append((yield _WHERE.get()))
    seen.append((yield _WHERE.get()))
    return seen


def test_a_stepper_runs_the_plan_and_its_effects_in_its_context_one_step_at_a_time() -> None:
    context = contextvars.copy_context()
    context.run(_WHERE.set, "inside")
    stepper: Stepper[str, str, list[str]] = Stepper(_seen_where(), context)
    assert stepper.effect == "inside"  # started at construction, up to its first effect
    assert not stepper.done
    stepper.perform(lambda effect: f"performed {_WHERE.get()}")
    stepper.send("handed over")
    assert stepper.done
    assert stepper.effect is None
    assert stepper.result == ["inside", "performed inside", "handed over"]
    assert _WHERE.get() == "outside"


def test_a_stepper_refuses_to_read_a_result_it_has_not_got() -> None:
    stepper: Stepper[int, int, str] = Stepper(_plan([]))
    with pytest.raises(RuntimeError, match="not done"):
        _ = stepper.result
    stepper.send(1)
    assert stepper.effect == 2
    stepper.throw(KeyError("two"))  # handled by the plan, as a failed effect would be
    assert stepper.result == "1,-1"
    with pytest.raises(RuntimeError, match="waits for no effect"):
        stepper.perform(_double)
