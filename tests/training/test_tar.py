"""The visual certainty target and the token-level advantage reweighting (TAR) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from guardrail.training import batch_sigmoid_z, tar_advantages, tar_weights, visual_scores


def _log(*p: float) -> torch.Tensor:
    return torch.tensor([math.log(x) for x in p], dtype=torch.float64)


def test_visual_score_of_one_token() -> None:
    # p = 0.5, q = 0.25: kl = 0.5 * ln 2, H = ln 2, s = ln(0.5 ln 2) - ln(ln 2) = ln 0.5
    s = visual_scores(_log(0.5).unsqueeze(0), _log(0.25).unsqueeze(0), torch.tensor([[True]]))
    assert float(s[0]) == pytest.approx(math.log(0.5), abs=1e-6)


def test_visual_score_without_vision_tokens_is_nan() -> None:
    s = visual_scores(_log(0.5, 0.5).unsqueeze(0), _log(0.2, 0.2).unsqueeze(0), torch.tensor([[False, False]]))
    assert math.isnan(float(s[0]))


def test_batch_sigmoid_z() -> None:
    out = batch_sigmoid_z(torch.tensor([0.0, 2.0, float("nan")]))  # mean 1, population std 1
    assert out[0].item() == pytest.approx(1 / (1 + math.e))
    assert out[1].item() == pytest.approx(1 / (1 + math.exp(-1)))
    assert math.isnan(out[2].item())
    assert batch_sigmoid_z(torch.tensor([3.0, 3.0])).tolist() == [0.5, 0.5]


def _ratio(p: float, q: float) -> float:
    delta = math.log(q) - math.log(p)
    k3 = min(max(math.exp(delta) - delta - 1.0, 0.0), 10.0)
    return math.log(k3 + 1e-8) - math.log(-math.log(p) + 1e-8)


def test_tar_weights_by_hand() -> None:
    p, q = (0.5, 0.25, 0.8), (0.25, 0.5, 0.4)
    logp = torch.cat([_log(*p), torch.zeros(1, dtype=torch.float64)]).unsqueeze(0)
    logq = torch.cat([_log(*q), torch.zeros(1, dtype=torch.float64)]).unsqueeze(0)
    response = torch.tensor([[True, True, True, False]])
    got = tar_weights(logp, logq, response)
    r = [_ratio(a, b) for a, b in zip(p, q, strict=True)]
    mean = sum(r) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / 3)
    expected = [1.1 - 0.2 / (1 + math.exp(-(x - mean) / std)) for x in r]
    assert got.weights[0, :3].tolist() == pytest.approx(expected)
    assert got.weights[0, 3].item() == 1.0  # padding
    assert got.ratio[0, 0].item() == pytest.approx(-1.277793, abs=1e-5)  # ln(0.193147) - ln(ln 2)


def test_two_tokens_get_z_of_minus_and_plus_one() -> None:
    # two distinct ratios z-score to +1 (the first: q moved further from p) and -1: w = 1.1 - 0.2 sigmoid(z)
    logp, logq = _log(0.5, 0.5).unsqueeze(0), _log(0.25, 0.45).unsqueeze(0)
    w = tar_weights(logp, logq, torch.tensor([[True, True]])).weights[0]
    assert w.tolist() == pytest.approx([1.1 - 0.2 / (1 + math.exp(-1)), 1.1 - 0.2 / (1 + math.e)], abs=1e-6)
    assert w.tolist() == pytest.approx([0.953788, 1.046212], abs=1e-6)


def test_tar_touches_vision_tokens_of_negative_advantages_only() -> None:
    weights = torch.tensor([[0.95, 1.05, 1.0], [0.95, 1.05, 1.0]])
    vision = torch.tensor([[True, True, False], [True, True, False]])
    advantages = torch.tensor([-2.0, 1.5])
    out = tar_advantages(advantages, weights, vision)
    assert out[0].tolist() == pytest.approx([-1.9, -2.1, -2.0])
    assert out[1].tolist() == [1.5, 1.5, 1.5]


def test_equal_ratios_leave_the_advantage_unchanged() -> None:
    logp, logq = _log(0.5, 0.5).unsqueeze(0), _log(0.25, 0.25).unsqueeze(0)
    assert tar_weights(logp, logq, torch.tensor([[True, True]])).weights[0].tolist() == [1.0, 1.0]
