"""Inside a real LangGraph graph, the guard's spans nest under the caller's active span; an interrupt raised
from the model call ends the open spans as errors, and the resumed run traces normally."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from opentelemetry.trace import StatusCode

from guardrail import Generation, GenerationOptions, Guard, Request
from tests.support.fakes import AsyncScriptedModel, ScriptedModel, Step
from tests.support.guards import image_request, make_policy
from tests.support.telemetry import Recorded


class State(TypedDict, total=False):
    question: str
    status: str
    answer: str | None


def assert_nested(recorded: Recorded, parent_span_id: int) -> None:
    call = recorded.call_span()
    assert call.parent is not None
    assert call.parent.span_id == parent_span_id
    attempts = recorded.attempt_spans()
    assert attempts
    for attempt in attempts:
        assert attempt.parent is not None
        assert attempt.parent.span_id == call.context.span_id
        assert attempt.context.trace_id == call.context.trace_id


def test_sync_graph_nests_the_guard_under_the_callers_span(recorded: Recorded) -> None:
    guard = recorded.guard([Step(visual=0.9, reasoning=0.2), Step(answer="red")])

    def guarded(state: State) -> State:
        result = guard.run(image_request(state["question"]))
        return {"status": result.status, "answer": result.answer}

    graph = StateGraph(State).add_node("guarded", guarded).add_edge(START, "guarded").add_edge("guarded", END)
    app = graph.compile()
    with recorded.tracer_provider.get_tracer("app").start_as_current_span("agent.request") as root:
        out = app.invoke({"question": "What colour is the shape?"})
    assert out["answer"] == "red"
    assert_nested(recorded, root.get_span_context().span_id)
    assert len(recorded.attempt_spans()) == 2


def test_async_graph_nests_the_guard_under_the_callers_span(recorded: Recorded) -> None:
    model = AsyncScriptedModel(steps=[Step(answer="red")])
    guard = Guard(model, estimator=model, policy=make_policy(), telemetry=recorded.telemetry)

    async def guarded(state: State) -> State:
        result = await guard.arun(image_request(state["question"]))
        return {"status": result.status, "answer": result.answer}

    graph = StateGraph(State).add_node("guarded", guarded).add_edge(START, "guarded").add_edge("guarded", END)
    app = graph.compile()

    async def main() -> tuple[dict[str, Any], int]:
        with recorded.tracer_provider.get_tracer("app").start_as_current_span("agent.request") as root:
            out = await app.ainvoke({"question": "What colour is the shape?"})
        return out, root.get_span_context().span_id

    out, root_id = asyncio.run(main())
    assert out["answer"] == "red"
    assert_nested(recorded, root_id)


class AskingModel(ScriptedModel):
    """A model that asks a human (LangGraph ``interrupt``) before it answers."""

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        said = interrupt({"question": request.question})
        generation = Generation(text=f"\\boxed{{{said}}}", answer=str(said), model=self.name)
        return self.answered.note(generation, self._step(options))


def test_an_interrupt_ends_the_open_spans_as_errors_and_the_resume_is_traced(recorded: Recorded) -> None:
    model = AskingModel()
    guard = Guard(model, estimator=model, policy=make_policy(), telemetry=recorded.telemetry)

    def guarded(state: State) -> State:
        result = guard.run(image_request(state["question"]))
        return {"status": result.status, "answer": result.answer}

    graph = StateGraph(State).add_node("guarded", guarded).add_edge(START, "guarded").add_edge("guarded", END)
    app = graph.compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t1"}}

    paused = app.invoke({"question": "What colour is the shape?"}, config)
    assert "__interrupt__" in paused
    (attempt,) = recorded.attempt_spans()
    call = recorded.call_span()
    for span in (attempt, call):
        assert span.end_time is not None
        assert span.status.status_code is StatusCode.ERROR
        assert dict(span.attributes or {})["error.type"] == "GraphInterrupt"

    recorded.spans_exporter.clear()
    resumed = app.invoke(Command(resume="red"), config)
    assert resumed["answer"] == "red"
    call = recorded.call_span()
    assert call.status.status_code is StatusCode.UNSET
    assert dict(call.attributes or {})["guardrail.status"] == "accepted"
