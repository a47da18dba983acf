"""Properties of the guarded-call loop over arbitrary confidence sequences and injected failures."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail import Guard
from guardrail.types import Action
from tests.support.fakes import ScriptedModel, Step
from tests.support.guards import image_request, make_policy

scores = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0))
steps = st.builds(Step, visual=scores, reasoning=scores)
failures = st.builds(
    Step,
    fail=st.sampled_from([RuntimeError, ValueError, KeyError, TimeoutError, MemoryError]),
    fail_in=st.sampled_from(["backend", "estimator"]),
)
budgets = st.integers(min_value=1, max_value=5)


@settings(max_examples=150, deadline=None)
@given(script=st.lists(steps | failures, min_size=1, max_size=8), max_attempts=budgets)
def test_any_sequence_terminates_within_budget(script: list[Step], max_attempts: int) -> None:
    model = ScriptedModel(steps=script)
    policy = make_policy(budget={"max_attempts": max_attempts, "max_seconds": None})
    result = Guard(model, estimator=model, policy=policy).run(image_request())
    assert len(model.calls) <= max_attempts
    assert len(result.attempts) == len(model.calls)
    assert result.final_decision.action.is_terminal
    assert all(not d.action.is_terminal for d in result.decisions[:-1])
    # an answer is returned only when the policy accepted it
    assert (result.answer is not None) == (result.final_decision.action is Action.ACCEPT)


@settings(max_examples=100, deadline=None)
@given(script=st.lists(steps, min_size=1, max_size=4), max_attempts=budgets)
def test_same_inputs_give_the_same_decisions(script: list[Step], max_attempts: int) -> None:
    policy = make_policy(budget={"max_attempts": max_attempts, "max_seconds": None})
    runs = []
    for _ in range(2):
        model = ScriptedModel(steps=script)
        result = Guard(model, estimator=model, policy=policy).run(image_request())
        runs.append([(d.action, d.rule, d.reason, dict(d.params)) for d in result.decisions])
    assert runs[0] == runs[1]


@settings(max_examples=100, deadline=None)
@given(failure=failures, remedies_first=st.integers(min_value=0, max_value=3))
def test_every_injected_failure_ends_in_on_error(failure: Step, remedies_first: int) -> None:
    # Earlier attempts ask for a remedy (more views), so the failing attempt is always reached.
    model = ScriptedModel(steps=[Step(visual=0.1, reasoning=0.9)] * remedies_first + [failure])
    policy = make_policy(budget={"max_attempts": 5, "max_seconds": None})
    result = Guard(model, estimator=model, policy=policy).run(image_request())
    assert len(result.attempts) == remedies_first + 1
    assert result.final_decision.rule == "on_error"
    assert result.status == "abstained"
    assert result.answer is None
    assert result.error is not None
    assert result.error.stage == failure.fail_in
    assert failure.fail is not None
    assert result.error.type == failure.fail.__name__
