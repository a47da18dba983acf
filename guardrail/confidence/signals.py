"""The method's token-level signals (METHOD.md sections 3-4), written once for NumPy arrays and torch tensors.

Every function is a small vectorised transform against the array API standard (``array_api_compat``, as
scikit-learn does it): it takes the namespace of its inputs (``array_namespace``), so the same code measures a
server's log-probs as float64 NumPy arrays in the light install (the black-box estimator: torch is never imported)
and the model's own log-probs as torch tensors (the white-box estimator, the training targets of
``guardrail.training.tar``, with autograd flowing through where the caller asks for it). Every function is pure
and out-of-place: it never modifies its inputs, its output follows their library, device and dtype, and its
docstring gives its shapes. ``...`` stands for any leading batch dimensions (e.g. ``(variants, tokens)``).

The reductions of full next-token distributions (log-probs of given tokens, entropy, top-2 margin, full KL) are
the backend's job and live in ``guardrail.backends.logits`` (torch only: only an in-process model has the
logits); this module works on what they return.

Vocabulary: ``logp`` are log-probabilities of the generated (sampled) token under the original image,
``logq`` the same under a perturbed image; ``logprobs`` without a suffix are full next-token log-distributions
of shape ``(..., vocab)``.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from array_api_compat import array_namespace

if TYPE_CHECKING:
    import numpy.typing as npt
    import torch

__all__ = [
    "LOG_RATIO_CLAMP",
    "SCORE_EPS",
    "TOKEN_KL_CLAMP",
    "ArrayT",
    "masked_mean",
    "masked_min",
    "normalized_visual_certainty",
    "sampled_token_kl",
    "surprisal",
    "visual_score",
]

ArrayT = TypeVar("ArrayT", "npt.NDArray[Any]", "torch.Tensor")
"""A NumPy array or a torch tensor: every function takes arrays of one library and returns that library's."""

LOG_RATIO_CLAMP = 20.0
"""``log p - log q`` is clamped to ``[-20, 20]`` before weighting (METHOD.md 3.3)."""
TOKEN_KL_CLAMP = 10.0
"""The per-token KL estimate is clamped to ``[0, 10]`` (METHOD.md 3.3)."""
SCORE_EPS = 1e-8
"""Added inside both logarithms of the visual score ``s = log(KL + eps) - log(H + eps)``."""


def _nan_like(xp: ModuleType, like: Any) -> Any:
    return xp.full_like(like, math.nan)


def sampled_token_kl(
    logp: ArrayT,
    logq: ArrayT,
    *,
    log_ratio_clamp: float = LOG_RATIO_CLAMP,
    kl_clamp: float = TOKEN_KL_CLAMP,
) -> ArrayT:
    """Per-token estimate of KL(original || perturbed) from the sampled token only (METHOD.md 3.3).

    ``kl_t = p_t * clamp(log p_t - log q_t, -20, 20)``, clamped to ``[0, 10]``. ``logp`` and ``logq`` broadcast
    against each other: ``(tokens,)`` with ``(variants, tokens)`` -> ``(variants, tokens)``.
    """
    xp = array_namespace(logp, logq)
    ratio = xp.clip(logp - logq, -log_ratio_clamp, log_ratio_clamp)
    out: ArrayT = xp.clip(xp.exp(logp) * ratio, 0.0, kl_clamp)
    return out


def surprisal(logp: ArrayT) -> ArrayT:
    """``-log p`` of each generated token: ``(...)`` -> ``(...)``, never negative."""
    xp = array_namespace(logp)
    out: ArrayT = xp.clip(-logp, 0.0, None)
    return out


def masked_mean(values: ArrayT, mask: ArrayT) -> ArrayT:
    """Mean of ``values`` over the last axis where the boolean ``mask`` is true: ``(..., tokens)`` -> ``(...)``.

    ``mask`` broadcasts against ``values`` (``(tokens,)`` for every row). Values outside the mask do not count,
    whatever they hold; NaN where the mask selects nothing (the caller decides what an empty span means).
    """
    xp = array_namespace(values, mask)
    full = xp.broadcast_to(mask, values.shape)
    total = xp.sum(xp.where(full, values, xp.zeros_like(values)), axis=-1)
    count = xp.sum(xp.astype(full, values.dtype), axis=-1)
    some = count > 0
    out: ArrayT = xp.where(some, total / xp.where(some, count, xp.ones_like(count)), _nan_like(xp, total))
    return out


def masked_min(values: ArrayT, mask: ArrayT) -> ArrayT:
    """Minimum of ``values`` over the last axis where ``mask`` is true: ``(..., tokens)`` -> ``(...)``; NaN if empty."""
    xp = array_namespace(values, mask)
    full = xp.broadcast_to(mask, values.shape)
    filled = xp.min(xp.where(full, values, xp.full_like(values, math.inf)), axis=-1)
    out: ArrayT = xp.where(xp.any(full, axis=-1), filled, _nan_like(xp, filled))
    return out


def visual_score(kl: ArrayT, h: ArrayT, *, eps: float = SCORE_EPS, grounding_weight: float = 1.0) -> ArrayT:
    """Raw visual certainty ``s = w log(KL + eps) - log(H + eps)`` (METHOD.md 3.5, ``w = 1``): grounded and
    certain -> high.

    ``kl`` and ``h`` are span means of shape ``(...)`` (broadcasting) -> ``(...)``; ``grounding_weight`` ``w`` in
    [0, 1] is how much the grounding KL counts (see ``VisualNormalization``).
    """
    if not 0.0 <= grounding_weight <= 1.0:
        raise ValueError(f"`grounding_weight` must be in [0, 1], got {grounding_weight}")
    xp = array_namespace(kl, h)
    out: ArrayT = grounding_weight * xp.log(kl + eps) - xp.log(h + eps)
    return out


def normalized_visual_certainty(score: ArrayT, mean: float, std: float) -> ArrayT:
    """``sigmoid((s - mean) / std)`` with reference statistics of ``s`` (METHOD.md 3.6): ``(...)`` -> ``(...)``.

    Computed as ``1 / (1 + e)`` or ``e / (1 + e)`` with ``e = exp(-|z|)``, which never overflows.
    """
    if not std > 0:
        raise ValueError(f"`std` must be > 0 (the spread of s on the reference set), got {std}")
    xp = array_namespace(score)
    z = (score - mean) / std
    e = xp.exp(-xp.abs(z))
    out: ArrayT = xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out
