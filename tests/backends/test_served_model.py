"""A real server: ``transformers serve`` on 127.0.0.1, reached through ``openai`` and ``langchain-openai``.

The served model is the folder named by ``GUARDRAIL_SERVED_MODEL_DIR`` when set, else the reference model when it
is built (``guardrail/reference/model``), else a tiny random LLaVA saved to a temporary folder. The test starts
and stops the server itself.

What ``transformers serve`` (transformers 5.24) can and cannot provide is asserted here, not assumed:
- images: accepted (``image_url`` parts reach the processor; the prompt grows by the image's tokens);
- generated-token log-probs: **not returned** (``logprobs``/``top_logprobs`` are ignored);
- prompt log-probs (server-side teacher-forced scoring): **refused** with HTTP 422, so the visual KL cannot be
  measured and the estimator falls back to answer agreement, saying so in ``Signals.problems``;
- sampling: ``temperature`` > 0 is **ignored** unless the model's generation config samples (``do_sample``), so
  re-asks repeat the greedy answer and re-ask agreement would measure nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

import guardrail
from guardrail import GenerationOptions, Guard, Policy, Request, UncalibratedWarning
from guardrail.backends.langchain import LangChainBackend
from guardrail.backends.openai import OpenAICompatibleBackend, ScoringUnavailable
from guardrail.confidence.blackbox import NO_SCORING, AgreementEstimator
from guardrail.reference import reference_model_path

pytestmark = pytest.mark.slow  # starting the server loads torch and transformers: ~10 s on two cores
EXAMPLE = Path(guardrail.__file__).resolve().parents[1] / "examples" / "openai_compatible.py"


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_openai_compatible", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = Path(os.environ.get("GUARDRAIL_SERVED_MODEL_DIR") or reference_model_path())
    if (path / "config.json").is_file():
        return str(path)
    from tests.support.tiny_vlms import tiny_llava

    folder = tmp_path_factory.mktemp("tiny-llava")
    model, processor = tiny_llava()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def base_url(model_dir: str) -> Iterator[str]:
    with example().transformers_serve(model_dir) as url:
        yield url


@pytest.fixture
def backend(base_url: str, model_dir: str) -> Iterator[OpenAICompatibleBackend]:
    served = OpenAICompatibleBackend(base_url, model_dir, name="served", timeout=60, max_tokens=24)
    yield served
    served.close()


def question(with_image: bool = True) -> Request:
    image = example().shape_image("red")
    return Request.from_question("What color is the shape?", [image] if with_image else [])


def test_openai_client_answers_with_images_but_without_logprobs(backend: OpenAICompatibleBackend) -> None:
    with_image = backend.generate(question())
    without = backend.generate(question(with_image=False))
    assert isinstance(with_image.text, str)
    assert with_image.usage.output_tokens > 0
    # the image reached the model: the prompt grew by its image tokens
    assert with_image.usage.input_tokens > without.usage.input_tokens
    # limitation: transformers serve ignores `logprobs` / `top_logprobs`
    assert with_image.token_logprobs == ()


def test_transformers_serve_offers_no_teacher_forced_scoring(backend: OpenAICompatibleBackend) -> None:
    with pytest.raises(ScoringUnavailable, match="HTTP 422"):
        backend.score_text(question(), "red")
    assert backend.scoring_available is False


def test_langchain_chat_openai_reaches_the_server(base_url: str, model_dir: str) -> None:
    chat = ChatOpenAI(base_url=base_url, model=model_dir, api_key="EMPTY", max_retries=0, timeout=60, max_tokens=24)
    backend = LangChainBackend(chat, name="served-langchain")
    generation = backend.generate(question())
    assert isinstance(generation.text, str)
    assert generation.usage.input_tokens > 0
    assert generation.token_logprobs == ()  # no "logprobs" in response_metadata: the server returns none


def test_guarded_call_end_to_end(backend: OpenAICompatibleBackend) -> None:
    policy = Policy.model_validate({"version": 1, "name": "t", "rules": [], "otherwise": "accept"})
    estimator = AgreementEstimator(draws=2, patch_size=8)
    result = Guard(backend, estimator=estimator, policy=policy, allow_uncalibrated=True).run(question())  # no artifact
    assert result.error is None
    assert result.status == "accepted"
    assert result.calibrated is False
    signals = result.attempts[0].signals
    assert signals is not None
    assert signals.sources["visual"] == ("visual_agreement",)
    assert signals.visual in (0.0, 0.5, 1.0)
    assert any(p.startswith(NO_SCORING) for p in signals.problems)
    assert "backend 'served' returned no token log-probs" in signals.problems


def test_guarded_call_async(backend: OpenAICompatibleBackend) -> None:
    async def run() -> Any:
        try:
            estimator = AgreementEstimator(draws=2)
            return await Guard(backend, estimator=estimator, policy="default", allow_uncalibrated=True).arun(question())
        finally:
            await backend.aclose()

    result = asyncio.run(run())
    assert result.error is None
    assert result.attempts[0].signals is not None
    assert result.attempts[0].signals.visual is not None


def test_the_example_guards_the_served_model(model_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(UncalibratedWarning, match="has no calibration"):  # no artifact for these signals
        assert example().main(["--model", model_dir]) == 0
    out = capsys.readouterr().out
    assert "status=abstained" in out
    assert "abstain (on_uncalibrated)" in out
    assert "server offers no teacher-forced scoring" in out


def test_transformers_serve_ignores_the_temperature_of_a_greedy_model(
    backend: OpenAICompatibleBackend, model_dir: str
) -> None:
    config = json.loads((Path(model_dir) / "generation_config.json").read_text())
    if config.get("do_sample"):
        pytest.skip("this model's generation config samples: the temperature is honoured")
    texts = {backend.generate(question(), GenerationOptions(attempt=k, seed=k, temperature=0.9)).text for k in range(3)}
    assert len(texts) == 1  # limitation: every "sampled" re-ask is the greedy answer
