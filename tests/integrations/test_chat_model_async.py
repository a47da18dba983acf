"""GuardrailChatModel (async): ``ainvoke`` / ``astream`` await an async backend or guard, or run a sync one off the
event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk

from guardrail import BackendTimeout, Guard
from guardrail.integrations import GuardrailChatModel
from tests.support.chat import SENTENCE, AsyncWordModel
from tests.support.fakes import AsyncScriptedModel, ScriptedModel, Step
from tests.support.integration import ABSTAIN, image_message, policy


def test_ainvoke_uses_agenerate_of_an_async_backend() -> None:
    backend = AsyncScriptedModel(steps=(Step(answer="red", delay=0.01),))
    reply = asyncio.run(GuardrailChatModel(backend=backend).ainvoke([image_message()]))
    assert reply.content == "red"
    assert len(backend.calls) == 1


def test_ainvoke_runs_a_sync_backend() -> None:
    backend = ScriptedModel(steps=(Step(answer="blue"),))
    assert asyncio.run(GuardrailChatModel(backend=backend).ainvoke([image_message()])).content == "blue"


async def _collect(model: GuardrailChatModel, *args: Any, **kwargs: Any) -> list[AIMessageChunk]:
    return [chunk async for chunk in model.astream(*args, **kwargs)]


def test_astream_yields_the_decided_reply_with_usage_on_the_last_chunk() -> None:
    backend = AsyncWordModel()
    guard = Guard(backend, estimator=backend, policy=policy())
    chunks = asyncio.run(_collect(GuardrailChatModel(guard=guard, max_tokens=4), [image_message()]))
    # cut at 4 tokens, before its \\boxed{} answer: the content is the text so far
    assert "".join(str(c.content) for c in chunks) == " ".join(SENTENCE.split(" ")[:4])
    last = chunks[-1]
    assert last.chunk_position == "last"
    assert last.usage_metadata is not None
    assert last.usage_metadata["output_tokens"] == 4
    assert last.response_metadata["finish_reason"] == "length"
    assert backend.calls[0][1].max_new_tokens == 4


def test_astream_of_an_abstention_streams_the_reason() -> None:
    model = ScriptedModel(steps=(ABSTAIN,))
    guarded = GuardrailChatModel(guard=Guard(model, estimator=model, policy=policy()))
    chunks = asyncio.run(_collect(guarded, [image_message()]))
    assert "".join(str(c.content) for c in chunks).startswith("I am not confident enough")
    assert chunks[-1].response_metadata["guardrail"]["status"] == "abstained"


class _SlowAsync(AsyncScriptedModel):
    async def agenerate(self, request: Any, options: Any) -> Any:
        await asyncio.sleep(0.5)
        return await super().agenerate(request, options)


class _SlowSync(ScriptedModel):
    def generate(self, request: Any, options: Any) -> Any:
        time.sleep(0.5)
        return super().generate(request, options)


@pytest.mark.parametrize("backend", [_SlowAsync(), _SlowSync()], ids=["async", "sync"])
def test_atimeout_cuts_off_a_plain_call(backend: ScriptedModel) -> None:
    with pytest.raises(BackendTimeout, match=r"no answer within the timeout of 0\.05 s"):
        asyncio.run(GuardrailChatModel(backend=backend, timeout=0.05).ainvoke("hi"))
