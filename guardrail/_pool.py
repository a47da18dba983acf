"""A small pool of daemon worker threads for model calls that must stop being waited on.

``concurrent.futures.ThreadPoolExecutor`` joins its threads at interpreter exit, so one hung model call would
keep the process alive forever. Here workers are daemon threads: a call that outlives its budget is abandoned,
never joined.

Two separate limits keep hung calls from starving healthy ones:

- ``max_workers`` bounds the *live* workers (idle or running a call someone still waits for). Work beyond it
  waits in a queue for a live worker.
- When a caller stops waiting (``abandon``), the worker running that call stops counting as live: a replacement
  may start at once, so a healthy call never queues behind a hung one. The abandoned thread finishes its call
  (its result is dropped) and then exits. At most ``max_abandoned`` abandoned calls may still be running; past
  that, ``submit`` refuses new work with a :class:`~guardrail.errors.WorkerLimitError` naming the cause (the
  backend hangs), rather than let threads pile up without bound.

``stats()`` reports the current use, for tests, health checks and dashboards.

The one way a call runs under a time limit on the shared pool, for the guard (``effects.py``), batches and the
chat model (``integrations/_chat_parts.py``) alike:

- ``run_within(work, timeout)``: on this thread when there is no limit, else on a worker in a copy of the
  caller's ``contextvars`` context, waited for at most ``timeout`` seconds, then abandoned;
- ``arun_within(work, timeout)``: its async twin, always on a worker (sync work never blocks the event loop), also
  abandoned when the awaiting task is cancelled;
- ``await_within(awaitable, timeout)``: a native coroutine awaited at most ``timeout`` seconds.

When the limit is reached they raise :class:`OutOfTime`, which says whether the work had started (a call that
never left the queue is cancelled and never runs); when the pool refuses the work, ``WorkerLimitError``. Each
caller turns these into its own error (``BackendTimeout`` with its wording, or a budget error on an outcome).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import WorkerLimitError

__all__ = [
    "DaemonPool",
    "OutOfTime",
    "WorkerStats",
    "arun_within",
    "await_within",
    "in_current_context",
    "run_within",
    "shared_pool",
]

T = TypeVar("T")

_Work = tuple[Callable[[], Any], "Future[Any]"]

logger = logging.getLogger("guardrail.workers")


@dataclass(frozen=True)
class WorkerStats:
    """A snapshot of a pool's threads: live ones (idle or running), queued work, and abandoned calls."""

    running: int
    """Live workers running a call whose caller still waits."""
    idle: int
    """Live workers waiting for work."""
    queued: int
    """Submitted calls not yet picked up by a worker."""
    abandoned: int
    """Threads still running a call whose caller stopped waiting (each exits when its call returns)."""
    max_workers: int
    max_abandoned: int


