"""The contracts between models and everything above them: what a backend must do, and what it may offer.

- ``Backend`` (and its async twin ``AsyncBackend``): answer a request. All the guard needs.
- ``BatchBackend``: also answer several requests at once (``Guard.run_batch`` uses it).
- ``ScoringBackend``: a white-box backend that can also re-score a generated answer's token *ids* teacher-forced
  under other images (``TeacherForcedScores``); the decoupled estimator's visual probe needs it.
- ``TextScoringBackend``: a remote backend that may re-score an answer *text* server-side (``TextScores``, or
  ``ScoringUnavailable`` when the server cannot), since a server cannot accept ids without its tokenizer.

Estimators, calibration and the guard import these protocols from here; no module here imports them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import BackendError
from ..types import Generation, GenerationOptions, Request

if TYPE_CHECKING:  # torch and PIL are only needed by white-box backends; importing the protocols must stay cheap
    import torch
    from PIL import Image

__all__ = [
    "AsyncBackend",
    "Backend",
    "BatchBackend",
    "ScoringBackend",
    "ScoringUnavailable",
    "TeacherForcedScores",
    "TextScores",
    "TextScoringBackend",
]


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


@runtime_checkable
class BatchBackend(Backend, Protocol):
    """A backend that can answer several requests at once (one padded forward pass per decoding step).

    ``generate_batch`` returns one generation per request, in order, each equal to what ``generate`` returns for
    that request alone (greedy decoding); it may answer some of them one at a time (e.g. sampled re-asks). It
    raises ``BackendError`` when the batch cannot be answered; the guard then answers the requests one by one, so
    that a request that breaks the batch fails alone.
    """

    def generate_batch(self, requests: Sequence[Request], options: Sequence[GenerationOptions]) -> list[Generation]:
        """Answer each of ``requests`` with the options of the same position."""
        ...


@runtime_checkable
class ScoringBackend(Backend, Protocol):
    """A white-box backend that can re-score a generated answer under other images."""

    @property
    def patch_size(self) -> int:
        """The vision encoder's patch size in pixels."""
        ...

    def model_images(self, request: Request) -> list[Image.Image]:
        """The request's images at the model's input resolution."""
        ...

    def token_offsets(self, token_ids: Sequence[int]) -> list[tuple[int, int]]:
        """Character range of each token in the decoded response."""
        ...

    def score(
        self,
        request: Request,
        token_ids: Sequence[int],
        variants: Sequence[Sequence[Image.Image]] = (),
        *,
        distributions: bool = False,
    ) -> TeacherForcedScores:
        """Teacher-forced per-token scores of ``token_ids`` under the original images and each variant."""
        ...


class ScoringUnavailable(BackendError):
    """The server offers no teacher-forced scoring (no prompt log-probs): the visual KL cannot be measured."""


@dataclass(frozen=True)
class TextScores:
    """Teacher-forced log-probs of one answer text; row 0 is the original images, row ``1 + i`` variant i.

    ``tokens`` are the answer's tokens as the server split them (they concatenate to ``text``);
    ``token_logprobs[row][t]`` is the log-prob of token t under that row's images.
    """

    text: str
    tokens: tuple[str, ...]
    token_logprobs: tuple[tuple[float, ...], ...]


@runtime_checkable
class TextScoringBackend(Backend, Protocol):
    """A remote backend that may re-score an answer text teacher-forced under other images, server-side."""

    def score_text(self, request: Request, text: str, variants: Sequence[Sequence[Image.Image]] = ()) -> TextScores:
        """Scores of ``text`` under the request's images and each variant; ``ScoringUnavailable`` if unsupported."""
        ...
