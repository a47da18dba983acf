"""Comparing re-scoring results and signals measured two ways (kept row 0 or scored, batched or alone): the one
notion of "the same" for the scoring and estimator tests, ``assert_same_model_output`` (exact values exactly, floats
within ``MODEL_OUTPUT_TOLERANCE``) applied to every field."""

from __future__ import annotations

from guardrail import Signals
from guardrail.backends import TeacherForcedScores
from tests.support.model_outputs import assert_same_model_output


def assert_same_scores(left: TeacherForcedScores, right: TeacherForcedScores) -> None:
    """Every tensor of two scoring results equal within float tolerance (``None`` only where the other is), the
    count of unknown prompt tokens exactly."""
    assert_same_model_output(left, right, name="scores")


def assert_same_signals(left: Signals, right: Signals) -> None:
    """The same problems and sources (exactly), features, components and embeddings (within float tolerance)."""
    assert_same_model_output(left, right, name="signals")
