"""GuardrailMiddleware in real ``create_agent`` graphs (sync): model calls, vision tools, review, and HITL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from guardrail import ConfigurationError
from guardrail.integrations import GuardrailChatModel, GuardrailMiddleware
from tests.support.agents import Camera, ScriptedPlanner, tool_call
from tests.support.fakes import ScriptedModel, Step
from tests.support.integration import ABSTAIN, ACCEPT, ESCALATE, image_message, scripted_guard

THREAD: RunnableConfig = {"configurable": {"thread_id": "agent-1"}}


def agent_over(step: Step, **middleware: Any) -> tuple[Any, ScriptedModel, ScriptedModel]:
    """An agent whose own model is a plain backend, guarded by a guard over another scripted backend."""
    guard, guarded_model = scripted_guard(step)
    plain = ScriptedModel(steps=(Step(answer="plain"),))
    agent = create_agent(
        GuardrailChatModel(backend=plain),
        middleware=[GuardrailMiddleware(guard, **middleware)],
        checkpointer=InMemorySaver(),
    )
    return agent, guarded_model, plain


def test_a_model_call_with_an_image_is_answered_by_the_guard() -> None:
    agent, guarded, plain = agent_over(ACCEPT)
    state = agent.invoke({"messages": [image_message()]}, THREAD)
    reply = state["messages"][-1]
    assert reply.content == "red"
    assert reply.response_metadata["guardrail"]["status"] == "accepted"
    assert reply.response_metadata["guardrail"]["confidence"]["overall"] == 0.9
    assert (len(guarded.calls), len(plain.calls)) == (1, 0)


def test_a_model_call_without_images_goes_to_the_agent_model() -> None:
    agent, guarded, plain = agent_over(ACCEPT)
    state = agent.invoke({"messages": [HumanMessage(content="Hello?")]}, THREAD)
    assert state["messages"][-1].content == "plain"
    assert (len(guarded.calls), len(plain.calls)) == (0, 1)


def test_an_abstention_reaches_the_agent_as_a_reason_not_an_answer() -> None:
    agent, _, _ = agent_over(ABSTAIN)
    reply = agent.invoke({"messages": [image_message()]}, THREAD)["messages"][-1]
    assert "not confident enough" in reply.content
    assert "blue" not in reply.content


def test_an_escalation_pauses_after_the_model_and_the_decision_replaces_the_notice() -> None:
    agent, guarded, _ = agent_over(ESCALATE)
    state = agent.invoke({"messages": [image_message()]}, THREAD)
    (pending,) = state["__interrupt__"]
    assert pending.value["candidate_answer"] == "green"
    final = agent.invoke(Command(resume={"type": "edit", "answer": "olive"}), THREAD)
    replies = [m for m in final["messages"] if isinstance(m, AIMessage)]
    assert [m.content for m in replies] == ["olive"]  # the notice was replaced, keeping its id
    assert replies[0].response_metadata["guardrail"]["review"]["decision"] == {"type": "edit", "answer": "olive"}
    assert len(guarded.calls) == 1  # resuming ran the review hook only


def test_an_escalation_names_its_image_in_the_middleware_store(tmp_path: Path) -> None:
    agent, _, _ = agent_over(ESCALATE, image_store=tmp_path / "images")
    (pending,) = agent.invoke({"messages": [image_message()]}, THREAD)["__interrupt__"]
    (image,) = pending.value["images"]
    assert Path(image["ref"]).parent.parent == tmp_path / "images"
    assert (pending.value["perception"], pending.value["rule"]) == ("v", "rules[0] both-low")


def test_model_calls_new_image_guards_only_calls_whose_new_input_has_an_image() -> None:
    agent, guarded, plain = agent_over(ACCEPT, model_calls="new_image")
    agent.invoke({"messages": [image_message()]}, THREAD)
    state = agent.invoke({"messages": [HumanMessage(content="Thanks! Anything else?")]}, THREAD)
    assert state["messages"][-1].content == "plain"
    assert (len(guarded.calls), len(plain.calls)) == (1, 1)


def test_model_calls_any_image_guards_follow_ups_about_an_earlier_image() -> None:
    agent, guarded, plain = agent_over(ACCEPT)
    agent.invoke({"messages": [image_message()]}, THREAD)
    agent.invoke({"messages": [HumanMessage(content="Are you sure?")]}, THREAD)
    assert (len(guarded.calls), len(plain.calls)) == (2, 0)


def test_model_calls_off_leaves_model_calls_alone() -> None:
    agent, guarded, plain = agent_over(ACCEPT, model_calls="off")
    assert agent.invoke({"messages": [image_message()]}, THREAD)["messages"][-1].content == "plain"
    assert (len(guarded.calls), len(plain.calls)) == (0, 1)


def test_escalate_message_mode_replies_without_pausing() -> None:
    agent, _, _ = agent_over(ESCALATE, escalate="message")
    state = agent.invoke({"messages": [image_message()]}, THREAD)
    assert "__interrupt__" not in state
    assert "escalated to a human reviewer" in state["messages"][-1].content


def test_configuration_is_checked() -> None:
    guard, _ = scripted_guard(ACCEPT)
    with pytest.raises(ConfigurationError, match="`escalate` must be 'interrupt' or 'message', got 'ask'"):
        GuardrailMiddleware(guard, escalate="ask")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="got the string 'camera'"):
        GuardrailMiddleware(guard, vision_tools="camera")
    with pytest.raises(ConfigurationError, match="`model_calls` must be 'any_image', 'new_image' or 'off', got 'x'"):
        GuardrailMiddleware(guard, model_calls="x")  # type: ignore[arg-type]


# -- vision tools ----------------------------------------------------------------------------------------------


def tool_agent(
    camera: Camera, step: Step, *, before: Sequence[Any] = (), after: Sequence[Any] = ()
) -> tuple[Any, ScriptedModel]:
    guard, guarded = scripted_guard(step)
    planner = ScriptedPlanner(
        replies=[tool_call("camera", {"question": "What colour is the shape?"}), AIMessage(content="done")]
    )
    agent = create_agent(
        planner,
        tools=[camera.tool],
        middleware=[*before, GuardrailMiddleware(guard, vision_tools=["camera"]), *after],
        checkpointer=InMemorySaver(),
    )
    return agent, guarded


def tool_results(state: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def test_a_vision_tool_result_is_answered_by_the_guard() -> None:
    camera = Camera()
    agent, guarded = tool_agent(camera, ACCEPT)
    state = agent.invoke({"messages": [HumanMessage(content="Look at the shape.")]}, THREAD)
    (result,) = tool_results(state)
    assert (result.content, result.status) == ("red", "success")
    assert result.artifact["guardrail"]["status"] == "accepted"
    assert guarded.calls[0][0].question == "What colour is the shape?"
    assert len(guarded.calls[0][0].images) == 1
    assert camera.runs == 1


def test_a_vision_tool_abstention_is_an_error_result_with_the_reason() -> None:
    agent, _ = tool_agent(Camera(), ABSTAIN)
    (result,) = tool_results(agent.invoke({"messages": [HumanMessage(content="Look.")]}, THREAD))
    assert result.status == "error"
    assert "not confident enough" in result.content


def test_a_vision_tool_result_without_images_passes_through() -> None:
    agent, guarded = tool_agent(Camera(images=False), ACCEPT)
    (result,) = tool_results(agent.invoke({"messages": [HumanMessage(content="Look.")]}, THREAD))
    assert result.content == [{"type": "text", "text": "lens cap on"}]
    assert guarded.calls == []


@pytest.mark.parametrize("mode", ["batched", "per_call"])
@pytest.mark.parametrize("order", ["hitl-first", "guardrail-first"])
def test_a_tool_call_a_human_rejected_never_runs_and_is_never_guarded(mode: str, order: str) -> None:
    camera = Camera()
    hitl = HumanInTheLoopMiddleware(interrupt_on={"camera": True}, interrupt_mode=mode)  # type: ignore[arg-type]
    where = {"before": [hitl]} if order == "hitl-first" else {"after": [hitl]}
    agent, guarded = tool_agent(camera, ACCEPT, **where)
    state = agent.invoke({"messages": [HumanMessage(content="Look.")]}, THREAD)
    (pending,) = state["__interrupt__"]
    decision = {"type": "reject", "message": "no photos here"}
    resume = {"decisions": [decision]} if mode == "batched" else {pending.id: decision}
    final = agent.invoke(Command(resume=resume), THREAD)
    (result,) = tool_results(final)
    assert "no photos here" in result.content
    assert result.status == "error"
    assert camera.runs == 0
    assert guarded.calls == []


@pytest.mark.parametrize("mode", ["batched", "per_call"])
def test_a_tool_call_a_human_approved_runs_once_and_is_guarded_once(mode: str) -> None:
    camera = Camera()
    hitl = HumanInTheLoopMiddleware(interrupt_on={"camera": True}, interrupt_mode=mode)  # type: ignore[arg-type]
    agent, guarded = tool_agent(camera, ACCEPT, before=[hitl])
    pending = agent.invoke({"messages": [HumanMessage(content="Look.")]}, THREAD)["__interrupt__"][0]
    resume = {"decisions": [{"type": "approve"}]} if mode == "batched" else {pending.id: {"type": "approve"}}
    (result,) = tool_results(agent.invoke(Command(resume=resume), THREAD))
    assert result.content == "red"
    assert (camera.runs, len(guarded.calls)) == (1, 1)
