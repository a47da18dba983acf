"""The absolute visual target: the shipped artifact's calibrated visual confidence of a rollout."""

from __future__ import annotations

import math

import pytest
import torch

from guardrail.reference import reference_model_path
from guardrail.training.tar import visual_scores
from guardrail.training.targets import GuardVisualTarget, visual_statistic
from guardrail.types import Signals

ARTIFACT = reference_model_path() / "guardrail_calibration.json"


def test_the_target_is_the_artifacts_calibration_of_the_normalised_statistic() -> None:
    target = GuardVisualTarget.from_artifact(ARTIFACT)
    s = torch.tensor([-4.0, 0.0, 2.9, 6.0, math.nan], dtype=torch.float64)
    got = target(s)
    norm = target.normalization
    # what the guard itself says for an answer whose probe measured these statistics (no stability fall, no shift)
    guard = [target.calibrator.calibrate(Signals(visual=norm.apply(float(x)))).visual for x in s[:4]]
    assert got[:4].tolist() == pytest.approx(guard, abs=1e-12)
    assert math.isnan(float(got[4]))
    assert bool((got[:4] >= 0).all() and (got[:4] <= 1).all())
    assert bool((got[:4].diff() >= 0).all())  # monotone in s


def test_the_target_does_not_depend_on_the_rest_of_the_batch() -> None:
    target = GuardVisualTarget.from_artifact(ARTIFACT)
    alone = target(torch.tensor([1.0]))
    with_others = target(torch.tensor([1.0, 8.0, 9.0, 10.0]))
    assert float(alone[0]) == float(with_others[0])
    # the batch z-score of METHOD.md section 8 maps the same score to very different targets in these two batches


def test_the_artifacts_probe_setting_is_used() -> None:
    target = GuardVisualTarget.from_artifact(ARTIFACT)
    assert (target.probe.perturbation, target.probe.blackout_probability) == ("blackout", 1.0)
    assert target.grounding_weight == pytest.approx(0.1)


def test_visual_statistic_at_weight_one_is_the_papers_score() -> None:
    logp = torch.log(torch.tensor([[0.9, 0.5, 0.2], [0.7, 0.6, 0.99]]))
    logq = torch.log(torch.tensor([[0.3, 0.5, 0.1], [0.7, 0.2, 0.5]]))
    vision = torch.tensor([[True, True, False], [False, False, False]])
    paper = visual_scores(logp, logq, vision)
    assert torch.allclose(visual_statistic(logp, logq, vision, grounding_weight=1.0)[:1], paper[:1])
    assert math.isnan(float(visual_statistic(logp, logq, vision, grounding_weight=0.1)[1]))
