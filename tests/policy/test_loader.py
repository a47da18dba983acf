"""The policy loader: schema problems mapped back to FILE:LINE:COL and key paths, and finding policies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import guardrail.policy
from guardrail.errors import PolicyError, PolicyProblem
from guardrail.policy import Policy, builtin_policy_names, check_policy_file, load_builtin_policy, load_policy
from guardrail.policy.loader import _path_of
from tests.support.policy_text import ACTIONS, TOP_KEYS, VALID, problems


def test_a_valid_policy_loads() -> None:
    policy = load_policy(VALID, source="p.yaml")
    assert isinstance(policy, Policy)
    assert policy.name == "tiny"
    assert policy.rules[0].params == {"views": 2, "provider": "zoom", "mode": "auto"}


def test_public_surface_is_pinned() -> None:
    assert sorted(guardrail.policy.__all__) == [
        "AbstainParams", "ActionSpec", "AttemptCondition", "Bound", "Budget", "CertifiedBound", "Condition",
        "EscalateParams", "FallbackParams", "FamiliarityThreshold", "FetchMoreViewsParams", "Policy", "ReAskParams",
        "Rule", "Threshold",
        "builtin_policy_names", "check_policy_file", "decide",
        "load_builtin_policy", "load_policy",
    ]  # fmt: skip


@pytest.mark.parametrize(("text", "got"), [("- a\n- b\n", "a list"), ("just words\n", "the string 'just words'")])
def test_top_level_must_be_a_mapping(text: str, got: str) -> None:
    assert problems(text) == [f"p.yaml:1:1: the top level must be a mapping of policy keys ({TOP_KEYS}), got {got}"]


# ---------------------------------------------------------------------------------------------------------------
# Schema problems mapped back from pydantic


def test_unknown_keys_point_at_the_key_and_suggest() -> None:
    text = """\
    version: 1
    name: x
    budgt: {max_attempts: 2}
    rules:
      - when: {visul: {below: 0.5}}
        do: re_ask
        with: {prompt: again, temprature: 0.5}
    otherwise: accept
    """
    assert problems(text) == [
        f"p.yaml:3:1: budgt: unknown key; expected one of: {TOP_KEYS} (did you mean 'budget'?)",
        "p.yaml:5:12: rules[0].when.visul: unknown key; expected one of: visual, reasoning, overall, familiarity, "
        "stability, attempt (did you mean 'visual'?)",
        "p.yaml:7:27: rules[0].with.temprature: unknown key; expected one of: prompt, temperature, keep_percept, "
        "samples (did you mean 'temperature'?)",
    ]


def test_an_extra_key_named_like_the_action_is_still_found() -> None:
    text = (
        "version: 1\nname: x\notherwise: accept\nrules:\n  - {when: {overall: {below: 0.1}}, do: re_ask, re_ask: 2}\n"
    )
    assert problems(text) == ["p.yaml:5:49: rules[0].re_ask: unknown key; expected one of: name, when, do, with"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1.5", "got 1.5"),
        ("-0.1", "got -0.1"),
        (".nan", "got .nan"),
        (".inf", "got .inf"),
    ],
)
def test_thresholds_outside_0_1_are_refused(value: str, message: str) -> None:
    rule = f"  - when: {{reasoning: {{at_least: {value}}}}}\n    do: abstain\n"
    text = f"version: 1\nname: x\notherwise: accept\nrules:\n{rule}"
    assert problems(text) == [
        f"p.yaml:5:34: rules[0].when.reasoning.at_least: threshold must be a probability in [0, 1], {message}"
    ]


def test_familiarity_thresholds_are_checked_like_the_others() -> None:
    text = """\
    version: 1
    name: x
    otherwise: accept
    rules:
      - when: {familiarity: {below: 1.5}}
        do: abstain
      - when: {familarity: {below: 0.01}}
        do: abstain
      - when: {familiarity: {unknown: true, below: 0.01}}
        do: abstain
      - when: {familiarity: {at_least: "often"}}
        do: abstain
    """
    assert problems(text) == [
        "p.yaml:5:33: rules[0].when.familiarity.below: threshold must be a probability in [0, 1], got 1.5",
        "p.yaml:7:12: rules[1].when.familarity: unknown key; expected one of: visual, reasoning, overall, "
        "familiarity, stability, attempt (did you mean 'familiarity'?)",
        "p.yaml:9:25: rules[2].when.familiarity: 'unknown: true' cannot be combined with numeric comparisons "
        "(an unknown has no value)",
        "p.yaml:11:36: rules[3].when.familiarity.at_least: should be a number, got the string 'often'",
    ]


def test_a_valid_familiarity_rule_loads() -> None:
    text = "version: 1\nname: x\notherwise: accept\nrules:\n  - {when: {familiarity: {below: 0.01}}, do: abstain}\n"
    condition = load_policy(text).rules[0].when
    assert [name for name, _ in condition.components()] == ["familiarity"]
    assert condition.familiarity is not None
    assert condition.familiarity.below == 0.01


def test_wrong_types_name_the_expected_type_and_the_value() -> None:
    text = """\
    version: "one"
    name: [a, b]
    budget: {max_attempts: many, max_seconds: -1}
    rules:
      - when: 5
        do: abstain
      - when: {visual: true}
        do: abstain
    otherwise: accept
    """
    assert problems(text) == [
        "p.yaml:1:10: version: should be 1, got the string 'one'",
        "p.yaml:2:7: name: should be a string, got a list",
        "p.yaml:3:24: budget.max_attempts: should be an integer, got the string 'many'",
        "p.yaml:3:43: budget.max_seconds: should be greater than 0, got -1",
        "p.yaml:5:11: rules[0].when: should be a mapping, got 5",
        "p.yaml:7:20: rules[1].when.visual: should be a mapping, got true",
    ]


BOOLEAN = " (a boolean: YAML reads true, false, yes, no, on and off as booleans, never as numbers)"


def test_a_boolean_or_a_string_is_never_a_number_and_a_number_never_a_boolean() -> None:
    # Issue 27, item 6: read laxly, at_least: false was >= 0 (always true), below: true was < 1 and
    # below: "0.5" was < 0.5, and `guardrail policy check` said OK.
    text = """\
    version: true
    name: strict
    budget: {max_attempts: true, max_seconds: "30"}
    rules:
      - when: {visual: {at_least: false}, overall: {below: true}}
        do: accept
      - when: {reasoning: {below: "0.5"}, familiarity: {above: yes}, attempt: {at_least: on}}
        do: re_ask
        with: {temperature: "0.7"}
      - when: {visual: {unknown: 1}, overall: {below: {max_error: "0.1", delta: false}}}
        do: fetch_more_views
        with: {views: "2"}
      - when: {reasoning: {unknown: "true"}, attempt: {below: 2.0}}
        do: abstain
    otherwise: accept
    """
    assert problems(text) == [
        "p.yaml:1:10: version: should be 1 (the number), got true",
        f"p.yaml:3:24: budget.max_attempts: should be an integer, got true{BOOLEAN}",
        "p.yaml:3:43: budget.max_seconds: should be a number, got the string '30' (quoted, so text: write 30 "
        "without quotes)",
        f"p.yaml:5:31: rules[0].when.visual.at_least: should be a number, got false{BOOLEAN}",
        f"p.yaml:5:56: rules[0].when.overall.below: should be a number, got true{BOOLEAN}",
        "p.yaml:7:31: rules[1].when.reasoning.below: should be a number, got the string '0.5' (quoted, so text: "
        "write 0.5 without quotes)",
        f"p.yaml:7:60: rules[1].when.familiarity.above: should be a number, got true{BOOLEAN}",
        f"p.yaml:7:86: rules[1].when.attempt.at_least: should be an integer, got true{BOOLEAN}",
        "p.yaml:9:25: rules[1].with.temperature: should be a number, got the string '0.7' (quoted, so text: write "
        "0.7 without quotes)",
        "p.yaml:10:30: rules[2].when.visual.unknown: should be true or false, got 1",
        "p.yaml:10:63: rules[2].when.overall.below.max_error: should be a number, got the string '0.1' (quoted, so "
        "text: write 0.1 without quotes)",
        f"p.yaml:10:77: rules[2].when.overall.below.delta: should be a number, got false{BOOLEAN}",
        "p.yaml:12:19: rules[2].with.views: should be an integer, got the string '2' (quoted, so text: write 2 "
        "without quotes)",
        "p.yaml:13:33: rules[3].when.reasoning.unknown: should be true or false, got the string 'true'",
        "p.yaml:13:59: rules[3].when.attempt.below: should be an integer, got 2.0",
    ]


def test_an_integer_is_a_number() -> None:
    policy = load_policy(
        "version: 1\nname: n\nbudget: {max_seconds: 5}\nrules:\n  - when: {visual: {at_least: 1}}\n"
        "    do: re_ask\n    with: {temperature: 1}\notherwise: accept\n"
    )
    assert policy.budget.max_seconds == 5.0
    threshold = policy.rules[0].when.visual
    assert threshold is not None
    assert threshold.at_least == 1.0
    assert threshold.matches(1.0)
    assert not threshold.matches(0.999)


def test_rules_must_be_a_list() -> None:
    assert problems("version: 1\nname: x\notherwise: accept\nrules: {when: {}}\n") == [
        "p.yaml:4:8: rules: should be a list, got a mapping"
    ]


def test_unknown_actions_point_at_the_do_value_and_list_the_valid_ones() -> None:
    text = """\
    version: 1
    name: x
    rules:
      - when: {visual: {below: 0.5}}
        do: escalte
    otherwise: {do: acept}
    """
    assert problems(text) == [
        f"p.yaml:5:9: rules[0].do: unknown action 'escalte'; expected one of: {ACTIONS} (did you mean 'escalate'?)",
        f"p.yaml:6:17: otherwise.do: unknown action 'acept'; expected one of: {ACTIONS} (did you mean 'accept'?)",
    ]


def test_a_rule_with_an_unknown_action_still_has_its_condition_checked() -> None:
    text = "version: 1\nname: x\notherwise: accept\nrules:\n  - {when: {visual: {below: 2}}, do: 5, extra: 1}\n"
    assert problems(text) == [
        "p.yaml:5:29: rules[0].when.visual.below: threshold must be a probability in [0, 1], got 2",
        f"p.yaml:5:38: rules[0].do: unknown action '5'; expected one of: {ACTIONS}",
        "p.yaml:5:41: rules[0].extra: unknown key; expected one of: name, when, do, with",
    ]


def test_on_exhausted_allows_only_abstain_or_escalate() -> None:
    assert problems("version: 1\nname: x\notherwise: accept\non_exhausted: re_ask\n") == [
        "p.yaml:4:15: on_exhausted: action 're_ask' is not allowed in on_exhausted (when the budget is spent "
        "the call must end without an unchecked answer); expected one of: abstain, escalate"
    ]


def test_on_error_never_accepts() -> None:
    assert problems("version: 1\nname: x\notherwise: accept\non_error:\n  do: accept\n") == [
        "p.yaml:5:7: on_error.do: action 'accept' is not allowed in on_error (fail closed: a failed stage never "
        "yields an unchecked answer); expected one of: abstain, escalate, re_ask, fallback"
    ]


def test_on_uncalibrated_allows_only_abstain_or_escalate() -> None:
    assert problems("version: 1\nname: x\notherwise: accept\non_uncalibrated: accept\n") == [
        "p.yaml:4:18: on_uncalibrated: action 'accept' is not allowed in on_uncalibrated (raw scores are not "
        "probabilities: only accept_uncalibrated: true lets the rules accept them); expected one of: abstain, escalate"
    ]


@pytest.mark.parametrize(("value", "got"), [('"true"', "the string 'true'"), ("1", "1"), ("0.5", "0.5")])
def test_accept_uncalibrated_is_true_or_false_only(value: str, got: str) -> None:
    assert problems(f"version: 1\nname: x\notherwise: accept\naccept_uncalibrated: {value}\n") == [
        f"p.yaml:4:22: accept_uncalibrated: should be true or false, got {got}"
    ]


def test_the_uncalibrated_keys_load() -> None:
    text = "version: 1\nname: x\notherwise: accept\naccept_uncalibrated: true\non_uncalibrated: escalate\n"
    policy = load_policy(text, source="p.yaml")
    assert (policy.accept_uncalibrated, policy.on_uncalibrated.action.value) == (True, "escalate")
    default = load_policy(VALID, source="p.yaml")
    assert (default.accept_uncalibrated, default.on_uncalibrated.action.value) == (False, "abstain")


def test_missing_keys_point_at_the_mapping_that_lacks_them() -> None:
    text = """\
    version: 1
    rules:
      - do: abstain
      - when: {overall: {below: 0.2}}
      - when: {overall: {below: 0.2}}
        do: fallback
    """
    assert problems(text) == [
        "p.yaml:1:1: name: required key is missing",
        "p.yaml:1:1: otherwise: required key is missing",
        "p.yaml:3:5: rules[0].when: required key is missing",
        f"p.yaml:4:5: rules[1].do: required key is missing (the action: {ACTIONS})",
        "p.yaml:5:5: rules[2].with: required key is missing",
    ]


def test_model_level_rules_are_reported_at_their_mapping() -> None:
    text = """\
    version: 1
    name: x
    otherwise: accept
    rules:
      - {when: {}, do: abstain}
      - {when: {visual: {unknown: true, below: 0.5}}, do: abstain}
    """
    assert problems(text) == [
        "p.yaml:5:12: rules[0].when: 'when' needs at least one of visual, reasoning, overall, familiarity, stability, "
        "attempt",
        "p.yaml:6:21: rules[1].when.visual: 'unknown: true' cannot be combined with numeric comparisons "
        "(an unknown has no value)",
    ]


def test_every_problem_of_a_file_is_reported_in_file_order() -> None:
    text = """\
    version: 1
    name: x
    budget: {max_attempts: 0}
    rules:
      - when: {visual: {below: 1.5}}
        do: fetch_more_views
        with: {views: 0}
      - when: {overall: {below: 0.2}}
        do: re_ask
        do: escalate
    otherwise: acept
    on_error: accept
    """
    found = problems(text)
    assert [line.split(": ", 1)[0] for line in found] == [
        "p.yaml:3:24", "p.yaml:5:28", "p.yaml:7:19", "p.yaml:10:5", "p.yaml:11:12", "p.yaml:12:11",
    ]  # fmt: skip


def test_loc_with_a_discriminator_tag_maps_to_the_written_path() -> None:
    data = {"rules": [{"do": "fetch_more_views", "with": {"views": 0}}], "otherwise": "accept"}
    assert _path_of(("rules", 0, "fetch_more_views", "with", "views"), data) == ("rules", 0, "with", "views")
    assert _path_of(("otherwise", "accept", "with"), data) == ("otherwise", "with")
    assert _path_of(("rules", 0, "fetch_more_views", "fetch_more_views"), data) == ("rules", 0, "fetch_more_views")


def test_the_error_text_carries_a_snippet_with_a_caret() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("version: 1\nname: x\notherwise: acept\n", source="p.yaml")
    assert str(info.value) == (
        f"p.yaml:3:12: otherwise: unknown action 'acept'; expected one of: {ACTIONS} (did you mean 'accept'?)\n"
        "    otherwise: acept\n"
        "               ^"
    )


# ---------------------------------------------------------------------------------------------------------------
# Finding policies: files, built-in names, text


def test_builtin_names_resolve_to_shipped_files() -> None:
    assert set(builtin_policy_names()) >= {"default", "strict", "cost-aware"}
    assert load_policy("strict") == load_builtin_policy("strict")
    assert load_policy("strict").name == "strict"


@pytest.mark.parametrize("name", ["default", "strict", "cost-aware"])
def test_every_shipped_policy_loads_and_checks_clean(name: str) -> None:
    policy = load_builtin_policy(name)
    assert policy.name == name
    assert policy.rules
    path = Path(guardrail.policy.__file__).parent.parent / "policies" / f"{name}.yaml"
    assert check_policy_file(path) == []


def test_an_existing_path_wins_over_a_builtin_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "default").write_text(VALID)
    monkeypatch.chdir(tmp_path)
    assert load_policy("default").name == "tiny"


def test_an_unknown_name_lists_the_builtins() -> None:
    with pytest.raises(PolicyError, match=r"^nosuch:1:1: no such file, and no built-in policy named 'nosuch' "):
        load_policy("nosuch")
    with pytest.raises(PolicyError, match=r"built-ins: cost-aware, default, scenes, strict"):
        load_builtin_policy("nosuch")


def test_a_missing_file_is_a_problem(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert check_policy_file(missing) == [
        PolicyProblem(str(missing), 1, 1, "cannot read the file: No such file or directory")
    ]
    with pytest.raises(PolicyError, match="cannot read the file: No such file or directory"):
        load_policy(missing)


def test_files_are_named_by_their_path(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nname: x\notherwise: acept\n")
    (problem,) = check_policy_file(path)
    assert (problem.source, problem.line, problem.column) == (str(path), 3, 12)
    assert problem.snippet == "otherwise: acept"
    assert check_policy_file(os.fspath(tmp_path / "p.yaml"))[0].source == str(path)


def test_valid_files_have_no_problems(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    assert check_policy_file(path) == []
    assert load_policy(path).name == "tiny"


def test_text_without_source_is_named_string() -> None:
    with pytest.raises(PolicyError, match=r"^<string>:1:1: "):
        load_policy("- a\n- b\n")
