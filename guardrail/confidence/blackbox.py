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
  teacher-forced on the server (:class:`~guardrail.backends.base.TextScoringBackend`, e.g. vLLM's prompt
  log-probs): the paper's probe (patch blackening, probability 0.8), sampled-token KL and surprisal on the
  ``<vision>`` tokens, ``s = log KL - log H``, normalised. Only the perturbed copies (and stability views) are
  scored where the backend's generation already returned the answer's log-probs under the original images
  (:class:`~guardrail.backends.base.ReferenceTextScoringBackend`: one request per copy against vLLM). A server
  without scoring is recorded as "server offers no teacher-forced scoring: visual KL unavailable" and the
  estimator falls back to
- **visual**, black-box: **percept agreement** under K re-queries on changed images, and the percept's own token
  probability where log-probs are known. Each re-query asks the question again under one *stability view* of the
  images by default (``perturbation="stability"``: a small colour jitter, rotation or shift, or a little noise,
  :func:`guardrail.confidence.stability.stability_views`; changes a person would not notice), and its
  ``<vision>`` percept is compared with the original's: the mean Jaccard similarity of their sets of words
  (``percept_agreement``; ``agreement="answer"`` compares final answers instead, ``answer_agreement``, which is also
  recorded; a response without a ``<vision>`` span is compared by its final answer, and the problem says so). A
  percept that changes under views that keep the scene was a fragile reading. With the answer's token log-probs
  and the percept's tokens found in them (``percept_logprobs``), visual is the mean of that agreement and the
  minimum token probability over the ``<vision>`` span (``vision_min_prob``). It costs K extra model calls. The
  choice was made on calibration questions only (``bench/blackbox_choice.py``): on the reference model, answer
  agreement ranked perception errors at AUROC 0.54-0.62 under every perturbation tried (the final answer rarely
  flips when the percept does), percept agreement under patch blackening at 0.60-0.66, under stability views at
  0.64 / 0.72 / 0.81 for K = 1 / 2 / 4, and its mean with ``vision_min_prob`` at 0.88 / 0.90 / 0.90. Stability
  views need no patch size, which a hosted model's input resolution leaves unknown; ``perturbation="blackout"``
  (``probability``, ``patch_size``) and the other kinds of :mod:`~guardrail.confidence.perturb` remain. (With the
  paper's destructive probe, probability 0.8, agreement would instead measure reliance on language priors: a
  different question.)

**Familiarity**, with ``familiarity`` a reference fitted on client features (``confidence.client_features``, an
artifact whose ``familiarity_features`` is ``"client"``): the question and the images as the client sends them are
measured against the calibration inputs', as the white-box estimator does with the model's features, so the
calibrator's shift discounts and a policy's familiarity rules work against any server. No extra model call: the
features come from the request. A reference of the model's own features cannot apply here and is refused.

Patches are laid on the images as sent: a remote model's input resolution is unknown here, so set
``patch_size`` to the vision encoder's patch at that scale when it matters. With server scoring under the probe a
white-box artifact was fitted with (``scoring_draws``, ``scoring_probability``, its ``normalization``) and token
log-probs, the signals are the white-box estimator's, and so is that artifact's calibrator (against vLLM they equal
the in-process ones within 1e-4, tested in ``tests/backends/test_vllm_server.py``; below 1e-6 seen). Agreement
is another feature (``visual_agreement`` is not ``visual_certainty``): a calibrator fitted on white-box
signals does not apply to it; fit one on black-box signals, or use the pass-through calibrator.

The stages are written once, as a generator that yields the model calls it needs (server scoring, re-queries,
re-asks) and receives their results; :meth:`AgreementEstimator.estimate` performs them one after the other and
:meth:`AgreementEstimator.aestimate` awaits them, the re-queries concurrently. The KL, the span statistics and the
stability falls are ``probe.py``'s and ``stability.py``'s, the white-box estimator's own code, run here on float64
NumPy arrays (they are written against the array API), so that this estimator runs without torch:
``pip install lvlm-guardrail`` serves it.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, TypeAlias

import numpy as np
from array_api_compat import numpy as np_xp
from PIL import Image

