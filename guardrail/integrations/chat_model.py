"""``GuardrailChatModel``: a guardrail backend, or a whole guard, as a LangChain chat model.

Three ways to build one, exactly one of them:

- ``GuardrailChatModel(model="gpt-4o", base_url=..., api_key=..., artifact=..., policy=...)``, as LangChain's
  ``ChatOpenAI`` is built: the model builds its own guard over an OpenAI-compatible server
  (:class:`~guardrail.backends.openai.OpenAICompatibleBackend`: a vLLM / SGLang server or a hosted API), with the
  black-box estimator under the artifact's probe, the artifact's calibrator (``None``: uncalibrated) and the
  policy (default ``"default"``) with its certified thresholds from the artifact; every call is guarded, as below.
  ``base_url`` defaults to ``$OPENAI_BASE_URL``, else the OpenAI API; ``api_key`` (alias ``openai_api_key``) to
  ``$OPENAI_API_KEY``. ``estimator=`` replaces the black-box estimator.
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
- ``max_retries``: plain calls are tried again after a ``BackendError``. A guarded model's policy decides what
  follows a failure (``on_error``, re-asks, ``budget.max_attempts``): in a guard the model builds, ``max_retries``
  bounds the transport retries of each request to the server (the ``openai`` client's); a ready ``guard`` keeps
  its backends' own transport settings, and ``max_retries`` applies to nothing there.
- ``api_key`` is a secret (:class:`~pydantic.SecretStr`): shown as ``**********`` in ``repr``, ``str`` and
  ``model_dump``, never in a log or a trace; it goes only to the ``openai`` client of a backend the model builds.
  Next to a ready ``backend`` or ``guard`` (which hold their own credentials) it is kept, secret, and unused, so
  that ``$OPENAI_API_KEY`` in the environment, or LangChain's standard parameters, never break a model built from
  one. ``base_url``, ``artifact``, ``policy`` and ``estimator`` next to a ready ``backend`` or ``guard`` are a
  :class:`~guardrail.ConfigurationError` naming both: they describe a guard the model would build, and the ready
  one already has its own.
- Any other unknown parameter is refused.

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
from langchain_core.utils import secret_from_env
from langchain_core.utils.function_calling import convert_to_json_schema
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import AliasChoices, ConfigDict, Field, SecretStr

from ..backends.base import Backend
from ..errors import ConfigurationError
from ..guard import Guard
from ..messages import request_from_messages
from ..types import Generation, GuardResult, Request, Usage
from ._chat_guard import remote_guard
from ._chat_parts import CallSettings, acall_backend, call_backend, configured, cut_at_stop, pieces
from ._review import result_message, review_payload

__all__ = ["PROVIDER", "GuardrailChatModel"]

PROVIDER = "guardrail"
"""``ls_provider`` and ``response_metadata["model_provider"]`` of every reply."""

_BUILD_ONLY = ("base_url", "artifact", "policy", "estimator")
"""Parameters of a guard the model builds, refused next to a ready backend or guard."""


class GuardrailChatModel(BaseChatModel):
    """A LangChain chat model answering through a guard: one it builds from ``model``, ``base_url``, ``api_key``,
    ``artifact`` and ``policy``, or a ready one (``guard=``); or a plain backend, unguarded (``backend=``).

    ``api_key`` is kept as a secret and used only where the model builds its own backend; next to a ready
    ``backend`` or ``guard`` it is unused (they hold their credentials), while ``base_url``, ``artifact``,
    ``policy`` or ``estimator`` there are a :class:`~guardrail.ConfigurationError`. ``max_retries`` is the transport
    retries of a backend the model builds, the retries of a plain call, and nothing for a ready guard (its policy
    decides). Sync, and async when the backend is (a sync backend runs on a worker thread). See the module
    docstring for streaming and the standard parameters.

    >>> model = GuardrailChatModel(model="gpt-4o", base_url="http://127.0.0.1:8000/v1", api_key="sk-secret")
    >>> model.api_key
    SecretStr('**********')
    >>> "sk-secret" in repr(model) + str(model) + model.model_dump_json()
    False
    """

    model_config = ConfigDict(
        arbitrary_types_allowed=True,
        extra="forbid",
        populate_by_name=True,
        protected_namespaces=(),
        hide_input_in_errors=True,  # an error must not print the api_key it was given
    )

    backend: Any = Field(
        default=None, exclude=True, description="The guardrail Backend (or AsyncBackend) that answers, unguarded."
    )
    guard: Any = Field(default=None, exclude=True, description="The guardrail Guard whose guarded calls answer.")
    base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("base_url", "openai_api_base"),
        description="The OpenAI-compatible server of the backend the model builds (else $OPENAI_BASE_URL).",
    )
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("OPENAI_API_KEY", default=None),
        validation_alias=AliasChoices("api_key", "openai_api_key"),
        description="The key of the backend the model builds (else $OPENAI_API_KEY); a secret, never shown.",
    )
    artifact: Any = Field(
        default=None, exclude=True, description="Calibration artifact (or its path) of the guard the model builds."
    )
    policy: Any = Field(default=None, exclude=True, description="Policy of the guard the model builds ('default').")
    estimator: Any = Field(
        default=None, exclude=True, description="Estimator of the guard the model builds (else the black-box one)."
    )
    content: Literal["answer", "text"] = "answer"
    model_name: str = Field(default="", alias="model", description="The answering model's name (the backend's).")
    temperature: float | None = Field(default=None, ge=0.0)
    max_tokens: int | None = Field(default=None, ge=1, validation_alias=AliasChoices("max_tokens", "max_new_tokens"))
    stop: list[str] | None = Field(default=None, description="Stop sequences: the reply ends before the first one.")
    timeout: float | None = Field(default=None, gt=0.0, description="Seconds a call may take (see the module).")
    max_retries: int = Field(
        default=0,
        ge=0,
        description="Retries of a plain call after a BackendError; transport retries of a built backend.",
    )
    streaming: bool = Field(default=False, description="Whether invoke() goes through the streaming path.")

    def model_post_init(self, context: Any, /) -> None:
        """Build the guard, or check the ready backend or guard, and the standard parameters at construction, not
        at the first call."""
        if self.backend is not None and self.guard is not None:
            raise ValueError("GuardrailChatModel needs exactly one of `backend` (unguarded) or `guard` (guarded)")
        if self.backend is None and self.guard is None:
            self._build_guard()
        else:
            ready = "guard" if self.guard is not None else "backend"
            given = [name for name in _BUILD_ONLY if getattr(self, name) is not None]
            if given:
                raise ConfigurationError(
                    f"GuardrailChatModel got a ready `{ready}` and {', '.join(f'`{n}`' for n in given)}: these build "
                    f"a guard of the model's own, and the {ready} already has its server and credentials; give "
                    f"either `{ready}` or model/base_url/api_key/artifact/policy"
                )
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
        self._defaults().check()

    def _build_guard(self) -> None:
        """The guard over the OpenAI-compatible server that ``model``, ``base_url`` and ``api_key`` name."""
        if not self.model_name:
            raise ValueError(
                "GuardrailChatModel needs `model` (with base_url, api_key, artifact, policy: the model builds its "
                "guard), or a ready `guard` (guarded) or `backend` (unguarded)"
            )
        self.guard = remote_guard(
            model=self.model_name,
            base_url=self.base_url,
            api_key=None if self.api_key is None else self.api_key.get_secret_value(),
            artifact=self.artifact,
            policy=self.policy if self.policy is not None else "default",
            estimator=self.estimator,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    @property
    def lc_secrets(self) -> dict[str, str]:
        """The secret parameter and the environment variable it is read from (LangChain's serialisation)."""
        return {"api_key": "OPENAI_API_KEY"}

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
