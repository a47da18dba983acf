"""A backend for any LangChain chat model that takes images (``ChatOpenAI``, ``ChatAnthropic``, ``ChatOllama``, ...).

Most agents already hold their vision-language model as a LangChain ``BaseChatModel``. ``LangChainBackend``
lets the guard watch that model directly: the request becomes LangChain messages with standard image blocks
(:func:`guardrail.messages.messages_from_request`), the reply's text is parsed for the
``\\boxed{}`` answer, and token log-probs are kept where the model returns them in
``response_metadata["logprobs"]`` as OpenAI-style ``{"token", "logprob", "top_logprobs"}`` records.

Log-probs are asked for only from models that declare a ``logprobs`` field (``ChatOpenAI`` and most
OpenAI-compatible chat models); sampling options (``temperature``, ``seed``, ``max_tokens``) are passed only when
the model declares them, so an unknown keyword never reaches a model that would reject it. A model that
returns no log-probs still works: the estimator then uses the verbalized scores and answer agreement.

The request's stop sequences always reach the model (``stop`` is a standard argument of every chat model). The
reply's finish reason (``response_metadata["finish_reason"]``, or ``stop_reason`` / ``done_reason``) is kept in the
:data:`~guardrail.types.FinishReason` vocabulary, and the settings the call ran with (what was passed, else what
the model reports in its LangSmith parameters) in ``Generation.options``.

An assistant prefix (``GenerationOptions.assistant_prefix``) is refused with ``BackendError``: a chat model cannot
be made to continue one.

The call is tagged ``nostream``: inside a LangGraph graph streamed with ``stream_mode="messages"``, the model's
unchecked answer is not streamed to the caller; only what the guard decides to say is.

Every failure of the call (timeouts, connection errors, HTTP 429/500, a reply that is not a text message)
becomes :class:`~guardrail.BackendError` or :class:`~guardrail.BackendTimeout`, the original kept as
``__cause__``; LangGraph interrupts pass through. Build the chat model with ``max_retries=0`` (``ChatOpenAI``
retries twice by default) so that the guard's policy and budget alone decide when to call again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..errors import BackendError, is_control_flow
from ..responses import final_answer
from ..types import Generation, GenerationOptions, Request, Usage, finish_reason_of
from ._remote import parse_logprobs, translate_error

__all__ = ["LangChainBackend"]

_NOSTREAM = "nostream"
"""LangGraph's tag (``langgraph.constants.TAG_NOSTREAM``) that keeps a chat model run out of its message stream."""