from .._drive import adrive, drive
from ..backends.base import (
    AsyncBackend,
    Backend,
    ReferenceTextScoringBackend,
    ScoringUnavailable,
    TextScores,
    TextScoringBackend,
)
from ..errors import BackendError, EstimatorError, ImageError
from ..images import decode_image
from ..responses import ParsedResponse, char_offsets_from_prefixes, normalize_answer, parse_response
from ..types import Generation, GenerationOptions, ImageBlock, Request, Signals
from .client_features import measure_familiarity
from .familiarity import FamiliarityReference
from .feature_names import STABILITY_DROP, VERBALIZED_REASONING, VERBALIZED_VISION
from .normalization import VisualNormalization
from .perturb import PerturbationKind, perturbed_variants
from .probe import answer_stats, span_masks, span_stats, visual_probe
from .settings import AGREEMENTS, REQUERY_KINDS, AgreementKind, RequeryKind
from .stability import StabilitySetting, stability_features, stability_views

__all__ = ["AGREEMENTS", "AgreementEstimator", "AgreementKind"]

NO_SCORING = "server offers no teacher-forced scoring: visual KL unavailable"
_SCORING_SEED_OFFSET = 7919
"""Server-scoring draws use seeds apart from the re-query draws' (a prime, so the two never coincide)."""


_WORD = re.compile(r"[^\W_]+")


def _percept_similarity(original: str, other: str) -> float:
    """How much of the original percept a re-query's percept repeats: the Jaccard similarity of their sets of
    case-folded words (1 for the same words in any order, 0 for none shared; two empty percepts agree)."""
    a, b = set(_WORD.findall(original.casefold())), set(_WORD.findall(other.casefold()))
    return 1.0 if not (a or b) else len(a & b) / len(a | b)


def _offsets(tokens: Sequence[str] | None) -> list[tuple[int, int]] | None:
    """Character range of each token from the server's token strings (``None``: the tokens are unknown)."""
    return None if tokens is None else char_offsets_from_prefixes(list(accumulate(len(t) for t in tokens)))


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
        logp = np.array(list(logprobs), dtype=np.float64)
        masks = span_masks(self.parsed, _offsets(tokens), len(logp), xp=np_xp)
        self.features.update(answer_stats(logp, masks))
        if self.parsed.has_vision_tag and tokens is not None:  # the percept's own tokens, where they can be found
            self.features.update(span_stats("vision", logp, masks.vision))
        self.features["logprobs_from_scoring"] = float(origin == "scoring")
        self.reasoning = self.features.get("reasoning_mean_prob")
        self.holistic = self.features.get("answer_mean_prob")
        self.sources["reasoning"] = ("reasoning_mean_prob",)
        self.sources["holistic"] = ("answer_mean_prob",)

    def kl(self, scores: TextScores, normalization: VisualNormalization, probe_rows: int) -> None:
        """The visual certainty of METHOD.md section 3 from server-side teacher-forced scores: rows 1 to
        ``probe_rows`` under the probe's copies, the rest under the stability probe's views."""
        parsed = parse_response(scores.text)
        rows = np.array([list(r) for r in scores.token_logprobs], dtype=np.float64)
        masks = span_masks(parsed, _offsets(scores.tokens), rows.shape[1], xp=np_xp)
        vision = masks.vision
        if not self.generation.token_logprobs:  # the server returned none with the answer: use row 0
            self.parsed = parsed
            self.token_stats(scores.tokens, scores.token_logprobs[0], "scoring")
        if not bool(vision.any()):
            self.problems.append("the perception span has no tokens: visual certainty not measured")
            return
        views = rows[1 + probe_rows :]
        if views.shape[0]:
            self.features.update(stability_features(rows[0], views, vision, masks.answer))
        probe = visual_probe(
            rows[0],
            rows[1 : 1 + probe_rows],
            vision,
            normalization,
            stability_drop=self.features.get(STABILITY_DROP),
        )
        self.features.update(probe.features)
        self.visual = probe.visual
        self.sources["visual"] = probe.sources

    def agreement(self, answers: Sequence[Generation], compare: AgreementKind, percept_logprobs: bool) -> None:
        """The visual score from agreement under perturbed re-queries: of the percepts (``compare="percept"``,
        where the original answer has a ``<vision>`` span; else of the final answers), combined with the
        percept's mean token probability where ``percept_logprobs`` and it was measured (module docstring)."""
        percepts = [parse_response(g.text) for g in answers]
        self.features["answer_agreement"] = self._agreeing(answers)
        if self.parsed.has_vision_tag:
            self.features["percept_agreement"] = sum(
                _percept_similarity(self.parsed.perception_text, p.perception_text) if p.has_vision_tag else 0.0
                for p in percepts
            ) / len(percepts)
        elif compare == "percept":
            self.problems.append("the answer has no <vision> span: visual agreement of the final answers")
        use_percept = compare == "percept" and "percept_agreement" in self.features
        agreement = self.features["percept_agreement" if use_percept else "answer_agreement"]
        self.features["visual_agreement"] = agreement
        self.features["visual_requeries"] = float(len(answers))
        percept_prob = self.features.get("vision_min_prob") if percept_logprobs else None
        if percept_prob is None:
            self.visual = agreement
            self.sources["visual"] = ("visual_agreement",)
        else:
            self.visual = (agreement + percept_prob) / 2.0
            self.sources["visual"] = ("visual_agreement", "vision_min_prob")

    def reask_agreement(self, answers: Sequence[Generation]) -> None:
        """The reasoning score from answer agreement under sampled re-asks (same images)."""
        self.reasoning = self._agreeing(answers)
        self.features["reasoning_agreement"] = self.reasoning
        self.features["reasoning_reasks"] = float(len(answers))
        self.sources["reasoning"] = ("reasoning_agreement",)

    def _agreeing(self, answers: Sequence[Generation]) -> float:
        """The fraction of ``answers`` whose final answer is the original's (``responses.normalize_answer``)."""
        original = normalize_answer(self.generation.final_answer)
        return sum(normalize_answer(g.final_answer) == original for g in answers) / len(answers)

    def signals(self) -> Signals:
        r = self.parsed.reasoning_confidence
        if self.reasoning is None and r is not None:
            self.reasoning = r
            self.sources["reasoning"] = (VERBALIZED_REASONING,)
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


