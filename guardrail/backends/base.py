"""The contracts between models and everything above them: what a backend must do, and what it may offer.

- ``Backend`` (and its async twin ``AsyncBackend``): answer a request. All the guard needs.
- ``BatchBackend``: also answer several requests at once (``Guard.run_batch`` uses it).
- ``CheckingBackend``: tell, before any model call, that a request is more than the model can take (a prompt
  longer than its positions), so that a batch goes on without it.
- ``ScoringBackend``: a white-box backend that can also re-score a generated answer's token *ids* teacher-forced
  under other images (``TeacherForcedScores``); the decoupled estimator's visual probe needs it.
- ``ReferenceScoringBackend``: a scoring backend that keeps, while generating, what scoring the answer under the
  original images would give (``ReferenceScores``), so that the re-scoring pass runs only the perturbed copies.
- ``BatchScoringBackend``: also re-score several answers (``ScoringItem``) in one padded forward pass.
- ``TextScoringBackend``: a remote backend that may re-score an answer *text* server-side (``TextScores``, or
  ``ScoringUnavailable`` when the server cannot), since a server cannot accept ids without its tokenizer.
- ``ReferenceTextScoringBackend``: a text-scoring backend whose generation already returned row 0 (the answer's
  log-probs under the original images), so that re-scoring sends only the variants.
- ``MODEL_OUTPUT_TOLERANCE`` (a ``FloatTolerance``): when two floats a model computed in two runs are the same
  output; ``ENGINE_OUTPUT_TOLERANCE`` the same between two engines serving one model.

Estimators, calibration and the guard import these protocols from here; no module here imports them back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import BackendError
from ..types import Generation, GenerationOptions, Request

if TYPE_CHECKING:  # torch and PIL are only needed by white-box backends; importing the protocols must stay cheap
    import torch
    from PIL import Image

__all__ = [
    "ENGINE_OUTPUT_TOLERANCE",
    "MODEL_OUTPUT_TOLERANCE",
    "AsyncBackend",
    "Backend",
    "BatchBackend",
    "BatchScoringBackend",
    "CheckingBackend",
    "FloatTolerance",
    "ReferenceScores",
    "ReferenceScoringBackend",
    "ReferenceTextScoringBackend",
    "ScoringBackend",
    "ScoringItem",
    "ScoringUnavailable",
    "TeacherForcedScores",
    "TextScores",
    "TextScoringBackend",
]


@dataclass(frozen=True)
class FloatTolerance:
    """How far apart two floats may lie and still be the same output: ``|a - b| <= absolute + relative * max(|a|,
    |b|)``. Two NaNs are the same; an infinity is the same only as itself."""

    absolute: float
    relative: float

    def allowed(self, a: float, b: float) -> float:
        """The largest difference between ``a`` and ``b`` that is still the same output."""
        return self.absolute + self.relative * max(abs(a), abs(b))

    def close(self, a: float, b: float) -> bool:
        """Whether ``a`` and ``b`` are the same output within this tolerance."""
        if a == b:
            return True
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return False
        return abs(a - b) <= self.allowed(a, b)

    def __str__(self) -> str:
        return f"{self.absolute:g} absolute + {self.relative:g} relative"


MODEL_OUTPUT_TOLERANCE = FloatTolerance(absolute=1e-5, relative=1e-4)
"""When two floats one model computed in two runs are the same output: log-probs, entropies, KLs, features, signals
and the confidences calibrated from them. What a model computes exactly (token ids, the text they decode to) and
what is stored (weights, file bytes) are compared exactly; the floats are not, and this is the one tolerance.

