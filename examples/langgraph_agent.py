"""A LangGraph graph with the guardrail in it: guarded answers, abstentions and escalations as graph state.

The graph is ``START -> guardrail [-> guardrail_review] -> report -> END``. The ``guardrail`` node runs the
guarded call on the conversation's LangChain messages (standard image blocks), writes the GuardResult and the
confidences into state, and adds the answer (accepted) or a reason (abstained) as an AI message. Its policy
(``POLICY``) sends an answer whose visual confidence is low to a person: the clear picture is accepted, the
half-hidden one escalates and pauses in ``guardrail_review`` (see ``human_escalation.py`` for the durable,
two-process version); here the example answers it in the same process to show the round trip.

Run:  python examples/langgraph_agent.py [--model DIR]
(``DIR`` is any transformers vision-language model folder; by default the embedded reference model.)
"""

from __future__ import annotations

import argparse
import base64
import io
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from PIL import Image, ImageDraw

from guardrail import Guard, load_guard
from guardrail.integrations import GuardState, add_guardrail_nodes

POLICY = """\
version: 1
name: look-or-ask
description: Accept what the model saw clearly; a person reviews an answer whose perception is in doubt.
budget: {max_attempts: 1, max_seconds: null}
rules:
  - name: doubt-what-it-saw
    when: {visual: {below: 0.5}}
    do: escalate
    with: {reason: "the model is not sure what it saw (visual confidence below 0.5)"}
otherwise: accept
on_exhausted: escalate
on_error: escalate
"""


def build_guard(model_dir: str | None = None) -> Guard:
    """The one place this example chooses its model: the embedded reference model unless told otherwise."""
    # load_guard: transformers backend + decoupled estimator + the model's calibration artifact, in one call.
    # The model folder defaults to $GUARDRAIL_MODEL, else the embedded reference model.
    return load_guard(model_dir, policy=POLICY)


def draw_scene(colour: str = "red", *, hidden: bool = False) -> HumanMessage:
    """A 64x64 easy-VQA-style scene (one coloured circle on white) and the question about it, as a message.

    ``hidden`` puts a grey band over most of the circle: the reference model's visual confidence falls to about
    0.001 (0.90 for the clear picture), far below the policy's 0.5."""
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((14, 14, 50, 50), fill=colour)
    if hidden:
        draw.rectangle((0, 8, 64, 56), fill=(128, 128, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return HumanMessage(
        content=[
            {"type": "image", "base64": data, "mime_type": "image/png"},
            {"type": "text", "text": "What color is the shape?"},
        ]
    )


def report(state: GuardState) -> dict[str, Any]:
    """A downstream node: it sees the guard's verdict in state, whatever the outcome was."""
    result = state["guardrail"]
    assert result is not None  # the guardrail node ran before this one
    reply = state["messages"][-1]
    print(f"  status={result['status']} confidence={state['confidence']}")
    print(f"  reply: {reply.content}")
    return {}


def build_graph(guard: Guard) -> Any:
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(GuardState)
    entry = add_guardrail_nodes(builder, guard, then="report")
    builder.add_node("report", report)
    builder.add_edge(START, entry)
    builder.add_edge("report", END)
    return builder.compile(checkpointer=InMemorySaver())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a transformers vision-language model folder (default: reference model)")
    args = parser.parse_args(argv)
    graph = build_graph(build_guard(args.model))
    for i, (label, message) in enumerate(
        [("clear image", draw_scene("red")), ("half-hidden image", draw_scene("red", hidden=True))]
    ):
        config = {"configurable": {"thread_id": f"example-{i}"}}
        print(f"{label}:")
        state = graph.invoke({"messages": [message]}, config)
        if "__interrupt__" in state:
            pending = state["__interrupt__"][0].value
            print(f"  escalated: candidate={pending['candidate_answer']!r} reason={pending['reason']!r}")
            print("  the reviewer answers 'red' (see human_escalation.py for a real reviewer)")
            state = graph.invoke(Command(resume={"type": "answer", "answer": "red"}), config)
        assert isinstance(state["messages"][-1], AIMessage)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
