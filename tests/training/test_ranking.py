"""The rewards and advantages that make stated confidence rank (issue 30), against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from trl.trainer.utils import nanstd

from guardrail.training.ranking import group_advantages, pair_rewards, ranking_rewards, split_advantages

NAN = math.nan


def test_group_advantages_match_trls_group_scaling() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.3, 0.3, 2.0, -1.0, 0.5, 0.5])
    grouped = rewards.view(-1, 4)
    mean = grouped.mean(1).repeat_interleave(4)
    std = nanstd(grouped, dim=1).repeat_interleave(4)
    expected = (rewards - mean) / (std + 1e-4)  # TRL's sum_then_normalize with scale_rewards="group"
    assert torch.allclose(group_advantages(rewards, 4), expected, atol=1e-6)
    assert torch.allclose(group_advantages(rewards, 4, scale=False), rewards - mean, atol=1e-6)


def test_group_advantages_by_hand_and_a_constant_group() -> None:
    # group 1: mean 0.5, unbiased std sqrt(0.5) = 0.70711 -> +-0.5/0.70721; group 2 constant -> 0
    got = group_advantages(torch.tensor([1.0, 0.0, 0.7, 0.7]), 2)
    assert got.tolist() == pytest.approx([0.5 / (0.5**0.5 + 1e-4), -0.5 / (0.5**0.5 + 1e-4), 0.0, 0.0])


def test_group_advantages_leave_nan_out() -> None:
    got = group_advantages(torch.tensor([1.0, NAN, 0.0, 5.0]), 4, scale=False)
    assert got.tolist() == pytest.approx([-1.0, 0.0, -2.0, 3.0])


def test_ranking_charges_each_rollout_the_mean_hinge_of_its_mixed_pairs() -> None:
    confidence = torch.tensor([0.9, 0.5, 0.7, 0.2])
    correct = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # pairs (right, wrong): (0,2) gap 0.2 -> 0; (0,3) 0.7 -> 0; (1,2) -0.2 -> 0.3; (1,3) 0.3 -> 0
    got = ranking_rewards(confidence, correct, 4, margin=0.1)
    assert got.tolist() == pytest.approx([0.0, -0.15, -0.15, 0.0])


def test_a_constant_confidence_earns_no_advantage_from_ranking() -> None:
    correct = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    constant = ranking_rewards(torch.full((8,), 0.8), correct, 4, margin=0.1)
    assert constant.tolist() == pytest.approx([-0.1] * 8)  # every mixed pair misses the margin by 0.1
    assert torch.equal(group_advantages(constant, 4), torch.zeros(8))
    ranked = torch.tensor([0.9, 0.2, 0.9, 0.9, 0.2, 0.2, 0.9, 0.2])
    assert torch.equal(ranking_rewards(ranked, correct, 4, margin=0.1), torch.zeros(8))


def test_ranking_needs_both_outcomes_and_a_stated_confidence() -> None:
    all_right = ranking_rewards(torch.tensor([0.1, 0.9]), torch.tensor([1.0, 1.0]), 2)
    assert all_right.tolist() == [0.0, 0.0]
    unstated = ranking_rewards(torch.tensor([0.5, NAN, 0.6]), torch.tensor([1.0, 0.0, 0.0]), 3, margin=0.2)
    # only the pair (0, 2): gap -0.1 -> hinge 0.3, charged to both; rollout 1 stated nothing
    assert unstated.tolist() == pytest.approx([-0.3, 0.0, -0.3])


def test_pairs_ask_the_visual_confidence_to_drop_on_the_damaged_copy() -> None:
    vision = torch.tensor([0.8, 0.6, 0.5, 0.7, 0.9, 0.9, 0.9, 0.9])
    damaged = torch.tensor([0.0, 0.0, 1.0, 1.0, NAN, NAN, NAN, NAN])
    # (clean, damaged) pairs at margin 0.2: (0,2) 0.3 -> 0; (0,3) 0.1 -> 0.1; (1,2) 0.1 -> 0.1; (1,3) -0.1 -> 0.3
    got = pair_rewards(vision, damaged, 4, margin=0.2)
    assert got.tolist() == pytest.approx([-0.05, -0.2, -0.05, -0.2, 0.0, 0.0, 0.0, 0.0])
    constant = pair_rewards(torch.full((4,), 0.9), damaged[:4], 4, margin=0.2)
    assert torch.equal(group_advantages(constant, 4), torch.zeros(4))


def test_inputs_are_left_untouched() -> None:
    confidence, correct = torch.tensor([0.3, NAN, 0.6, 0.1]), torch.tensor([1.0, 0.0, 0.0, 1.0])
    before = (confidence.clone(), correct.clone())
    ranking_rewards(confidence, correct, 2)
    pair_rewards(confidence, correct, 2)
    group_advantages(confidence, 2)
    assert torch.equal(correct, before[1])
    assert torch.allclose(confidence, before[0], equal_nan=True)


def test_split_advantages_give_the_confidence_block_its_own() -> None:
    answer, confidence = torch.tensor([1.0, -1.0]), torch.tensor([0.5, 0.0])
    mask = torch.tensor([[False, False, True], [False, True, True]])
    assert split_advantages(answer, confidence, mask).tolist() == [[1.0, 1.0, 0.5], [-1.0, 0.0, 0.0]]
    per_token = torch.tensor([[1.0, 1.1, 1.0], [-0.9, -1.0, -1.0]])  # after TAR
    got = split_advantages(answer, confidence, mask, per_token)
    assert torch.allclose(got, torch.tensor([[1.0, 1.1, 0.5], [-0.9, 0.0, 0.0]]))


@pytest.mark.parametrize("bad", [torch.zeros(5), torch.zeros(2, 2)])
def test_a_batch_that_is_not_whole_groups_is_refused(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="multiple of group_size=2"):
        group_advantages(bad, 2)
