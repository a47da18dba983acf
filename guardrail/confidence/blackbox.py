"""Decoupled confidence for models reached only through an API (METHOD.md section 4), and what it cannot measure.

``AgreementEstimator`` measures what a black-box model allows, and says which signal produced each score
(``Signals.sources``, every measurement in ``Signals.features``) and why a component is missing
(``Signals.problems``; a missing component is ``None``, never invented):

- **reasoning**: the mean token probability over the ``<reasoning>`` span and the answer tokens, where the
  model returned token log-probs (and token strings, to find the spans); else the verbalized reasoning score r;
  else, when asked for (``reask_draws``), the agreement of the answer with ``reask_draws`` re-asks sampled at
  ``reask_temperature`` on the same images; else unknown. Re-ask agreement is opt-in: a server that ignores
  the temperature (``transformers serve`` does unless the model's generation config samples) answers every
  re-ask identically, and the agreement would then be 1 whatever the model's doubt.
- **holistic**: the mean probability of the ``\\boxed{}`` answer tokens, where log-probs are known.
- **visual**, first choice: the perturbation KL of METHOD.md section 3, when the backend can re-score the answer
  teacher-forced on the server (:class:`~guardrail.backends._remote.TextScoringBackend`, e.g. vLLM's prompt
  log-probs): the paper's probe (patch blackening, probability 0.8), sampled-token KL and surprisal on the
  ``<vision>`` tokens, ``s = log KL - log H``, normalised. A server without scoring is recorded as "server offers
  no teacher-forced scoring: visual KL unavailable" and the estimator falls back to
- **visual**, black-box: **answer agreement** under K perturbed-image re-queries. Each image is mildly perturbed
  (by default a quarter of its patches blackened, with :func:`guardrail.confidence.perturb.perturb_image`) and the
  question asked again; the score is the fraction of re-queries whose final answer equals the original one. A
  perception that survives small changes to the pixels is a stable one; an answer that flips when a few patches
  go dark was read off a fragile percept. It costs K extra model calls. (With the paper's destructive probe,
  probability 0.8, agreement would instead measure reliance on language priors: a different question.)

Patches are laid on the images as sent: a remote model's input resolution is unknown here, so set
``patch_size`` to the vision encoder's patch at that scale when it matters. Features differ from the white-box
estimator's (``visual_agreement`` is not ``visual_certainty``), so a calibrator fitted on white-box signals does
not apply to these: fit one on black-box signals, or use the pass-through calibrator.

The guard awaits :meth:`AgreementEstimator.aestimate`, which issues the re-queries concurrently.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import torch
from PIL import Image

from ..backends._remote import ScoringUnavailable, TextScores, TextScoringBackend, replace_images
from ..backends.base import AsyncBackend, Backend
from ..errors import BackendError, EstimatorError, ImageError
from ..images import decode_image
from ..types import Generation, GenerationOptions, ImageBlock, Request, Signals
from . import signals as sig
from .normalization import VisualNormalization
from .perturb import PERTURBATIONS, PerturbationKind, perturb_image
from .spans import CharSpan, ParsedResponse, char_offsets_from_prefixes, char_span_to_token_span, parse_response

__all__ = ["AgreementEstimator", "normalize_answer"]

NO_SCORING = "server offers no teacher-forced scoring: visual KL unavailable"
_DETERMINISTIC = ("grey", "blur")


def normalize_answer(answer: str) -> str:
    """Answers compared for agreement: case-folded, whitespace collapsed, trailing full stops dropped."""
    return " ".join(answer.casefold().split()).rstrip(".").strip()


def _final_answer(generation: Generation) -> str:
    return normalize_answer(generation.answer if generation.answer is not None else generation.text)


def _masks(parsed: ParsedResponse, tokens: Sequence[str] | None, n: int) -> tuple[torch.Tensor, ...]:
    """Token masks of the vision span, the reasoning span and the answer (the whole response without one)."""
    if tokens is None:
        everything = torch.ones(n, dtype=torch.bool)
        return everything, everything, everything
    offsets = char_offsets_from_prefixes(list(accumulate(len(t) for t in tokens)))

    def mask(span: CharSpan) -> torch.Tensor:
        tokens_span = char_span_to_token_span(span, offsets)
        out = torch.zeros(n, dtype=torch.bool)
        if tokens_span is not None:
            out[tokens_span[0] : tokens_span[1]] = True
        return out

    answer = parsed.answer if parsed.answer is not None else (0, len(parsed.text))
    return mask(parsed.vision), mask(parsed.reasoning), mask(answer)


def _span_stats(prefix: str, logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    if not bool(mask.any()):
        return {}
    probs = logp.exp()
    return {
        f"{prefix}_tokens": float(mask.sum()),
        f"{prefix}_mean_surprisal": float(sig.masked_mean(sig.surprisal(logp), mask)),
        f"{prefix}_mean_prob": float(sig.masked_mean(probs, mask)),
        f"{prefix}_min_prob": float(sig.masked_min(probs, mask)),
    }


@dataclass
class _Work:
    """The measurements of one estimate, filled in stage by stage (the I/O happens between the stages)."""

    generation: Generation
    parsed: ParsedResponse
    images: list[Image.Image] = field(default_factory=list)
    visual: float | None = None
    reasoning: float | None = None
    holistic: float | None = None
    features: dict[str, float] = field(default_factory=dict)
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def token_stats(self, tokens: Sequence[str] | None, logprobs: Sequence[float], origin: str) -> None:
        """Reasoning and holistic scores from answer-token log-probs (``origin`` names where they came from)."""
        logp = torch.tensor(list(logprobs), dtype=torch.float64)
        _, reasoning, answer = _masks(self.parsed, tokens, len(logp))
        self.features.update(_span_stats("reasoning", logp, reasoning | answer))
        self.features.update(_span_stats("answer", logp, answer))
        self.features["logprobs_from_scoring"] = float(origin == "scoring")
        self.reasoning = self.features.get("reasoning_mean_prob")
        self.holistic = self.features.get("answer_mean_prob")
        self.sources["reasoning"] = ("reasoning_mean_prob",)
        self.sources["holistic"] = ("answer_mean_prob",)

    def kl(self, scores: TextScores, normalization: VisualNormalization) -> None:
        """The visual certainty of METHOD.md section 3 from server-side teacher-forced scores."""
        parsed = parse_response(scores.text)
        rows = torch.tensor([list(r) for r in scores.token_logprobs], dtype=torch.float64)
        vision, _, _ = _masks(parsed, scores.tokens, rows.shape[1])
        if not self.generation.token_logprobs:  # the server returned none with the answer: use row 0
            self.parsed = parsed
            self.token_stats(scores.tokens, scores.token_logprobs[0], "scoring")
        if not bool(vision.any()):
            self.problems.append("the perception span has no tokens: visual certainty not measured")
            return
        logp, logq = rows[0], rows[1:]
        kl_draws = sig.masked_mean(sig.sampled_token_kl(logp, logq), vision)
        kl, h = kl_draws.mean(), sig.masked_mean(sig.surprisal(logp), vision)
        s = sig.visual_score(kl, h)
        self.features.update(
            vision_kl=float(kl),
            vision_kl_std=float(kl_draws.std(unbiased=False)),
            vision_surprisal=float(h),
            visual_score=float(s),
        )
        self.visual = normalization.apply(float(s))
        self.features["visual_certainty"] = self.visual
        self.sources["visual"] = ("vision_kl", "vision_surprisal", "visual_score")

    def agreement(self, answers: Sequence[Generation]) -> None:
        """The visual score from answer agreement under perturbed re-queries."""
        original = _final_answer(self.generation)
        same = sum(_final_answer(g) == original for g in answers)
        self.visual = same / len(answers)
        self.features["visual_agreement"] = self.visual
        self.features["visual_requeries"] = float(len(answers))
        self.sources["visual"] = ("visual_agreement",)

    def reask_agreement(self, answers: Sequence[Generation]) -> None:
        """The reasoning score from answer agreement under sampled re-asks (same images)."""
        original = _final_answer(self.generation)
        self.reasoning = sum(_final_answer(g) == original for g in answers) / len(answers)
        self.features["reasoning_agreement"] = self.reasoning
        self.features["reasoning_reasks"] = float(len(answers))
        self.sources["reasoning"] = ("reasoning_agreement",)

    def signals(self) -> Signals:
        r = self.parsed.reasoning_confidence
        if self.reasoning is None and r is not None:
            self.reasoning = r
            self.sources["reasoning"] = ("verbalized_reasoning",)
        if self.reasoning is None:
            self.problems.append("no token log-probs and no verbalized reasoning score: reasoning not measured")
        return Signals(
            visual=self.visual,
            reasoning=self.reasoning,
            holistic=self.holistic,
            features={k: v for k, v in self.features.items() if math.isfinite(v)},
            sources=self.sources,
            problems=tuple(self.problems),
        )


class AgreementEstimator:
    """Black-box decoupled signals (see the module docstring).

    Parameters (keyword-only): ``draws`` K >= 1 perturbed re-queries for agreement (grey and blur: one);
    ``perturbation`` their kind and ``probability`` the chance a patch is blackened (mild by default);
    ``patch_size`` in pixels of the original image; ``seed`` of the first draw; ``server_scoring`` to try
    server-side teacher-forced scoring first, with ``scoring_draws`` perturbations of the paper's probe
    (``scoring_probability`` 0.8) and ``normalization`` the reference statistics of s; ``reask_draws`` sampled
    re-asks at ``reask_temperature`` for a reasoning score when neither log-probs nor a verbalized r exist (0: off).
    """

    def __init__(
        self,
        *,
        draws: int = 3,
        perturbation: PerturbationKind = "blackout",
        probability: float = 0.25,
        patch_size: int = 14,
        seed: int = 0,
        server_scoring: bool = True,
        scoring_draws: int = 1,
        scoring_probability: float = 0.8,
        normalization: VisualNormalization | None = None,
        reask_draws: int = 0,
        reask_temperature: float = 0.7,
    ) -> None:
        if draws < 1:
            raise ValueError(f"`draws` must be an int >= 1 (perturbed re-queries), got {draws}")
        if scoring_draws < 1:
            raise ValueError(f"`scoring_draws` must be an int >= 1, got {scoring_draws}")
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"`perturbation` must be one of {', '.join(PERTURBATIONS)}, got {perturbation!r}")
        for label, p in (("probability", probability), ("scoring_probability", scoring_probability)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"`{label}` must be in [0, 1] (chance a patch is blackened), got {p}")
        if reask_draws < 0:
            raise ValueError(f"`reask_draws` must be an int >= 0 (0: no re-asks), got {reask_draws}")
        if reask_temperature <= 0:
            raise ValueError(f"`reask_temperature` must be > 0 (re-asks are sampled), got {reask_temperature}")
        if patch_size < 1:
            raise ValueError(f"`patch_size` must be an int >= 1, got {patch_size}")
        self.draws, self.perturbation, self.probability = draws, perturbation, probability
        self.patch_size, self.seed = patch_size, seed
        self.server_scoring, self.scoring_draws, self.scoring_probability = (
            server_scoring,
            scoring_draws,
            scoring_probability,
        )
        self.normalization = normalization or VisualNormalization()
        self.reask_draws, self.reask_temperature = reask_draws, reask_temperature

    # -- the stages shared by both twins --------------------------------------------------------------------

    def _start(self, backend: Backend, request: Request, generation: Generation) -> _Work:
        parsed = parse_response(generation.text)
        work = _Work(generation=generation, parsed=parsed, problems=list(parsed.problems))
        v, r = parsed.vision_confidence, parsed.reasoning_confidence
        if v is not None:
            work.features["verbalized_vision"] = v
        if r is not None:
            work.features["verbalized_reasoning"] = r
        if generation.token_logprobs:
            tokens: tuple[str, ...] | None = generation.tokens
            if not tokens or "".join(tokens) != generation.text:
                work.problems.append("token strings unknown or not matching the text: every token counts as a span")
                tokens = None
            work.token_stats(tokens, generation.token_logprobs, "generation")
        else:
            work.problems.append(f"backend {backend.name!r} returned no token log-probs")
        if not request.images:
            work.problems.append("request has no image: visual certainty not measured")
            return work
        try:
            work.images = [decode_image(b, name=f"image {i}") for i, b in enumerate(request.images)]
        except ImageError as exc:
            work.problems.append(f"images cannot be perturbed ({exc}): visual certainty not measured")
        return work

    def _wants_scoring(self, backend: Backend, work: _Work) -> bool:
        if not work.images:
            return False
        if self.server_scoring and isinstance(backend, TextScoringBackend):
            return True
        work.problems.append(f"{NO_SCORING} (backend {backend.name!r} cannot re-score on the server)")
        return False

    def _variants(self, images: list[Image.Image], draws: int, probability: float) -> list[list[Image.Image]]:
        draws = 1 if self.perturbation in _DETERMINISTIC else draws
        return [
            [
                perturb_image(
                    im,
                    self.perturbation,
                    patch_size=self.patch_size,
                    seed=self.seed + k * len(images) + i,
                    probability=probability,
                )
                for i, im in enumerate(images)
            ]
            for k in range(draws)
        ]

    def _scoring_variants(self, work: _Work) -> list[list[Image.Image]]:
        return [
            [perturb_image(im, "blackout", patch_size=self.patch_size, seed=self.seed + k * 7919 + i,
                           probability=self.scoring_probability) for i, im in enumerate(work.images)]
            for k in range(self.scoring_draws)
        ]  # fmt: skip

    def _requests(self, request: Request, work: _Work) -> list[Request]:
        return [
            replace_images(request, [ImageBlock.from_pil(im) for im in variant])
            for variant in self._variants(work.images, self.draws, self.probability)
        ]

    def _reasks(self, work: _Work) -> list[GenerationOptions]:
        """Options of the sampled re-asks, when reasoning has no other measurement and re-asks are on."""
        if not self.reask_draws or work.reasoning is not None or work.parsed.reasoning_confidence is not None:
            return []
        return [
            GenerationOptions(attempt=1 + k, seed=self.seed + 1 + k, temperature=self.reask_temperature)
            for k in range(self.reask_draws)
        ]

    @staticmethod
    def _unavailable(work: _Work, exc: ScoringUnavailable) -> None:
        work.problems.append(f"{NO_SCORING} ({exc}); visual from answer agreement")

    # -- the twins ----------------------------------------------------------------------------------------------

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        """Measure the black-box signals of ``generation``, the answer of ``backend`` to ``request``."""
        work = self._start(backend, request, generation)
        if self._wants_scoring(backend, work):
            assert isinstance(backend, TextScoringBackend)
            try:
                scores = backend.score_text(request, generation.text.strip(), self._scoring_variants(work))
            except ScoringUnavailable as exc:
                self._unavailable(work, exc)
            except BackendError as exc:
                raise EstimatorError(f"server-side teacher-forced scoring failed: {exc}") from exc
            else:
                work.kl(scores, self.normalization)
        if work.images and "visual" not in work.sources:
            answers = []
            for k, perturbed in enumerate(self._requests(request, work)):
                try:
                    answers.append(backend.generate(perturbed, GenerationOptions(seed=k)))
                except BackendError as exc:
                    raise EstimatorError(f"perturbed re-query {k} failed: {exc}") from exc
            work.agreement(answers)
        reasks = self._reasks(work)
        if reasks:
            try:
                work.reask_agreement([backend.generate(request, options) for options in reasks])
            except BackendError as exc:
                raise EstimatorError(f"re-ask for reasoning agreement failed: {exc}") from exc
        return work.signals()

    async def aestimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        """The async twin of :meth:`estimate`: the same stages, the network calls awaited (re-queries at once)."""
        work = await asyncio.to_thread(self._start, backend, request, generation)
        if self._wants_scoring(backend, work):
            assert isinstance(backend, TextScoringBackend)
            ascore: Any = getattr(backend, "ascore_text", None)
            text, variants = generation.text.strip(), self._scoring_variants(work)
            try:
                if ascore is not None:
                    scores = await ascore(request, text, variants)
                else:
                    scores = await asyncio.to_thread(backend.score_text, request, text, variants)
            except ScoringUnavailable as exc:
                self._unavailable(work, exc)
            except BackendError as exc:
                raise EstimatorError(f"server-side teacher-forced scoring failed: {exc}") from exc
            else:
                work.kl(scores, self.normalization)
        if work.images and "visual" not in work.sources:
            requests = self._requests(request, work)

            async def one(k: int, perturbed: Request) -> Generation:
                try:
                    if isinstance(backend, AsyncBackend):
                        return await backend.agenerate(perturbed, GenerationOptions(seed=k))
                    return await asyncio.to_thread(backend.generate, perturbed, GenerationOptions(seed=k))
                except BackendError as exc:
                    raise EstimatorError(f"perturbed re-query {k} failed: {exc}") from exc

            work.agreement(await asyncio.gather(*(one(k, r) for k, r in enumerate(requests))))
        reasks = self._reasks(work)
        if reasks:

            async def reask(options: GenerationOptions) -> Generation:
                try:
                    if isinstance(backend, AsyncBackend):
                        return await backend.agenerate(request, options)
                    return await asyncio.to_thread(backend.generate, request, options)
                except BackendError as exc:
                    raise EstimatorError(f"re-ask for reasoning agreement failed: {exc}") from exc

            work.reask_agreement(await asyncio.gather(*(reask(o) for o in reasks)))
        return work.signals()
