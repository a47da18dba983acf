"""GuardrailChatModel (async): ``ainvoke`` awaits an async backend, or runs a sync one off the event loop."""

from __future__ import annotations

import asyncio

from guardrail.integrations import GuardrailChatModel
from tests.support.fakes import AsyncScriptedModel, ScriptedModel, Step
from tests.support.integration import image_message


def test_ainvoke_uses_agenerate_of_an_async_backend() -> None:
    backend = AsyncScriptedModel(steps=(Step(answer="red", delay=0.01),))
    reply = asyncio.run(GuardrailChatModel(backend=backend).ainvoke([image_message()]))
    assert reply.content == "red"
    assert len(backend.calls) == 1


def test_ainvoke_runs_a_sync_backend() -> None:
    backend = ScriptedModel(steps=(Step(answer="blue"),))
    assert asyncio.run(GuardrailChatModel(backend=backend).ainvoke([image_message()])).content == "blue"
