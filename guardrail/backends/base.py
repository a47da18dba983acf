"""What the guard needs from a model: the ``Backend`` protocol (and its optional async twin), and the result
type of teacher-forced re-scoring (``TeacherForcedScores``), which white-box backends return and estimators read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..types import Generation, GenerationOptions, Request

if TYPE_CHECKING:  # torch is only needed by white-box backends; importing the protocols must stay cheap
    import torch

__all__ = ["AsyncBackend", "Backend", "TeacherForcedScores"]


@dataclass(frozen=True)
class TeacherForcedScores:
    """Per-token results of re-scoring one answer; row 0 is the original images, row ``1 + i`` variant i.

    ``token_logprobs``: ``(rows, tokens)`` log-probs of the answer tokens. With full distributions requested:
    ``entropy`` and ``margin`` (top-1 minus top-2 probability) ``(rows, tokens)``, and ``kl_full``
    ``(rows, tokens)`` = full-vocabulary KL(original || row) (row 0 is zero).

    Familiarity evidence from the same forward pass (row 0), ``None`` where the backend cannot tell:
    ``prompt_logprobs`` ``(n,)`` the teacher-forced log-probs of the question's own tokens (the prompt text after
    the last image, chat-template scaffolding included), ``prompt_unknown`` how many of them are the tokenizer's
    unknown token, and the model's input features mean-pooled over those tokens (``prompt_features``, ``(dim,)``)
    and over the image positions (``image_features``: the projected vision-encoder output).
    """

    token_logprobs: torch.Tensor
    entropy: torch.Tensor | None = None
    margin: torch.Tensor | None = None
    kl_full: torch.Tensor | None = None
    prompt_logprobs: torch.Tensor | None = None
    prompt_unknown: int | None = None
    prompt_features: torch.Tensor | None = None
    image_features: torch.Tensor | None = None


@runtime_checkable
class Backend(Protocol):
    """A vision-language model the guard can call.

    ``generate`` answers a request; it raises :class:`guardrail.BackendError` (translated from the library's own
    errors) when the call fails. ``name`` identifies the model in results and traces.

    Optional, not part of the protocol check: ``max_images: int | None``, the most images one prompt may carry
    (``None`` or absent: unknown, any number). The guard's ``fetch_more_views`` reads it: in mode ``auto`` it
    replaces the request's images with the fetched views when appending would exceed it (always, for a
    one-image model), and when replacing it asks the view provider for at most ``max_images`` views.
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
