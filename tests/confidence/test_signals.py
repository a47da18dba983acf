"""The token-level signal functions on tiny hand-made tensors: values, clamps, invariants, inputs untouched."""

from __future__ import annotations

import math

import pytest
import torch

from guardrail.confidence import signals as sig

LOGITS = torch.tensor([[[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [5.0, 4.0, -3.0, 0.0]]])  # (1, 3, 4)
TARGETS = torch.tensor([[0, 2, 1]])


def test_token_logprobs_gathers_the_target_log_softmax() -> None:
    before = LOGITS.clone()
    out = sig.token_logprobs(LOGITS, TARGETS)
    expected = torch.log_softmax(LOGITS, -1)[0, [0, 1, 2], [0, 2, 1]]
    assert out.shape == (1, 3)
    torch.testing.assert_close(out[0], expected)
    assert torch.equal(LOGITS, before)


def test_token_logprobs_upcasts_half_precision() -> None:
    out = sig.token_logprobs(LOGITS.bfloat16(), TARGETS)
    assert out.dtype == torch.float32


def test_token_logprobs_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="`targets` must have the shape"):
        sig.token_logprobs(LOGITS, TARGETS[:, :2])


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


def test_full_kl_is_zero_for_equal_and_positive_otherwise() -> None:
    p = torch.log_softmax(LOGITS[0], -1)
    q = torch.log_softmax(LOGITS[0].flip(-1), -1)
    assert torch.allclose(sig.full_kl(p, p), torch.zeros(3), atol=1e-6)
    kl = sig.full_kl(p, q)
    assert kl.shape == (3,)
    assert kl[0] > 0
    assert kl[2] > 0
    assert float(kl[1]) == pytest.approx(0.0, abs=1e-6)  # uniform row is its own flip


def test_full_kl_handles_zero_probabilities() -> None:
    p = torch.tensor([0.0, -float("inf")])  # one-hot on token 0
    q = torch.log(torch.tensor([0.5, 0.5]))
    assert float(sig.full_kl(p, q)) == pytest.approx(math.log(2.0))


def test_entropy_of_uniform_and_one_hot() -> None:
    uniform = torch.full((4,), math.log(0.25))
    one_hot = torch.tensor([0.0, -float("inf"), -float("inf"), -float("inf")])
    out = sig.entropy(torch.stack([uniform, one_hot]))
    torch.testing.assert_close(out, torch.tensor([math.log(4.0), 0.0]))


def test_surprisal_is_minus_logp_and_never_negative() -> None:
    torch.testing.assert_close(sig.surprisal(torch.tensor([-2.0, 0.0, 1e-9])), torch.tensor([2.0, 0.0, 0.0]))


def test_top2_margin() -> None:
    logprobs = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.4, 0.4, 0.2]]))
    torch.testing.assert_close(sig.top2_margin(logprobs), torch.tensor([0.3, 0.0]))


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
