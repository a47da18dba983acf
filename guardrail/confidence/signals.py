"""The method's token-level signals (METHOD.md sections 3-4) as small vectorised torch transforms.

Every function is pure and out-of-place: it never modifies its inputs, follows their device and dtype, and
documents its shapes. ``...`` stands for any leading batch dimensions (e.g. ``(variants, tokens)``).

The reductions of full next-token distributions (log-probs of given tokens, entropy, top-2 margin, full KL) are
the backend's job and live in ``guardrail.backends.logits``; this module works on what they return.

Vocabulary: ``logp`` are log-probabilities of the generated (sampled) token under the original image,
``logq`` the same under a perturbed image; ``logprobs`` without a suffix are full next-token log-distributions
of shape ``(..., vocab)``.
"""

from __future__ import annotations

import torch

__all__ = [
    "LOG_RATIO_CLAMP",
    "SCORE_EPS",
    "TOKEN_KL_CLAMP",
    "masked_mean",
    "masked_min",
    "normalized_visual_certainty",
    "sampled_token_kl",
    "surprisal",
    "visual_score",
]

LOG_RATIO_CLAMP = 20.0
"""``log p - log q`` is clamped to ``[-20, 20]`` before weighting (METHOD.md 3.3)."""
TOKEN_KL_CLAMP = 10.0
"""The per-token KL estimate is clamped to ``[0, 10]`` (METHOD.md 3.3)."""
SCORE_EPS = 1e-8
"""Added inside both logarithms of the visual score ``s = log(KL + eps) - log(H + eps)``."""


def sampled_token_kl(
    logp: torch.Tensor,
    logq: torch.Tensor,
    *,
    log_ratio_clamp: float = LOG_RATIO_CLAMP,
    kl_clamp: float = TOKEN_KL_CLAMP,
) -> torch.Tensor:
    """Per-token estimate of KL(original || perturbed) from the sampled token only (METHOD.md 3.3).

    ``kl_t = p_t * clamp(log p_t - log q_t, -20, 20)``, clamped to ``[0, 10]``. ``logp`` and ``logq`` broadcast
    against each other: ``(tokens,)`` with ``(variants, tokens)`` -> ``(variants, tokens)``.
    """
    ratio = (logp - logq).clamp(-log_ratio_clamp, log_ratio_clamp)
    return (logp.exp() * ratio).clamp(0.0, kl_clamp)


def surprisal(logp: torch.Tensor) -> torch.Tensor:
    """``-log p`` of each generated token: ``(...)`` -> ``(...)``, never negative."""
    return (-logp).clamp_min(0.0)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the last axis where ``mask`` is true: ``(..., tokens)`` -> ``(...)``.

    NaN where the mask selects nothing (the caller decides what an empty span means).
    """
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum(-1) / weights.sum(-1)


def masked_min(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Minimum of ``values`` over the last axis where ``mask`` is true: ``(..., tokens)`` -> ``(...)``; NaN if empty."""
    mask = mask.expand_as(values)
    filled = values.masked_fill(~mask, float("inf")).amin(-1)
    return torch.where(mask.any(-1), filled, torch.full_like(filled, float("nan")))


def visual_score(
    kl: torch.Tensor, h: torch.Tensor, *, eps: float = SCORE_EPS, grounding_weight: float = 1.0
) -> torch.Tensor:
    """Raw visual certainty ``s = w log(KL + eps) - log(H + eps)`` (METHOD.md 3.5, ``w = 1``): grounded and
    certain -> high.

    ``kl`` and ``h`` are span means of shape ``(...)`` (broadcasting) -> ``(...)``; ``grounding_weight`` ``w`` in
    [0, 1] is how much the grounding KL counts (see ``VisualNormalization``).
    """
    if not 0.0 <= grounding_weight <= 1.0:
        raise ValueError(f"`grounding_weight` must be in [0, 1], got {grounding_weight}")
    return grounding_weight * torch.log(kl + eps) - torch.log(h + eps)


def normalized_visual_certainty(score: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """``sigmoid((s - mean) / std)`` with reference statistics of ``s`` (METHOD.md 3.6): ``(...)`` -> ``(...)``."""
    if not std > 0:
        raise ValueError(f"`std` must be > 0 (the spread of s on the reference set), got {std}")
    return torch.sigmoid((score - mean) / std)