class DaemonPool:
    """Runs callables on daemon threads and hands back ``concurrent.futures.Future`` objects (see module doc)."""

    def __init__(self, *, max_workers: int = 64, max_abandoned: int = 256, idle_seconds: float = 30.0) -> None:
        if max_workers < 1:
            raise ValueError(f"`max_workers` must be an int >= 1, got {max_workers}")
        if max_abandoned < 1:
            raise ValueError(f"`max_abandoned` must be an int >= 1, got {max_abandoned}")
        self._max_workers = max_workers
        self._max_abandoned = max_abandoned
        self._idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0  # counted against max_workers: idle + running for a waiting caller
        self._idle = 0
        self._pending = 0
        self._running: set[Future[Any]] = set()
        self._abandoned: set[Future[Any]] = set()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn()`` on a worker; its result or exception lands in the returned future.

        Raises ``WorkerLimitError`` when ``max_abandoned`` abandoned calls are still running, or when the
        operating system refuses a new thread.
        """
        future: Future[T] = Future()
        with self._lock:
            if len(self._abandoned) >= self._max_abandoned:
                message = (
                    f"call not started: {len(self._abandoned)} earlier calls that outlived their time budget "
                    f"are still running (limit {self._max_abandoned}); the backend appears to hang"
                )
                logger.warning(message)
                raise WorkerLimitError(message)
            self._pending += 1
            spawn = self._pending > self._idle and self._live < self._max_workers
            if spawn:
                self._live += 1
        self._queue.put((fn, future))
        if spawn and not self._start_worker():
            future.cancel()  # left in the queue, but no worker will ever run it
            raise WorkerLimitError("call not started: the operating system refused a new worker thread")
        return future

    def abandon(self, future: Future[Any]) -> bool:
        """The caller stops waiting for ``future``: cancel it if queued, else free its worker's live slot.

        Returns True when the call had started (its thread keeps running it and exits after, or it has just
        finished), False when it was still queued (it is cancelled and never runs).
        """
        spawn = False
        with self._lock:
            if future.cancel():
                return False
            if future.done():
                return True
            if future not in self._running or future in self._abandoned:
                return future in self._abandoned
            self._abandoned.add(future)
            self._live -= 1
            if self._pending > self._idle and self._live < self._max_workers:
                self._live += 1
                spawn = True
            abandoned = len(self._abandoned)
        logger.debug("abandoned a call that outlived its budget; %d abandoned calls still running", abandoned)
        if spawn:
            self._start_worker()  # if refused, queued work waits for a live worker or its own deadline
        return True

    def stats(self) -> WorkerStats:
        """The pool's current thread use."""
        with self._lock:
            return WorkerStats(
                running=self._live - self._idle,
                idle=self._idle,
                queued=self._pending,
                abandoned=len(self._abandoned),
                max_workers=self._max_workers,
                max_abandoned=self._max_abandoned,
            )

    def _start_worker(self) -> bool:
        """Start one worker thread (its live slot is already counted); False if the OS refuses a thread."""
        try:
            threading.Thread(target=self._work, name="guardrail-call", daemon=True).start()
        except RuntimeError:  # "can't start new thread": the process is out of threads
            logger.warning("cannot start a worker thread", exc_info=True)
            with self._lock:
                self._live -= 1
            return False
        return True

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                fn, future = self._queue.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._pending <= self._idle:  # nothing waits that the remaining workers cannot take
                        self._live -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._pending -= 1
                started = future.set_running_or_notify_cancel()
                if started:
                    self._running.add(future)
            if not started:  # cancelled while queued: its caller already gave up
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to the waiting caller, which re-raises or records it
                future.set_exception(exc)
            else:
                future.set_result(result)
            with self._lock:
                self._running.discard(future)
                if future in self._abandoned:  # a replacement took this worker's live slot: leave
                    self._abandoned.discard(future)
                    return


_shared: DaemonPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> DaemonPool:
    """The process-wide pool used by guards that have a time budget."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = DaemonPool()
        return _shared


# ---------------------------------------------------------------------------------------------------------------
# Running one call within a time limit: the one way, sync and async.


class OutOfTime(Exception):
    """The time limit ran out: ``started`` says whether a worker had taken the work (it runs on, its result
    dropped) or it was still queued behind busy workers (cancelled, it never runs)."""

    def __init__(self, timeout: float, *, started: bool) -> None:
        super().__init__(f"not done within {timeout:.3f} s ({'started' if started else 'never started'})")
        self.timeout = timeout
        self.started = started


def in_current_context(work: Callable[[], T]) -> Callable[[], T]:
    """``work`` run inside a copy of the caller's context (trace spans, LangChain config), for a worker thread."""
    context = contextvars.copy_context()
    return lambda: context.run(work)


def run_within(work: Callable[[], T], timeout: float | None) -> T:
    """``work()`` on this thread when ``timeout`` is ``None``; else on a shared-pool worker, waited for at most
    ``timeout`` seconds (a negative one is spent) and then abandoned with :class:`OutOfTime`. ``WorkerLimitError``
    when the pool refuses it."""
    if timeout is None:
        return work()
    pool = shared_pool()
    future = pool.submit(in_current_context(work))
    try:
        return future.result(timeout=max(timeout, 0.0))
    except concurrent.futures.TimeoutError:
        raise OutOfTime(timeout, started=pool.abandon(future)) from None


async def arun_within(work: Callable[[], T], timeout: float | None) -> T:
    """The async twin of :func:`run_within`: ``work()`` on a shared-pool worker, awaited (at most ``timeout``
    seconds when one is given); abandoned when the limit is reached (:class:`OutOfTime`) or the awaiting task is
    cancelled (the ``CancelledError`` goes on)."""
    pool = shared_pool()
    future = pool.submit(in_current_context(work))
    try:
        if timeout is None:
            return await asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(timeout, 0.0))
        except asyncio.TimeoutError:
            raise OutOfTime(timeout, started=pool.abandon(future)) from None
    except asyncio.CancelledError:
        pool.abandon(future)  # nobody waits for the worker any more
        raise


async def await_within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``awaitable`` (a native async call) awaited, at most ``timeout`` seconds when one is given; cancelled with
    :class:`OutOfTime` (``started``) when the limit is reached."""
    if timeout is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, timeout=max(timeout, 0.0))
    except asyncio.TimeoutError:
        raise OutOfTime(timeout, started=True) from None
