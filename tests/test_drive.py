"""The effect-plan drivers: results, failures thrown back into the plan, sync and async alike."""

from __future__ import annotations

import asyncio
from collections.abc import Generator

import pytest

from guardrail._drive import adrive, drive


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
