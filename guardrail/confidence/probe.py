"""The visual probe of METHOD.md section 3 and the span statistics, written once for every estimator.

Both estimators measure the same way once they hold per-token log-probs of the answer under the original images
(row 0) and under perturbed copies (rows 1..K): the white-box ``DecoupledEstimator`` gets them from the model's
own forward pass, the ``AgreementEstimator`` from a server's teacher-forced scoring. What differs is only where
the rows and the token offsets come from; from there on, this module:

1. maps the response's spans to token masks (``span_masks``);
2. summarises the reasoning span and the answer tokens (``answer_stats``): the raw reasoning and holistic scores;
3. computes the grounding KL, the certainty H and ``s = log(KL + 1e-8) - log(H + 1e-8)`` on the vision tokens,
   normalised to the visual certainty (``visual_probe``);
4. draws the perturbed image copies the rows are scored under (``perturbed_variants``, kept in ``perturb.py``
   with the perturbations, and importable from here as before).

Like ``signals.py`` it is written against the array API (``array_api_compat``): the white-box estimator hands it
torch tensors, the black-box estimator float64 NumPy arrays, and the black-box path never imports torch (the light
install). ``tests/confidence/test_probe_namespaces.py`` runs it on both and holds the results equal within 1e-9.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic

import numpy as np
from array_api_compat import array_namespace

from ..responses import CharSpan, ParsedResponse, char_span_to_token_span
from . import signals as sig
from .feature_names import STABILITY_DROP, VISUAL_CERTAINTY, VISUAL_SCORE
from .normalization import VisualNormalization
from .perturb import draws_differ, perturbed_variants

__all__ = [
    "ProbeResult",
    "SpanMasks",
    "answer_masks",
    "answer_stats",
    "draws_differ",
    "perturbed_variants",
    "span_masks",
    "span_stats",
    "visual_probe",
    "visual_statistic",
]


@dataclass(frozen=True)
class SpanMasks(Generic[sig.ArrayT]):
    """Boolean ``(tokens,)`` masks of the perception span, the reasoning span and the final answer's tokens."""

    vision: sig.ArrayT
    reasoning: sig.ArrayT
    answer: sig.ArrayT


def answer_masks(
    parsed: ParsedResponse,
    token_offsets: Callable[[Sequence[int]], list[CharSpan]],
    token_ids: Sequence[int],
    *,
    xp: ModuleType,
) -> tuple[SpanMasks[Any], list[str]]:
    """The span masks of an answer's ``token_ids`` (``parsed`` from its text) placed by the backend's
    ``token_offsets``, as arrays of namespace ``xp``, and the problems met: tokens that do not decode to the text
    count in every span."""
    problems = []
    offsets: list[CharSpan] | None = token_offsets(token_ids)
    if (offsets[-1][1] if offsets else 0) != len(parsed.text):
        problems.append("the token ids do not decode to the response text: spans fall back to all tokens")
        offsets = None
    return span_masks(parsed, offsets, len(token_ids), xp=xp), problems


def span_masks(parsed: ParsedResponse, offsets: Sequence[CharSpan] | None, n: int, *, xp: ModuleType) -> SpanMasks[Any]:
    """Token masks of ``parsed``'s spans, given each token's character range (``offsets``), as boolean arrays of
    the array namespace ``xp`` (``array_namespace(logp)``, or e.g. ``array_api_compat.numpy``) on its default
    device.

    ``offsets=None`` (the tokens cannot be placed in the text) makes every token count in every span. Without a
    ``\\boxed{}`` answer the whole response serves as the answer tokens.
    """
    if offsets is None:
        everything = xp.ones(n, dtype=xp.bool)
        return SpanMasks(everything, everything, everything)
    positions = xp.arange(n)

    def mask(span: CharSpan) -> Any:
        tokens = char_span_to_token_span(span, offsets)
        if tokens is None:
            return xp.zeros(n, dtype=xp.bool)
        return (positions >= tokens[0]) & (positions < tokens[1])

    answer = parsed.answer if parsed.answer is not None else (0, len(parsed.text))
    return SpanMasks(mask(parsed.vision), mask(parsed.reasoning), mask(answer))


