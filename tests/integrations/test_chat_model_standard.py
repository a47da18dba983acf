"""LangChain's standard chat-model suites (``langchain-tests``) on ``GuardrailChatModel``, offline and fast.

Unit suites for both ways to build one (plain backend, guard); the integration suite on a guard over the scripted
``WordModel`` (the same suite on the real reference model is ``test_chat_model_standard_reference.py``, slow).

Capability flags, each with its reason (everything else is the suite's default):

- ``has_tool_calling`` False (default: ``bind_tools`` is not overridden): a vision-language backend emits no tool
  calls; ``has_tool_choice`` follows.
- ``has_structured_output`` False: LangChain's structured output means tool calls or schema-constrained decoding
  (the suite's unit test asks for ``function_calling`` and ``json_schema``), which no backend here has;
  ``with_structured_output`` offers ``json_mode`` only, which ``supports_json_mode`` covers.
- ``supports_json_mode`` True on ``WordModel`` (it writes JSON when asked for it).
- ``supports_image_inputs`` True: base64 images in OpenAI and standard blocks. The suite downloads its test image
  with ``httpx.get``; tests run offline, so the fixture below serves a local PNG in its place.
- ``supports_image_urls`` False: guardrail never fetches remote images (docs/usage.md, "Images").
- ``supports_image_tool_message`` False: the suite sends it through ``bind_tools``, which is not supported.
- ``supports_model_override`` False: a backend is one loaded model; another ``model`` per call is refused.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from guardrail import Guard
from guardrail.integrations import GuardrailChatModel
from tests.support.chat import AsyncWordModel
from tests.support.fakes import ScriptedModel
from tests.support.integration import policy, serve_suite_image


@pytest.fixture(autouse=True)
def offline_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's test image, served from memory: tests never use the network."""
    serve_suite_image(monkeypatch)


def _without(params: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in names}


class TestPlainChatModelUnit(ChatModelUnitTests):
    """``GuardrailChatModel(backend=...)``."""

    @property
    def chat_model_class(self) -> type[GuardrailChatModel]:
        return GuardrailChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": ScriptedModel()}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        """The suite's standard parameters less ``api_key``, which the model refuses on purpose (the backend holds
        credentials; ``test_an_api_key_is_refused`` pins the error)."""
        return _without(super().standard_chat_model_params, "api_key")

    @property
    def has_structured_output(self) -> bool:
        return False  # json_mode only: see the module docstring

    @property
    def supports_model_override(self) -> bool:
        return False  # one backend is one model: see the module docstring


class TestGuardedChatModelUnit(ChatModelUnitTests):
    """``GuardrailChatModel(guard=...)``."""

    @property
    def chat_model_class(self) -> type[GuardrailChatModel]:
        return GuardrailChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        model = ScriptedModel()
        return {"guard": Guard(model, estimator=model, policy=policy())}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        """Less ``api_key`` (as above) and ``max_retries``, which a guarded model refuses on purpose: its policy
        decides what follows a failure (``test_a_guarded_model_refuses_retries`` pins the error)."""
        return _without(super().standard_chat_model_params, "api_key", "max_retries")

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False


class TestGuardedChatModelIntegration(ChatModelIntegrationTests):
    """A guard over ``WordModel`` (async backend), with a policy that accepts its confident answers."""

    @property
    def chat_model_class(self) -> type[GuardrailChatModel]:
        return GuardrailChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        model = AsyncWordModel()
        return {"guard": Guard(model, estimator=model, policy=policy())}

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False
