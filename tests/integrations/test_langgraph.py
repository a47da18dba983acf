"""The guardrail graph, sync: routing, JSON state, human review that never re-runs the model, resume validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from pydantic import ValidationError

from guardrail import Guard, InputError
from guardrail.integrations import GuardState, ReviewError, add_guardrail_nodes, guardrail_graph, resume_escalation
from guardrail.integrations.langgraph import pending_payload
from tests.support.fakes import FamiliarityCalibrator
from tests.support.integration import (
    ABSTAIN,
    ACCEPT,
    ESCALATE,
    image_message,
    policy,
    scripted_guard,
)

THREAD: RunnableConfig = {"configurable": {"thread_id": "t-1"}}


def run(step: Any) -> tuple[Any, Any, dict[str, Any]]:
    guard, model = scripted_guard(step)
    graph = guardrail_graph(guard, checkpointer=InMemorySaver())
    return graph, model, graph.invoke({"messages": [image_message()]}, THREAD)


def test_accepted_answer_becomes_an_ai_message_with_confidences() -> None:
    _, _, state = run(ACCEPT)
    reply = state["messages"][-1]
    assert isinstance(reply, AIMessage)
    assert reply.content == "red"
    assert reply.response_metadata["guardrail"]["status"] == "accepted"
    assert reply.response_metadata["guardrail"]["confidence"] == {
        "visual": 0.9,
        "reasoning": 0.9,
        "overall": 0.9,
        "familiarity": None,
        "stability": None,
    }
    assert state["confidence"]["visual"] == 0.9
    assert state["guardrail"]["status"] == "accepted"
    json.dumps(state["guardrail"])  # the GuardResult in state is plain JSON


def test_abstention_says_why_and_never_gives_the_rejected_answer() -> None:
    _, _, state = run(ABSTAIN)
    reply = state["messages"][-1]
    assert "not confident enough" in reply.content
    assert "the shape could not be seen clearly" in reply.content
    assert "blue" not in reply.content
    assert state["guardrail"]["answer"] is None


def test_escalation_pauses_with_question_candidate_and_confidences() -> None:
    graph, model, state = run(ESCALATE)
    (pending,) = state["__interrupt__"]
    assert pending.value["kind"] == "guardrail.escalation"
    assert pending.value["question"] == "What colour is the shape?"
    assert pending.value["candidate_answer"] == "green"
    assert pending.value["confidence"]["visual"] == 0.2
    assert pending.value["confidence"]["familiarity"] is None
    assert pending.value["thread_id"] == "t-1"
    assert graph.get_state(THREAD).next == ("guardrail_review",)
    assert all(not isinstance(m, AIMessage) for m in state["messages"])  # no answer before the human decides
    assert len(model.calls) == 1


UNFAMILIAR_FIRST = policy(
    rules=[
        {"name": "unfamiliar-input", "when": {"familiarity": {"below": 0.05}}, "do": "escalate",
         "with": {"reason": "the question or image is unlike the calibration data (unfamiliar input)"}},
        *policy().model_dump(by_alias=True, exclude_none=True)["rules"],
    ]
)  # fmt: skip


def test_a_measured_familiarity_reaches_state_and_metadata() -> None:
    guard, _ = scripted_guard(ACCEPT, calibrator=FamiliarityCalibrator(0.42))
    state = guardrail_graph(guard, checkpointer=InMemorySaver()).invoke({"messages": [image_message()]}, THREAD)
    assert state["confidence"] == {
        "visual": 0.9,
        "reasoning": 0.9,
        "overall": 0.9,
        "familiarity": 0.42,
        "stability": None,
    }
    assert state["messages"][-1].response_metadata["guardrail"]["confidence"]["familiarity"] == 0.42
    assert state["guardrail"]["confidence"]["familiarity"] == 0.42


def test_an_unfamiliar_input_is_escalated_with_familiarity_in_the_review_payload() -> None:
    guard, model = scripted_guard(ACCEPT, policy=UNFAMILIAR_FIRST, calibrator=FamiliarityCalibrator(0.01))
    graph = guardrail_graph(guard, checkpointer=InMemorySaver())
    state = graph.invoke({"messages": [image_message()]}, THREAD)
    (pending,) = state["__interrupt__"]
    assert pending.value["confidence"] == {
        "visual": 0.9,
        "reasoning": 0.9,
        "overall": 0.9,
        "familiarity": 0.01,
        "stability": None,
    }
    assert pending.value["reason"] == "the question or image is unlike the calibration data (unfamiliar input)"
    assert pending.value["candidate_answer"] == "red"
    final = graph.invoke(Command(resume={"type": "approve"}), THREAD)
    assert final["messages"][-1].response_metadata["guardrail"]["confidence"]["familiarity"] == 0.01
    assert len(model.calls) == 1


def test_an_abstention_names_the_familiarity() -> None:
    unfamiliar = {"when": {"familiarity": {"below": 0.01}}, "do": "abstain", "with": {"message": "unfamiliar input"}}
    guard, _ = scripted_guard(ACCEPT, policy=policy(rules=[unfamiliar]), calibrator=FamiliarityCalibrator(0.002))
    state = guardrail_graph(guard, checkpointer=InMemorySaver()).invoke({"messages": [image_message()]}, THREAD)
    assert state["messages"][-1].content == (
        "I am not confident enough to answer this (unfamiliar input; confidence visual 0.90, reasoning 0.90, "
        "overall 0.90, familiarity 0.002)."
    )


@pytest.mark.parametrize(
    ("decision", "content"),
    [
        ({"type": "approve"}, "green"),
        ({"type": "edit", "answer": "dark green"}, "dark green"),
        ({"type": "answer", "answer": "teal"}, "teal"),
        ({"type": "reject", "reason": "image unreadable"}, "rejected the answer to this question: image unreadable"),
    ],
)
def test_each_review_decision_resumes_without_re_running_the_model(decision: dict[str, Any], content: str) -> None:
    graph, model, _ = run(ESCALATE)
    final = graph.invoke(Command(resume=decision), THREAD)
    assert content in final["messages"][-1].content
    assert final["review"]["type"] == decision["type"]
    assert final["messages"][-1].response_metadata["guardrail"]["review"]["decision"]["type"] == decision["type"]
    assert len(model.calls) == 1
    assert graph.get_state(THREAD).next == ()


def test_an_invalid_resume_is_refused_and_not_saved_so_the_escalation_can_be_answered_again() -> None:
    graph, model, _ = run(ESCALATE)
    with pytest.raises(ValidationError, match=r"edit\.answer"):
        graph.invoke(Command(resume={"type": "edit"}), THREAD)
    assert graph.get_state(THREAD).interrupts  # still waiting
    final = graph.invoke(Command(resume={"type": "approve"}), THREAD)
    assert final["messages"][-1].content == "green"
    assert len(model.calls) == 1


def test_resume_escalation_checks_the_decision_first_with_a_clear_error() -> None:
    graph, _, _ = run(ESCALATE)
    with pytest.raises(ReviewError, match=r"invalid review decision \{'type': 'maybe'\}"):
        resume_escalation(graph, "t-1", {"type": "maybe"})
    with pytest.raises(ReviewError, match="must be a dict"):
        resume_escalation(graph, "t-1", "yes")
    assert pending_payload(graph, THREAD)["candidate_answer"] == "green"
    final = resume_escalation(graph, "t-1", {"type": "answer", "answer": "teal"})
    assert final["messages"][-1].content == "teal"
    with pytest.raises(LookupError, match="no pending guardrail escalation"):
        resume_escalation(graph, "t-1", {"type": "approve"})


def test_without_a_candidate_only_answer_or_reject_are_possible() -> None:
    from guardrail.integrations import parse_review

    with pytest.raises(ReviewError, match="cannot approve: the escalation has no candidate answer"):
        parse_review({"type": "approve"}, candidate_answer=None)
    with pytest.raises(ReviewError, match="cannot edit"):
        parse_review({"type": "edit", "answer": "x"}, candidate_answer=None)
    assert parse_review({"type": "reject"}, candidate_answer=None).type == "reject"


def test_a_guard_factory_is_built_once_on_first_use_and_never_to_resume() -> None:
    built: list[Guard] = []

    def factory() -> Guard:
        guard, _ = scripted_guard(ESCALATE)
        built.append(guard)
        return guard

    saver = InMemorySaver()
    guardrail_graph(factory, checkpointer=saver).invoke({"messages": [image_message()]}, THREAD)
    assert len(built) == 1
    resumed = guardrail_graph(factory, checkpointer=saver)  # a new process would rebuild the graph like this
    assert resumed.invoke(Command(resume={"type": "approve"}), THREAD)["messages"][-1].content == "green"
    assert len(built) == 1


def test_nodes_compose_into_a_larger_graph_and_route_to_the_next_node() -> None:
    guard, model = scripted_guard(ESCALATE)
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(GuardState)
    builder.add_node("greet", lambda state: {"messages": [HumanMessage(content="(forwarded)")]})
    builder.add_node("after", lambda state: {"messages": [AIMessage(content="done")]})
    entry = add_guardrail_nodes(builder, guard, then="after")
    builder.add_edge(START, entry)
    builder.add_edge("after", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    state = graph.invoke({"messages": [image_message()]}, THREAD)
    assert state["__interrupt__"][0].value["candidate_answer"] == "green"
    final = graph.invoke(Command(resume={"type": "approve"}), THREAD)
    assert [m.content for m in final["messages"][-2:]] == ["green", "done"]
    assert len(model.calls) == 1


def test_the_compiled_graph_works_as_a_subgraph_under_a_parent_checkpointer() -> None:
    guard, model = scripted_guard(ESCALATE)
    parent: StateGraph[Any, Any, Any, Any] = StateGraph(GuardState)
    parent.add_node("guarded", guardrail_graph(guard))
    parent.add_edge(START, "guarded")
    graph = parent.compile(checkpointer=InMemorySaver())
    state = graph.invoke({"messages": [image_message()]}, THREAD)
    assert state["__interrupt__"][0].value["candidate_answer"] == "green"
    assert pending_payload(graph, THREAD)["question"] == "What colour is the shape?"
    final = resume_escalation(graph, "t-1", {"type": "edit", "answer": "lime"})
    assert final["messages"][-1].content == "lime"
    assert len(model.calls) == 1


def test_messages_that_cannot_be_converted_raise_input_error() -> None:
    guard, model = scripted_guard(ACCEPT)
    graph = guardrail_graph(guard)
    with pytest.raises(InputError, match="content block of type 'audio'"):
        graph.invoke({"messages": [HumanMessage(content=[{"type": "audio", "base64": "AAAA"}])]})
    assert model.calls == []
