"""The two token-level pieces of METHOD.md section 8 as pure torch functions: the visual certainty target of each
rollout, and the token-level advantage reweighting (TAR).

Both start from per-token log-probs of each rollout's own tokens, ``logp`` under the original image and ``logq``
under a perturbed copy (shape ``(rollouts, tokens)``), computed without gradient when the rollouts are scored. They
reuse the signals of ``guardrail.confidence.signals``, so the target is exactly the visual score the guard measures
at inference time (METHOD.md section 3), normalised over the batch instead of with calibration statistics.

Shapes: ``(B, T)`` for per-token values and masks (``response`` marks real completion tokens, ``vision`` the tokens
of the ``<vision>`` span), ``(B,)`` per rollout. Masks are boolean.
"""

from __future__ import annotations

import torch

from ..confidence import signals as sig

__all__ = [
    "K3_CLAMP",
    "TAR_W_MAX",
    "TAR_W_MIN",
    "TarWeights",
    "batch_sigmoid_z",
    "tar_advantages",
    "tar_weights",
    "visual_scores",
]

TAR_W_MIN = 0.9
TAR_W_MAX = 1.1
K3_CLAMP = 10.0
_EPS = 1e-8


def visual_scores(logp: torch.Tensor, logq: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
    """Raw visual certainty ``s = log(KL + 1e-8) - log(H + 1e-8)`` of each rollout on its vision tokens: ``(B,)``.

    KL is the mean clamped sampled-token KL, H the mean surprisal (METHOD.md 3.3-3.5); NaN where a rollout has no
    vision token.
    """
    kl = sig.masked_mean(sig.sampled_token_kl(logp, logq), vision)
    h = sig.masked_mean(sig.surprisal(logp), vision)
    return sig.visual_score(kl, h)


def batch_sigmoid_z(scores: torch.Tensor) -> torch.Tensor:
    """``sigmoid((s - mean) / std)`` over the finite entries of ``scores`` ``(B,)`` (population std); NaN stays NaN.

    The paper's normalisation of the visual certainty over a batch of rollouts. A batch whose finite scores are all
    equal (or hold one score) maps them to 0.5.
    """
    finite = torch.isfinite(scores)
    if not bool(finite.any()):
        return torch.full_like(scores, float("nan"))
    known = scores[finite]
    mean = known.mean()
    std = known.std(unbiased=False) if known.numel() > 1 else torch.zeros_like(mean)
    z = (scores - mean) / std if float(std) > 0 else torch.zeros_like(scores)
    return torch.where(finite, torch.sigmoid(z), torch.full_like(scores, float("nan")))


class TarWeights:
    """What :func:`tar_weights` computed, kept for logging and tests: ``weights`` ``(B, T)`` and its parts."""

    def __init__(self, weights: torch.Tensor, k3: torch.Tensor, entropy: torch.Tensor, ratio: torch.Tensor) -> None:
        self.weights = weights
        self.k3 = k3
        self.entropy = entropy
        self.ratio = ratio


def tar_weights(
    logp_old: torch.Tensor,
    logq_aug: torch.Tensor,
    response: torch.Tensor,
    *,
    w_min: float = TAR_W_MIN,
    w_max: float = TAR_W_MAX,
) -> TarWeights:
    """Per-token TAR weights ``w_t = w_max - (w_max - w_min) * sigmoid(z_t)`` for every response token.

    ``delta = log q_aug - log p_old``; ``k3 = exp(delta) - delta - 1`` clamped to [0, 10]; ``ent = -log p_old``;
    ``r = log(k3 + 1e-8) - log(ent + 1e-8)``, z-scored over each rollout's response tokens (population std; a
    rollout whose ratios are all equal gets z = 0). Tokens whose prediction barely depends on the image or that
    the model was unsure of (low r) get weights near ``w_max``; grounded, certain ones near ``w_min``. Padding
    positions get weight 1.
    """
    delta = logq_aug - logp_old
    k3 = (delta.exp() - delta - 1.0).clamp(0.0, K3_CLAMP)
    entropy = sig.surprisal(logp_old)
    ratio = torch.log(k3 + _EPS) - torch.log(entropy + _EPS)
    weight = response.to(ratio.dtype)
    count = weight.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (ratio * weight).sum(-1, keepdim=True) / count
    std = (((ratio - mean) ** 2 * weight).sum(-1, keepdim=True) / count).sqrt()
    z = torch.where(std > 0, (ratio - mean) / torch.where(std > 0, std, torch.ones_like(std)), torch.zeros_like(ratio))
    w = w_max - (w_max - w_min) * torch.sigmoid(z)
    return TarWeights(torch.where(response, w, torch.ones_like(w)), k3, entropy, ratio)


def tar_advantages(
    advantages: torch.Tensor,
    weights: torch.Tensor,
    vision: torch.Tensor,
) -> torch.Tensor:
    """Per-token advantages ``(B, T)``: ``w_t * A`` on the vision tokens of rollouts with ``A < 0``, else ``A``."""
    per_token = advantages.unsqueeze(1).expand_as(weights)
    reweight = vision & (advantages < 0).unsqueeze(1)
    return torch.where(reweight, weights * per_token, per_token)
