"""GuardrailChatModel (sync): a backend or a guard as a LangChain chat model; parameters, streaming, refusals."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk
from langchain_core.tools import tool
from pydantic import BaseModel, ValidationError

from guardrail import BackendError, BackendTimeout, Guard, Request
from guardrail.integrations import GuardrailChatModel
from guardrail.telemetry import CallTrace, Telemetry
from guardrail.types import GuardResult
from tests.support.chat import JSON_ANSWER, SENTENCE, WordModel
from tests.support.fakes import ScriptedModel, Step
from tests.support.integration import ABSTAIN, ESCALATE, image_message, policy


@tool
def noop() -> str:
    """Do nothing."""
    return ""


def guarded(model: WordModel | ScriptedModel | None = None, **kwargs: Any) -> GuardrailChatModel:
    backend = model if model is not None else WordModel()
    guard = Guard(backend, estimator=backend, policy=kwargs.pop("policy", policy()), **kwargs.pop("guard", {}))
    return GuardrailChatModel(guard=guard, **kwargs)


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


# -- standard parameters ----------------------------------------------------------------------------------------


def test_max_tokens_temperature_and_stop_reach_the_backend_at_construction_and_per_call() -> None:
    backend = WordModel()
    model = GuardrailChatModel(backend=backend, temperature=0.5, max_tokens=3, stop=["</x>"])
    cut = model.invoke("hi")
    options = backend.calls[-1][1]
    assert (options.temperature, options.max_new_tokens, options.stop) == (0.5, 3, ("</x>",))
    assert cut.usage_metadata is not None
    assert cut.usage_metadata["output_tokens"] == 3  # the max_tokens=3 that still generated 25 tokens
    assert cut.response_metadata["finish_reason"] == "length"
    model.invoke("hi", temperature=0.0, max_tokens=50, stop=["never"])
    options = backend.calls[-1][1]
    assert (options.temperature, options.max_new_tokens, options.stop) == (0.0, 50, ("never",))
    GuardrailChatModel(backend=backend, max_new_tokens=8).invoke("hi")  # type: ignore[call-arg]  # the former name
    assert backend.calls[-1][1].max_new_tokens == 8


def test_the_reply_ends_before_the_first_stop_sequence_whatever_the_backend_did() -> None:
    backend = WordModel()  # ignores stop sequences: the chat model ends the text itself
    reply = GuardrailChatModel(backend=backend, content="text").invoke("hi", stop=["</vision>", "<reasoning>"])
    assert reply.content == SENTENCE.split("</vision>")[0]
    assert reply.response_metadata["finish_reason"] == "stop"
    assert GuardrailChatModel(backend=backend, stop=["shape"]).invoke("hi").content == "red"  # the answer is before


def test_finish_reason_is_the_backends_and_absent_when_it_cannot_tell() -> None:
    assert GuardrailChatModel(backend=WordModel()).invoke("hi").response_metadata["finish_reason"] == "stop"
    reply = GuardrailChatModel(backend=ScriptedModel()).invoke("hi")  # a backend that reports no finish reason
    assert "finish_reason" not in reply.response_metadata


def test_ls_params_agree_with_the_response_metadata() -> None:
    model = GuardrailChatModel(backend=WordModel(), temperature=0.2, max_tokens=7, stop=["x"])
    params = model._get_ls_params()
    reply = model.invoke("hi")
    assert params == {
        "ls_provider": "guardrail",
        "ls_model_name": "word-model",
        "ls_model_type": "chat",
        "ls_temperature": 0.2,
        "ls_max_tokens": 7,
        "ls_stop": ["x"],
    }
    assert reply.response_metadata["model_provider"] == params["ls_provider"]
    assert reply.response_metadata["model_name"] == params["ls_model_name"] == model.model_name
    assert model._get_ls_params(stop=["y"], max_tokens=2)["ls_stop"] == ["y"]


def test_model_names_the_answering_backend_and_another_one_is_refused() -> None:
    assert GuardrailChatModel(backend=WordModel(), model="word-model").model_name == "word-model"  # type: ignore[call-arg]
    assert guarded().model_name == "word-model"
    with pytest.raises(ValidationError, match="`model` is 'gpt-4o', but the backend answers with 'word-model'"):
        GuardrailChatModel(backend=WordModel(), model="gpt-4o")  # type: ignore[call-arg]  # alias of model_name
    with pytest.raises(ValueError, match="answers with model 'word-model', got model='other'"):
        GuardrailChatModel(backend=WordModel()).invoke("hi", model="other")


def test_unsupported_parameters_are_refused_never_dropped() -> None:
    with pytest.raises(ValidationError, match="got a ready `backend` and `base_url`"):
        GuardrailChatModel(backend=WordModel(), base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValidationError, match="top_p"):
        GuardrailChatModel(backend=WordModel(), top_p=0.9)  # type: ignore[call-arg]  # refused on purpose
    with pytest.raises(ValidationError, match="max_tokens"):
        GuardrailChatModel(backend=WordModel(), max_tokens=0)
    with pytest.raises(ValidationError, match="needs `model`"):
        GuardrailChatModel()
    with pytest.raises(ValidationError, match="exactly one of `backend`"):
        GuardrailChatModel(backend=WordModel(), guard=guarded().guard)
    with pytest.raises(TypeError, match="`backend` must be a guardrail Backend"):
        GuardrailChatModel(backend=object())
    with pytest.raises(TypeError, match="`guard` must be a guardrail Guard"):
        GuardrailChatModel(guard=object())
    model = GuardrailChatModel(backend=WordModel())
    with pytest.raises(TypeError, match=r"unsupported call arguments \['top_p'\]"):
        model.invoke("hi", top_p=0.5)
    with pytest.raises(ValueError, match="`stop` must be a list of non-empty strings"):
        model.invoke("hi", stop=[""])
    with pytest.raises(ValueError, match="`max_tokens` must be an int >= 1, got 0"):
        model.invoke("hi", max_tokens=0)


def test_tools_are_not_supported_and_say_so() -> None:
    model = GuardrailChatModel(backend=ScriptedModel())
    with pytest.raises(NotImplementedError):
        model.bind_tools([noop])  # LangChain's default: the model declares no tool calling
    with pytest.raises(NotImplementedError, match=r"cannot call tools.*GuardrailMiddleware"):
        model.invoke("hi", tools=[{"type": "function", "function": {"name": "noop"}}])


class _Slow(ScriptedModel):
    def generate(self, request: Request, options: Any) -> Any:
        time.sleep(0.5)
        return super().generate(request, options)


def test_timeout_cuts_off_a_plain_call_and_becomes_a_guarded_calls_budget() -> None:
    with pytest.raises(BackendTimeout, match=r"no answer within the timeout of 0\.05 s"):
        GuardrailChatModel(backend=_Slow(), timeout=0.05).invoke("hi")
    slow = _Slow()
    guard = Guard(slow, estimator=slow, policy=policy())
    start = time.perf_counter()
    reply = GuardrailChatModel(guard=guard, timeout=0.05).invoke("hi")
    assert time.perf_counter() - start < 0.4
    assert reply.response_metadata["guardrail"]["status"] == "abstained"  # the policy's on_exhausted: fails closed
    assert guard.policy.budget.max_seconds is None  # the guard itself is unchanged


def test_max_retries_tries_a_plain_call_again_after_a_backend_error() -> None:
    backend = ScriptedModel(steps=(Step(fail=BackendError),))
    with pytest.raises(BackendError):
        GuardrailChatModel(backend=backend, max_retries=2).invoke("hi")
    assert len(backend.calls) == 3


# -- the guarded model ------------------------------------------------------------------------------------------


def test_a_guarded_model_answers_abstains_and_escalates_with_the_decision_in_metadata() -> None:
    accepted = guarded().invoke([image_message()])
    assert accepted.content == "red"
    assert accepted.response_metadata["guardrail"]["status"] == "accepted"
    assert accepted.response_metadata["model_provider"] == "guardrail"
    abstained = guarded(ScriptedModel(steps=(ABSTAIN,))).invoke([image_message()])
    assert abstained.text.startswith("I am not confident enough")
    assert abstained.response_metadata["finish_reason"] == "stop"
    escalated = guarded(ScriptedModel(steps=(ESCALATE,))).invoke([image_message()])
    info = escalated.response_metadata["guardrail"]
    assert (info["status"], info["pending"], info["escalation"]["candidate_answer"]) == ("escalated", True, "green")


def test_a_guarded_model_gives_its_settings_to_every_attempt() -> None:
    backend = WordModel(visual=0.1)  # never confident: re-asked until the budget is spent
    reask = policy(
        budget={"max_attempts": 2, "max_seconds": None},
        rules=[{"when": {"overall": {"below": 0.6}}, "do": "re_ask", "with": {"temperature": 0.9}}],
    )
    guarded(backend, policy=reask, max_tokens=4, temperature=0.1, stop=["x"]).invoke("hi")
    first, second = (options for _, options in backend.calls)
    assert (first.max_new_tokens, first.temperature, first.stop) == (4, 0.1, ("x",))
    assert (second.max_new_tokens, second.temperature, second.stop) == (4, 0.9, ("x",))  # the policy's wins


def test_a_guarded_reply_counts_the_tokens_of_every_attempt() -> None:
    backend = WordModel(visual=0.1)
    reask = policy(budget={"max_attempts": 2, "max_seconds": None}, rules=[
        {"when": {"overall": {"below": 0.6}}, "do": "re_ask"}])  # fmt: skip
    reply = guarded(backend, policy=reask).invoke("hi")
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == 2 * len(SENTENCE.split(" "))


# -- streaming --------------------------------------------------------------------------------------------------


def test_stream_yields_the_reply_in_chunks_that_add_up_to_it() -> None:
    model = GuardrailChatModel(backend=WordModel(), content="text")
    chunks = list(model.stream("hi"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len(chunks) > 3
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    assert isinstance(full, AIMessageChunk)  # adding chunks once returned a ChatPromptTemplate
    assert full.content == SENTENCE
    assert full.chunk_position == "last"
    assert [c.chunk_position for c in chunks].count("last") == 1
    assert full.usage_metadata is not None
    assert full.usage_metadata["output_tokens"] == len(SENTENCE.split(" "))
    assert full.response_metadata["finish_reason"] == "stop"
    assert full.response_metadata["model_provider"] == "guardrail"  # set by one chunk only, so not repeated
    assert model.invoke("hi", stream=True).content == SENTENCE


class _Order(BaseCallbackHandler):
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.events.append(f"token {token!r}")


class _DecisionTrace(CallTrace):
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def attempt_started(self, index: int, model: str) -> None:
        self.events.append("attempt")

    def finished(self, result: GuardResult) -> None:
        self.events.append(f"decided {result.status}")


class _Telemetry(Telemetry):
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def call(self, request: Request, *, model: str, policy: str, policy_version: int) -> Any:
        from contextlib import nullcontext

        return nullcontext(_DecisionTrace(self.events))


@pytest.mark.parametrize(("step", "status"), [(Step(answer="red"), "accepted"), (ABSTAIN, "abstained")])
def test_nothing_is_streamed_before_the_guard_decided(step: Step, status: str) -> None:
    events: list[str] = []
    model = guarded(ScriptedModel(steps=(step,)), guard={"telemetry": _Telemetry(events)})
    chunks = list(model.stream([image_message()], config={"callbacks": [_Order(events)]}))
    assert events[:2] == ["attempt", f"decided {status}"]
    assert all(e.startswith("token") for e in events[2:])
    text = "".join(str(c.content) for c in chunks)
    assert text == (step.answer if status == "accepted" else model.invoke([image_message()]).text)
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].response_metadata["guardrail"]["status"] == status


# -- structured output ------------------------------------------------------------------------------------------


class Joke(BaseModel):
    setup: str
    punchline: str


def test_json_mode_parses_the_reply_and_other_methods_are_refused() -> None:
    model = GuardrailChatModel(backend=WordModel())
    joke = model.with_structured_output(Joke).invoke("A joke about cats, as JSON.")
    assert isinstance(joke, Joke)
    assert joke.punchline == "To keep an eye on the mouse."
    raw = model.with_structured_output(Joke.model_json_schema(), include_raw=True).invoke("As JSON, please.")
    assert raw["parsed"] == Joke.model_validate_json(JSON_ANSWER).model_dump()
    assert isinstance(raw["raw"], AIMessage)
    failed = model.with_structured_output(Joke, include_raw=True).invoke("no format asked for")
    assert (failed["parsed"], type(failed["parsing_error"]).__name__) == (None, "OutputParserException")
    with pytest.raises(NotImplementedError, match=r"method='json_mode'\) only, got 'function_calling'"):
        model.with_structured_output(Joke, method="function_calling")


def test_the_settings_wrapper_delegates_everything_else_and_copies() -> None:
    import copy

    from guardrail.backends.base import AsyncBackend
    from guardrail.integrations._chat_parts import CallSettings, configured
    from tests.support.chat import AsyncWordModel

    plain = WordModel()
    assert configured(plain, CallSettings()) is plain  # nothing to fill in: the backend itself
    wrapped: Any = configured(plain, CallSettings(max_tokens=2))  # forwards other attributes to the backend
    assert (wrapped.name, wrapped.estimate) == (plain.name, plain.estimate)
    assert not isinstance(wrapped, AsyncBackend)
    assert isinstance(configured(AsyncWordModel(), CallSettings(max_tokens=2)), AsyncBackend)
    assert copy.copy(wrapped).name == plain.name