class LangChainBackend:
    """Guard any LangChain ``BaseChatModel`` (sync ``invoke``; async ``ainvoke``).

    ``name`` defaults to the model's ``model_name``/``model`` field, else its LangChain type. With ``logprobs``
    (default) and a model that supports it, ``top_logprobs`` alternatives are requested too.
    """

    def __init__(self, chat_model: Any, *, name: str | None = None, logprobs: bool = True, top_logprobs: int = 5):
        from langchain_core.language_models import BaseChatModel

        if not isinstance(chat_model, BaseChatModel):
            raise TypeError(f"`chat_model` must be a LangChain BaseChatModel, got {type(chat_model).__name__}")
        if not 0 <= top_logprobs <= 20:
            raise ValueError(f"`top_logprobs` must be in 0..20, got {top_logprobs}")
        self.chat_model = chat_model
        self.logprobs, self.top_logprobs = logprobs, top_logprobs
        fields = getattr(type(chat_model), "model_fields", {})
        self._fields = frozenset(fields)
        model_id = getattr(chat_model, "model_name", None) or getattr(chat_model, "model", None)
        self._name = name or (model_id if isinstance(model_id, str) and model_id else chat_model._llm_type)

    @property
    def name(self) -> str:
        """The model's name in results and traces."""
        return self._name

    def _invoke_args(self, request: Request, options: GenerationOptions) -> tuple[list[Any], dict[str, Any]]:
        """The messages and keyword arguments of one call (the ``nostream`` tag and the stop sequences included).

        An assistant prefix is refused: a chat model's interface has no way to continue a final assistant message
        (a trailing AI message is answered as a turn of its own by some providers, rejected by others), so the
        answer could not be the continuation asked for."""
        if options.assistant_prefix is not None:
            raise BackendError(
                f"{self.name}: a LangChain chat model cannot continue from an assistant prefix "
                "(GenerationOptions.assistant_prefix); serve the model behind an OpenAI-compatible vLLM server "
                "(OpenAICompatibleBackend) or load it with TransformersBackend"
            )
        kwargs = self._kwargs(options)
        if options.stop:
            kwargs["stop"] = list(options.stop)
        kwargs["config"] = {"tags": [_NOSTREAM]}
        return self._messages(request), kwargs

    def _kwargs(self, options: GenerationOptions) -> dict[str, Any]:
        wanted: dict[str, Any] = {}
        if self.logprobs:
            wanted.update(logprobs=True, top_logprobs=self.top_logprobs)
        if options.temperature is not None:
            wanted["temperature"] = options.temperature
        if options.seed is not None:
            wanted["seed"] = options.seed
        if options.max_new_tokens is not None:
            wanted["max_tokens"] = options.max_new_tokens
        return {k: v for k, v in wanted.items() if k in self._fields}

    def _messages(self, request: Request) -> list[Any]:
        from ..messages import messages_from_request

        return messages_from_request(request)

    def _effective(self, kwargs: Mapping[str, Any], options: GenerationOptions) -> GenerationOptions:
        """The settings the call ran with: what was passed, else what the model says it uses."""
        try:
            declared: Mapping[str, Any] = self.chat_model._get_ls_params()
        except Exception:  # a model's tracing parameters must never fail a call
            declared = {}
        temperature = kwargs.get("temperature", declared.get("ls_temperature"))
        max_tokens = kwargs.get("max_tokens", declared.get("ls_max_tokens"))
        return GenerationOptions(
            attempt=options.attempt,
            seed=kwargs.get("seed"),
            temperature=temperature if isinstance(temperature, int | float) and temperature >= 0 else None,
            max_new_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens >= 1 else None,
            stop=options.stop,
        )

    def _generation(self, reply: Any, seconds: float, options: GenerationOptions) -> Generation:
        from langchain_core.messages import AIMessage

        if not isinstance(reply, AIMessage):
            raise BackendError(f"{self.name}: malformed reply: expected an AIMessage, got {type(reply).__name__}")
        text = reply.text if isinstance(reply.text, str) else str(reply.text)
        if not text and reply.content not in ("", []):
            raise BackendError(f"{self.name}: malformed reply: no text content ({type(reply.content).__name__})")
        metadata = reply.response_metadata or {}
        tokens, logprobs = parse_logprobs(metadata.get("logprobs"), text=text)
        usage: Mapping[str, Any] = reply.usage_metadata or {}
        return Generation(
            text=text,
            answer=final_answer(text),
            model=self.name,
            provider=f"langchain:{self.chat_model._llm_type}",
            token_logprobs=logprobs,
            tokens=tokens if len(tokens) == len(logprobs) else (),
            usage=Usage(
                input_tokens=int(usage.get("input_tokens", 0) or 0),
                output_tokens=int(usage.get("output_tokens", 0) or 0),
            ),
            seconds=seconds,
            finish_reason=finish_reason_of(
                metadata.get("finish_reason") or metadata.get("stop_reason") or metadata.get("done_reason")
            ),
            options=options,
        )

    def generate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        """Answer ``request`` with the chat model; its errors become ``BackendError``/``BackendTimeout``."""
        options = options or GenerationOptions()
        messages, kwargs = self._invoke_args(request, options)
        start = time.perf_counter()
        try:
            reply = self.chat_model.invoke(messages, **kwargs)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            raise translate_error(exc, f"{self.name}: chat model call") from exc
        return self._generation(reply, time.perf_counter() - start, self._effective(kwargs, options))

    async def agenerate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        """The async twin of :meth:`generate` (``ainvoke``)."""
        options = options or GenerationOptions()
        messages, kwargs = self._invoke_args(request, options)
        start = time.perf_counter()
        try:
            reply = await self.chat_model.ainvoke(messages, **kwargs)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            raise translate_error(exc, f"{self.name}: chat model call") from exc
        return self._generation(reply, time.perf_counter() - start, self._effective(kwargs, options))
