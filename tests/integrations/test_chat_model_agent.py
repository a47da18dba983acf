"""The guarded chat model as an agent's own model: streamed in a graph, and its escalations reviewed by
``GuardrailMiddleware(..., model_calls="off")``."""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from guardrail.integrations import GuardrailChatModel, GuardrailMiddleware
from tests.support.integration import ACCEPT, ESCALATE, image_message, scripted_guard

THREAD: RunnableConfig = {"configurable": {"thread_id": "chat-model-agent"}}


def test_an_agent_streams_the_guarded_answer_in_chunks() -> None:
    guard, _ = scripted_guard(ACCEPT)
    agent = create_agent(GuardrailChatModel(guard=guard))
    streamed = [m for m, _ in agent.stream({"messages": [image_message()]}, stream_mode="messages")]
    chunks = [m for m in streamed if isinstance(m, AIMessageChunk)]
    assert "".join(str(c.content) for c in chunks) == "red"
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].response_metadata["guardrail"]["status"] == "accepted"


def test_an_escalation_of_the_guarded_model_is_reviewed_and_the_reviewed_answer_replaces_the_notice() -> None:
    guard, model = scripted_guard(ESCALATE)
    agent = create_agent(
        GuardrailChatModel(guard=guard),
        middleware=[GuardrailMiddleware(guard, model_calls="off")],  # it only reviews
        checkpointer=InMemorySaver(),
    )
    state = agent.invoke({"messages": [image_message()]}, THREAD)
    (pending,) = state["__interrupt__"]
    assert pending.value["candidate_answer"] == "green"
    final = agent.invoke(Command(resume={"type": "approve"}), THREAD)["messages"]
    replies = [m for m in final if isinstance(m, AIMessage)]
    assert [m.content for m in replies] == ["green"]
    assert replies[0].response_metadata["guardrail"]["status"] == "reviewed"
    assert len(model.calls) == 1  # resuming ran the review only, never the model
