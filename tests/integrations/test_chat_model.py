"""GuardrailChatModel (sync): a guardrail backend as a LangChain chat model."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from guardrail.integrations import GuardrailChatModel
from tests.support.fakes import ScriptedModel, Step
from tests.support.integration import image_message


@tool
def noop() -> str:
    """Do nothing."""
    return ""


def test_invoke_converts_images_and_returns_the_answer_with_the_full_text_in_metadata() -> None:
    backend = ScriptedModel(steps=(Step(answer="red"),))
    reply = GuardrailChatModel(backend=backend).invoke([image_message()])
    assert reply.content == "red"
    assert reply.response_metadata["answer"] == "red"
    assert "\\boxed{red}" in reply.response_metadata["text"]
    assert reply.response_metadata["model_name"] == "scripted"
    ((request, _),) = backend.calls
    assert request.question == "What colour is the shape?"
    assert len(request.images) == 1


def test_content_text_returns_the_whole_generation() -> None:
    backend = ScriptedModel(steps=(Step(answer="red"),))
    reply = GuardrailChatModel(backend=backend, content="text").invoke([HumanMessage(content="Colour?")])
    assert isinstance(reply.content, str)
    assert reply.content.startswith("<think>")


def test_options_reach_the_backend() -> None:
    backend = ScriptedModel()
    GuardrailChatModel(backend=backend, temperature=0.5, max_new_tokens=8).invoke("hi")
    options = backend.calls[0][1]
    assert (options.temperature, options.max_new_tokens) == (0.5, 8)


def test_binding_tools_is_refused_with_a_hint_and_a_non_backend_is_refused() -> None:
    model = GuardrailChatModel(backend=ScriptedModel())
    assert model.bind_tools([]) is model
    with pytest.raises(NotImplementedError, match=r"cannot call tools.*GuardrailMiddleware"):
        model.bind_tools([noop])
    with pytest.raises(TypeError, match="`backend` must be a guardrail Backend"):
        GuardrailChatModel(backend=object())
    with pytest.raises(ValueError, match="does not support `stop`"):
        model.invoke("hi", stop=["\n"])
