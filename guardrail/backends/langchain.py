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
from ..types import Generation, GenerationOptions, Request, Usage
from ._remote import parse_logprobs, translate_error

__all__ = ["LangChainBackend"]


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

    def _generation(self, reply: Any, seconds: float) -> Generation:
        from langchain_core.messages import AIMessage

        if not isinstance(reply, AIMessage):
            raise BackendError(f"{self.name}: malformed reply: expected an AIMessage, got {type(reply).__name__}")
        text = reply.text if isinstance(reply.text, str) else str(reply.text)
        if not text and reply.content not in ("", []):
            raise BackendError(f"{self.name}: malformed reply: no text content ({type(reply.content).__name__})")
        metadata = reply.response_metadata or {}
        tokens, logprobs = parse_logprobs(metadata.get("logprobs"))
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
        )

    def generate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        """Answer ``request`` with the chat model; its errors become ``BackendError``/``BackendTimeout``."""
        messages, kwargs = self._messages(request), self._kwargs(options or GenerationOptions())
        start = time.perf_counter()
        try:
            reply = self.chat_model.invoke(messages, **kwargs)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            raise translate_error(exc, f"{self.name}: chat model call") from exc
        return self._generation(reply, time.perf_counter() - start)

    async def agenerate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        """The async twin of :meth:`generate` (``ainvoke``)."""
        messages, kwargs = self._messages(request), self._kwargs(options or GenerationOptions())
        start = time.perf_counter()
        try:
            reply = await self.chat_model.ainvoke(messages, **kwargs)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            raise translate_error(exc, f"{self.name}: chat model call") from exc
        return self._generation(reply, time.perf_counter() - start)
