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

The suite's standard parameters are used unmodified (``api_key`` and ``max_retries`` included: next to a ready
backend or guard the key is kept, secret and unused, and a ready guard's policy decides what follows a failure).
``init_from_env_params`` checks that the key is read from ``$OPENAI_API_KEY``.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from guardrail import Guard
from guardrail.integrations import GuardrailChatModel
from tests.support.chat import AsyncWordModel
from tests.support.fake_openai_server import closed_port
from tests.support.fakes import ScriptedModel
from tests.support.integration import policy, serve_suite_image


@pytest.fixture(autouse=True)
def offline_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's test image, served from memory: tests never use the network."""
    serve_suite_image(monkeypatch)


class _Capabilities:
    """What every suite here declares of the model (the module docstring says why)."""

    @property
    def has_structured_output(self) -> bool:
        return False  # json_mode only

    @property
    def supports_model_override(self) -> bool:
        return False  # one backend is one model


class TestPlainChatModelUnit(_Capabilities, ChatModelUnitTests):
    """``GuardrailChatModel(backend=...)``."""

    @property
    def chat_model_class(self) -> type[GuardrailChatModel]:
        return GuardrailChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": ScriptedModel()}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        """``$OPENAI_API_KEY`` becomes the (secret) ``api_key``, as with LangChain's ``ChatOpenAI``."""
        return {"OPENAI_API_KEY": "sk-from-env"}, {"backend": ScriptedModel()}, {"api_key": "sk-from-env"}


class TestGuardedChatModelUnit(_Capabilities, ChatModelUnitTests):
    """``GuardrailChatModel(guard=...)``."""

    @property
    def chat_model_class(self) -> type[GuardrailChatModel]:
        return GuardrailChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        model = ScriptedModel()
        return {"guard": Guard(model, estimator=model, policy=policy())}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return {"OPENAI_API_KEY": "sk-from-env"}, self.chat_model_params, {"api_key": "sk-from-env"}


# No artifact is given, so every model the suite builds warns that its guard is uncalibrated (what a user is told);
# the suite checks construction and parameters, and makes no call.
@pytest.mark.filterwarnings("ignore::guardrail.errors.UncalibratedWarning")
class TestBuiltChatModelUnit(_Capabilities, ChatModelUnitTests):
    """``GuardrailChatModel(model=..., base_url=..., api_key=...)``: the model builds its guard (nothing listens at
    ``base_url``: the unit suite makes no call)."""

    @property
    def chat_model_class(self) -> type[GuardrailChatModel]:
        return GuardrailChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "served-vlm", "base_url": f"http://127.0.0.1:{closed_port()}/v1"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"OPENAI_API_KEY": "sk-from-env", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
            {"model": "served-vlm"},
            {"api_key": "sk-from-env", "model_name": "served-vlm"},
        )


class TestGuardedChatModelIntegration(_Capabilities, ChatModelIntegrationTests):
    """A guard over ``WordModel`` (async backend), with a policy that accepts its confident answers."""

    @property
    def chat_model_class(self) -> type[GuardrailChatModel]:
        return GuardrailChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        model = AsyncWordModel()
        return {"guard": Guard(model, estimator=model, policy=policy())}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True
