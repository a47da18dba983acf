"""The probe's statistics on NumPy arrays: the black-box estimator's copy of ``probe.py``, ``stability.py`` and
``signals.py``, so that it runs in the light install (``pip install lvlm-guardrail``: no torch).

A server returns per-token log-probs as lists of floats; the black-box estimator turns them into float64 arrays
and measures exactly what the white-box estimator measures from its own forward pass: the span masks, the
reasoning and answer statistics, the visual probe (sampled-token KL and surprisal on the ``<vision>`` tokens,
``s = w log(KL + 1e-8) - log(H + 1e-8)``, normalised) and the stability probe's falls. Each function here is the
transcription of the torch function of the same name, without the options a server never feeds (full-distribution
entropy, margin, full KL); ``tests/confidence/test_probe_numpy.py`` holds the two equal within 1e-12 on random
inputs, so a change to one that is not made to the other fails there.

Shapes as in ``probe.py``: ``logp`` ``(tokens,)`` under the original images, ``logq`` ``(draws, tokens)`` under the
perturbed copies or the stability views, masks boolean ``(tokens,)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..responses import CharSpan, ParsedResponse, char_span_to_token_span
from .feature_names import STABILITY, STABILITY_DROP, VISUAL_CERTAINTY, VISUAL_SCORE
from .normalization import VisualNormalization

__all__ = [
    "LOG_RATIO_CLAMP",
    "SCORE_EPS",
    "TOKEN_KL_CLAMP",
    "ProbeResult",
    "SpanMasks",
    "answer_stats",
    "span_masks",
    "stability_features",
    "visual_probe",
]

FloatArray = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

LOG_RATIO_CLAMP = 20.0
"""As ``signals.LOG_RATIO_CLAMP``: ``log p - log q`` is clamped to ``[-20, 20]`` (METHOD.md 3.3)."""
TOKEN_KL_CLAMP = 10.0
"""As ``signals.TOKEN_KL_CLAMP``: the per-token KL estimate is clamped to ``[0, 10]``."""
SCORE_EPS = 1e-8
"""As ``signals.SCORE_EPS``: added inside both logarithms of the visual score."""


@dataclass(frozen=True)
class SpanMasks:
    """Boolean ``(tokens,)`` masks of the perception span, the reasoning span and the final answer's tokens."""

    vision: Mask
    reasoning: Mask
    answer: Mask


@dataclass(frozen=True)
class ProbeResult:
    """The visual certainty, every measurement behind it, and the features it was computed from."""

    visual: float
    features: dict[str, float]
    sources: tuple[str, ...]


def span_masks(parsed: ParsedResponse, offsets: Sequence[CharSpan] | None, n: int) -> SpanMasks:
    """``probe.span_masks``: token masks of ``parsed``'s spans from each token's character range; ``offsets=None``
    makes every token count in every span; without a ``\\boxed{}`` answer the whole response is the answer."""
    if offsets is None:
        everything = np.ones(n, dtype=np.bool_)
        return SpanMasks(everything, everything, everything)
    positions = np.arange(n)

    def mask(span: CharSpan) -> Mask:
        tokens = char_span_to_token_span(span, offsets)
        if tokens is None:
            return np.zeros(n, dtype=np.bool_)
        out: Mask = (positions >= tokens[0]) & (positions < tokens[1])
        return out

    answer = parsed.answer if parsed.answer is not None else (0, len(parsed.text))
    return SpanMasks(mask(parsed.vision), mask(parsed.reasoning), mask(answer))


def _masked_mean(values: FloatArray, mask: Mask) -> FloatArray:
    """Mean over the last axis where ``mask`` holds: ``(..., tokens)`` -> ``(...)``; NaN where it selects nothing."""
    weights = np.broadcast_to(mask, values.shape).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = (values * weights).sum(-1) / weights.sum(-1)
    return out


def _masked_min(values: FloatArray, mask: Mask) -> FloatArray:
    """Minimum over the last axis where ``mask`` holds: ``(..., tokens)`` -> ``(...)``; NaN where it selects nothing."""
    full = np.broadcast_to(mask, values.shape)
    filled = np.where(full, values, np.inf).min(-1)
    out: FloatArray = np.where(full.any(-1), filled, np.nan)
    return out


