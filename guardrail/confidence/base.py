"""What the guard needs to measure confidence: the ``Estimator`` protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..backends.base import Backend
from ..types import Generation, Request, Signals

__all__ = ["AsyncEstimator", "Estimator"]


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
