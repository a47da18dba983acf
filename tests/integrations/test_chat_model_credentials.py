"""GuardrailChatModel built as LangChain chat models are: ``model``, ``base_url``, ``api_key`` (a secret), ``artifact``,
``policy``; against the stub OpenAI-compatible server on 127.0.0.1, and what it does next to a ready backend."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from pydantic import SecretStr, ValidationError

from guardrail import Guard, OpenAICompatibleBackend, load_artifact
from guardrail.confidence.blackbox import AgreementEstimator
from guardrail.integrations import GuardrailChatModel
from guardrail.reference import reference_model_path
from tests.support.chat import WordModel
from tests.support.fake_openai_server import FakeServer
from tests.support.integration import image_message, policy
from tests.support.telemetry import make_recorded

KEY = "sk-test-5f2c9a1e-never-shown"


class Recorder(BaseCallbackHandler):
    """Everything LangChain hands its tracers at the start and end of a chat-model run."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.seen.append((serialized, kwargs))

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.seen.append((response, kwargs))


def built(server: FakeServer, **kwargs: Any) -> GuardrailChatModel:
    return GuardrailChatModel(  # type: ignore[call-arg]  # alias of model_name
        model="fake-vlm", base_url=server.base_url, api_key=KEY, policy=kwargs.pop("policy", policy()), **kwargs
    )


def test_a_model_built_from_base_url_and_api_key_sends_the_key_and_answers_guarded() -> None:
    with FakeServer("ok") as server:
        model = built(server, timeout=10)
        reply = model.invoke([image_message()])
    assert isinstance(model.guard, Guard)
    assert isinstance(model.guard.backend, OpenAICompatibleBackend)
    assert isinstance(model.guard.estimator, AgreementEstimator)
    assert model.model_name == "fake-vlm"
    assert reply.content == "red"
    assert reply.response_metadata["guardrail"]["status"] == "accepted"
    assert server.requests >= 2  # the generation, then the estimator's scoring request
    assert {h["authorization"] for h in server.headers} == {f"Bearer {KEY}"}
    assert {b["model"] for b in server.bodies} == {"fake-vlm"}


def test_the_key_and_server_come_from_the_environment_and_the_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeServer("ok") as server:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        from_env = GuardrailChatModel(model="fake-vlm", policy=policy())  # type: ignore[call-arg]  # alias of model_name
        assert from_env.api_key is not None
        assert from_env.api_key.get_secret_value() == KEY
        from_env.invoke([image_message()])
        monkeypatch.delenv("OPENAI_API_KEY")
        aliased = GuardrailChatModel(
            model="fake-vlm",
            openai_api_base=server.base_url,
            openai_api_key="sk-alias",
            policy=policy(),  # type: ignore[call-arg]  # LangChain's aliases
        )
        aliased.invoke([image_message()])
    assert aliased.base_url == server.base_url
    assert {h["authorization"] for h in server.headers} == {f"Bearer {KEY}", "Bearer sk-alias"}


def test_the_api_key_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = Recorder()
    recorded = make_recorded(capture_content=True)  # messages in the spans too: the key must not be there
    with FakeServer("ok") as server:
        model = built(server)
        model.guard.telemetry = recorded.telemetry
        model.invoke([image_message()], config={"callbacks": [recorder]})
    spans = recorded.spans()
    assert isinstance(model.api_key, SecretStr)
    assert model.api_key.get_secret_value() == KEY
    shown = [repr(model), str(model), model.model_dump_json(), repr(model.model_dump()), repr(model.asdict())]
    shown += [repr(recorder.seen), caplog.text]
    shown += [repr(dict(span.attributes or {})) + repr(span.events) + span.name for span in spans]
    assert spans
    assert recorder.seen
    assert not [text for text in shown if KEY in text]
    with pytest.raises(ValidationError) as refused:
        GuardrailChatModel(model="fake-vlm", api_key=KEY, max_tokens=0)  # type: ignore[call-arg]  # alias of model_name
    assert KEY not in str(refused.value)
    assert model.lc_secrets == {"api_key": "OPENAI_API_KEY"}


def test_max_retries_bounds_the_transport_retries_of_the_backend_it_builds() -> None:
    counts = []
    for retries in (0, 1):
        with FakeServer("500") as server:
            reply = built(server, max_retries=retries, policy=policy(budget={"max_attempts": 1})).invoke("Colour?")
        assert reply.response_metadata["guardrail"]["status"] != "accepted"
        counts.append(server.requests)
    assert counts == [1, 2]


def test_the_artifact_calibrates_the_guard_it_builds() -> None:
    path = reference_model_path() / "guardrail_calibration.json"
    artifact = load_artifact(path)
    for given in (artifact, path, str(path)):
        model = GuardrailChatModel(model="served", base_url="http://127.0.0.1:9/v1", artifact=given)  # type: ignore[call-arg]  # alias of model_name
        estimator = model.guard.estimator
        assert isinstance(estimator, AgreementEstimator)
        assert estimator.normalization == artifact.visual_normalization
        assert estimator.scoring_draws == artifact.estimator_setting.draws
        assert type(model.guard.calibrator) is type(artifact.decoupled_calibrator())
        assert model.guard.policy.name == "default"


def test_a_ready_backend_keeps_the_api_key_unused_and_refuses_what_builds_a_guard() -> None:
    backend = WordModel()
    model = GuardrailChatModel(backend=backend, api_key=KEY, max_retries=2)
    assert model.backend is backend
    assert model.guard is None
    assert model.api_key is not None
    assert KEY not in repr(model)
    guard = Guard(backend, estimator=backend, policy=policy())
    assert GuardrailChatModel(guard=guard, api_key=KEY, max_retries=2).guard is guard
    for ready in ({"backend": backend}, {"guard": guard}):
        name = next(iter(ready))
        for extra in ({"base_url": "http://127.0.0.1:9/v1"}, {"artifact": "a.json"}, {"policy": "default"}):
            with pytest.raises(ValidationError, match=f"got a ready `{name}` and `{next(iter(extra))}`"):
                GuardrailChatModel(**ready, **extra)


def test_without_a_backend_guard_or_model_it_says_what_it_needs() -> None:
    with pytest.raises(ValidationError, match=r"needs `model` .*or a ready `guard` .* or `backend`"):
        GuardrailChatModel(api_key=KEY)
