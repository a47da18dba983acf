"""LangChain's standard integration suite (``langchain-tests``) on ``GuardrailChatModel`` over the real reference
model: plain (the model alone) and guarded (``load_guard()``: estimator, calibration and the default policy).

Slow (the model answers every test's prompts; the guarded suite also measures confidence): ``make test-slow``.
Flags as in ``test_chat_model_standard.py``, except ``supports_json_mode``: False here, the reference model cannot
write JSON (its 74-word vocabulary has no braces or quotes). Its answers to the suite's prompts ("Hello", "Write me
2 haikus") are whatever a model trained on easy-VQA says (``\\boxed{no}``, or the guard's abstention): the suite
checks that the chat model works, not what it knows.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from guardrail import Guard, load_guard
from guardrail.backends.transformers import TransformersBackend
from guardrail.integrations import GuardrailChatModel
from guardrail.reference import reference_model_path
from tests.support.integration import serve_suite_image

pytestmark = pytest.mark.slow


@functools.cache
def _guard() -> Guard:
    return load_guard()


@functools.cache
def _backend() -> TransformersBackend:
    return TransformersBackend.from_pretrained(reference_model_path())


@pytest.fixture(autouse=True)
def offline_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's test image, served from memory: tests never use the network."""
    serve_suite_image(monkeypatch)


class _ReferenceFlags(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[GuardrailChatModel]:
        return GuardrailChatModel

    @property
    def has_structured_output(self) -> bool:
        return False  # json_mode only (see test_chat_model_standard.py)

    @property
    def supports_json_mode(self) -> bool:
        return False  # the reference model cannot write JSON (see the module docstring)

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # one backend is one loaded model


class TestPlainReferenceModel(_ReferenceFlags):
    """``GuardrailChatModel(backend=TransformersBackend(reference model))``."""

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": _backend()}


class TestGuardedReferenceModel(_ReferenceFlags):
    """``GuardrailChatModel(guard=load_guard())``: the reference model under the default policy."""

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"guard": _guard()}
