"""``fetch_more_views``' ``mode``: its values, its default, and a wrong one reported at FILE:LINE:COL."""

from __future__ import annotations

import pytest

from guardrail.policy import builtin_policy_names, load_policy
from guardrail.types import Action
from tests.support.policy_text import VALID, problems


def test_mode_defaults_to_auto() -> None:
    assert load_policy(VALID).rules[0].params["mode"] == "auto"


@pytest.mark.parametrize("mode", ["auto", "append", "replace"])
def test_every_mode_loads(mode: str) -> None:
    text = VALID.replace("with: {views: 2}", f"with: {{views: 2, mode: {mode}}}")
    assert load_policy(text).rules[0].params == {"views": 2, "provider": "zoom", "mode": mode}


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("replce", "the string 'replce' (did you mean 'replace'?)"),
        ("swap", "the string 'swap'"),
        ("3", "3"),
        ("null", "null"),
    ],
)
def test_a_wrong_mode_is_reported_where_it_is_written(value: str, got: str) -> None:
    text = VALID.replace("with: {views: 2}", f"with: {{views: 2, mode: {value}}}")
    assert problems(text) == [f"p.yaml:6:28: rules[0].with.mode: should be 'auto', 'append' or 'replace', got {got}"]


def test_a_wrong_mode_in_a_block_mapping_points_at_its_line() -> None:
    text = VALID.replace("with: {views: 2}", "with:\n      views: 2\n      mode: Replace")
    [problem] = problems(text)
    assert problem.startswith("p.yaml:8:13: rules[0].with.mode: should be 'auto', 'append' or 'replace', got ")


def test_shipped_policies_leave_the_mode_at_auto() -> None:
    for name in builtin_policy_names():
        for rule in load_policy(name).rules:
            if rule.action is Action.FETCH_MORE_VIEWS:
                assert rule.params["mode"] == "auto", name
