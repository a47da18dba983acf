"""The token-level signal functions on tiny hand-made tensors: values, clamps, invariants, inputs untouched."""

from __future__ import annotations

import math

import pytest
import torch

from guardrail.confidence import signals as sig

LOGITS = torch.tensor([[[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [5.0, 4.0, -3.0, 0.0]]])  # (1, 3, 4)
TARGETS = torch.tensor([[0, 2, 1]])


def test_sampled_token_kl_matches_the_formula() -> None:
    logp = torch.log(torch.tensor([0.5, 0.9]))
    logq = torch.log(torch.tensor([0.25, 0.9]))
    out = sig.sampled_token_kl(logp, logq)
    torch.testing.assert_close(out, torch.tensor([0.5 * math.log(2.0), 0.0]))


def test_sampled_token_kl_clamps_ratio_and_value() -> None:
    logp = torch.tensor([0.0, 0.0, math.log(0.5)])
    logq = torch.tensor([-100.0, -5.0, 0.0])  # ratio 100 -> 20 -> kl 20 -> 10; ratio 5; negative -> 0
    out = sig.sampled_token_kl(logp, logq)
    torch.testing.assert_close(out, torch.tensor([10.0, 5.0, 0.0]))
    assert float(sig.sampled_token_kl(torch.tensor([0.0]), torch.tensor([-15.0]), kl_clamp=100.0)) == 15.0
    assert float(sig.sampled_token_kl(torch.tensor([0.0]), torch.tensor([-50.0]), kl_clamp=100.0)) == 20.0


def test_sampled_token_kl_broadcasts_over_variants_and_leaves_inputs() -> None:
    logp = torch.log(torch.tensor([0.5, 0.5, 0.5]))
    logq = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.1, 0.2, 0.4]]))
    copies = logp.clone(), logq.clone()
    out = sig.sampled_token_kl(logp, logq)
    assert out.shape == (2, 3)
    assert torch.all(out[0] == 0)
    assert torch.all(out[1] > 0)
    assert torch.equal(logp, copies[0])
    assert torch.equal(logq, copies[1])


def test_surprisal_is_minus_logp_and_never_negative() -> None:
    torch.testing.assert_close(sig.surprisal(torch.tensor([-2.0, 0.0, 1e-9])), torch.tensor([2.0, 0.0, 0.0]))


def test_masked_mean_and_min() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    mask = torch.tensor([False, True, True, False])
    torch.testing.assert_close(sig.masked_mean(values, mask), torch.tensor([2.5, 6.5]))
    torch.testing.assert_close(sig.masked_min(values, mask), torch.tensor([2.0, 6.0]))
    empty = torch.zeros(4, dtype=torch.bool)
    assert torch.isnan(sig.masked_mean(values, empty)).all()
    assert torch.isnan(sig.masked_min(values, empty)).all()


def test_visual_score_and_normalisation() -> None:
    s = sig.visual_score(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert float(s[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(s[1]) == pytest.approx(math.log(1e-8), rel=1e-4)  # eps keeps log(0) finite
    out = sig.normalized_visual_certainty(torch.tensor([0.0, 2.0, -2.0]), mean=0.0, std=2.0)
    torch.testing.assert_close(out, torch.sigmoid(torch.tensor([0.0, 1.0, -1.0])))
    with pytest.raises(ValueError, match="`std` must be > 0"):
        sig.normalized_visual_certainty(torch.tensor(0.0), mean=0.0, std=0.0)


def test_visual_score_grows_with_kl_and_falls_with_entropy() -> None:
    kl = torch.tensor([0.1, 1.0])
    assert sig.visual_score(kl, torch.tensor(1.0)).diff() > 0
    assert sig.visual_score(torch.tensor(1.0), torch.tensor([0.1, 1.0])).diff() < 0
