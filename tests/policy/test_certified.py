"""Certified thresholds in YAML: ``{max_error, delta}`` in place of a number, with precise errors."""

from __future__ import annotations

import pytest

from guardrail import PolicyError, load_policy
from guardrail.policy import CertifiedBound, Condition, Threshold

TEMPLATE = (
    "version: 1\nname: c\nrules:\n  - when: {{overall: {{below: {bound}}}}}\n    do: escalate\notherwise: accept\n"
)


def test_a_certified_bound_loads_and_is_listed() -> None:
    policy = load_policy(TEMPLATE.format(bound="{max_error: 0.05, delta: 0.1}"))
    assert policy.certified_bounds() == [
        ("rules[0].when.overall.below", "overall", "below", CertifiedBound(max_error=0.05, delta=0.1))
    ]
    resolved = policy.with_certified(lambda component, bound: 0.8)
    assert resolved.certified_bounds() == []
    assert resolved.rules[0].when.overall is not None
    assert resolved.rules[0].when.overall.below == 0.8
    assert resolved.rules[0].name == policy.rules[0].name


@pytest.mark.parametrize(
    ("bound", "problem"),
    [
        ("{max_error: 2, delta: 0.1}",
         "<string>:4:41: rules[0].when.overall.below.max_error: should be less than 1, got 2"),
        ("{max_error: 0.1}", "<string>:4:29: rules[0].when.overall.below.delta: required key is missing"),
        ("{max_eror: 0.1, delta: 0.1}",
         "<string>:4:30: rules[0].when.overall.below.max_eror: unknown key; expected one of: max_error, delta "
         "(did you mean 'max_error'?)"),
        ('"x"', "<string>:4:29: rules[0].when.overall.below: should be a number, got the string 'x'"),
    ],
)  # fmt: skip
def test_bad_certified_bounds_point_at_the_key(bound: str, problem: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(TEMPLATE.format(bound=bound))
    assert problem in [p.format() for p in info.value.problems]


FAMILIARITY_REFUSED = (
    "a certified threshold {max_error, delta} is not allowed for familiarity: its thresholds are plain numbers in "
    "[0, 1] (familiarity is a p-value: 'below: t' fires on at most a fraction t of inputs like the calibration data)"
)


@pytest.mark.parametrize("op", ["below", "at_most", "above", "at_least"])
def test_familiarity_refuses_certified_bounds_at_the_key(op: str) -> None:
    text = TEMPLATE.replace("overall: {{below:", f"familiarity: {{{{{op}:").format(
        bound="{max_error: 0.05, delta: 0.1}"
    )
    with pytest.raises(PolicyError) as info:
        load_policy(text, source="p.yaml")
    column = 29 + len("familiarity") - len("overall") + len(op) - len("below")
    assert [p.format() for p in info.value.problems] == [
        f"p.yaml:4:{column}: rules[0].when.familiarity.{op}: {FAMILIARITY_REFUSED}"
    ]


def test_familiarity_refuses_certified_bounds_from_python_too() -> None:
    with pytest.raises(ValueError, match="not allowed for familiarity"):
        Condition(familiarity=Threshold(below=CertifiedBound(max_error=0.05, delta=0.1)))
    plain = Condition(familiarity=Threshold(below=0.01))
    assert plain.familiarity is not None
    assert plain.familiarity.matches(0.005) is True
    assert plain.familiarity.matches(None) is False
