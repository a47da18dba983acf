"""The decision engine: rule order, unknown components, budgets, errors, and properties over any input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.policy import Policy, decide, load_builtin_policy
from guardrail.policy.engine import decide_on_error, decide_on_exhausted
from guardrail.types import COMPONENTS, Action, Confidence, ErrorInfo

SHIPPED = ("default", "strict", "cost-aware")


def make(rules: list[dict[str, Any]], **extra: Any) -> Policy:
    """A policy with ``rules``; ``otherwise: accept`` unless ``extra`` says otherwise."""
    return Policy.model_validate({"version": 1, "name": "t", "otherwise": "accept", "rules": rules, **extra})


def conf(
    visual: float | None = None,
    reasoning: float | None = None,
    overall: float | None = None,
    familiarity: float | None = None,
) -> Confidence:
    return Confidence(visual=visual, reasoning=reasoning, overall=overall, familiarity=familiarity)


LOW_VISUAL = {"when": {"visual": {"below": 0.5}}, "do": "fetch_more_views", "with": {"views": 3}}
LOW_OVERALL = {"name": "weak", "when": {"overall": {"below": 0.5}}, "do": "escalate"}


def test_first_matching_rule_wins() -> None:
    both = conf(visual=0.1, reasoning=0.9, overall=0.1)
    first = decide(make([LOW_VISUAL, LOW_OVERALL]), both, attempt=0)
    assert (first.action, first.rule, first.params) == (
        Action.FETCH_MORE_VIEWS,
        "rules[0]",
        {"views": 3, "provider": "zoom", "mode": "auto"},
    )
    swapped = decide(make([LOW_OVERALL, LOW_VISUAL]), both, attempt=0)
    assert (swapped.action, swapped.rule) == (Action.ESCALATE, "rules[0] weak")


def test_otherwise_when_nothing_matches() -> None:
    decision = decide(make([LOW_VISUAL], otherwise="abstain"), conf(0.9, 0.9, 0.9), attempt=0)
    assert (decision.action, decision.rule, decision.reason) == (Action.ABSTAIN, "otherwise", "no rule matched")


def test_conditions_are_anded() -> None:
    rule = {"when": {"visual": {"below": 0.5}, "reasoning": {"at_least": 0.5}}, "do": "abstain"}
    p = make([rule])
    assert decide(p, conf(0.4, 0.6), attempt=0).action is Action.ABSTAIN
    assert decide(p, conf(0.4, 0.4), attempt=0).action is Action.ACCEPT


def test_the_reason_names_the_values() -> None:
    decision = decide(make([LOW_VISUAL]), conf(visual=0.31), attempt=0)
    assert decision.reason == "visual 0.31 < 0.5"


@pytest.mark.parametrize("component", ["visual", "familiarity"])
@pytest.mark.parametrize("op", ["below", "at_most", "above", "at_least"])
def test_numeric_comparisons_never_match_an_unknown_component(op: str, component: str) -> None:
    p = make([{"when": {component: {op: 0.5}}, "do": "abstain"}])
    assert decide(p, conf(visual=None, overall=0.9, familiarity=None), attempt=0).rule == "otherwise"


UNFAMILIAR = {"name": "unfamiliar", "when": {"familiarity": {"below": 0.01}}, "do": "abstain"}


def test_familiarity_is_compared_like_the_other_components() -> None:
    p = make([UNFAMILIAR])
    decision = decide(p, conf(0.99, 0.99, 0.99, familiarity=0.002), attempt=0)
    assert (decision.action, decision.rule, decision.reason) == (
        Action.ABSTAIN,
        "rules[0] unfamiliar",
        "familiarity 0.002 < 0.01",
    )
    assert decide(p, conf(0.99, 0.99, 0.99, familiarity=0.01), attempt=0).action is Action.ACCEPT
    assert decide(p, conf(0.99, 0.99, 0.99, familiarity=None), attempt=0).action is Action.ACCEPT


def test_stability_is_compared_like_familiarity_and_refuses_certified_thresholds() -> None:
    fragile = make([{"name": "fragile", "when": {"stability": {"below": 0.6}}, "do": "fetch_more_views"}])
    decision = decide(fragile, Confidence(visual=0.9, overall=0.9, stability=0.5), attempt=0)
    assert (decision.action, decision.rule, decision.reason) == (
        Action.FETCH_MORE_VIEWS,
        "rules[0] fragile",
        "stability 0.5 < 0.6",
    )
    assert decision.components == ("stability",)
    assert decide(fragile, Confidence(visual=0.9, stability=0.6), attempt=0).action is Action.ACCEPT
    assert decide(fragile, Confidence(visual=0.9), attempt=0).action is Action.ACCEPT  # not measured: no match
    with pytest.raises(ValueError, match="not allowed for stability"):
        make([{"when": {"stability": {"below": {"max_error": 0.1, "delta": 0.1}}}, "do": "abstain"}])


def test_familiarity_unknown_and_ands_with_other_components() -> None:
    unmeasured = make([{"when": {"familiarity": {"unknown": True}}, "do": "escalate"}])
    decision = decide(unmeasured, conf(0.9, 0.9, 0.9), attempt=0)
    assert (decision.action, decision.reason) == (Action.ESCALATE, "familiarity is unknown")
    assert decide(unmeasured, conf(0.9, 0.9, 0.9, familiarity=0.5), attempt=0).action is Action.ACCEPT
    both = make([{"when": {"familiarity": {"at_most": 0.05}, "overall": {"below": 0.8}}, "do": "abstain"}])
    decision = decide(both, conf(overall=0.5, familiarity=0.05), attempt=0)
    assert decision.reason == "overall 0.5 < 0.8 and familiarity 0.05 <= 0.05"
    assert decide(both, conf(overall=0.9, familiarity=0.01), attempt=0).action is Action.ACCEPT


def test_unknown_true_catches_unknown_components() -> None:
    p = make([{"when": {"reasoning": {"unknown": True}}, "do": "escalate"}, LOW_VISUAL])
    decision = decide(p, conf(visual=0.1, reasoning=None), attempt=0)
    assert (decision.action, decision.rule, decision.reason) == (Action.ESCALATE, "rules[0]", "reasoning is unknown")
    assert decide(p, conf(visual=0.1, reasoning=0.2), attempt=0).action is Action.FETCH_MORE_VIEWS


def test_a_remedy_on_the_last_attempt_becomes_on_exhausted() -> None:
    p = make([LOW_VISUAL], budget={"max_attempts": 2}, on_exhausted="escalate")
    assert decide(p, conf(visual=0.1), attempt=0).action is Action.FETCH_MORE_VIEWS
    last = decide(p, conf(visual=0.1), attempt=1)
    assert (last.action, last.rule) == (Action.ESCALATE, "on_exhausted")
    assert last.reason == "budget of 2 attempts spent; rules[0] asked for fetch_more_views (visual 0.1 < 0.5)"


def test_a_decision_names_the_components_its_rule_tested() -> None:
    rule = {"when": {"reasoning": {"below": 0.5}, "visual": {"below": 0.5}}, "do": "escalate"}
    assert decide(make([rule]), conf(0.1, 0.1), attempt=0).components == ("visual", "reasoning")  # COMPONENTS order
    assert decide(make([rule]), conf(0.9, 0.9), attempt=0).components == ()  # otherwise
    exhausted = make([LOW_VISUAL], budget={"max_attempts": 1}, on_exhausted="escalate")
    assert decide(exhausted, conf(visual=0.1), attempt=0).components == ("visual",)  # the rule that asked
    error = ErrorInfo(stage="estimator", type="EstimatorError", message="no logits")
    assert decide_on_error(make([]), error, attempt=0).components == ()
    assert decide_on_exhausted(make([]), attempt=0, reason="time budget spent").components == ()


def test_terminal_actions_on_the_last_attempt_stand() -> None:
    p = make([LOW_OVERALL], budget={"max_attempts": 1})
    assert decide(p, conf(overall=0.1), attempt=0).rule == "rules[0] weak"
    assert decide(p, conf(overall=0.9), attempt=0).action is Action.ACCEPT


def test_a_remedy_in_otherwise_also_respects_the_budget() -> None:
    p = make([], otherwise="re_ask", budget={"max_attempts": 1})
    decision = decide(p, conf(0.9, 0.9, 0.9), attempt=0)
    assert (decision.action, decision.rule) == (Action.ABSTAIN, "on_exhausted")


def test_attempt_conditions() -> None:
    p = make([{"when": {"overall": {"below": 0.5}, "attempt": {"at_least": 1}}, "do": "escalate"}], otherwise="re_ask")
    assert decide(p, conf(overall=0.1), attempt=0).action is Action.RE_ASK
    assert decide(p, conf(overall=0.1), attempt=1).action is Action.ESCALATE


def test_errors_go_to_on_error_and_retries_respect_the_budget() -> None:
    error = ErrorInfo(stage="backend", type="TimeoutError", message="slow")
    p = make([], on_error="re_ask", budget={"max_attempts": 2})
    first = decide_on_error(p, error, attempt=0)
    assert (first.action, first.rule, first.reason) == (Action.RE_ASK, "on_error", "backend failed: TimeoutError: slow")
    assert decide_on_error(p, error, attempt=1).action is Action.ABSTAIN
    assert decide_on_exhausted(p, attempt=1, reason="time").rule == "on_exhausted"


# ---------------------------------------------------------------------------------------------------------------
# The shipped policies behave as their comments say


@pytest.mark.parametrize(
    ("name", "confidence", "attempt", "action"),
    [
        ("default", conf(0.3, 0.8, 0.3), 0, Action.FETCH_MORE_VIEWS),
        ("default", conf(0.8, 0.3, 0.3), 0, Action.RE_ASK),
        ("default", conf(0.2, 0.2, 0.1), 0, Action.ESCALATE),
        ("default", conf(None, None, None), 0, Action.ABSTAIN),
        ("default", conf(None, 0.9, 0.5), 0, Action.FETCH_MORE_VIEWS),
        ("default", conf(None, 0.9, 0.9), 0, Action.ACCEPT),
        ("default", conf(0.3, 0.8, 0.3), 2, Action.ABSTAIN),
        ("default", conf(0.9, 0.9, 0.9), 0, Action.ACCEPT),
        ("strict", conf(None, 0.99, 0.99), 0, Action.ESCALATE),
        ("strict", conf(0.85, 0.95, 0.95), 0, Action.FETCH_MORE_VIEWS),
        ("strict", conf(0.85, 0.95, 0.85), 1, Action.ESCALATE),
        ("strict", conf(0.95, 0.95, 0.95), 0, Action.ACCEPT),
        ("cost-aware", conf(0.9, 0.9, 0.1), 0, Action.RE_ASK),
        ("cost-aware", conf(0.9, 0.9, 0.1), 1, Action.ESCALATE),
        ("cost-aware", conf(0.2, 0.9, 0.5), 0, Action.RE_ASK),
        ("cost-aware", conf(0.2, 0.9, 0.5), 1, Action.FETCH_MORE_VIEWS),
        ("cost-aware", conf(0.6, 0.6, 0.6), 0, Action.ACCEPT),
        ("default", conf(0.99, 0.99, 0.99, 0.009), 0, Action.ABSTAIN),
        ("default", conf(0.99, 0.99, 0.99, 0.01), 0, Action.ACCEPT),
        ("strict", conf(0.99, 0.99, 0.99, 0.04), 0, Action.ESCALATE),
        ("strict", conf(0.99, 0.99, 0.99, 0.05), 0, Action.ACCEPT),
        ("strict", conf(0.99, 0.99, 0.99, None), 0, Action.ACCEPT),
        ("cost-aware", conf(0.99, 0.99, 0.99, 0.001), 0, Action.ABSTAIN),
        ("cost-aware", conf(None, None, None, 0.001), 0, Action.ABSTAIN),  # no re-ask spent on an unfamiliar input
        ("cost-aware", conf(0.99, 0.99, 0.99, None), 0, Action.ACCEPT),
    ],
)
def test_shipped_policies(name: str, confidence: Confidence, attempt: int, action: Action) -> None:
    assert decide(load_builtin_policy(name), confidence, attempt=attempt).action is action


def test_default_abstains_on_an_unfamiliar_input_however_confident() -> None:
    default = load_builtin_policy("default")
    confident = Confidence(visual=0.99, reasoning=0.99, overall=0.99, familiarity=0.001)
    decision = decide(default, confident, attempt=0)
    assert (decision.action, decision.rule, decision.reason) == (
        Action.ABSTAIN,
        "rules[1] unfamiliar-input",
        "familiarity 0.001 < 0.01",
    )
    assert decision.params["message"] == (
        "The question or image is unlike anything this guard was calibrated on; its confidence would not be "
        "trustworthy."
    )
    familiar = decide(default, confident.model_copy(update={"familiarity": 0.5}), attempt=0)
    assert (familiar.action, familiar.rule) == (Action.ACCEPT, "otherwise")
    unmeasured = decide(default, confident.model_copy(update={"familiarity": None}), attempt=0)
    assert (unmeasured.action, unmeasured.rule) == (Action.ACCEPT, "otherwise")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_policy_stops_an_unfamiliar_input_before_anything_else(name: str) -> None:
    policy = load_builtin_policy(name)
    index = next(i for i, rule in enumerate(policy.rules) if rule.when.familiarity is not None)
    assert index <= 1
    assert policy.rules[index].name == "unfamiliar-input"
    assert policy.rules[index].action in (Action.ABSTAIN, Action.ESCALATE)
    for attempt in range(policy.budget.max_attempts):
        decision = decide(policy, conf(0.99, 0.99, 0.99, familiarity=0.0), attempt=attempt)
        assert decision.rule == policy.rule_label(index)


# ---------------------------------------------------------------------------------------------------------------
# Properties


def allowed(policy: Policy) -> set[Action]:
    """Every action the policy can ever name."""
    return {r.action for r in policy.rules} | {policy.otherwise.action, policy.on_exhausted.action}


probability = st.one_of(st.none(), st.floats(0.0, 1.0))
confidences = st.builds(
    Confidence, visual=probability, reasoning=probability, overall=probability, familiarity=probability
)
thresholds = st.one_of(
    st.fixed_dictionaries({"unknown": st.booleans()}),
    st.dictionaries(st.sampled_from(["below", "at_most", "above", "at_least"]), st.floats(0.0, 1.0), min_size=1),
)
conditions = st.dictionaries(st.sampled_from(list(COMPONENTS)), thresholds, min_size=1)
rules = st.fixed_dictionaries(
    {"when": conditions, "do": st.sampled_from(["accept", "abstain", "re_ask", "fetch_more_views", "escalate"])}
)
policies = st.builds(
    lambda rs, otherwise, exhausted, attempts: make(
        rs, otherwise=otherwise, on_exhausted=exhausted, budget={"max_attempts": attempts}
    ),
    st.lists(rules, max_size=6),
    st.sampled_from(["accept", "abstain", "re_ask", "escalate"]),
    st.sampled_from(["abstain", "escalate"]),
    st.integers(1, 5),
)
any_policy = st.one_of(st.sampled_from(SHIPPED).map(load_builtin_policy), policies)


@settings(max_examples=300, deadline=None)
@given(policy=any_policy, confidence=confidences, data=st.data())
def test_decide_is_deterministic_and_allowed(policy: Policy, confidence: Confidence, data: st.DataObject) -> None:
    attempt = data.draw(st.integers(0, policy.budget.max_attempts - 1))
    first = decide(policy, confidence, attempt=attempt)
    assert decide(policy, confidence, attempt=attempt) == first
    assert first.action in allowed(policy)
    assert first.attempt == attempt
    if attempt == policy.budget.max_attempts - 1:
        assert first.action.is_terminal


# ---------------------------------------------------------------------------------------------------------------
# Uncalibrated confidences (raw scores): never accepted unless the policy opted in


def raw(overall: float | None = 0.998, **parts: float | None) -> Confidence:
    """What a guard without a calibrator measures: raw scores, ``calibrated=False``."""
    return Confidence(overall=overall, calibrated=False, **parts)


def test_raw_scores_go_to_on_uncalibrated_before_any_rule() -> None:
    decision = decide(make([LOW_OVERALL]), raw(visual=0.99, reasoning=0.99), attempt=0)
    assert (decision.action, decision.rule, decision.components) == (Action.ABSTAIN, "on_uncalibrated", ())
    assert decision.reason == (
        "uncalibrated: the guard has no calibration, so its confidences are raw scores (overall 0.998), not "
        "probabilities; policy 't' does not accept on them (accept_uncalibrated: false)"
    )
    assert decide(make([LOW_OVERALL]), raw(overall=None), attempt=0).reason.startswith(
        "uncalibrated: the guard has no calibration, so its confidences are raw scores (overall unknown)"
    )


def test_on_uncalibrated_may_escalate_with_its_parameters() -> None:
    policy = make([], on_uncalibrated={"do": "escalate", "with": {"reason": "no calibration"}})
    decision = decide(policy, raw(), attempt=2)
    assert (decision.action, decision.rule, decision.params, decision.attempt) == (
        Action.ESCALATE,
        "on_uncalibrated",
        {"reason": "no calibration"},
        2,
    )


def test_the_opt_in_lets_the_rules_decide_on_raw_scores() -> None:
    policy = make([LOW_OVERALL], accept_uncalibrated=True)
    assert decide(policy, raw(), attempt=0).rule == "otherwise"
    assert decide(policy, raw(overall=0.2), attempt=0).rule == "rules[0] weak"


@pytest.mark.parametrize("name", SHIPPED)
def test_no_shipped_policy_accepts_raw_scores(name: str) -> None:
    policy = load_builtin_policy(name)
    assert not policy.accept_uncalibrated
    for overall in (0.0, 0.5, 0.999, None):
        decision = decide(policy, raw(overall=overall, visual=overall, reasoning=overall), attempt=0)
        assert (decision.action, decision.rule) == (Action.ABSTAIN, "on_uncalibrated")


def test_a_calibrated_confidence_is_decided_as_before() -> None:
    assert Confidence().calibrated  # what a fitted calibrator (or any Calibrator but the pass-through) returns
    assert decide(make([LOW_OVERALL]), conf(overall=0.9), attempt=0).rule == "otherwise"


def test_the_default_on_uncalibrated_tells_the_user_why_there_is_no_answer() -> None:
    from guardrail.policy.schema import UNCALIBRATED_MESSAGE

    for policy in (make([]), load_builtin_policy("default")):
        decision = decide(policy, raw(), attempt=0)
        assert decision.params == {"message": UNCALIBRATED_MESSAGE}
