"""Dynamic batching: concurrent ``generate`` calls from many threads answered together by one ``generate_batch``.

An agent framework runs many conversations at once (``graph.batch``, a server's worker threads, ``asyncio.gather``
over ``Guard.arun``); each guarded call asks its backend for one answer. ``CoalescingBackend`` collects the calls
that arrive within ``max_wait`` seconds of each other (at most ``max_batch``) and answers them with one batched
generation of the wrapped ``BatchBackend``; every caller gets its own answer, exactly what ``generate`` would have
given it alone (greedy decoding). The first waiting caller leads: it waits for company, then runs the batch for
everyone; the others sleep until their answer is there. A lone call pays at most ``max_wait`` of extra latency.

Everything else (``score``, ``model_images``, ``name``, ``max_images``, ...) is the wrapped backend's, so the
estimators and the guard see the same model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..types import Generation, GenerationOptions, Request
from .base import BatchBackend
from .batching import answer_each

__all__ = ["CoalescingBackend"]


@dataclass(eq=False)
class _Slot:
    request: Request
    options: GenerationOptions
    done: bool = False
    generation: Generation | None = None
    error: BaseException | None = field(default=None)

    def result(self) -> Generation:
        if self.error is not None:
            raise self.error
        assert self.generation is not None
        return self.generation


class CoalescingBackend:
    """``backend`` with concurrent ``generate`` calls batched (see the module docstring).

    ``max_batch`` >= 1 requests per batch; ``max_wait`` >= 0 seconds the leading call waits for others.
    """

    def __init__(self, backend: BatchBackend, *, max_batch: int = 16, max_wait: float = 0.005) -> None:
        if max_batch < 1:
            raise ValueError(f"`max_batch` must be an int >= 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"`max_wait` must be >= 0 seconds, got {max_wait}")
        if not isinstance(backend, BatchBackend):
            raise TypeError(f"{type(backend).__name__} cannot answer batches (it has no generate_batch)")
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.batches: list[int] = []
        """The size of every batch run so far (for inspection and benchmarks)."""
        self._queue: list[_Slot] = []
        self._leading = False
        self._ready = threading.Condition()

    @property
    def name(self) -> str:
        return self.backend.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        """Answer ``request``, in one batch with whatever other calls arrive meanwhile."""
        slot = _Slot(request, options)
        with self._ready:
            self._queue.append(slot)
            self._ready.notify_all()
        while True:
            with self._ready:
                while not slot.done and self._leading:
                    self._ready.wait()
                if slot.done:
                    return slot.result()
                self._leading = True
                deadline = time.monotonic() + self.max_wait
                while len(self._queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    self._ready.wait(left)
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                self._answer(batch)
            finally:
                with self._ready:
                    self._leading = False
                    self._ready.notify_all()

    def generate_batch(self, requests: Sequence[Request], options: Sequence[GenerationOptions]) -> list[Generation]:
        """The wrapped backend's own batches pass straight through."""
        return self.backend.generate_batch(requests, options)

    async def agenerate(self, request: Request, options: GenerationOptions) -> Generation:
        """The async twin: concurrent awaits coalesce like threads do (each waits on a worker thread)."""
        return await asyncio.to_thread(self.generate, request, options)

    def _answer(self, batch: list[_Slot]) -> None:
        """Run one batch and hand every slot its answer; if the batch fails, each is answered alone."""
        try:
            answered = answer_each(self.backend, [s.request for s in batch], [s.options for s in batch])
        except BaseException as exc:  # control flow, or an interrupt: every waiting caller sees it
            self._settle(batch, error=exc)
            raise
        for slot, result in zip(batch, answered.results, strict=True):
            if isinstance(result, Exception):
                slot.error = result
            else:
                slot.generation = result
        self.batches.extend([len(batch)] if answered.batched else [1] * len(batch))
        self._settle(batch)

    def _settle(self, batch: list[_Slot], error: BaseException | None = None) -> None:
        with self._ready:
            for slot in batch:
                if error is not None and slot.generation is None and slot.error is None:
                    slot.error = error
                slot.done = True
            self._ready.notify_all()
