"""LangChainBackend: any chat model with images; log-probs where returned; every failure a BackendError."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_openai import ChatOpenAI
from PIL import Image

from guardrail import BackendError, BackendTimeout, GenerationOptions, Guard, Policy, Request
from guardrail.backends.langchain import LangChainBackend
from guardrail.confidence.blackbox import AgreementEstimator
from tests.support.fake_openai_server import TEXT, FakeServer, closed_port

IMAGE = Image.fromarray(np.random.default_rng(0).integers(1, 256, size=(28, 28, 3), dtype=np.uint8))


def question() -> Request:
    return Request.from_question("What colour is the shape?", [IMAGE])


def chat_openai(url: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=url, model="fake-vlm", api_key="EMPTY", timeout=0.5, max_retries=0, **kwargs)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    with FakeServer(getattr(request, "param", "ok"), delay=1.0) as fake:
        yield fake


def test_chat_openai_sends_the_image_and_returns_logprobs(server: FakeServer) -> None:
    backend = LangChainBackend(chat_openai(server.base_url))
    generation = backend.generate(question(), GenerationOptions(temperature=0.0, seed=3, max_new_tokens=400))
    body = server.bodies[0]
    image = body["messages"][0]["content"][0]
    assert image["type"] == "image_url"
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert (body["logprobs"], body["top_logprobs"], body["temperature"], body["seed"]) == (True, 5, 0.0, 3)
    assert generation.text == TEXT.replace("ANSWER", "red")
    assert generation.answer == "red"
    assert generation.provider == "langchain:openai-chat"
    assert backend.name == "fake-vlm"
    assert len(generation.token_logprobs) == len(generation.tokens)
    assert generation.usage.input_tokens == 12


def test_chat_openai_async(server: FakeServer) -> None:
    backend = LangChainBackend(chat_openai(server.base_url))
    assert asyncio.run(backend.agenerate(question())).answer == "red"


def test_a_model_without_logprobs_gets_no_unknown_keywords() -> None:
    reply = AIMessage(content="\\boxed{blue}")
    model = GenericFakeChatModel(messages=iter([reply]))
    backend = LangChainBackend(model, name="fake")
    assert backend._kwargs(GenerationOptions(temperature=0.7, seed=1)) == {}
    generation = backend.generate(question())
    assert (generation.answer, generation.token_logprobs, generation.model) == ("blue", (), "fake")


def test_logprobs_in_response_metadata_are_read() -> None:
    records = {"content": [{"token": "\\boxed{", "logprob": -0.5, "top_logprobs": []},
                           {"token": "blue}", "logprob": -0.25, "top_logprobs": []}]}  # fmt: skip
    model = GenericFakeChatModel(
        messages=iter([AIMessage(content="\\boxed{blue}", response_metadata={"logprobs": records})])
    )
    backend = LangChainBackend(model)
    generation = backend.generate(question())
    assert generation.token_logprobs == (-0.5, -0.25)
    assert generation.tokens == ("\\boxed{", "blue}")


def test_malformed_logprobs_are_a_backend_error() -> None:
    records = {"content": [{"token": "x", "logprob": "high"}]}
    model = GenericFakeChatModel(messages=iter([AIMessage(content="x", response_metadata={"logprobs": records})]))
    with pytest.raises(BackendError, match="malformed response: logprobs record 0"):
        LangChainBackend(model).generate(question())


@pytest.mark.parametrize(
    ("server", "error", "message"),
    [
        ("429", BackendError, "HTTP 429"),
        ("500", BackendError, "HTTP 500"),
        ("malformed", BackendError, "malformed response, not valid JSON"),
        ("truncated", BackendError, "RemoteProtocolError"),
        ("slow", BackendTimeout, "timed out"),
    ],
    indirect=["server"],
)
def test_faults_end_in_on_error_with_the_error_kept(server: FakeServer, error: type, message: str) -> None:
    backend = LangChainBackend(chat_openai(server.base_url))
    with pytest.raises(error, match=message) as caught:
        backend.generate(question())
    assert caught.value.__cause__ is not None
    policy = Policy.model_validate(
        {"version": 1, "name": "t", "rules": [], "otherwise": "accept", "accept_uncalibrated": True}
    )
    result = Guard(backend, estimator=AgreementEstimator(), policy=policy).run(question())
    assert result.status == "abstained"
    assert result.final_decision.rule == "on_error"
    assert result.error is not None
    assert result.error.type == error.__name__
    assert message in result.error.message


def test_connection_refused() -> None:
    backend = LangChainBackend(chat_openai(f"http://127.0.0.1:{closed_port()}/v1"))
    with pytest.raises(BackendError, match="Connection refused"):
        backend.generate(question())


def test_only_chat_models_are_accepted() -> None:
    with pytest.raises(TypeError, match="`chat_model` must be a LangChain BaseChatModel, got str"):
        LangChainBackend("gpt-4o")


def test_stop_sequences_reach_the_model_and_its_finish_reason_is_kept(server: FakeServer) -> None:
    backend = LangChainBackend(chat_openai(server.base_url, max_tokens=3))
    generation = backend.generate(question(), GenerationOptions(stop=("</vision>",)))
    assert server.bodies[0]["stop"] == ["</vision>"]
    assert (generation.finish_reason, generation.usage.output_tokens) == ("length", 3)
    assert generation.options is not None
    assert (generation.options.max_new_tokens, generation.options.stop) == (3, ("</vision>",))


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"finish_reason": "stop"}, "stop"),
        ({"finish_reason": "length"}, "length"),
        ({"stop_reason": "max_tokens"}, "length"),
        ({"stop_reason": "end_turn"}, "stop"),
        ({"finish_reason": "MAX_TOKENS"}, "length"),
        ({"done_reason": "stop"}, "stop"),
        ({"finish_reason": "something new"}, None),
        ({}, None),
    ],
)
def test_provider_finish_reasons_are_mapped_never_guessed(metadata: dict[str, Any], reason: str | None) -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage(content="\\boxed{blue}", response_metadata=metadata)]))
    assert LangChainBackend(model).generate(question()).finish_reason == reason


def test_the_model_call_is_kept_out_of_a_graph_message_stream() -> None:
    """Inside a LangGraph node streamed with stream_mode="messages", the guarded model's own (unchecked) reply is
    not streamed: only what the node returns, after the guard decided."""
    from langgraph.graph import END, START, MessagesState, StateGraph

    model = GenericFakeChatModel(messages=iter([AIMessage(content="unchecked \\boxed{blue}")]))
    backend = LangChainBackend(model)

    def node(state: MessagesState) -> dict[str, Any]:
        generation = backend.generate(question())
        return {"messages": [AIMessage(content=f"decided: {generation.answer}")]}

    graph = StateGraph(MessagesState).add_node("guard", node).add_edge(START, "guard").add_edge("guard", END).compile()
    parts = list(graph.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages"))
    assert [message.content for message, _ in parts if isinstance(message, BaseMessage)] == ["decided: blue"]
    assert len(parts) == 1


def test_an_assistant_prefix_is_refused_before_the_model_is_called() -> None:
    reply = AIMessage(content="\\boxed{blue}")
    model = GenericFakeChatModel(messages=iter([reply]))
    backend = LangChainBackend(model, name="fake")
    options = GenerationOptions(assistant_prefix="<vision>I see a red circle.</vision>")
    with pytest.raises(BackendError, match="fake: a LangChain chat model cannot continue from an assistant prefix"):
        backend.generate(question(), options)
    with pytest.raises(BackendError, match="cannot continue from an assistant prefix"):
        asyncio.run(backend.agenerate(question(), options))
    assert next(model.messages) is reply  # never called
