"""GuardrailMiddleware in real ``create_agent`` graphs, async (``ainvoke``): the twins behave like the sync hooks."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from guardrail import Guard
from guardrail.integrations import GuardrailChatModel, GuardrailMiddleware
from tests.support.agents import Camera, ScriptedPlanner, tool_call
from tests.support.fakes import AsyncScriptedModel, Step
from tests.support.integration import ACCEPT, ESCALATE, image_message, policy

THREAD: RunnableConfig = {"configurable": {"thread_id": "async-agent"}}


def guard_over(step: Step) -> tuple[Guard, AsyncScriptedModel]:
    model = AsyncScriptedModel(steps=(step,))
    return Guard(model, estimator=model, policy=policy()), model


def test_async_model_call_with_an_image_and_a_reviewed_escalation() -> None:
    guard, guarded = guard_over(ESCALATE)
    plain = AsyncScriptedModel(steps=(Step(answer="plain"),))
    agent = create_agent(
        GuardrailChatModel(backend=plain), middleware=[GuardrailMiddleware(guard)], checkpointer=InMemorySaver()
    )

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        paused = await agent.ainvoke({"messages": [image_message()]}, THREAD)
        return paused, await agent.ainvoke(Command(resume={"type": "approve"}), THREAD)

    paused, final = asyncio.run(main())
    assert paused["__interrupt__"][0].value["candidate_answer"] == "green"
    assert [m.content for m in final["messages"] if isinstance(m, AIMessage)] == ["green"]
    assert (len(guarded.calls), len(plain.calls)) == (1, 0)


def test_async_text_only_call_goes_to_the_agent_model() -> None:
    guard, guarded = guard_over(ACCEPT)
    plain = AsyncScriptedModel(steps=(Step(answer="plain"),))
    agent = create_agent(GuardrailChatModel(backend=plain), middleware=[GuardrailMiddleware(guard)])
    state = asyncio.run(agent.ainvoke({"messages": [HumanMessage(content="hi")]}))
    assert state["messages"][-1].content == "plain"
    assert (len(guarded.calls), len(plain.calls)) == (0, 1)


def test_async_vision_tool_is_guarded_and_a_rejected_call_never_runs() -> None:
    for decision, runs, content in (({"type": "approve"}, 1, "red"), ({"type": "reject"}, 0, "User rejected")):
        camera = Camera()
        guard, guarded = guard_over(ACCEPT)
        planner = ScriptedPlanner(replies=[tool_call("camera", {"question": "Colour?"}), AIMessage(content="ok")])
        agent = create_agent(
            planner,
            tools=[camera.tool],
            middleware=[
                HumanInTheLoopMiddleware(interrupt_on={"camera": True}),
                GuardrailMiddleware(guard, vision_tools=["camera"]),
            ],
            checkpointer=InMemorySaver(),
        )

        async def main(d: dict[str, Any] = decision, a: Any = agent) -> dict[str, Any]:
            await a.ainvoke({"messages": [HumanMessage(content="Look.")]}, THREAD)
            final: dict[str, Any] = await a.ainvoke(Command(resume={"decisions": [d]}), THREAD)
            return final

        final = asyncio.run(main())
        (result,) = [m for m in final["messages"] if isinstance(m, ToolMessage)]
        assert content in result.content
        assert (camera.runs, len(guarded.calls)) == (runs, runs)