# -- the model calls the stages ask for, each performed synchronously or awaited -----------------------------


@dataclass(frozen=True)
class _ScoreText:
    """Server-side teacher-forced scoring of the answer text under the original images and ``variants``; a backend
    whose generation returned row 0 (``ReferenceTextScoringBackend``) is asked for the variants only."""

    request: Request
    generation: Generation
    text: str
    variants: list[list[Image.Image]]

    def run(self, backend: Backend) -> TextScores:
        if isinstance(backend, ReferenceTextScoringBackend):
            return backend.score_generation(self.request, self.generation, self.text, self.variants)
        assert isinstance(backend, TextScoringBackend)
        return backend.score_text(self.request, self.text, self.variants)

    async def arun(self, backend: Backend) -> TextScores:
        scores: TextScores
        if isinstance(backend, ReferenceTextScoringBackend):
            ascore_generation: Any = getattr(backend, "ascore_generation", None)
            if ascore_generation is not None:
                scores = await ascore_generation(self.request, self.generation, self.text, self.variants)
                return scores
        elif (ascore := getattr(backend, "ascore_text", None)) is not None:
            scores = await ascore(self.request, self.text, self.variants)
            return scores
        return await asyncio.to_thread(self.run, backend)


@dataclass(frozen=True)
class _Generate:
    """Several generations (re-queries or re-asks); a failure names which one (``what`` k) failed."""

    what: str
    calls: list[tuple[Request, GenerationOptions]]

    def run(self, backend: Backend) -> list[Generation]:
        return [self._one(backend, k, request, options) for k, (request, options) in enumerate(self.calls)]

    async def arun(self, backend: Backend) -> list[Generation]:
        return list(await asyncio.gather(*(self._aone(backend, k, r, o) for k, (r, o) in enumerate(self.calls))))

    def _one(self, backend: Backend, k: int, request: Request, options: GenerationOptions) -> Generation:
        try:
            return backend.generate(request, options)
        except BackendError as exc:
            raise EstimatorError(f"{self.what} {k} failed: {exc}") from exc

    async def _aone(self, backend: Backend, k: int, request: Request, options: GenerationOptions) -> Generation:
        try:
            if isinstance(backend, AsyncBackend):
                return await backend.agenerate(request, options)
            return await asyncio.to_thread(backend.generate, request, options)
        except BackendError as exc:
            raise EstimatorError(f"{self.what} {k} failed: {exc}") from exc