def span_stats(
    prefix: str,
    logp: sig.ArrayT,
    mask: sig.ArrayT,
    *,
    entropy: sig.ArrayT | None = None,
    margin: sig.ArrayT | None = None,
) -> dict[str, float]:
    """Token statistics of one span under the original images; an empty span gives no features.

    ``logp`` ``(tokens,)``: log-probs of the generated tokens; ``entropy`` / ``margin`` ``(tokens,)``: the full
    next-token entropy and top-2 margin, where the backend measured them.
    """
    xp = array_namespace(logp, mask)
    if not bool(xp.any(mask)):
        return {}
    probs = xp.exp(logp)
    stats = {
        f"{prefix}_tokens": float(xp.sum(xp.astype(mask, logp.dtype))),
        f"{prefix}_mean_surprisal": float(sig.masked_mean(sig.surprisal(logp), mask)),
        f"{prefix}_mean_prob": float(sig.masked_mean(probs, mask)),
        f"{prefix}_min_prob": float(sig.masked_min(probs, mask)),
    }
    if entropy is not None:
        stats[f"{prefix}_entropy"] = float(sig.masked_mean(entropy, mask))
    if margin is not None:
        stats[f"{prefix}_margin"] = float(sig.masked_mean(margin, mask))
    return stats


def answer_stats(
    logp: sig.ArrayT,
    masks: SpanMasks[sig.ArrayT],
    *,
    entropy: sig.ArrayT | None = None,
    margin: sig.ArrayT | None = None,
) -> dict[str, float]:
    """The raw reasoning and holistic evidence: ``reasoning_*`` over the reasoning span *and* the answer tokens
    (the tokens whose correctness the reasoning decides), ``answer_*`` over the answer tokens alone."""
    return {
        **span_stats("reasoning", logp, masks.reasoning | masks.answer, entropy=entropy, margin=margin),
        **span_stats("answer", logp, masks.answer, entropy=entropy, margin=margin),
    }


@dataclass(frozen=True)
class ProbeResult:
    """The visual certainty, every measurement behind it, and the features it was computed from."""

    visual: float
    features: dict[str, float]
    sources: tuple[str, ...]


def visual_probe(
    logp: sig.ArrayT,
    logq: sig.ArrayT,
    vision: sig.ArrayT,
    normalization: VisualNormalization,
    *,
    entropy: sig.ArrayT | None = None,
    kl_full: sig.ArrayT | None = None,
    stability_drop: float | None = None,
) -> ProbeResult:
    """METHOD.md 3.3-3.6 on the vision tokens (``vision`` must select at least one).

    ``logp`` ``(tokens,)`` under the original images, ``logq`` ``(draws, tokens)`` under the perturbed copies.
    KL is the sampled-token KL averaged over the span, then over the draws; H is the mean surprisal, or the full
    entropy when given (``entropy`` ``(tokens,)``); s weighs them by ``normalization.grounding_weight``.
    ``kl_full`` ``(draws, tokens)``, when given, is reported as a feature (``vision_kl_full``) beside the
    sampled-token estimate. ``stability_drop``, the answer's fall under the stability probe's views, lowers s by
    ``normalization.stability_weight`` times it (``stability.py``; not measured: no change).
    """
    xp = array_namespace(logp, logq, vision)
    kl_draws = sig.masked_mean(sig.sampled_token_kl(logp, logq), vision)  # (draws,)
    kl = xp.mean(kl_draws)
    h = sig.masked_mean(sig.surprisal(logp), vision)
    features = {
        "vision_kl": float(kl),
        "vision_kl_std": float(xp.std(kl_draws, correction=0)),
        "vision_surprisal": float(h),
    }
    names: tuple[str, ...] = ("vision_kl", "vision_surprisal")
    if entropy is not None:
        h = sig.masked_mean(entropy, vision)
        features["vision_entropy"] = float(h)
        names = ("vision_kl", "vision_entropy")
    if kl_full is not None:
        features["vision_kl_full"] = float(xp.mean(sig.masked_mean(kl_full, vision)))
    s = float(sig.visual_score(kl, h, grounding_weight=normalization.grounding_weight))
    if stability_drop is not None and normalization.stability_weight:
        s -= normalization.stability_weight * stability_drop
        names = (*names, STABILITY_DROP)
    features[VISUAL_SCORE] = s
    visual = normalization.apply(float(s))
    features[VISUAL_CERTAINTY] = visual
    return ProbeResult(visual=visual, features=features, sources=(*names, VISUAL_SCORE))


def visual_statistic(
    features: Mapping[str, float], grounding_weight: float, stability_weight: float = 0.0
) -> float | None:
    """s at ``grounding_weight`` and ``stability_weight`` from a probe's recorded ``features`` (``vision_kl`` and
    ``vision_entropy``, else ``vision_surprisal``, and ``stability_drop``, as ``visual_probe`` measured them);
    ``None`` when the probe did not measure them (a missing ``stability_drop`` counts as no fall)."""
    kl = features.get("vision_kl")
    h = features.get("vision_entropy", features.get("vision_surprisal"))
    if kl is None or h is None:
        return None
    s = sig.visual_score(
        np.asarray(kl, dtype=np.float64), np.asarray(h, dtype=np.float64), grounding_weight=grounding_weight
    )
    return float(s) - stability_weight * features.get(STABILITY_DROP, 0.0)
