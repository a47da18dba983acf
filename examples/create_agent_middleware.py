"""A LangChain v1 agent (``create_agent``) whose image questions are guarded by ``GuardrailMiddleware``.

The agent's own model is the same vision-language backend, used as a LangChain chat model
(``GuardrailChatModel``). The middleware answers every model call that carries an image through the guard: the
agent gets the answer with its confidences, or a reason why there is none; an escalation pauses the agent for a
human (``escalate="interrupt"``, needs a checkpointer) and here is resolved in the same process. Text-only
turns go to the model unguarded.

Run:  python examples/create_agent_middleware.py [--model DIR]
"""

from __future__ import annotations

import argparse
import base64
import io
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from PIL import Image, ImageDraw

from guardrail import Guard, load_guard
from guardrail.integrations import GuardrailChatModel, GuardrailMiddleware


def build_guard(model_dir: str | None = None) -> Guard:
    """The one place this example chooses its model: the embedded reference model unless told otherwise."""
    # load_guard: transformers backend + decoupled estimator + the model's calibration artifact, in one call.
    # The model folder defaults to $GUARDRAIL_MODEL, else the embedded reference model.
    return load_guard(model_dir, policy="default")


def scene_message(question: str) -> HumanMessage:
    """An easy-VQA-style scene (a green rectangle on white) with a question, as standard content blocks."""
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle((12, 20, 52, 44), fill="green")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return HumanMessage(
        content=[
            {"type": "image", "base64": data, "mime_type": "image/png"},
            {"type": "text", "text": question},
        ]
    )


def build_agent(guard: Guard) -> Any:
    return create_agent(
        GuardrailChatModel(backend=guard.backend),
        middleware=[GuardrailMiddleware(guard)],
        checkpointer=InMemorySaver(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a transformers vision-language model folder (default: reference model)")
    args = parser.parse_args(argv)
    agent = build_agent(build_guard(args.model))
    for i, question in enumerate(["What shape is in the image?", "What color is the shape?"]):
        config = {"configurable": {"thread_id": f"agent-{i}"}}
        state = agent.invoke({"messages": [scene_message(question)]}, config)
        if "__interrupt__" in state:
            pending = state["__interrupt__"][0].value
            print(f"{question} -> escalated (candidate {pending['candidate_answer']!r}); reviewer rejects it")
            state = agent.invoke(Command(resume={"type": "reject", "reason": "example"}), config)
        reply = state["messages"][-1]
        info = reply.response_metadata.get("guardrail", {})
        print(f"{question} -> {reply.content!r} [{info.get('status')}; confidence {info.get('confidence')}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
