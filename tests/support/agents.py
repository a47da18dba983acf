"""Agent parts for the middleware tests: a scripted tool-calling chat model (the planner; the guard's model is the
scripted VLM) and a camera tool."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from pydantic import ConfigDict, Field, PrivateAttr

from tests.support.integration import png_b64


class ScriptedPlanner(BaseChatModel):
    """Replies with ``replies`` in order (the last repeats); records the conversations it saw."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    replies: list[AIMessage]
    seen: list[list[BaseMessage]] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted-planner"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedPlanner:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._lock:
            index = min(len(self.seen), len(self.replies) - 1)
            self.seen.append(list(messages))
        reply = self.replies[index].model_copy()
        return ChatResult(generations=[ChatGeneration(message=reply)])


def tool_call(name: str, args: dict[str, Any], call_id: str = "call-1") -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


class Camera:
    """A tool that photographs the scene; counts how often it really ran."""

    def __init__(self, *, images: bool = True) -> None:
        self.runs = 0
        self.images = images

        @tool(response_format="content")
        def camera(question: str) -> list[dict[str, Any]]:
            """Take a photo of the scene to answer a question about it."""
            self.runs += 1
            if not self.images:
                return [{"type": "text", "text": "lens cap on"}]
            return [{"type": "image", "base64": png_b64(), "mime_type": "image/png"}]

        self.tool = camera
