"""The guardrail graph, async: 100 concurrent runs, and a durable escalation resumed with AsyncSqliteSaver."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from guardrail.integrations import aresume_escalation, guardrail_graph
from tests.support.fakes import AsyncScriptedModel
from tests.support.integration import ESCALATE, echo_guard, image_message, policy


def test_one_hundred_concurrent_runs_lose_and_cross_nothing() -> None:
    graph = guardrail_graph(echo_guard(), checkpointer=InMemorySaver())

    async def one(i: int) -> tuple[int, dict[str, Any]]:
        config: RunnableConfig = {"configurable": {"thread_id": f"run-{i}"}}
        return i, await graph.ainvoke({"messages": [image_message(f"question {i}")]}, config)

    async def main() -> list[tuple[int, dict[str, Any]]]:
        return await asyncio.gather(*(one(i) for i in range(100)))

    results = asyncio.run(main())
    assert len(results) == 100
    for i, state in results:
        # EchoModel answers "answer to <question>" with visual confidence (i % 10) / 10 + 0.05
        visual = (i % 10) / 10 + 0.05
        overall = 2 * visual * 0.9 / (visual + 0.9)
        expected = "escalated" if overall < 0.3 else "abstained" if overall < 0.6 else "accepted"
        assert state["guardrail"]["status"] == expected, i
        assert state["confidence"]["visual"] == visual
        assert state["guardrail"]["attempts"][0]["generation"]["answer"] == f"answer to question {i}"
        if expected == "accepted":
            assert state["messages"][-1].content == f"answer to question {i}"
        if expected == "escalated":
            assert state["__interrupt__"][0].value["candidate_answer"] == f"answer to question {i}"
            assert state["__interrupt__"][0].value["thread_id"] == f"run-{i}"


def test_async_escalation_in_sqlite_is_resumed_by_a_fresh_graph(tmp_path: Path) -> None:
    model = AsyncScriptedModel(steps=(ESCALATE,))
    from guardrail import Guard

    guard = Guard(model, estimator=model, policy=policy())
    db = str(tmp_path / "async.sqlite")
    config: RunnableConfig = {"configurable": {"thread_id": "a-1"}}

    async def main() -> dict[str, Any]:
        async with AsyncSqliteSaver.from_conn_string(db) as saver:
            state = await guardrail_graph(guard, checkpointer=saver).ainvoke({"messages": [image_message()]}, config)
            assert state["__interrupt__"][0].value["candidate_answer"] == "green"
        async with AsyncSqliteSaver.from_conn_string(db) as saver:  # a new connection, a new graph
            return await aresume_escalation(guardrail_graph(guard, checkpointer=saver), "a-1", {"type": "approve"})

    final = asyncio.run(main())
    assert final["messages"][-1].content == "green"
    assert len(model.calls) == 1
