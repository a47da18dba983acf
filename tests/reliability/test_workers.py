"""Hung model calls never starve healthy ones: bounded, observable worker use and a clear error at the limit.

The issue: 70 threads call a guard over a hanging backend (budget 2 s); afterwards a guard over a healthy backend
abstained with ``BackendTimeout``, because the shared pool's 64 workers were all stuck in the hung calls.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image

import guardrail._pool as pool_module
from guardrail import Guard, GuardResult, Request, WorkerLimitError
from guardrail._pool import DaemonPool, shared_pool
from tests.support.faults import HangingModel, HealthyModel, policy, wait_until


def request() -> Request:
    return Request.from_question("What colour is the shape?", [Image.new("RGB", (16, 16), (200, 30, 30))])


@pytest.fixture
def hanging() -> Iterator[HangingModel]:
    model = HangingModel()
    yield model
    model.release.set()  # let every abandoned thread finish, whatever the test did


# -- the pool on its own -------------------------------------------------------------------------------------


def test_an_abandoned_call_frees_its_slot_for_the_next_call() -> None:
    pool = DaemonPool(max_workers=2, max_abandoned=4)
    release = threading.Event()
    hung = [pool.submit(release.wait) for _ in range(2)]
    assert wait_until(lambda: pool.stats().running == 2)
    assert all(pool.abandon(f) for f in hung)  # both had started
    assert pool.stats().abandoned == 2
    assert pool.stats().running == 0
    assert pool.submit(lambda: 42).result(timeout=2) == 42  # not queued behind the hung calls
    release.set()
    assert wait_until(lambda: pool.stats().abandoned == 0)


def test_a_queued_call_that_is_abandoned_never_runs() -> None:
    pool = DaemonPool(max_workers=1, max_abandoned=4)
    release = threading.Event()
    ran: list[int] = []
    busy = pool.submit(release.wait)
    queued = pool.submit(lambda: ran.append(1))
    assert pool.stats().queued >= 1
    assert pool.abandon(queued) is False  # never started: cancelled
    release.set()
    busy.result(timeout=2)
    time.sleep(0.05)
    assert ran == []
    assert queued.cancelled()


def test_the_abandoned_limit_is_a_clear_error_and_recovers() -> None:
    pool = DaemonPool(max_workers=4, max_abandoned=2)
    release = threading.Event()
    for _ in range(2):
        future = pool.submit(release.wait)
        assert wait_until(lambda f=future: f.running())  # type: ignore[misc]
        pool.abandon(future)
    with pytest.raises(WorkerLimitError, match=r"2 earlier calls .* still running \(limit 2\); the backend appears"):
        pool.submit(lambda: 1)
    release.set()
    assert wait_until(lambda: pool.stats().abandoned == 0)
    assert pool.submit(lambda: 1).result(timeout=2) == 1


def test_a_refused_thread_is_a_clear_error_and_its_work_never_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = DaemonPool(max_workers=2)
    ran: list[int] = []

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", refuse)
        with pytest.raises(WorkerLimitError, match="the operating system refused a new worker thread"):
            pool.submit(lambda: ran.append(1))
    assert pool.stats().running == 0
    assert pool.submit(lambda: 7).result(timeout=2) == 7  # the next call gets a worker; the refused one never ran
    time.sleep(0.05)
    assert ran == []


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="`max_workers` must be an int >= 1, got 0"):
        DaemonPool(max_workers=0)
    with pytest.raises(ValueError, match="`max_abandoned` must be an int >= 1, got 0"):
        DaemonPool(max_abandoned=0)


# -- real guards on the shared pool ----------------------------------------------------------------------------


def test_more_hung_calls_than_workers_do_not_starve_a_healthy_call(hanging: HangingModel) -> None:
    pool = shared_pool()
    before = pool.stats().abandoned
    n = pool.stats().max_workers + 6  # 70 with the default 64 workers, as in the issue
    budget = policy(max_seconds=0.5, on_error="abstain")
    hung_guard = Guard(hanging, estimator=hanging, policy=budget)
    results: list[GuardResult] = []
    lock = threading.Lock()

    def call() -> None:
        result = hung_guard.run(request())
        with lock:
            results.append(result)

    threads = [threading.Thread(target=call) for _ in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == n
    assert time.perf_counter() - start < 10
    assert all(r.status == "abstained" and r.error is not None for r in results)
    assert {r.error.type for r in results if r.error is not None} == {"BackendTimeout"}
    messages = [r.error.message for r in results if r.error is not None]
    assert any("did not finish within" in m for m in messages)
    stats = pool.stats()
    assert stats.abandoned - before == hanging.entered  # every hung call that started was abandoned
    assert stats.running == 0

    healthy = Guard(HealthyModel(), estimator=HealthyModel(), policy=budget)
    started = time.perf_counter()
    result = healthy.run(request())
    assert result.status == "accepted", result.error
    assert result.error is None
    assert time.perf_counter() - started < 0.5

    hanging.release.set()  # the hung calls return; their threads exit: nothing leaks
    assert wait_until(lambda: shared_pool().stats().abandoned == 0)
    assert shared_pool().stats().running == 0


def test_a_call_that_never_got_a_worker_says_so(hanging: HangingModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "_shared", DaemonPool(max_workers=1))
    first = threading.Thread(
        target=Guard(hanging, estimator=hanging, policy=policy(max_seconds=1.0)).run, args=(request(),)
    )
    first.start()
    assert wait_until(lambda: hanging.entered == 1)
    healthy = Guard(HealthyModel(), estimator=HealthyModel(), policy=policy(max_seconds=0.2, on_error="abstain"))
    result = healthy.run(request())
    assert result.error is not None
    assert result.error.type == "BackendTimeout"
    assert "did not start within the remaining" in result.error.message
    assert "all 1 workers were busy" in result.error.message
    first.join(timeout=5)


def test_the_limit_ends_in_on_error_and_the_guard_recovers(
    hanging: HangingModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = DaemonPool(max_workers=8, max_abandoned=2)
    monkeypatch.setattr(pool_module, "_shared", small)
    budget = policy(max_seconds=0.2, on_error="abstain")
    hung_guard = Guard(hanging, estimator=hanging, policy=budget)
    for _ in range(2):
        assert hung_guard.run(request()).error is not None
    assert small.stats().abandoned == 2

    healthy = Guard(HealthyModel(), estimator=HealthyModel(), policy=budget)
    refused = healthy.run(request())
    assert refused.status == "abstained"  # fails closed
    assert refused.final_decision.rule == "on_error"
    assert refused.error is not None
    assert refused.error.type == "WorkerLimitError"
    assert refused.error.stage == "backend"
    assert "still running (limit 2)" in refused.error.message

    hanging.release.set()
    assert wait_until(lambda: small.stats().abandoned == 0)
    assert healthy.run(request()).status == "accepted"


def test_async_calls_abandon_their_workers_too(hanging: HangingModel) -> None:
    pool = shared_pool()
    before = pool.stats().abandoned
    budget = policy(max_seconds=0.2, on_error="abstain")
    hung_guard = Guard(hanging, estimator=hanging, policy=budget)

    async def many() -> list[GuardResult]:
        return await asyncio.gather(*(hung_guard.arun(request()) for _ in range(5)))

    results = asyncio.run(many())
    assert [r.error.type if r.error else None for r in results] == ["BackendTimeout"] * 5
    assert wait_until(lambda: pool.stats().abandoned >= before + 5, timeout=2)
    assert pool.stats().running == 0
    hanging.release.set()
    assert wait_until(lambda: pool.stats().abandoned == 0)
