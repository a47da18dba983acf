"""Certified thresholds in YAML: ``{max_error, delta}`` in place of a number, with precise errors."""

from __future__ import annotations

import pytest

from guardrail import PolicyError, load_policy
from guardrail.policy import CertifiedBound

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
