"""What the guard needs to measure confidence: the ``Estimator`` protocol (and its async and batched variants)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..backends.base import Backend
from ..types import Generation, Request, Signals

__all__ = ["AsyncEstimator", "BatchEstimator", "Estimator"]


@runtime_checkable
class Estimator(Protocol):
    """Turns one generation into raw confidence ``Signals``.

    It may call back into ``backend`` (e.g. teacher-forced re-scoring under perturbed images). It raises
    :class:`guardrail.EstimatorError` when it cannot measure; a component it cannot measure is ``None``.
    """

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        """Measure the signals of ``generation``, the backend's answer to ``request``."""
        ...


@runtime_checkable
class AsyncEstimator(Estimator, Protocol):
    """An estimator that can also measure without blocking the event loop (e.g. re-queries over the network)."""

    async def aestimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        """The async twin of :meth:`Estimator.estimate`."""
        ...


@runtime_checkable
class BatchEstimator(Estimator, Protocol):
    """An estimator that can also measure several answers at once (e.g. their re-scoring passes batched).

    ``estimate_batch`` returns, in order, each answer's ``Signals`` equal (within float tolerance) to what
    ``estimate`` returns for it alone, or the exception that made that answer's own estimate fail: one answer that
    cannot be measured never costs the others theirs. ``Guard.run_batch`` uses it for attempts answered together.
    """

    def estimate_batch(
        self, backend: Backend, requests: Sequence[Request], generations: Sequence[Generation]
    ) -> list[Signals | Exception]:
        """Measure each of ``generations``, the backend's answer to the request of the same position."""
        ...
