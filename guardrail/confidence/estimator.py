"""The decoupled estimator: visual and reasoning confidence of one answer (METHOD.md sections 2-4).

For one generation it
1. parses the structured answer into the ``<vision>``, ``<reasoning>`` and ``\\boxed{}`` spans and the
   verbalized scores, and maps the spans to generated-token ranges;
2. draws K perturbed copies of the images (patch blackening by default) at the model's input resolution and has
   the backend re-score the answer teacher-forced under all K copies in one forward pass, with the original
   images' row (row 0) and the familiarity evidence taken from what generation kept where the backend offers it
   (``ReferenceScoringBackend``), else scored in the same pass;
3. computes, on the vision tokens, the grounding KL (mean of the clamped sampled-token KL, averaged over the K
   draws) and the certainty H (mean surprisal, or full entropy), then ``s = log(KL + 1e-8) - log(H + 1e-8)``
   and the visual certainty ``sigmoid((s - mean) / std)`` with reference statistics (``VisualNormalization``);
   with a ``stability`` setting, the same pass also scores the answer under views of the images that must not
   change it (``stability.py``), and s loses ``stability_weight`` times the answer's fall under them;
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
from dataclasses import dataclass, field

import numpy as np
import torch
from array_api_compat import torch as torch_xp
from PIL import Image

from ..backends.base import Backend, ReferenceScoringBackend, ScoringBackend, ScoringItem, TeacherForcedScores
from ..backends.batching import score_each, score_item
from ..errors import BackendError, EstimatorError, is_control_flow
from ..responses import ParsedResponse, parse_response
from ..types import Generation, Request, Signals
from . import signals as sig
from .client_features import measure_familiarity
from .familiarity import FamiliarityReference
from .feature_names import STABILITY_DROP, VERBALIZED_REASONING, VERBALIZED_VISION
from .normalization import VisualNormalization
from .perturb import PERTURBATIONS, PerturbationKind
from .probe import SpanMasks, answer_masks, answer_stats, draws_differ, perturbed_variants, visual_probe
from .stability import StabilitySetting, stability_features, stability_views

__all__ = ["DecoupledEstimator"]


@dataclass
class _Pending:
    """One estimate between its two halves: what was measured before the re-scoring pass, and that pass's
    ``ScoringItem`` (``None`` when there is none: a black-box backend, an answer without token ids)."""

    parsed: ParsedResponse
    problems: list[str]
    request: Request
    features: dict[str, float] = field(default_factory=dict)
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    embeddings: dict[str, tuple[float, ...]] = field(default_factory=dict)
    visual: float | None = None
    reasoning: float | None = None
    holistic: float | None = None
    masks: SpanMasks[torch.Tensor] | None = None
    has_images: bool = False
    unchanged: list[bool] = field(default_factory=list)
    probe_rows: int = 0
    item: ScoringItem | None = None


def _scoring_failed(exc: BackendError) -> EstimatorError:
    error = EstimatorError(f"teacher-forced re-scoring failed: {exc}")
    error.__cause__ = exc
    return error


def _finite(features: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in features.items() if math.isfinite(v)}


def _same_pixels(variant: Sequence[Image.Image], images: Sequence[Image.Image]) -> bool:
    """Whether a perturbed copy holds exactly the original images' pixels."""
    return len(variant) == len(images) and all(
        a.size == b.size and a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(variant, images, strict=True)
    )


def _with_unchanged_rows(scores: TeacherForcedScores, unchanged: Sequence[bool]) -> TeacherForcedScores:
    """Rows for every variant from row 0 and the rows of the changed ones: an unchanged variant's row is row 0's
    (its full-vocabulary KL to the original, row 0's, is 0)."""

    def spread(rows: torch.Tensor | None) -> torch.Tensor | None:
        if rows is None:
            return None
        out, changed = [rows[0]], iter(rows[1:])
        out.extend(rows[0] if same else next(changed) for same in unchanged)
        return torch.stack(out)

    token_logprobs = spread(scores.token_logprobs)
    assert token_logprobs is not None
    return dataclasses.replace(
        scores,
        token_logprobs=token_logprobs,
        entropy=spread(scores.entropy),
        margin=spread(scores.margin),
        kl_full=spread(scores.kl_full),
    )


