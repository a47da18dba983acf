"""``GuardrailChatModel``: any guardrail :class:`~guardrail.Backend` as a LangChain chat model.

It lets the model a guard watches also be the agent's own model (``create_agent(GuardrailChatModel(backend=b),
middleware=[GuardrailMiddleware(guard)])``), or be used anywhere LangChain takes a ``BaseChatModel``. Messages
are converted with :mod:`guardrail.messages` (standard image blocks in, text out). The reply's
content is the parsed final answer (``content="answer"``, the default) or the model's whole text
(``content="text"``); the whole text, the parsed answer and token counts are always in ``response_metadata``.

A vision-language backend answers questions; it does not call tools, so binding tools raises
``NotImplementedError`` with a hint instead of silently ignoring them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field

from ..backends.base import AsyncBackend, Backend
from ..messages import request_from_messages
from ..types import Generation, GenerationOptions

__all__ = ["GuardrailChatModel"]


class GuardrailChatModel(BaseChatModel):
    """A LangChain chat model answering through a guardrail backend (sync, and async when the backend is)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any = Field(description="The guardrail Backend (or AsyncBackend) that answers.")
    content: Literal["answer", "text"] = "answer"
    temperature: float | None = Field(default=None, ge=0.0)
    max_new_tokens: int | None = Field(default=None, ge=1)

    def model_post_init(self, context: Any, /) -> None:
        """Check the backend at construction, not at the first call."""
        if not isinstance(self.backend, Backend):
            raise TypeError(
                f"`backend` must be a guardrail Backend (with name and generate()), got {type(self.backend).__name__}"
            )

    @property
    def _llm_type(self) -> str:
        return "guardrail"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.backend.name, "content": self.content, "temperature": self.temperature}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Tools cannot be bound: a vision-language backend answers questions and emits no tool calls."""
        if not tools:
            return self
        raise NotImplementedError(
            f"GuardrailChatModel({self.backend.name!r}) cannot call tools: it answers questions about images. "
            "Plan tool calls with another chat model and guard vision calls with GuardrailMiddleware."
        )

    def _options(self, stop: list[str] | None) -> GenerationOptions:
        if stop:
            raise ValueError("GuardrailChatModel does not support `stop` sequences")
        return GenerationOptions(temperature=self.temperature, max_new_tokens=self.max_new_tokens)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = self._options(stop)
        generation = self.backend.generate(request_from_messages(messages), options)
        return self._result(generation)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if not isinstance(self.backend, AsyncBackend):
            return await super()._agenerate(messages, stop, None, **kwargs)  # runs _generate in an executor
        options = self._options(stop)
        generation = await self.backend.agenerate(request_from_messages(messages), options)
        return self._result(generation)

    def _result(self, generation: Generation) -> ChatResult:
        if not isinstance(generation, Generation):
            raise TypeError(f"backend returned {type(generation).__name__}, expected guardrail.Generation")
        answer = generation.answer if generation.answer is not None else generation.text.strip()
        usage = generation.usage
        message = AIMessage(
            content=answer if self.content == "answer" else generation.text,
            response_metadata={
                "model_name": generation.model or self.backend.name,
                "model_provider": "guardrail",
                "text": generation.text,
                "answer": generation.answer,
                "finish_reason": "stop",
            },
            usage_metadata=UsageMetadata(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.input_tokens + usage.output_tokens,
            ),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
