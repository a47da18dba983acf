"""The decoupled estimator: visual and reasoning confidence of one answer (METHOD.md sections 2-4).

For one generation it
1. parses the structured answer into the ``<vision>``, ``<reasoning>`` and ``\\boxed{}`` spans and the
   verbalized scores, and maps the spans to generated-token ranges;
2. draws K perturbed copies of the images (patch blackening by default) at the model's input resolution and has
   the backend re-score the answer teacher-forced under the original and all K copies in one forward pass;
3. computes, on the vision tokens, the grounding KL (mean of the clamped sampled-token KL, averaged over the K
   draws) and the certainty H (mean surprisal, or full entropy), then ``s = log(KL + 1e-8) - log(H + 1e-8)``
   and the visual certainty ``sigmoid((s - mean) / std)`` with reference statistics (``VisualNormalization``);
4. takes as the raw **reasoning** score the mean token probability over the reasoning-span and answer tokens
   (the tokens whose correctness the reasoning decides; the verbalized r, when present, is kept as a feature
   for the calibrator), and as the **holistic** baseline the mean probability of the answer tokens.

Every measurement is kept in ``Signals.features``. A backend that cannot re-score (no ``score`` method) gets a
``None`` visual component with the reason in ``problems``; its verbalized scores are still used. A failed
re-scoring call raises ``EstimatorError`` (from the backend's ``BackendError``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from PIL import Image

from ..backends.base import Backend, TeacherForcedScores
from ..calibration.base import harmonic_mean
from ..errors import BackendError, EstimatorError
from ..types import Generation, Request, Signals
from . import signals as sig
from .familiarity import FamiliarityReference
from .normalization import VisualNormalization
from .perturb import PERTURBATIONS, PerturbationKind, perturb_image
from .spans import CharSpan, ParsedResponse, char_span_to_token_span, parse_response

__all__ = ["DecoupledEstimator", "ScoringBackend", "TeacherForcedScores", "VisualNormalization"]


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


_RANDOM_KINDS = ("blackout", "noise")


def _mask(span: tuple[int, int] | None, length: int) -> torch.Tensor:
    positions = torch.arange(length)
    if span is None:
        return torch.zeros(length, dtype=torch.bool)
    return (positions >= span[0]) & (positions < span[1])


def _finite(features: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in features.items() if math.isfinite(v)}


class DecoupledEstimator:
    """Estimator of raw decoupled ``Signals`` (see the module docstring for the method).

    Parameters (keyword-only): ``draws`` K >= 1 perturbations averaged (random kinds; grey, blur and a blackout
    of probability 0 or 1 are drawn once); ``perturbation`` its kind; ``seed`` of the first draw (draw k of image i uses
    ``seed + k * n_images + i``); ``full_distribution`` to measure the full-vocabulary KL and the full entropy
    (then H is the full entropy); ``normalization`` the reference statistics of s; ``blackout_probability``
    the chance a patch is blackened; ``familiarity`` the calibration inputs' feature references (from the
    artifact): with it, each estimate also says how far its question and images lie from the calibration inputs
    (``Signals.familiarity`` and the ``*_distance`` / ``*_shift`` / ``*_familiarity`` features).
    """

    def __init__(
        self,
        *,
        draws: int = 1,
        perturbation: PerturbationKind = "blackout",
        seed: int = 0,
        full_distribution: bool = False,
        normalization: VisualNormalization | None = None,
        blackout_probability: float = 0.8,
        familiarity: FamiliarityReference | None = None,
    ) -> None:
        if draws < 1:
            raise ValueError(f"`draws` must be an int >= 1 (perturbations averaged), got {draws}")
        if not 0.0 <= blackout_probability <= 1.0:
            raise ValueError(f"`blackout_probability` must be in [0, 1], got {blackout_probability}")
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"`perturbation` must be one of {', '.join(PERTURBATIONS)}, got {perturbation!r}")
        self.draws = draws
        self.perturbation: PerturbationKind = perturbation
        self.seed = seed
        self.full_distribution = full_distribution
        self.normalization = normalization or VisualNormalization()
        self.blackout_probability = blackout_probability
        self.familiarity = familiarity

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        """Measure the raw signals of ``generation``, the answer of ``backend`` to ``request``."""
        parsed = parse_response(generation.text)
        problems = list(parsed.problems)
        features: dict[str, float] = {}
        sources: dict[str, tuple[str, ...]] = {}
        v, r = parsed.vision_confidence, parsed.reasoning_confidence
        if v is not None:
            features["verbalized_vision"] = v
        if r is not None:
            features["verbalized_reasoning"] = r
        if v is not None and r is not None:
            features["verbalized_overall"] = float(harmonic_mean(v, r) or 0.0)
        if not parsed.has_vision_tag:
            problems.append("no <vision> span: the whole response serves as the perception span")

        visual: float | None = None
        reasoning: float | None = None
        holistic: float | None = None
        embeddings: dict[str, tuple[float, ...]] = {}
        if not isinstance(backend, ScoringBackend):
            problems.append(f"backend {backend.name!r} cannot re-score answers: visual certainty not measured")
            reasoning, holistic = self._black_box(generation, features, sources)
        elif not generation.token_ids:
            problems.append("generation has no token ids: visual certainty not measured")
        else:
            visual, reasoning, holistic = self._white_box(
                backend, request, generation, parsed, features, sources, problems, embeddings
            )
        if reasoning is None and r is not None:
            reasoning = r
            sources["reasoning"] = ("verbalized_reasoning",)
        signals = Signals(
            visual=visual,
            reasoning=reasoning,
            holistic=holistic,
            features=_finite(features),
            sources=sources,
            problems=tuple(problems),
            embeddings=embeddings,
        )
        return signals if self.familiarity is None else self.familiarity.apply(signals)

    async def aestimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        """The async twin of :meth:`estimate` (the re-scoring forward pass runs in a worker thread)."""
        return await asyncio.to_thread(self.estimate, backend, request, generation)

    @staticmethod
    def _black_box(
        generation: Generation, features: dict[str, float], sources: dict[str, tuple[str, ...]]
    ) -> tuple[float | None, float | None]:
        """Without re-scoring: the holistic score is the mean probability of all generated tokens, if known."""
        if not generation.token_logprobs:
            return None, None
        mean_prob = float(torch.tensor(generation.token_logprobs).exp().mean())
        features["response_mean_prob"] = mean_prob
        sources["holistic"] = ("response_mean_prob",)
        return None, mean_prob

    @property
    def random_perturbation(self) -> bool:
        """Whether draws differ: noise, and blackout with a probability strictly between 0 and 1."""
        if self.perturbation == "blackout":
            return 0.0 < self.blackout_probability < 1.0
        return self.perturbation in _RANDOM_KINDS

    def _variants(self, images: list[Image.Image], patch_size: int) -> list[list[Image.Image]]:
        """K perturbed copies of the images; one only when every draw is the same image (grey, blur, p in {0, 1})."""
        draws = self.draws if self.random_perturbation else 1
        return [
            [
                perturb_image(
                    im,
                    self.perturbation,
                    patch_size=patch_size,
                    seed=self.seed + k * len(images) + i,
                    probability=self.blackout_probability,
                )
                for i, im in enumerate(images)
            ]
            for k in range(draws)
        ]

    def _white_box(
        self,
        backend: ScoringBackend,
        request: Request,
        generation: Generation,
        parsed: ParsedResponse,
        features: dict[str, float],
        sources: dict[str, tuple[str, ...]],
        problems: list[str],
        embeddings: dict[str, tuple[float, ...]],
    ) -> tuple[float | None, float | None, float | None]:
        ids = generation.token_ids
        offsets = backend.token_offsets(ids)
        n = len(ids)
        if (offsets[-1][1] if offsets else 0) != len(parsed.text):
            problems.append("the token ids do not decode to the response text: spans fall back to all tokens")
            # every token then covers character 0, so every span (the whole response) selects all tokens
            parsed = dataclasses.replace(parsed, vision=(0, 1), reasoning=(0, 1), answer=(0, 1))
            offsets = [(0, 1)] * n

        def tokens(span: CharSpan | None) -> torch.Tensor:
            return _mask(None if span is None else char_span_to_token_span(span, offsets), n)

        vision, reasoning_mask = tokens(parsed.vision), tokens(parsed.reasoning)
        answer = tokens(parsed.answer) if parsed.answer is not None else tokens((0, len(parsed.text)))
        if parsed.answer is None:
            problems.append("no \\boxed{} answer: the whole response serves as the answer tokens")
        images = backend.model_images(request)
        variants = self._variants(images, backend.patch_size) if images else []
        try:
            scores = backend.score(request, ids, variants, distributions=self.full_distribution)
        except BackendError as exc:
            raise EstimatorError(f"teacher-forced re-scoring failed: {exc}") from exc
        logp = scores.token_logprobs[0]
        features.update(self._prompt_stats(scores))
        for side, vector in (("text", scores.prompt_features), ("image", scores.image_features)):
            if vector is not None:
                embeddings[side] = tuple(vector.double().tolist())

        # "reasoning_*" features cover the reasoning span *and* the answer tokens (the tokens whose correctness
        # the reasoning decides); "answer_*" the answer tokens alone (the holistic single-score baseline).
        features.update(self._span_stats("reasoning", logp, reasoning_mask | answer, scores))
        features.update(self._span_stats("answer", logp, answer, scores))
        features["vision_tokens"] = float(vision.sum())
        reasoning = features.get("reasoning_mean_prob")
        holistic = features.get("answer_mean_prob")
        sources["reasoning"] = ("reasoning_mean_prob",)
        sources["holistic"] = ("answer_mean_prob",)

        visual: float | None = None
        if not images:
            problems.append("request has no image: visual certainty not measured")
        elif not bool(vision.any()):
            problems.append("the perception span has no tokens: visual certainty not measured")
        else:
            visual = self._visual(logp, scores, vision, features, sources)
        return visual, reasoning, holistic

    def _visual(
        self,
        logp: torch.Tensor,
        scores: TeacherForcedScores,
        vision: torch.Tensor,
        features: dict[str, float],
        sources: dict[str, tuple[str, ...]],
    ) -> float:
        logq = scores.token_logprobs[1:]
        kl_draws = sig.masked_mean(sig.sampled_token_kl(logp, logq), vision)  # (draws,)
        kl = kl_draws.mean()
        h = sig.masked_mean(sig.surprisal(logp), vision)
        features["vision_kl"] = float(kl)
        features["vision_kl_std"] = float(kl_draws.std(unbiased=False))
        features["vision_surprisal"] = float(h)
        names = ["vision_kl", "vision_surprisal"]
        if scores.entropy is not None:
            h = sig.masked_mean(scores.entropy[0], vision)
            features["vision_entropy"] = float(h)
            names = ["vision_kl", "vision_entropy"]
        if scores.kl_full is not None:
            features["vision_kl_full"] = float(sig.masked_mean(scores.kl_full[1:], vision).mean())
        s = sig.visual_score(kl, h)
        features["visual_score"] = float(s)
        visual = self.normalization.apply(float(s))
        features["visual_certainty"] = visual
        sources["visual"] = (*names, "visual_score")
        return visual

    @staticmethod
    def _prompt_stats(scores: TeacherForcedScores) -> dict[str, float]:
        """How unfamiliar the question's own tokens are to the model (teacher-forced, same pass)."""
        if scores.prompt_logprobs is None or not scores.prompt_logprobs.numel():
            return {}
        surprisal = sig.surprisal(scores.prompt_logprobs)
        stats = {
            "prompt_tokens": float(surprisal.numel()),
            "prompt_mean_surprisal": float(surprisal.mean()),
            "prompt_max_surprisal": float(surprisal.max()),
        }
        if scores.prompt_unknown is not None:
            stats["prompt_unknown_fraction"] = scores.prompt_unknown / surprisal.numel()
        return stats

    @staticmethod
    def _span_stats(
        prefix: str, logp: torch.Tensor, mask: torch.Tensor, scores: TeacherForcedScores
    ) -> dict[str, float]:
        """Token statistics of one span under the original images (row 0); empty spans give no features."""
        if not bool(mask.any()):
            return {}
        probs = logp.exp()
        stats = {
            f"{prefix}_tokens": float(mask.sum()),
            f"{prefix}_mean_surprisal": float(sig.masked_mean(sig.surprisal(logp), mask)),
            f"{prefix}_mean_prob": float(sig.masked_mean(probs, mask)),
            f"{prefix}_min_prob": float(sig.masked_min(probs, mask)),
        }
        if scores.entropy is not None:
            stats[f"{prefix}_entropy"] = float(sig.masked_mean(scores.entropy[0], mask))
        if scores.margin is not None:
            stats[f"{prefix}_margin"] = float(sig.masked_mean(scores.margin[0], mask))
        return stats