_Call: TypeAlias = _ScoreText | _Generate
_Plan: TypeAlias = Generator[_Call, Any, Signals]


class AgreementEstimator:
    """Black-box decoupled signals (see the module docstring).

    Parameters (keyword-only): ``draws`` K >= 1 re-queries for agreement (grey and blur: one);
    ``perturbation`` how their images change (``"stability"`` views by default, or a ``confidence.perturb`` kind)
    and, for ``"blackout"``, ``probability`` the chance a patch is blackened; ``agreement`` what is compared
    (``"percept"``, the ``<vision>`` text, or ``"answer"``) and ``percept_logprobs`` whether the percept's minimum
    token probability joins it where log-probs are known;
    ``patch_size`` in pixels of the original image; ``seed`` of the first draw; ``server_scoring`` to try
    server-side teacher-forced scoring first, with ``scoring_draws`` perturbations of the paper's probe
    (``scoring_probability`` 0.8) and ``normalization`` the reference statistics of s, with ``stability`` the
    stability probe's views scored with the probe's copies (``confidence.stability``; none by default);
    ``reask_draws`` sampled re-asks at ``reask_temperature`` for a reasoning score when neither log-probs nor a
    verbalized r exist (0: off); ``familiarity`` the calibration inputs' client-feature reference (from an artifact
    fitted on client features), against which each request's question and images are measured.
    ``use_logprobs=False`` ignores the token log-probs a backend returns with the
    answer (reasoning then comes from a verbalized r or the re-asks), as under an artifact fitted without them.
    """

    def __init__(
        self,
        *,
        draws: int = 3,
        perturbation: RequeryKind = "stability",
        probability: float = 0.25,
        patch_size: int = 14,
        seed: int = 0,
        server_scoring: bool = True,
        scoring_draws: int = 1,
        scoring_probability: float = 0.8,
        normalization: VisualNormalization | None = None,
        reask_draws: int = 0,
        reask_temperature: float = 0.7,
        stability: StabilitySetting | None = None,
        familiarity: FamiliarityReference | None = None,
        use_logprobs: bool = True,
        agreement: AgreementKind = "percept",
        percept_logprobs: bool = True,
    ) -> None:
        if draws < 1:
            raise ValueError(f"`draws` must be an int >= 1 (perturbed re-queries), got {draws}")
        if scoring_draws < 1:
            raise ValueError(f"`scoring_draws` must be an int >= 1, got {scoring_draws}")
        if perturbation not in REQUERY_KINDS:
            raise ValueError(f"`perturbation` must be one of {', '.join(REQUERY_KINDS)}, got {perturbation!r}")
        for label, p in (("probability", probability), ("scoring_probability", scoring_probability)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"`{label}` must be in [0, 1] (chance a patch is blackened), got {p}")
        if reask_draws < 0:
            raise ValueError(f"`reask_draws` must be an int >= 0 (0: no re-asks), got {reask_draws}")
        if reask_temperature <= 0:
            raise ValueError(f"`reask_temperature` must be > 0 (re-asks are sampled), got {reask_temperature}")
        if patch_size < 1:
            raise ValueError(f"`patch_size` must be an int >= 1, got {patch_size}")
        if familiarity is not None and familiarity.features != "client":
            raise ValueError(
                f"`familiarity` must be a reference of client features (a served model shows no input features of "
                f"its own), got one of {familiarity.features} features; fit the artifact with client features "
                "(calibrate_rows(..., familiarity_features='client'))"
            )
        if agreement not in AGREEMENTS:
            raise ValueError(f"`agreement` must be one of {', '.join(AGREEMENTS)}, got {agreement!r}")
        self.draws, self.perturbation, self.probability = draws, perturbation, probability
        self.patch_size, self.seed = patch_size, seed
        self.server_scoring, self.scoring_draws, self.scoring_probability = (
            server_scoring,
            scoring_draws,
            scoring_probability,
        )
        self.normalization = normalization or VisualNormalization()
        self.reask_draws, self.reask_temperature = reask_draws, reask_temperature
        self.stability = stability or StabilitySetting()
        self.familiarity = familiarity
        self.use_logprobs = use_logprobs
        self.agreement, self.percept_logprobs = agreement, percept_logprobs

    def estimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        """Measure the black-box signals of ``generation``, the answer of ``backend`` to ``request``."""
        work = self._start(backend, request, generation)
        return drive(self._plan(backend, request, work), lambda call: call.run(backend))

    async def aestimate(self, backend: Backend, request: Request, generation: Generation) -> Signals:
        """The async twin of :meth:`estimate`: the same plan, its calls awaited (re-queries at once)."""
        work = await asyncio.to_thread(self._start, backend, request, generation)  # decodes images: off the loop
        return await adrive(self._plan(backend, request, work), lambda call: call.arun(backend))

    # -- the stages, written once ------------------------------------------------------------------------------

    def _plan(self, backend: Backend, request: Request, work: _Work) -> _Plan:
        """Yield the model calls of one estimate and return its signals. A failed call is thrown back in here."""
        generation = work.generation
        if self._wants_scoring(backend, work):
            variants = perturbed_variants(
                work.images,
                "blackout",
                draws=self.scoring_draws,
                patch_size=self.patch_size,
                seed=self.seed + _SCORING_SEED_OFFSET,
                probability=self.scoring_probability,
            )
            probe_rows = len(variants)
            variants += stability_views(work.images, self.stability)
            try:
                scores = yield _ScoreText(request, generation, generation.text.strip(), variants)
            except ScoringUnavailable as exc:
                work.problems.append(f"{NO_SCORING} ({exc}); visual from agreement under re-queries")
            except BackendError as exc:
                raise EstimatorError(f"server-side teacher-forced scoring failed: {exc}") from exc
            else:
                work.kl(scores, self.normalization, probe_rows)
        if work.images and "visual" not in work.sources:
            requeries = [
                (request.swapping_images([ImageBlock.from_pil(im) for im in variant]), GenerationOptions(seed=k))
                for k, variant in enumerate(self._requery_views(work.images))
            ]
            work.agreement((yield _Generate("perturbed re-query", requeries)), self.agreement, self.percept_logprobs)
        reasks = self._reasks(work)
        if reasks:
            work.reask_agreement((yield _Generate("re-ask for reasoning agreement", [(request, o) for o in reasks])))
        signals = work.signals()
        if self.familiarity is None:
            return signals
        return measure_familiarity(self.familiarity, signals, request, work.images or None)

    def _start(self, backend: Backend, request: Request, generation: Generation) -> _Work:
        parsed = parse_response(generation.text)
        work = _Work(generation=generation, parsed=parsed, problems=list(parsed.problems))
        v, r = parsed.vision_confidence, parsed.reasoning_confidence
        if v is not None:
            work.features[VERBALIZED_VISION] = v
        if r is not None:
            work.features[VERBALIZED_REASONING] = r
        if not self.use_logprobs:
            work.problems.append("token log-probs not used (use_logprobs=False)")
        elif generation.token_logprobs:
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

    def _requery_views(self, images: list[Image.Image]) -> list[list[Image.Image]]:
        """The images of the K re-queries: stability views, or copies under a ``confidence.perturb`` kind."""
        if self.perturbation == "stability":
            return stability_views(images, StabilitySetting(family="mixed", count=self.draws, seed=self.seed))
        kind: PerturbationKind = self.perturbation
        return perturbed_variants(
            images, kind, draws=self.draws, patch_size=self.patch_size, seed=self.seed, probability=self.probability
        )

    def _wants_scoring(self, backend: Backend, work: _Work) -> bool:
        if not work.images:
            return False
        if self.server_scoring and isinstance(backend, TextScoringBackend):
            return True
        work.problems.append(f"{NO_SCORING} (backend {backend.name!r} cannot re-score on the server)")
        return False

    def _reasks(self, work: _Work) -> list[GenerationOptions]:
        """Options of the sampled re-asks, when reasoning has no other measurement and re-asks are on."""
        if not self.reask_draws or work.reasoning is not None or work.parsed.reasoning_confidence is not None:
            return []
        return [
            GenerationOptions(attempt=1 + k, seed=self.seed + 1 + k, temperature=self.reask_temperature)
            for k in range(self.reask_draws)
        ]
