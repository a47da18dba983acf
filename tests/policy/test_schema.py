"""The policy schema: what a policy may say, its defaults, and the meaning of each comparison."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from guardrail.policy import AttemptCondition, Budget, Condition, Policy, Threshold
from guardrail.types import COMPONENTS


def policy(**extra: Any) -> Policy:
    """A minimal valid policy, with ``extra`` keys merged in."""
    return Policy.model_validate({"version": 1, "name": "t", "otherwise": "accept", **extra})


def test_defaults_fail_closed() -> None:
    p = policy()
    assert p.rules == ()
    assert p.budget == Budget(max_attempts=3, max_seconds=30.0)
    assert p.on_exhausted.do == "abstain"
    assert p.on_error.do == "abstain"


def test_shorthand_and_long_form_are_the_same_policy() -> None:
    assert policy(on_error="escalate") == policy(on_error={"do": "escalate"})


def test_parameters_get_their_defaults() -> None:
    p = policy(rules=[{"when": {"visual": {"below": 0.5}}, "do": "fetch_more_views"}])
    assert p.rules[0].params == {"views": 2, "provider": "zoom", "mode": "auto"}
    assert p.rules[0].action.value == "fetch_more_views"


def test_fallback_needs_a_model() -> None:
    with pytest.raises(ValidationError, match=r"otherwise\.fallback\.with\n  Field required"):
        policy(otherwise="fallback")
    assert policy(otherwise={"do": "fallback", "with": {"model": "big"}}).otherwise.params == {"model": "big"}


@pytest.mark.parametrize("field", ["on_exhausted", "on_error"])
def test_accept_is_never_a_fallback_outcome(field: str) -> None:
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        policy(**{field: "accept"})


def test_rule_label_includes_the_name() -> None:
    p = policy(rules=[{"when": {"overall": {"below": 0.1}}, "do": "abstain"}, {"name": "n", **_escalate()}])
    assert p.rule_label(0) == "rules[0]"
    assert p.rule_label(1) == "rules[1] n"


def _escalate() -> dict[str, Any]:
    return {"when": {"overall": {"below": 0.2}}, "do": "escalate"}


def test_policies_are_immutable() -> None:
    p = policy()
    with pytest.raises(ValidationError, match="frozen"):
        p.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("threshold", "value", "expected"),
    [
        ({"below": 0.5}, 0.49, True),
        ({"below": 0.5}, 0.5, False),
        ({"at_most": 0.5}, 0.5, True),
        ({"above": 0.5}, 0.5, False),
        ({"at_least": 0.5}, 0.5, True),
        ({"at_least": 0.3, "below": 0.7}, 0.5, True),
        ({"at_least": 0.3, "below": 0.7}, 0.7, False),
        ({"unknown": False, "below": 0.5}, 0.2, True),
    ],
)
def test_threshold_comparisons(threshold: dict[str, Any], value: float, expected: bool) -> None:
    assert Threshold.model_validate(threshold).matches(value) is expected


@pytest.mark.parametrize("threshold", [{"below": 0.5}, {"at_least": 0.5}, {"above": 0.0}, {"at_most": 1.0}])
def test_numeric_comparisons_never_match_an_unknown(threshold: dict[str, Any]) -> None:
    assert Threshold.model_validate(threshold).matches(None) is False


def test_unknown_true_matches_only_unknowns_and_unknown_false_only_knowns() -> None:
    assert Threshold(unknown=True).matches(None) is True
    assert Threshold(unknown=True).matches(0.5) is False
    assert Threshold(unknown=False).matches(None) is False
    assert Threshold(unknown=False).matches(0.0) is True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "a threshold needs at least one of"),
        ({"unknown": True, "below": 0.5}, "cannot be combined with numeric comparisons"),
        ({"below": 1.01}, "less than or equal to 1"),
        ({"above": -0.01}, "greater than or equal to 0"),
        ({"below": float("nan")}, "finite number"),
    ],
)
def test_invalid_thresholds(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Threshold.model_validate(data)


def test_attempt_condition() -> None:
    assert AttemptCondition(below=1).matches(0) is True
    assert AttemptCondition(below=1).matches(1) is False
    assert AttemptCondition(at_least=2).matches(2) is True
    with pytest.raises(ValidationError, match="needs below or at_least"):
        AttemptCondition()


def test_a_condition_needs_something_to_compare() -> None:
    with pytest.raises(ValidationError, match="'when' needs at least one of"):
        Condition()
    cond = Condition.model_validate({"overall": {"below": 0.1}, "visual": {"unknown": True}})
    assert [name for name, _ in cond.components()] == ["visual", "overall"]
    every = Condition.model_validate({name: {"unknown": True} for name in reversed(COMPONENTS)})
    assert [name for name, _ in every.components()] == list(COMPONENTS)


def test_describe_reads_like_the_rule() -> None:
    assert Threshold(below=0.5).describe("visual", 0.31) == "visual 0.31 < 0.5"
    assert Threshold(unknown=True).describe("visual", None) == "visual is unknown"
    assert Threshold(below=0.01).describe("familiarity", 0.002) == "familiarity 0.002 < 0.01"


@pytest.mark.parametrize("budget", [{"max_attempts": 0}, {"max_attempts": 101}, {"max_seconds": 0}])
def test_budget_bounds(budget: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="budget"):
        policy(budget=budget)


def test_no_time_limit_is_allowed() -> None:
    assert policy(budget={"max_seconds": None}).budget.max_seconds is None