class DecoupledEstimator:
    """Estimator of raw decoupled ``Signals`` (see the module docstring for the method).

    Parameters (keyword-only): ``draws`` K >= 1 perturbations averaged (random kinds; grey, blur and a blackout
    of probability 0 or 1 are drawn once); ``perturbation`` its kind; ``seed`` of the first draw (draw k of image i uses
    ``seed + k * n_images + i``); ``full_distribution`` to measure the full-vocabulary KL and the full entropy
    (then H is the full entropy); ``normalization`` the reference statistics of s; ``blackout_probability``
    the chance a patch is blackened; ``familiarity`` the calibration inputs' feature references (from the
    artifact): with it, each estimate also says how far its question and images lie from the calibration inputs
    (``Signals.familiarity`` and the ``*_distance`` / ``*_shift`` / ``*_familiarity`` features), measured on the
    model's input features or, where the reference was fitted on client features, on the request's
    (``confidence.client_features``); ``stability``
    the views of the stability probe (``StabilitySetting``; none by default), scored in the same pass.
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
        stability: StabilitySetting | None = None,
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
        self.stability = stability or StabilitySetting()

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        """Measure the raw signals of ``generation``, the answer of ``backend`` to ``request``."""
        pending = self._begin(backend, request, generation)
        scores = None
        if pending.item is not None:
            assert isinstance(backend, ScoringBackend)
            try:
                scores = score_item(backend, pending.item, distributions=self.full_distribution)
            except BackendError as exc:
                raise _scoring_failed(exc) from exc
        return self._end(pending, scores)

    def estimate_batch(
        self, backend: Backend, requests: Sequence[Request], generations: Sequence[Generation]
    ) -> list[Signals | Exception]:
        """:meth:`estimate` of several answers (``BatchEstimator``), their re-scoring passes run together
        (``backends/batching.score_each``: one ``score_batch`` where the backend offers it; each answer alone when
        the batch fails). Each answer's signals, or what made its own estimate fail, in order."""
        if len(requests) != len(generations):
            raise ValueError(f"{len(requests)} requests but {len(generations)} generations")
        pending: list[_Pending | Exception] = []
        for request, generation in zip(requests, generations, strict=True):
            try:
                pending.append(self._begin(backend, request, generation))
            except Exception as exc:
                if is_control_flow(exc):
                    raise
                pending.append(exc)
        waiting = [p for p in pending if isinstance(p, _Pending) and p.item is not None]
        scored: list[TeacherForcedScores | Exception] = []
        if waiting:
            assert isinstance(backend, ScoringBackend)
            items = [p.item for p in waiting if p.item is not None]
            scored = score_each(backend, items, distributions=self.full_distribution)
        scores_of = {id(p): s for p, s in zip(waiting, scored, strict=True)}
        results: list[Signals | Exception] = []
        for entry in pending:
            if isinstance(entry, Exception):
                results.append(entry)
                continue
            scores = scores_of.get(id(entry))
            if isinstance(scores, Exception):
                results.append(_scoring_failed(scores) if isinstance(scores, BackendError) else scores)
                continue
            try:
                results.append(self._end(entry, scores))
            except Exception as exc:
                if is_control_flow(exc):
                    raise
                results.append(exc)
        return results

    def _begin(self, backend: Backend, request: Request, generation: Generation) -> _Pending:
        """Everything measured before the re-scoring pass, and that pass's ``ScoringItem`` (``None``: no pass)."""
        parsed = parse_response(generation.text)
        pending = _Pending(parsed=parsed, problems=list(parsed.problems), request=request)
        v, r = parsed.vision_confidence, parsed.reasoning_confidence
        if v is not None:
            pending.features[VERBALIZED_VISION] = v
        if r is not None:
            pending.features[VERBALIZED_REASONING] = r
        if not parsed.has_vision_tag:
            pending.problems.append("no <vision> span: the whole response serves as the perception span")
        if not isinstance(backend, ScoringBackend):
            pending.problems.append(f"backend {backend.name!r} cannot re-score answers: visual certainty not measured")
            pending.reasoning, pending.holistic = self._black_box(generation, pending.features, pending.sources)
        elif not generation.token_ids:
            pending.problems.append("generation has no token ids: visual certainty not measured")
        else:
            self._white_box_begin(backend, request, generation, pending)
        return pending

    def _end(self, pending: _Pending, scores: TeacherForcedScores | None) -> Signals:
        """The signals, from what :meth:`_begin` measured and the re-scoring pass's ``scores``."""
        if scores is not None:
            self._white_box_end(pending, scores)
        reasoning, r = pending.reasoning, pending.parsed.reasoning_confidence
        if reasoning is None and r is not None:
            reasoning = r
            pending.sources["reasoning"] = (VERBALIZED_REASONING,)
        signals = Signals(
            visual=pending.visual,
            reasoning=reasoning,
            holistic=pending.holistic,
            features=_finite(pending.features),
            sources=pending.sources,
            problems=tuple(pending.problems),
            embeddings=pending.embeddings,
        )
        if self.familiarity is None:
            return signals
        return measure_familiarity(self.familiarity, signals, pending.request)

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
        return draws_differ(self.perturbation, self.blackout_probability)

    def _white_box_begin(
        self, backend: ScoringBackend, request: Request, generation: Generation, pending: _Pending
    ) -> None:
        """Span masks, the perturbed copies and the re-scoring pass they need: row 0 from what generation kept when
        the backend kept it for this very generation, else scored with the changed copies in one pass."""
        parsed, problems = pending.parsed, pending.problems
        ids = generation.token_ids
        pending.masks, placed = answer_masks(parsed, backend.token_offsets, ids, xp=torch_xp)
        problems.extend(placed)
        if parsed.answer is None:
            problems.append("no \\boxed{} answer: the whole response serves as the answer tokens")
        images = backend.model_images(request)
        variants = (
            perturbed_variants(
                images,
                self.perturbation,
                draws=self.draws,
                patch_size=backend.patch_size,
                seed=self.seed,
                probability=self.blackout_probability,
            )
            if images
            else []
        )
        pending.probe_rows = len(variants)
        if images and self.stability.count:
            variants += stability_views(images, self.stability)
        # A copy with the very pixels of the original (a black image blacked out) leaves every distribution as it
        # is: its row is row 0 (KL exactly 0), with no pass through the model.
        pending.has_images = bool(images)
        pending.unchanged = [_same_pixels(variant, images) for variant in variants]
        changed = tuple(tuple(v) for v, same in zip(variants, pending.unchanged, strict=True) if not same)
        reference = None
        if isinstance(backend, ReferenceScoringBackend):
            try:
                reference = backend.reference(request, generation, distributions=self.full_distribution)
            except BackendError as exc:
                raise _scoring_failed(exc) from exc
        pending.item = ScoringItem(request, tuple(ids), changed, reference)

    def _white_box_end(self, pending: _Pending, scores: TeacherForcedScores) -> None:
        """The span statistics, the familiarity evidence and the visual probe on the re-scored rows."""
        features, sources, problems, masks = pending.features, pending.sources, pending.problems, pending.masks
        assert masks is not None
        if any(pending.unchanged):
            scores = _with_unchanged_rows(scores, pending.unchanged)
        logp = scores.token_logprobs[0]
        features.update(self._prompt_stats(scores))
        for side, vector in (("text", scores.prompt_features), ("image", scores.image_features)):
            if vector is not None:
                pending.embeddings[side] = tuple(vector.double().tolist())

        entropy = None if scores.entropy is None else scores.entropy[0]
        margin = None if scores.margin is None else scores.margin[0]
        features.update(answer_stats(logp, masks, entropy=entropy, margin=margin))
        features["vision_tokens"] = float(masks.vision.sum())
        pending.reasoning = features.get("reasoning_mean_prob")
        pending.holistic = features.get("answer_mean_prob")
        sources["reasoning"] = ("reasoning_mean_prob",)
        sources["holistic"] = ("answer_mean_prob",)

        if not pending.has_images:
            problems.append("request has no image: visual certainty not measured")
            return
        if not bool(masks.vision.any()):
            problems.append("the perception span has no tokens: visual certainty not measured")
            return
        probe_rows = slice(1, 1 + pending.probe_rows)
        if self.stability.count:
            views = scores.token_logprobs[1 + pending.probe_rows :]
            features.update(stability_features(logp, views, masks.vision, masks.answer))
        probe = visual_probe(
            logp,
            scores.token_logprobs[probe_rows],
            masks.vision,
            self.normalization,
            entropy=entropy,
            kl_full=None if scores.kl_full is None else scores.kl_full[probe_rows],
            stability_drop=features.get(STABILITY_DROP),
        )
        features.update(probe.features)
        sources["visual"] = probe.sources
        pending.visual = probe.visual

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
