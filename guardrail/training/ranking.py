"""Rewards and advantages that make stated confidence rank (issue 30, item 2), as pure torch functions.

Plain GRPO on METHOD.md section 8's reward collapsed every trained model onto one constant score: within a group of
rollouts that share one answer the only reward difference is the sampled digit, and the advantage of the whole
response (answer and confidence tokens alike) is driven by correctness. Three remedies published since
(METHOD.md section 8b):

- **own advantage** (DCPO): the answer's tokens keep the advantage of the answer terms, the confidence block's
  tokens get the advantage of the calibration terms only (:func:`split_advantages`);
- **within-group ranking** (RAC): every right rollout of a group must state more confidence than every wrong one,
  by a margin; each rollout is charged the mean hinge of the mixed pairs it is part of (:func:`ranking_rewards`).
  A constant confidence is charged the same in every rollout of a group, so it earns no advantage;
- **clean/corrupted pairs** (RAC): half of a group's rollouts see the clean image and half a damaged copy; the
  visual confidence stated on a clean rollout must exceed that of every damaged one by a margin
  (:func:`pair_rewards`).

Shapes: rollouts are laid out as TRL lays them, ``group_size`` consecutive rollouts per prompt, ``(N,)`` with
``N`` a multiple of ``group_size``; NaN marks a confidence that was not stated (such a rollout takes part in no
pair and gets 0). Nothing here modifies its inputs.
"""

from __future__ import annotations

import torch

__all__ = ["group_advantages", "pair_rewards", "ranking_rewards", "split_advantages"]

_EPS = 1e-4
"""TRL's: advantages are divided by ``std + 1e-4``."""


def _grouped(values: torch.Tensor, group_size: int, name: str) -> torch.Tensor:
    if group_size < 1 or values.dim() != 1 or values.shape[0] % group_size:
        raise ValueError(
            f"`{name}` must be a 1-d tensor whose length is a multiple of group_size={group_size}, "
            f"got shape {tuple(values.shape)}"
        )
    return values.view(-1, group_size)


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True) -> torch.Tensor:
    """GRPO's advantages ``(N,) -> (N,)``: reward minus its group's mean, divided by the group's std + 1e-4.

    The same as TRL's ``scale_rewards="group"`` (``scale=False``: ``"none"``, no division); the std is the unbiased
    one, as TRL's ``nanstd``. NaN rewards are left out of their group's statistics and get advantage 0.
    """
    grouped = _grouped(rewards, group_size, "rewards")
    known = ~torch.isnan(grouped)
    count = known.sum(1, keepdim=True)
    filled = torch.where(known, grouped, torch.zeros_like(grouped))
    mean = filled.sum(1, keepdim=True) / count.clamp_min(1)
    advantages = grouped - mean
    if scale:
        square = torch.where(known, advantages**2, torch.zeros_like(grouped)).sum(1, keepdim=True)
        std = (square / (count - 1).clamp_min(1)).sqrt()
        std = torch.where(count > 1, std, torch.zeros_like(std))
        advantages = advantages / (std + _EPS)
    return torch.nan_to_num(advantages, nan=0.0).reshape(-1)


def _mean_hinge(
    confidence: torch.Tensor, high: torch.Tensor, low: torch.Tensor, group_size: int, margin: float
) -> torch.Tensor:
    """Minus the mean of ``max(0, margin - (c_i - c_j))`` over pairs (i in ``high``, j in ``low``) of each group,
    charged to both members of every pair: ``(N,) -> (N,)``, 0 for a rollout in no pair."""
    c = _grouped(confidence, group_size, "confidence")
    stated = ~torch.isnan(c)
    hi = high.view_as(c) & stated
    lo = low.view_as(c) & stated
    value = torch.nan_to_num(c, nan=0.0)
    gap = value.unsqueeze(2) - value.unsqueeze(1)  # (groups, i, j): c_i - c_j
    pairs = hi.unsqueeze(2) & lo.unsqueeze(1)  # i should rank above j
    hinge = torch.where(pairs, (margin - gap).clamp_min(0.0), torch.zeros_like(gap))
    per_rollout = hinge.sum(2) + hinge.sum(1)  # as the high member (row) and as the low member (column)
    count = pairs.sum(2) + pairs.sum(1)
    out = torch.where(count > 0, -per_rollout / count.clamp_min(1), torch.zeros_like(per_rollout))
    return out.reshape(-1)


def ranking_rewards(
    confidence: torch.Tensor, correct: torch.Tensor, group_size: int, *, margin: float = 0.1
) -> torch.Tensor:
    """The within-group ranking term ``(N,), (N,) -> (N,)``, in [-(1 + margin), 0].

    ``confidence`` is each rollout's stated overall confidence (NaN: not stated), ``correct`` 1 or 0. For each pair
    of a right rollout i and a wrong one j of the same group, the hinge ``max(0, margin - (c_i - c_j))``; each
    rollout gets minus the mean hinge of its pairs. A group whose rollouts are all right (or all wrong) gives 0.
    """
    right = correct > 0.5
    return _mean_hinge(confidence, right, ~right, group_size, margin)


def pair_rewards(
    vision_confidence: torch.Tensor, damaged: torch.Tensor, group_size: int, *, margin: float = 0.1
) -> torch.Tensor:
    """The clean/corrupted pair term ``(N,), (N,) -> (N,)``, in [-(1 + margin), 0].

    ``damaged`` is 1 for a rollout that saw the damaged copy of its group's image, 0 for one that saw the clean
    image, NaN for a rollout in a group without a pair (it gets 0). Each clean rollout i and damaged rollout j of a
    group form a pair with hinge ``max(0, margin - (v_i - v_j))``; each rollout gets minus its pairs' mean hinge.
    """
    paired = ~torch.isnan(damaged)
    return _mean_hinge(vision_confidence, paired & (damaged < 0.5), paired & (damaged >= 0.5), group_size, margin)


def split_advantages(
    answer: torch.Tensor, confidence: torch.Tensor, confidence_mask: torch.Tensor, per_token: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token advantages ``(B, T)``: ``confidence`` ``(B,)`` on the confidence block's tokens
    (``confidence_mask`` ``(B, T)``, boolean), the answer's advantage elsewhere.

    The answer's advantage is ``answer`` ``(B,)`` broadcast over the tokens, or ``per_token`` ``(B, T)`` when given
    (the answer's advantages after TAR).
    """
    base = answer.unsqueeze(1).expand(confidence_mask.shape) if per_token is None else per_token
    return torch.where(confidence_mask, confidence.unsqueeze(1).expand(confidence_mask.shape).to(base.dtype), base)
