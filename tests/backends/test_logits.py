"""The backend's reductions of next-token logits on tiny hand-made tensors: values, upcasting, inputs untouched."""

from __future__ import annotations

import math

import pytest
import torch

from guardrail.backends import logits as lg

LOGITS = torch.tensor([[[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [5.0, 4.0, -3.0, 0.0]]])  # (1, 3, 4)
TARGETS = torch.tensor([[0, 2, 1]])


def test_token_logprobs_gathers_the_target_log_softmax() -> None:
    before = LOGITS.clone()
    out = lg.token_logprobs(LOGITS, TARGETS)
    expected = torch.log_softmax(LOGITS, -1)[0, [0, 1, 2], [0, 2, 1]]
    assert out.shape == (1, 3)
    torch.testing.assert_close(out[0], expected)
    assert torch.equal(LOGITS, before)


def test_token_logprobs_upcasts_half_precision() -> None:
    out = lg.token_logprobs(LOGITS.bfloat16(), TARGETS)
    assert out.dtype == torch.float32


def test_token_logprobs_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="`targets` must have the shape"):
        lg.token_logprobs(LOGITS, TARGETS[:, :2])


def test_full_kl_is_zero_for_equal_and_positive_otherwise() -> None:
    p = torch.log_softmax(LOGITS[0], -1)
    q = torch.log_softmax(LOGITS[0].flip(-1), -1)
    assert torch.allclose(lg.full_kl(p, p), torch.zeros(3), atol=1e-6)
    kl = lg.full_kl(p, q)
    assert kl.shape == (3,)
    assert kl[0] > 0
    assert kl[2] > 0
    assert float(kl[1]) == pytest.approx(0.0, abs=1e-6)  # uniform row is its own flip


def test_full_kl_handles_zero_probabilities() -> None:
    p = torch.tensor([0.0, -float("inf")])  # one-hot on token 0
    q = torch.log(torch.tensor([0.5, 0.5]))
    assert float(lg.full_kl(p, q)) == pytest.approx(math.log(2.0))


def test_entropy_of_uniform_and_one_hot() -> None:
    uniform = torch.full((4,), math.log(0.25))
    one_hot = torch.tensor([0.0, -float("inf"), -float("inf"), -float("inf")])
    out = lg.entropy(torch.stack([uniform, one_hot]))
    torch.testing.assert_close(out, torch.tensor([math.log(4.0), 0.0]))


def test_top2_margin() -> None:
    logprobs = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.4, 0.4, 0.2]]))
    torch.testing.assert_close(lg.top2_margin(logprobs), torch.tensor([0.3, 0.0]))
