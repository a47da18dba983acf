"""``GuardrailMiddleware``: the guard inside a LangChain v1 agent (``create_agent``).

Three hooks, each with its async twin:

- ``wrap_model_call``: a model call whose messages carry an image is answered by the guarded call
  (``Guard.run`` / ``Guard.arun`` on the converted conversation) instead of the plain model; calls without
  images go to ``handler`` untouched. ``model_calls="new_image"`` guards only calls whose new input (the
  messages after the last AI message) carries an image, so a planner can go on calling tools about an image
  seen earlier; ``"off"`` leaves model calls alone and guards vision tools only. The reply is one
  ``AIMessage``: the answer (accepted), a sentence saying why there is none (abstained), or a notice that a
  human is reviewing it (escalated), with the confidences in ``response_metadata["guardrail"]``.
- ``after_model``: when the last reply is an escalation, it calls ``interrupt(payload)`` in this separate, cheap
  node: resuming runs only this hook, never the model call. The reviewer's ``Command(resume=decision)``
  (approve / edit / answer / reject, validated by LangGraph against the schema) replaces the notice with the
  final message, keeping its id. With ``escalate="message"`` the notice stays and nothing pauses.
- ``wrap_tool_call``: for the tools named in ``vision_tools``, the tool runs first (it fetches the images: a
  camera, a page renderer); when its result carries image blocks, the guard answers the question (the tool
  call's ``question`` argument, else the user's last message) on those images, and the agent gets the guarded
  answer, or the abstention, as the tool result; the full ``GuardResult`` is the message's ``artifact``. An
  escalation here becomes an error result carrying the notice (it does not pause: resuming a tool node would
  run the tool again); pause-and-review happens on model calls, or use ``HumanInTheLoopMiddleware`` on the tool.
  A tool result that is an error (for instance a call that ``HumanInTheLoopMiddleware`` rejected, and which
  therefore never ran) passes through untouched: the guard never runs, or re-runs, a rejected call.

Nothing is edited in place: requests are replaced with ``override`` and messages are new objects. Interrupts
(``GraphBubbleUp``) raised by inner handlers pass through: nothing here catches broadly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from langchain.agents.middleware.types import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langgraph.config import get_config
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from ..errors import ConfigurationError
from ..messages import has_images, image_blocks_of, request_from_messages
from ..types import GuardResult, Request
from ._review import (
    abstention_text,
    decision_schema,
    parse_review,
    resolved_message,
    result_json,
    result_message,
    review_payload,
)
from .image_store import ImageStore
from .langgraph import GuardSource, _LazyGuard

__all__ = ["GuardrailMiddleware"]

_ToolResult = ToolMessage | Command[Any]


class GuardrailMiddleware(AgentMiddleware[AgentState[Any], Any, Any]):
    """Guards an agent's image-carrying model calls and its configured vision tools (see the module docstring).

    Args:
        guard: the guard, or a zero-argument factory building it on first use.
        vision_tools: names of tools whose image results the guard should answer about.
        question_arg: the tool-call argument holding the question for a vision tool.
        escalate: ``"interrupt"`` to pause for a human on escalation (needs a checkpointer), ``"message"`` to
            reply with the escalation notice and carry on.
        model_calls: which model calls to guard: ``"any_image"`` (an image anywhere in the conversation),
            ``"new_image"`` (an image in the messages since the last AI reply) or ``"off"``.
        image_store: where escalated inline images are kept (an ``ImageStore`` or its folder; e.g.
            ``ImageStore.beside("agent.sqlite")``, where ``guardrail escalations serve`` finds them); without one
            an escalation names large images by hash only (see :mod:`guardrail.integrations.image_store`).
    """

    def __init__(
        self,
        guard: GuardSource,
        *,
        vision_tools: Collection[str] = (),
        question_arg: str = "question",
        escalate: Literal["interrupt", "message"] = "interrupt",
        model_calls: Literal["any_image", "new_image", "off"] = "any_image",
        image_store: ImageStore | str | Path | None = None,
    ) -> None:
        super().__init__()
        if escalate not in ("interrupt", "message"):
            raise ConfigurationError(f"`escalate` must be 'interrupt' or 'message', got {escalate!r}")
        if model_calls not in ("any_image", "new_image", "off"):
            raise ConfigurationError(f"`model_calls` must be 'any_image', 'new_image' or 'off', got {model_calls!r}")
        if isinstance(vision_tools, str):
            raise ConfigurationError(
                f"`vision_tools` must be a collection of tool names, got the string {vision_tools!r}"
            )
        self._guard = _LazyGuard(guard)
        self.vision_tools = frozenset(vision_tools)
        self.question_arg = question_arg
        self.escalate = escalate
        self.model_calls = model_calls
        self.image_store = ImageStore(image_store) if isinstance(image_store, str | Path) else image_store

    # -- model calls -------------------------------------------------------------------------------------------

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]
    ) -> ModelResponse[Any] | AIMessage:
        """Answer image-carrying calls through the guard; pass the others to ``handler``."""
        if not self._guards(request.messages):
            return handler(request)
        guarded = self._model_request(request)
        return ModelResponse(result=[self._reply(self._guard.get().run(guarded), guarded)])

    async def awrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]]
    ) -> ModelResponse[Any] | AIMessage:
        """The async twin of :meth:`wrap_model_call`."""
        if not self._guards(request.messages):
            return await handler(request)
        guarded = self._model_request(request)
        return ModelResponse(result=[self._reply(await self._guard.get().arun(guarded), guarded)])

    def after_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Pause for a human when the reply is an escalation; the decision replaces the notice."""
        return self._review(state)

    async def aafter_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        """The async twin of :meth:`after_model` (the interrupt itself is synchronous)."""
        return self._review(state)

    # -- tool calls --------------------------------------------------------------------------------------------

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], _ToolResult]
    ) -> _ToolResult:
        """Run a vision tool, then answer its question on the images it returned, through the guard."""
        if request.tool_call["name"] not in self.vision_tools:
            return handler(request)
        output = handler(request)
        guarded = self._tool_request(request, output)
        if guarded is None:
            return output
        assert isinstance(output, ToolMessage)
        return self._tool_reply(output, self._guard.get().run(guarded))

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[_ToolResult]]
    ) -> _ToolResult:
        """The async twin of :meth:`wrap_tool_call`."""
        if request.tool_call["name"] not in self.vision_tools:
            return await handler(request)
        output = await handler(request)
        guarded = self._tool_request(request, output)
        if guarded is None:
            return output
        assert isinstance(output, ToolMessage)
        return self._tool_reply(output, await self._guard.get().arun(guarded))

    # -- shared, pure parts ------------------------------------------------------------------------------------

    def _guards(self, messages: Sequence[BaseMessage]) -> bool:
        if self.model_calls == "off":
            return False
        if self.model_calls == "new_image":
            last_ai = max((i for i, m in enumerate(messages) if isinstance(m, AIMessage)), default=-1)
            messages = messages[last_ai + 1 :]
        return has_images(messages)

    @staticmethod
    def _model_request(request: ModelRequest[Any]) -> Request:
        return request_from_messages(request.messages, system=request.system_message)

    def _reply(self, result: GuardResult, request: Request) -> AIMessage:
        message = result_message(result)
        if result.status != "escalated":
            return message
        meta = {**message.response_metadata}
        payload = review_payload(result, request=request, image_store=self.image_store)
        meta["guardrail"] = {**meta["guardrail"], "escalation": payload, "pending": True}
        return AIMessage(content=message.content, response_metadata=meta)

    def _review(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        messages: list[BaseMessage] = list(state.get("messages") or [])
        last = messages[-1] if messages else None
        if self.escalate != "interrupt" or not isinstance(last, AIMessage):
            return None
        info = last.response_metadata.get("guardrail")
        if not isinstance(info, Mapping) or not info.get("pending"):
            return None
        payload = dict(info["escalation"])
        thread_id = get_config().get("configurable", {}).get("thread_id")
        payload["thread_id"] = None if thread_id is None else str(thread_id)
        candidate = payload.get("candidate_answer")
        answer = interrupt(payload, response_schema=decision_schema(candidate))
        decision = parse_review(answer, candidate_answer=candidate)
        return {"messages": [resolved_message(payload, decision, message_id=last.id)]}

    def _tool_request(self, request: ToolCallRequest, output: _ToolResult) -> Request | None:
        """The guarded request for a vision tool's result, or ``None`` to pass the result through."""
        if not isinstance(output, ToolMessage) or output.status == "error":
            return None
        images = image_blocks_of(output)
        if not images:
            return None
        question = request.tool_call["args"].get(self.question_arg)
        if not isinstance(question, str) or not question:
            question = _last_user_text(request.state)
        return Request.from_question(question, images)

    @staticmethod
    def _tool_reply(output: ToolMessage, result: GuardResult) -> ToolMessage:
        content: Any
        if result.status == "accepted":
            assert result.answer is not None
            content, status = result.answer, "success"
        elif result.status == "abstained":
            content, status = abstention_text(result), "error"
        else:
            content, status = result_message(result).content, "error"
        return ToolMessage(
            content=content,
            tool_call_id=output.tool_call_id,
            name=output.name,
            status=status,
            artifact={"guardrail": result_json(result)},
            id=output.id,
        )


def _last_user_text(state: Any) -> str:
    messages = state.get("messages", []) if isinstance(state, Mapping) else []
    for message in reversed(messages):
        if isinstance(message, BaseMessage) and message.type == "human":
            return message.text
    return ""
