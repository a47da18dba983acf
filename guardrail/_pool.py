"""A small pool of daemon worker threads for model calls that must stop being waited on.

``concurrent.futures.ThreadPoolExecutor`` joins its threads at interpreter exit, so one hung model call would
keep the process alive forever. Here workers are daemon threads: a call that outlives its budget is abandoned,
never joined. Workers are started on demand (up to ``max_workers``) and exit after ``idle_seconds`` idle.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["DaemonPool", "shared_pool"]

T = TypeVar("T")

_Work = tuple[Callable[[], Any], "Future[Any]"]


class DaemonPool:
    """Runs callables on daemon threads and hands back ``concurrent.futures.Future`` objects."""

    def __init__(self, *, max_workers: int = 64, idle_seconds: float = 30.0) -> None:
        if max_workers < 1:
            raise ValueError(f"`max_workers` must be an int >= 1, got {max_workers}")
        self._max_workers = max_workers
        self._idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._idle = 0
        self._pending = 0

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn()`` on a worker; its result or exception lands in the returned future."""
        future: Future[T] = Future()
        with self._lock:
            self._pending += 1
            spawn = self._pending > self._idle and self._workers < self._max_workers
            if spawn:
                self._workers += 1
        self._queue.put((fn, future))
        if spawn:
            threading.Thread(target=self._work, name="guardrail-call", daemon=True).start()
        return future

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
                        self._workers -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._pending -= 1
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the waiting caller, which re-raises or records it
                    future.set_exception(exc)


_shared: DaemonPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> DaemonPool:
    """The process-wide pool used by guards that have a time budget."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = DaemonPool()
        return _shared
