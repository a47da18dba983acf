"""Comparing re-scoring results and signals measured two ways (kept row 0 or scored, batched or alone), within float
tolerance: the one notion of "the same" for the scoring and estimator tests."""

from __future__ import annotations

import pytest
import torch

from guardrail import Signals
from guardrail.backends import TeacherForcedScores

ATOL, RTOL = 1e-5, 1e-4


def assert_same_scores(left: TeacherForcedScores, right: TeacherForcedScores) -> None:
    """Every tensor of two scoring results equal within float tolerance (``None`` only where the other is)."""
    torch.testing.assert_close(left.token_logprobs, right.token_logprobs, atol=ATOL, rtol=RTOL)
    for name in ("entropy", "margin", "kl_full", "prompt_logprobs", "prompt_features", "image_features"):
        a, b = getattr(left, name), getattr(right, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=name)
    assert left.prompt_unknown == right.prompt_unknown


def assert_same_signals(left: Signals, right: Signals) -> None:
    """The same problems, sources, features, components and embeddings, within float tolerance."""
    assert left.problems == right.problems
    assert left.sources == right.sources
    assert set(left.features) == set(right.features)
    for name, value in right.features.items():
        assert left.features[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    for component in ("visual", "reasoning", "holistic", "familiarity"):
        a, b = getattr(left, component), getattr(right, component)
        assert (a is None) == (b is None), component
        if a is not None:
            assert a == pytest.approx(b, rel=1e-4, abs=1e-6), component
    assert set(left.embeddings) == set(right.embeddings)
    for side, vector in right.embeddings.items():
        torch.testing.assert_close(torch.tensor(left.embeddings[side]), torch.tensor(vector), atol=ATOL, rtol=RTOL)
