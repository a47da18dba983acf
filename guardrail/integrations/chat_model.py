"""``GuardrailChatModel``: a guardrail backend, or a whole guard, as a LangChain chat model.

Two ways to build one, exactly one of them:

- ``GuardrailChatModel(guard=guard)``: every call is a guarded call (``Guard.run`` / ``Guard.arun``). The reply is
  the accepted answer, or a sentence saying why there is none (abstained), or a notice that a human reviews it
  (escalated: the review payload is in ``response_metadata["guardrail"]``, marked ``pending``, so that
  ``GuardrailMiddleware(..., model_calls="off")`` in the same agent pauses for the review and replaces the notice
  with the reviewed answer). The confidences and the decision are in ``response_metadata["guardrail"]``.
- ``GuardrailChatModel(backend=backend)``: the plain model, unguarded, e.g. as an agent's own model next to
  ``GuardrailMiddleware(guard)``, which guards the calls that carry images.

Messages are converted with :mod:`guardrail.messages` (standard image blocks in, text out). The reply's
content is the parsed final answer (``content="answer"``, the default) or the model's whole text
(``content="text"``); the whole text, the parsed answer, the finish reason and token counts are always in the
metadata.

Streaming fits the guard: ``stream`` / ``astream`` yield nothing before the call is decided; then the reply (the
accepted answer, the abstention, the escalation notice) comes as word-sized ``AIMessageChunk`` s, the last one
with the usage, the response metadata and ``chunk_position="last"``. A backend does not stream tokens, and a
guarded answer must not reach the caller before the policy accepted it.

The standard parameters are honoured, or refused with an error, never dropped:

- ``max_tokens`` (alias ``max_new_tokens``), ``temperature`` and ``stop``, at construction or per call, reach
  every generation (in a guarded call every attempt, re-asks and fallbacks too; a policy's re-ask temperature
  wins). The reply never contains a stop sequence: it ends before the first one, whatever the backend did.
- ``timeout`` (seconds): a plain call raises :class:`~guardrail.BackendTimeout` when it runs out; a guarded call
  gets it as its time budget (the smaller of it and the policy's ``max_seconds``) and so ends, closed, in the
  policy's ``on_exhausted``.
- ``model``: the name of the model that answers (the backend's ``name``); another one, at construction or per
  call, is refused: a backend is one loaded model.
- ``max_retries``: plain calls are tried again after a ``BackendError``; a guarded model refuses it, since its
  policy decides what follows a failure.
- ``api_key`` and any other unknown parameter are refused: the backend holds credentials, not this class.

It calls no tools (``bind_tools`` is LangChain's default, which raises); ``with_structured_output`` offers
``method="json_mode"`` only: ask for JSON in the prompt and the reply is parsed (an abstention is not JSON and
fails to parse, loudly).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import AliasChoices, ConfigDict, Field, model_validator

from ..backends.base import Backend
from ..guard import Guard
from ..messages import request_from_messages
from ..types import Generation, GuardResult, Request, Usage
from ._chat_parts import CallSettings, acall_backend, call_backend, configured, cut_at_stop, pieces
from ._review import result_message, review_payload

__all__ = ["PROVIDER", "GuardrailChatModel"]

PROVIDER = "guardrail"
"""``ls_provider`` and ``response_metadata["model_provider"]`` of every reply."""

_CREDENTIALS = ("api_key", "base_url", "openai_api_key", "organization")


class GuardrailChatModel(BaseChatModel):
    """A LangChain chat model answering through a guard (``guard=``) or a plain backend (``backend=``).

    Sync, and async when the backend is (a sync backend runs on a worker thread). See the module docstring for
    streaming and the standard parameters.
    """

    model_config = ConfigDict(
        arbitrary_types_allowed=True, extra="forbid", populate_by_name=True, protected_namespaces=()
    )

    backend: Any = Field(default=None, description="The guardrail Backend (or AsyncBackend) that answers, unguarded.")
    guard: Any = Field(default=None, description="The guardrail Guard whose guarded calls answer.")
    content: Literal["answer", "text"] = "answer"
    model_name: str = Field(default="", alias="model", description="The answering model's name (the backend's).")
    temperature: float | None = Field(default=None, ge=0.0)
    max_tokens: int | None = Field(default=None, ge=1, validation_alias=AliasChoices("max_tokens", "max_new_tokens"))
    stop: list[str] | None = Field(default=None, description="Stop sequences: the reply ends before the first one.")
    timeout: float | None = Field(default=None, gt=0.0, description="Seconds a call may take (see the module).")
    max_retries: int = Field(default=0, ge=0, description="Retries of a plain call after a BackendError.")
    streaming: bool = Field(default=False, description="Whether invoke() goes through the streaming path.")

    @model_validator(mode="before")
    @classmethod
    def _refuse_credentials(cls, values: Any) -> Any:
        if isinstance(values, Mapping):
            given = [name for name in _CREDENTIALS if name in values]
            if given:
                raise ValueError(
                    f"GuardrailChatModel takes no {', '.join(given)}: the backend holds its own credentials "
                    "(e.g. OpenAICompatibleBackend(base_url=..., api_key=...))"
                )
        return values

    def model_post_init(self, context: Any, /) -> None:
        """Check the backend or guard and the standard parameters at construction, not at the first call."""
        if (self.backend is None) == (self.guard is None):
            raise ValueError("GuardrailChatModel needs exactly one of `backend` (unguarded) or `guard` (guarded)")
        if self.guard is not None and not isinstance(self.guard, Guard):
            raise TypeError(f"`guard` must be a guardrail Guard, got {type(self.guard).__name__}")
        if self.backend is not None and not isinstance(self.backend, Backend):
            raise TypeError(
                f"`backend` must be a guardrail Backend (with name and generate()), got {type(self.backend).__name__}"
            )
        answering = self._answering.name
        if not self.model_name:
            self.model_name = answering
        elif self.model_name != answering:
            raise ValueError(
                f"`model` is {self.model_name!r}, but the {'guard' if self.guard is not None else 'backend'} "
                f"answers with {answering!r}: a backend is one loaded model (give it that name instead)"
            )
        if self.guard is not None and self.max_retries:
            raise ValueError(
                f"`max_retries` must be 0 for a guarded model, got {self.max_retries}: the policy decides what "
                "follows a failure (on_error; budget.max_attempts)"
            )
        self._defaults().check()

    # -- identity ------------------------------------------------------------------------------------------------

    @property
    def _answering(self) -> Backend:
        backend: Backend = self.guard.backend if self.guard is not None else self.backend
        return backend

    @property
    def _llm_type(self) -> str:
        return "guardrail-guarded" if self.guard is not None else "guardrail"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model_name": self.model_name,
            "content": self.content,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
        }
        if self.guard is not None:
            params["policy"] = self.guard.policy.name
        return params

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """LangSmith's standard parameters; provider and model name agree with ``response_metadata``."""
        params = LangSmithParams(
            ls_provider=PROVIDER, ls_model_name=kwargs.get("model") or self.model_name, ls_model_type="chat"
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stops = stop if stop is not None else self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    # -- calls ---------------------------------------------------------------------------------------------------

    def _defaults(self) -> CallSettings:
        return CallSettings(
            temperature=self.temperature, max_tokens=self.max_tokens, stop=tuple(self.stop or ()), timeout=self.timeout
        )

    def _settings(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> CallSettings:
        return CallSettings.of_call(self._defaults(), stop, kwargs, model=self.model_name)

    def _guard_for(self, settings: CallSettings) -> Guard:
        """The guard, with the call's settings in every backend it may call and ``timeout`` in its budget."""
        if not settings.shapes_generation and settings.timeout is None:
            return self.guard  # type: ignore[no-any-return]
        guard: Guard = copy.copy(self.guard)
        guard.backend = configured(guard.backend, settings)
        guard.fallbacks = {name: configured(b, settings) for name, b in guard.fallbacks.items()}
        if settings.timeout is not None:
            budget = guard.policy.budget
            seconds = settings.timeout if budget.max_seconds is None else min(budget.max_seconds, settings.timeout)
            guard.policy = guard.policy.model_copy(
                update={"budget": budget.model_copy(update={"max_seconds": seconds})}
            )
        return guard

    def _answer(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]) -> AIMessage:
        settings = self._settings(stop, kwargs)
        request = request_from_messages(messages)
        if self.guard is not None:
            return self._guarded_reply(self._guard_for(settings).run(request), request, settings)
        return self._reply(call_backend(self.backend, request, settings, retries=self.max_retries), settings)

    async def _aanswer(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> AIMessage:
        settings = self._settings(stop, kwargs)
        request = request_from_messages(messages)
        if self.guard is not None:
            return self._guarded_reply(await self._guard_for(settings).arun(request), request, settings)
        return self._reply(await acall_backend(self.backend, request, settings, retries=self.max_retries), settings)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages, stop, kwargs))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=await self._aanswer(messages, stop, kwargs))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """The decided reply in word-sized chunks: nothing is yielded before the (guarded) call has ended."""
        for chunk in _chunks(self._answer(messages, stop, kwargs)):
            if run_manager is not None:
                run_manager.on_llm_new_token(_text(chunk), chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """The async twin of :meth:`_stream`."""
        for chunk in _chunks(await self._aanswer(messages, stop, kwargs)):
            if run_manager is not None:
                await run_manager.on_llm_new_token(_text(chunk), chunk=chunk)
            yield chunk

    # -- replies -------------------------------------------------------------------------------------------------

    def _model_text(self, generation: Generation, settings: CallSettings) -> tuple[str, str | None]:
        """The content a caller sees of a generation, ended before the first stop sequence, and its finish
        reason (``stop`` when the content was cut there)."""
        answer = generation.final_answer
        text, cut = cut_at_stop(answer if self.content == "answer" else generation.text, settings.stop)
        return text, "stop" if cut else generation.finish_reason

    def _reply(self, generation: Generation, settings: CallSettings) -> AIMessage:
        content, finish_reason = self._model_text(generation, settings)
        metadata: dict[str, Any] = {
            "model_name": generation.model or self.model_name,
            "model_provider": PROVIDER,
            "text": generation.text,
            "answer": generation.answer,
        }
        if finish_reason is not None:
            metadata["finish_reason"] = finish_reason
        return AIMessage(content=content, response_metadata=metadata, usage_metadata=_usage(generation.usage))

    def _guarded_reply(self, result: GuardResult, request: Request, settings: CallSettings) -> AIMessage:
        message = result_message(result)
        metadata: dict[str, Any] = {**message.response_metadata}
        content = message.content
        last = next((a.generation for a in reversed(result.attempts) if a.generation is not None), None)
        if result.status == "accepted":
            assert last is not None
            content, finish_reason = self._model_text(last, settings)
            if finish_reason is not None:
                metadata["finish_reason"] = finish_reason
            else:
                metadata.pop("finish_reason", None)
        elif result.status == "escalated":
            # No image store here: the payload names large images by hash only (small ones inline); in a graph,
            # GuardrailMiddleware(image_store=...) or guardrail_graph keep them on disk.
            escalation = review_payload(result, request=request)
            metadata["guardrail"] = {**metadata["guardrail"], "escalation": escalation, "pending": True}
        metadata.update(
            model_name=(last.model if last is not None and last.model else self.model_name),
            model_provider=PROVIDER,
        )
        used = [a.generation.usage for a in result.attempts if a.generation is not None]
        total = Usage(input_tokens=sum(u.input_tokens for u in used), output_tokens=sum(u.output_tokens for u in used))
        return AIMessage(content=content, response_metadata=metadata, usage_metadata=_usage(total))

    # -- structured output ---------------------------------------------------------------------------------------

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["json_mode", "json_schema", "function_calling"] = "json_mode",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """The reply parsed as JSON into ``schema`` (a pydantic class, else a dict): ``method="json_mode"`` only.

        The prompt must ask for JSON; nothing constrains the model's decoding, so a reply that is not valid JSON
        (an abstention, for one) raises ``OutputParserException`` (or is kept as ``parsing_error`` with
        ``include_raw=True``). ``function_calling`` and ``json_schema`` are refused: the backend has neither tool
        calls nor schema-constrained decoding.
        """
        if kwargs:
            raise TypeError(f"with_structured_output got unsupported arguments {sorted(kwargs)}")
        if method != "json_mode":
            raise NotImplementedError(
                f"GuardrailChatModel supports with_structured_output(method='json_mode') only, got {method!r}: "
                "the backend has no tool calls and no schema-constrained decoding; ask for JSON in the prompt"
            )
        if strict:
            raise ValueError("`strict=True` needs schema-constrained decoding, which json_mode does not have")
        llm = self.bind(
            ls_structured_output_format={"kwargs": {"method": method}, "schema": convert_to_json_schema(schema)}
        )
        parser: Runnable[Any, Any]
        if isinstance(schema, type) and is_basemodel_subclass(schema):
            parser = PydanticOutputParser(pydantic_object=schema)
        else:
            parser = JsonOutputParser()
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=lambda x: parser.invoke(x["raw"]), parsing_error=lambda _: None)
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")


def _usage(usage: Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
    )


def _text(chunk: ChatGenerationChunk) -> str:
    content = chunk.message.content
    return content if isinstance(content, str) else chunk.message.text


def _chunks(message: AIMessage) -> Sequence[ChatGenerationChunk]:
    """``message`` as streaming chunks: its text in word-sized pieces, then one last chunk that alone carries the
    usage and the response metadata (so that adding the chunks counts them once) and ``chunk_position="last"``."""
    text = message.content if isinstance(message.content, str) else message.text
    chunks = [ChatGenerationChunk(message=AIMessageChunk(content=piece)) for piece in pieces(text)]
    last = AIMessageChunk(
        content="",
        usage_metadata=message.usage_metadata,
        response_metadata=dict(message.response_metadata),
        chunk_position="last",
    )
    return [*chunks, ChatGenerationChunk(message=last)]
