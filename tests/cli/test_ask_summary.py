"""``guardrail ask --batch``'s summary line: each abstention and escalation counted by the cause its result carries.

The records come from real guarded calls over scripted fakes, through ``result_record`` as the command writes them.
"""

from __future__ import annotations

from typing import Any

from guardrail import BackendError, Guard, Policy
from guardrail.cli.ask import _Tally, decision_cause, result_record
from tests.support.fakes import ScriptedModel, Step
from tests.support.guards import image_request
from tests.support.integration import POLICY

REASK = {"name": "reasoning-doubt", "when": {"reasoning": {"below": 0.5}}, "do": "re_ask"}
RULES = [*POLICY["rules"], REASK]


def record(*steps: Step, clock_step: float = 0.0, **budget: Any) -> dict[str, Any]:
    """The record of one guarded call of a model playing ``steps``; each attempt moves the guard's clock on by
    ``clock_step`` seconds."""
    policy = Policy.model_validate(
        {**POLICY, "rules": RULES, "budget": {"max_attempts": 3, "max_seconds": None, **budget}}
    )
    now = [0.0]

    class Model(ScriptedModel):
        def generate(self, *args: Any) -> Any:
            now[0] += clock_step
            return super().generate(*args)

    model = Model(steps=steps)
    guard = Guard(model, estimator=model, policy=policy, clock=lambda: now[0])
    return result_record(guard.run(image_request()))


LOW = Step(answer="green", visual=0.2, reasoning=0.2)  # overall 0.04: the "both-low" rule escalates
DOUBT = Step(answer="blue", visual=0.55, reasoning=0.55)  # overall 0.55: the "doubt" rule abstains
REASON_DOUBT = Step(answer="blue", visual=0.9, reasoning=0.45)  # overall 0.6 but reasoning < 0.5: a re-ask


def test_each_cause_is_read_from_what_the_result_carries() -> None:
    assert decision_cause(record(LOW)) == "both-low"
    assert decision_cause(record(DOUBT)) == "doubt"
    assert decision_cause(record(Step(fail=BackendError))) == "backend-error"
    assert decision_cause(record(Step(fail=ValueError, fail_in="estimator"))) == "estimator-error"
    # An attempt cut off by the time budget, and the deadline passed before the next attempt could start.
    assert decision_cause(record(Step(delay=1.0), max_seconds=0.05)) == "time-budget"
    between = record(REASON_DOUBT, clock_step=2.0, max_seconds=1.5)
    assert (between["error"], between["decision"]["rule"]) == (None, "on_exhausted")
    assert decision_cause(between) == "time-budget"
    # A remedy the attempt budget leaves no room for.
    assert decision_cause(record(REASON_DOUBT, max_attempts=1)) == "attempts-spent"


def test_an_unnamed_rule_is_named_by_its_place() -> None:
    unnamed = {"when": {"overall": {"below": 0.3}}, "do": "abstain"}
    policy = Policy.model_validate({**POLICY, "rules": [unnamed]})
    model = ScriptedModel(steps=(LOW,))
    result = Guard(model, estimator=model, policy=policy).run(image_request())
    assert decision_cause(result_record(result)) == "rules[0]"


def test_the_summary_names_every_cause_with_its_count_most_first() -> None:
    tally = _Tally()
    slow = record(Step(delay=1.0), max_seconds=0.05)
    for item in [slow, record(DOUBT), slow, record(LOW), record(Step()), slow, record(Step(fail=BackendError))]:
        tally.add(item)
    tally.add({"line": 8, "status": "error", "error": {"stage": "input", "type": "ValueError", "message": "m"}})
    assert tally.summary() == (
        "7 answered (1 accepted, 5 abstained [3 time-budget, 1 backend-error, 1 doubt], "
        "1 escalated [1 both-low]), 1 failed"
    )


def test_a_summary_without_withheld_answers_reads_as_before() -> None:
    tally = _Tally()
    tally.add(record(Step()))
    assert tally.summary() == "1 answered (1 accepted, 0 abstained, 0 escalated), 0 failed"
