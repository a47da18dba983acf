"""The GRPO reward of METHOD.md section 8 against hand-computed values."""

from __future__ import annotations

import math

import pytest

from guardrail.training import RewardWeights, harmonic_confidence, reward_functions, reward_terms

FULL = (
    "<think><vision>I see a red circle.</vision><reasoning>The shape is red.</reasoning></think> \\boxed{red}"
    "<confidence><vision_confidence>8</vision_confidence><reasoning_confidence>6</reasoning_confidence></confidence>"
)


def test_correct_answer_with_both_scores() -> None:
    # c_hm = 2*0.8*0.6/1.4 = 0.685714...; Brier = -(1 - 0.685714)^2 = -0.0987755; visual = -(0.8 - 0.5)^2 = -0.09
    terms = reward_terms(FULL, "red", 0.5)
    assert terms.correctness == 1.0
    assert terms.calibration == pytest.approx(-0.0987755102)
    assert terms.format == 1.0
    assert terms.visual == pytest.approx(-0.09)
    # R = 1 + 2(-0.0987755) + 0.4(1) + 0.4(-0.09) = 1.1664490
    assert terms.total() == pytest.approx(1.1664489796)


def test_wrong_answer_and_a_zero_score() -> None:
    text = FULL.replace("\\boxed{red}", "\\boxed{blue}").replace(">6<", ">0<").replace(">8<", ">3<")
    terms = reward_terms(text, "red", 0.9)
    # I = 0, c_hm = 0 (r = 0) -> Brier 0; visual -(0.3 - 0.9)^2 = -0.36; R = 0 + 0 + 0.4 - 0.144 = 0.256
    assert (terms.correctness, terms.calibration, terms.format) == (0.0, 0.0, 1.0)
    assert terms.visual == pytest.approx(-0.36)
    assert terms.total() == pytest.approx(0.256)


@pytest.mark.parametrize("bad", ["11", "eight", "-1"])
def test_unparseable_scores_cost_minus_one_per_brier_term(bad: str) -> None:
    terms = reward_terms(FULL.replace(">8<", f">{bad}<"), "red", 0.5)
    assert (terms.calibration, terms.visual, terms.format) == (-1.0, -1.0, 0.0)
    assert terms.total() == pytest.approx(1.0 - 2.0 - 0.4)


def test_missing_target_costs_the_visual_term_only() -> None:
    terms = reward_terms(FULL, "red", math.nan)
    assert terms.visual == -1.0
    assert terms.calibration == pytest.approx(-0.0987755102)


def test_format_needs_every_part() -> None:
    no_vision = FULL.replace("<vision>", "").replace("</vision>", "")
    assert reward_terms(no_vision, "red", 0.5).format == 0.0
    no_box = FULL.replace("\\boxed{red}", "red")
    assert reward_terms(no_box, "red", 0.5).correctness == 0.0


def test_single_score_mode() -> None:
    # one confidence (r = 0.6), Brier against correctness, no visual term: 1 + 2(-(0.4^2)) + 0.4 = 1.08
    terms = reward_terms(FULL, "red", 0.5, mode="single")
    assert terms.calibration == pytest.approx(-0.16)
    assert terms.total(mode="single") == pytest.approx(1.08)


def test_harmonic_confidence() -> None:
    assert harmonic_confidence(0.8, 0.6) == pytest.approx(0.96 / 1.4)
    assert harmonic_confidence(0.0, 1.0) == 0.0


def test_trl_reward_functions_sum_to_the_reward() -> None:
    completions = [[{"role": "assistant", "content": FULL}], FULL.replace("\\boxed{red}", "\\boxed{blue}")]
    answers = ["red", "red"]
    targets = [0.5, 0.2]
    weights = RewardWeights().as_list()
    columns = [f(completions=completions, answer=answers, visual_certainty=targets) for f in reward_functions()]
    assert [f.__name__ for f in reward_functions()] == ["correctness", "calibration_brier", "format", "visual_brier"]
    for i, (text, target) in enumerate(zip([FULL, completions[1]], targets, strict=True)):
        expected = reward_terms(str(text), "red", target).total()
        assert sum(w * c[i] for w, c in zip(weights, columns, strict=True)) == pytest.approx(expected)
    assert len(reward_functions("single")) == len(RewardWeights().as_list("single")) == 3