def _surprisal(logp: FloatArray) -> FloatArray:
    out: FloatArray = np.maximum(-logp, 0.0)
    return out


def _sampled_token_kl(logp: FloatArray, logq: FloatArray) -> FloatArray:
    """``p_t * clamp(log p_t - log q_t, -20, 20)`` clamped to ``[0, 10]``, broadcasting ``(tokens,)`` against
    ``(draws, tokens)``."""
    ratio = np.clip(logp - logq, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    out: FloatArray = np.clip(np.exp(logp) * ratio, 0.0, TOKEN_KL_CLAMP)
    return out


def _visual_score(kl: float, h: float, grounding_weight: float) -> float:
    if not 0.0 <= grounding_weight <= 1.0:
        raise ValueError(f"`grounding_weight` must be in [0, 1], got {grounding_weight}")
    return grounding_weight * math.log(kl + SCORE_EPS) - math.log(h + SCORE_EPS)


def span_stats(prefix: str, logp: FloatArray, mask: Mask) -> dict[str, float]:
    """``probe.span_stats`` without entropy and margin: token count, mean surprisal, mean and least probability of
    the span's tokens; an empty span gives no features."""
    if not bool(mask.any()):
        return {}
    probs = np.exp(logp)
    return {
        f"{prefix}_tokens": float(mask.sum()),
        f"{prefix}_mean_surprisal": float(_masked_mean(_surprisal(logp), mask)),
        f"{prefix}_mean_prob": float(_masked_mean(probs, mask)),
        f"{prefix}_min_prob": float(_masked_min(probs, mask)),
    }


def answer_stats(logp: FloatArray, masks: SpanMasks) -> dict[str, float]:
    """``probe.answer_stats``: ``reasoning_*`` over the reasoning span and the answer tokens, ``answer_*`` over the
    answer tokens alone."""
    return {
        **span_stats("reasoning", logp, masks.reasoning | masks.answer),
        **span_stats("answer", logp, masks.answer),
    }


def visual_probe(
    logp: FloatArray,
    logq: FloatArray,
    vision: Mask,
    normalization: VisualNormalization,
    *,
    stability_drop: float | None = None,
) -> ProbeResult:
    """``probe.visual_probe`` on the vision tokens (``vision`` must select at least one), H the mean surprisal."""
    kl_draws = _masked_mean(_sampled_token_kl(logp, logq), vision)  # (draws,)
    kl = float(kl_draws.mean())
    h = float(_masked_mean(_surprisal(logp), vision))
    features = {"vision_kl": kl, "vision_kl_std": float(kl_draws.std()), "vision_surprisal": h}
    names: tuple[str, ...] = ("vision_kl", "vision_surprisal")
    s = _visual_score(kl, h, normalization.grounding_weight)
    if stability_drop is not None and normalization.stability_weight:
        s -= normalization.stability_weight * stability_drop
        names = (*names, STABILITY_DROP)
    features[VISUAL_SCORE] = s
    visual = normalization.apply(s)
    features[VISUAL_CERTAINTY] = visual
    return ProbeResult(visual=visual, features=features, sources=(*names, VISUAL_SCORE))


def stability_features(logp: FloatArray, logq: FloatArray, vision: Mask, answer: Mask) -> dict[str, float]:
    """``stability.stability_features``: per span, the mean and the worst over views of the span's mean positive
    fall ``clamp(log p - log q, 0, 20)``; ``stability_drop`` and ``stability`` from the vision span's."""
    out: dict[str, float] = {"stability_views": float(logq.shape[0])}
    for name, mask in (("vision", vision), ("answer", answer)):
        if not bool(mask.any()) or logq.shape[0] == 0:
            continue
        per_view = _masked_mean(np.clip(logp - logq, 0.0, LOG_RATIO_CLAMP), mask)
        out[f"stability_{name}_drop"] = float(per_view.mean())
        out[f"stability_{name}_worst"] = float(per_view.max())
    if "stability_vision_drop" in out:
        out[STABILITY_DROP] = out["stability_vision_drop"]
        out[STABILITY] = math.exp(-out[STABILITY_DROP])
    return out
