"""``_pool``: the one way a call runs under a time limit (``run_within`` and its async twins)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from guardrail import WorkerLimitError
from guardrail._pool import DaemonPool, OutOfTime, arun_within, await_within, run_within, shared_pool
from tests.support.faults import wait_until

_WHERE: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="outside")


def test_without_a_limit_the_work_runs_on_this_thread() -> None:
    assert run_within(threading.current_thread, None) is threading.current_thread()


def test_with_a_limit_the_work_runs_on_a_worker_in_the_caller_s_context() -> None:
    token = _WHERE.set("caller")
    try:
        thread, where = run_within(lambda: (threading.current_thread(), _WHERE.get()), 5.0)
    finally:
        _WHERE.reset(token)
    assert thread is not threading.current_thread()
    assert where == "caller"


def _settled_abandoned(seconds: float = 5.0) -> int:
    """The shared pool's abandoned-call count once earlier tests' released calls have finished (the count is a gauge:
    one of them ending between two readings would hide the call a test abandons)."""
    deadline = time.monotonic() + seconds
    while shared_pool().stats().abandoned and time.monotonic() < deadline:
        time.sleep(0.01)
    return shared_pool().stats().abandoned


def test_work_past_its_limit_is_abandoned_as_started() -> None:
    release = threading.Event()
    before = _settled_abandoned()
    try:
        with pytest.raises(OutOfTime) as out:
            run_within(release.wait, 0.05)
        assert out.value.started
        assert out.value.timeout == 0.05
        assert shared_pool().stats().abandoned >= before + 1
    finally:
        release.set()


def test_a_spent_limit_still_waits_for_nothing() -> None:
    release = threading.Event()
    try:
        with pytest.raises(OutOfTime):
            run_within(release.wait, -1.0)
    finally:
        release.set()


def test_errors_of_the_work_reach_the_caller() -> None:
    def fails() -> None:
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        run_within(fails, 5.0)
    with pytest.raises(KeyError, match="inside"):
        asyncio.run(arun_within(fails, 5.0))


def test_the_async_twin_runs_on_a_worker_and_is_abandoned_past_its_limit() -> None:
    release = threading.Event()

    async def main() -> None:
        assert await arun_within(threading.current_thread, None) is not threading.current_thread()
        with pytest.raises(OutOfTime) as out:
            await arun_within(release.wait, 0.05)
        assert out.value.started

    try:
        asyncio.run(main())
    finally:
        release.set()


def test_a_cancelled_await_abandons_its_worker() -> None:
    release = threading.Event()
    before = _settled_abandoned()

    async def main() -> None:
        task = asyncio.create_task(arun_within(release.wait, None))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
        assert shared_pool().stats().abandoned >= before + 1
    finally:
        release.set()


def test_a_native_coroutine_is_awaited_within_its_limit() -> None:
    async def main() -> None:
        assert await await_within(asyncio.sleep(0, "done"), None) == "done"
        assert await await_within(asyncio.sleep(0, "done"), 1.0) == "done"
        with pytest.raises(OutOfTime) as out:
            await await_within(asyncio.sleep(5), 0.05)
        assert out.value.started

    asyncio.run(main())


def test_work_the_pool_refuses_is_a_worker_limit_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import guardrail._pool as pool_module

    full = DaemonPool(max_workers=1, max_abandoned=1)
    release = threading.Event()
    try:
        hung = full.submit(release.wait)
        assert wait_until(lambda: full.stats().running == 1)
        assert full.abandon(hung)
        monkeypatch.setattr(pool_module, "_shared", full)
        with pytest.raises(WorkerLimitError, match="still running"):
            run_within(lambda: None, 1.0)
    finally:
        release.set()