Why not exactly: the same float32 weights give floats that differ in their last bits between two loads (where
the weights lie in memory can pick another kernel path), thread counts, CPUs (AVX2 or AVX-512, another BLAS
blocking) and batch shapes (a padded batch sums in another order). float32 resolves 2^-23 (1.2e-7) of a value, and
a forward pass of a few layers adds such roundings up. Measured: 1.2e-7 between two loads of the reference model
on an AMD EPYC (issue 26); at most 4.8e-7 between a left-padded batch and one request at a time on every tiny
family (``tests/backends/test_batched_generation.py``). 1e-5 absolute leaves twenty times that; the relative part
(1e-4, what the scoring and estimator tests allowed before) covers large values (hidden-state features, log-probs
of unlikely tokens near -20) and the visual score's logarithm of a small KL. A real change to the model or its
input (another weight, token, image or prompt) moves these floats by orders of magnitude more, and shows in what
is compared exactly: token ids and weights."""

ENGINE_OUTPUT_TOLERANCE = FloatTolerance(absolute=1e-4, relative=1e-4)
"""When floats of one model served by another engine (vLLM, in float32) are the same output: against the model in
process (other kernels for attention, normalisation and activations, not only another summation order), or against
the same engine batching concurrent requests as it sees fit. The vLLM tests measured differences below 1e-6; this
keeps the 1e-4 they always allowed."""


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
class CheckingBackend(Protocol):
    """A backend that can tell, cheaply and before any model call, that a request is more than it can take.

    ``check_request`` raises :class:`guardrail.InputError` naming the problem (e.g. a prompt longer than the model's
    positions, with its length and the limit) for a request that its ``generate`` would refuse anyway, and returns
    otherwise. Batches call it for each request first (``backends/batching.answer_each`` and ``score_each``), so
    that such a request fails alone before a padded pass is built around it. ``options`` are the call's
    (``max_new_tokens`` is the room the answer needs); ``None``: the backend's defaults.
    """

    def check_request(self, request: Request, options: GenerationOptions | None = None) -> None:
        """Raise ``InputError`` if ``request`` cannot be answered by this model (see the class docstring)."""
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


@dataclass(frozen=True)
class ReferenceScores:
    """Row 0 of a scoring pass (the answer under the original images), measured while the answer was generated.

    ``token_ids``: the answer it belongs to. ``scores``: one row of ``TeacherForcedScores``: the answer tokens'
    log-probs as generation computed them and the familiarity evidence of the prompt (from generation's own prefill
    forward pass); no distribution reductions. ``distributions``: ``(tokens, vocab)`` float32 next-token
    log-distributions under the original images, on the model's device, where the backend was asked to keep them
    (the full entropy, top-2 margin and full-vocabulary KL need them); ``None`` otherwise.

    Only the backend that returned it from ``reference`` can use it (it may carry what that backend needs to check
    that the variant rows line up with it).
    """

    token_ids: tuple[int, ...]
    scores: TeacherForcedScores
    distributions: torch.Tensor | None = None


@runtime_checkable
class ReferenceScoringBackend(ScoringBackend, Protocol):
    """A scoring backend whose generation keeps row 0 of the scoring pass, so that re-scoring runs only variants.

    The original images' per-token distributions of an answer are computed anyway while generating it; scoring
    them again teacher-forced would repeat that work. Estimators ask ``reference`` for what generation kept and, when
    it is there, pass it to ``score``; when it is not (another backend's answer, a copy of the ``Generation``, an
    answer the backend no longer keeps), they score row 0 as a plain ``ScoringBackend``.
    """

    def reference(
        self, request: Request, generation: Generation, *, distributions: bool = False
    ) -> ReferenceScores | None:
        """What generating ``generation`` for ``request`` kept, ``None`` when nothing (or, with ``distributions``,
        no full distributions) was kept for that very generation and request."""
        ...

    def score(
        self,
        request: Request,
        token_ids: Sequence[int],
        variants: Sequence[Sequence[Image.Image]] = (),
        *,
        distributions: bool = False,
        reference: ReferenceScores | None = None,
    ) -> TeacherForcedScores:
        """As :meth:`ScoringBackend.score`; with ``reference`` (from :meth:`reference`), row 0 is taken from it and
        only the variants are run through the model."""
        ...


@dataclass(frozen=True)
class ScoringItem:
    """One answer to re-score among several: the arguments of one ``score`` call (``reference`` where the backend
    kept one for this answer, ``None`` to score row 0 too)."""

    request: Request
    token_ids: tuple[int, ...]
    variants: tuple[tuple[Image.Image, ...], ...] = ()
    reference: ReferenceScores | None = None


@runtime_checkable
class BatchScoringBackend(ReferenceScoringBackend, Protocol):
    """A reference scoring backend that can re-score several answers at once (one padded forward pass).

    ``score_batch`` returns one ``TeacherForcedScores`` per item, in order, each equal within float tolerance to what
    ``score`` returns for that item alone (with its ``reference``); it may score some items alone (e.g. those
    without a reference). It raises ``BackendError`` when the batch cannot be scored; callers then score the items
    one by one, so that an item that breaks the batch fails alone (``backends/batching.score_each``).
    """

    def score_batch(self, items: Sequence[ScoringItem], *, distributions: bool = False) -> list[TeacherForcedScores]:
        """Teacher-forced scores of each item, as :meth:`ReferenceScoringBackend.score` gives them."""
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


@runtime_checkable
class ReferenceTextScoringBackend(TextScoringBackend, Protocol):
    """A text-scoring backend whose generation already returned row 0, so that re-scoring sends only the variants.

    A server that generated an answer with its token log-probs computed, on the way, what teacher-forced scoring
    under the original images gives (where it returns the model's own log-probs, not ones reshaped by sampling
    settings); scoring them again would repeat that work. ``score_generation`` returns what
    ``score_text(request, text, variants)`` returns, row 0 taken from ``generation`` (this backend's answer to
    ``request``, whose tokens spell ``text``) where the backend can vouch that its log-probs are the teacher-forced
    ones of the very tokens the variants are scored on, and scored like the variants where it cannot.
    """

    def score_generation(
        self, request: Request, generation: Generation, text: str, variants: Sequence[Sequence[Image.Image]] = ()
    ) -> TextScores:
        """Scores of ``text`` (``generation``'s answer) under the request's images and each variant."""
        ...
