"""Reductions of next-token logits that a white-box backend applies before anything leaves the model.

A ``(tokens, vocab)`` distribution is too large to hand around, so the backend reduces it at once to what the
estimators read (``TeacherForcedScores``): the log-prob of the given token, the full entropy, the top-2 margin, and
the full-vocabulary KL against the original image's distribution. Pure, out-of-place torch functions that follow
their inputs' device and dtype; ``...`` is any leading batch shape.
"""

from __future__ import annotations

import torch

__all__ = ["entropy", "full_kl", "token_logprobs", "top2_margin"]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-probability of each target token under the next-token logits.

    ``(..., tokens, vocab)`` logits and ``(..., tokens)`` integer targets -> ``(..., tokens)`` log-probs, computed
    in at least float32 so that half-precision logits do not lose the small probabilities.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"`targets` must have the shape of `logits` without the vocabulary axis, got {tuple(targets.shape)} "
            f"for logits {tuple(logits.shape)}"
        )
    work = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return torch.log_softmax(work, dim=-1).gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)


def full_kl(logprobs_p: torch.Tensor, logprobs_q: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary KL(p || q) of two next-token distributions at each position.

    ``(..., vocab)`` log-distributions (broadcasting) -> ``(...)``. Terms where ``p = 0`` contribute 0; the
    result is clamped at 0 to absorb rounding.
    """
    p = logprobs_p.exp()
    terms = torch.where(p > 0, p * (logprobs_p - logprobs_q), torch.zeros_like(p))
    return terms.sum(-1).clamp_min(0.0)


def entropy(logprobs: torch.Tensor) -> torch.Tensor:
    """Full Shannon entropy (nats) of each next-token distribution: ``(..., vocab)`` -> ``(...)``."""
    p = logprobs.exp()
    terms = torch.where(p > 0, p * logprobs, torch.zeros_like(p))
    return (-terms.sum(-1)).clamp_min(0.0)


def top2_margin(logprobs: torch.Tensor) -> torch.Tensor:
    """Probability of the most likely token minus that of the second: ``(..., vocab)`` -> ``(...)`` in [0, 1]."""
    top = logprobs.topk(2, dim=-1).values.exp()
    return top[..., 0] - top[..., 1]
