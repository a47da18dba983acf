"""What the guard needs from a model: the ``Backend`` protocol (and its optional async twin)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..types import Generation, GenerationOptions, Request

__all__ = ["AsyncBackend", "Backend"]


@runtime_checkable
class Backend(Protocol):
    """A vision-language model the guard can call.

    ``generate`` answers a request; it raises :class:`guardrail.BackendError` (translated from the library's own
    errors) when the call fails. ``name`` identifies the model in results and traces.
    """

    @property
    def name(self) -> str:
        """The model's name (``gen_ai.request.model``)."""
        ...

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        """Answer ``request``; ``options.attempt`` > 0 marks a re-ask (a backend may vary its sampling)."""
        ...


@runtime_checkable
class AsyncBackend(Backend, Protocol):
    """A backend that can also answer without blocking the event loop."""

    async def agenerate(self, request: Request, options: GenerationOptions) -> Generation:
        """The async twin of :meth:`Backend.generate`."""
        ...
