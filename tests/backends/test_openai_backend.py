"""OpenAICompatibleBackend against a local fake server: the wire format, server-side scoring, and every fault."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from guardrail import BackendError, BackendTimeout, Generation, GenerationOptions, Guard, Policy, Request
from guardrail.backends.openai import INSTALL_HINT, OpenAICompatibleBackend, ScoringUnavailable
from guardrail.confidence.blackbox import AgreementEstimator
from tests.support.fake_openai_server import TEXT, FakeServer, closed_port

IMAGE = Image.fromarray(np.random.default_rng(0).integers(1, 256, size=(28, 28, 3), dtype=np.uint8))
BLACK = Image.new("RGB", (28, 28))
FAULTS = {
    "429": (BackendError, "HTTP 429 rate limited"),
    "500": (BackendError, "HTTP 500 server error"),
    "malformed": (BackendError, "malformed response, not valid JSON"),
    "no_choices": (BackendError, "malformed response: no choices"),
    "truncated": (BackendError, "RemoteProtocolError"),
    "slow": (BackendTimeout, "timed out"),
}


def question() -> Request:
    return Request.from_question("What colour is the shape?", [IMAGE])


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    mode = getattr(request, "param", "ok")
    with FakeServer(mode, delay=1.0) as fake:
        yield fake


def backend_for(url: str, **kwargs: Any) -> OpenAICompatibleBackend:
    kwargs.setdefault("timeout", 0.5)
    return OpenAICompatibleBackend(url, "fake-vlm", **kwargs)


def test_generate_sends_images_and_asks_for_logprobs(server: FakeServer) -> None:
    backend = backend_for(server.base_url)
    generation = backend.generate(question())
    backend.close()
    body = server.bodies[0]
    parts = body["messages"][0]["content"]
    assert parts[0]["type"] == "image_url"
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "What colour is the shape?"}
    assert (body["logprobs"], body["top_logprobs"], body["temperature"], body["seed"]) == (True, 5, 0.0, 0)
    assert generation.text == TEXT.replace("ANSWER", "red")
    assert generation.answer == "red"
    assert generation.provider == "openai-compatible"
    assert generation.token_logprobs == pytest.approx([-0.1] * len(generation.token_logprobs))
    tokens = generation.tokens
    assert tokens is not None
    assert "".join(tokens) == generation.text
    assert generation.usage.input_tokens == 12


def test_agenerate_matches_generate(server: FakeServer) -> None:
    backend = backend_for(server.base_url)

    async def both() -> Any:
        try:
            return await backend.agenerate(question())
        finally:
            await backend.aclose()

    assert asyncio.run(both()).answer == "red"


def test_logprobs_can_be_switched_off(server: FakeServer) -> None:
    backend = backend_for(server.base_url, logprobs=False)
    generation = backend.generate(question())
    backend.close()
    assert "logprobs" not in server.bodies[0]
    assert generation.token_logprobs == ()


def test_score_text_teacher_forces_the_answer_under_each_variant(server: FakeServer) -> None:
    backend = backend_for(server.base_url)
    text = TEXT.replace("ANSWER", "red")
    scores = backend.score_text(question(), text, [[BLACK]])
    backend.close()
    assert len(server.bodies) == 2
    body = server.bodies[0]
    assert body["prompt_logprobs"] == 0
    assert (body["add_generation_prompt"], body["continue_final_message"], body["max_tokens"]) == (False, True, 1)
    assert body["messages"][-1] == {"role": "assistant", "content": text}
    assert "".join(scores.tokens) == text
    assert set(scores.token_logprobs[0]) == {-0.1}
    assert set(scores.token_logprobs[1]) == {-2.0}


def test_score_generation_takes_row_0_from_the_generation_and_scores_only_the_variants(server: FakeServer) -> None:
    backend = backend_for(server.base_url)
    generation = backend.generate(question())
    scores = backend.score_generation(question(), generation, generation.text, [[BLACK], [IMAGE]])
    assert server.requests == 1 + 2  # the answer, then one request per variant: none for the original images
    assert scores.token_logprobs[0] == generation.token_logprobs
    assert scores.tokens == generation.tokens
    assert set(scores.token_logprobs[1]) == {-2.0}
    # what scoring every row gives, one request more
    assert scores == backend.score_text(question(), generation.text, [[BLACK], [IMAGE]])
    assert server.requests == 1 + 2 + 3
    backend.close()


def test_ascore_generation_matches_score_generation(server: FakeServer) -> None:
    backend = backend_for(server.base_url)

    async def scored() -> Any:
        generation = await backend.agenerate(question())
        return await backend.ascore_generation(question(), generation, generation.text, [[BLACK]])

    scores = asyncio.run(scored())
    assert server.requests == 1 + 1
    generation = backend.generate(question())
    assert scores == backend.score_generation(question(), generation, generation.text, [[BLACK]])
    backend.close()


def _regrouped(generation: Generation) -> Generation:
    """The same answer split into other tokens (3 characters, where the server splits into 4)."""
    text = generation.text
    tokens = tuple(text[i : i + 3] for i in range(0, len(text), 3))
    return generation.model_copy(update={"tokens": tokens, "token_logprobs": (-0.1,) * len(tokens)})


@pytest.mark.parametrize(
    "case", ["sampled", "other model", "other tokens", "no token strings", "switched off", "async other tokens"]
)
def test_row_0_is_scored_where_the_generation_cannot_stand_for_it(server: FakeServer, case: str) -> None:
    """A sampled answer, another model's, one whose tokens are not the server's split of the text, or one without
    token strings: row 0 is scored as score_text scores it (one more request), so the rows stay of the same tokens."""
    backend = backend_for(server.base_url, reference_logprobs=case != "switched off")
    generation = backend.generate(question(), GenerationOptions(temperature=0.7 if case == "sampled" else None))
    if case == "other model":
        generation = generation.model_copy(update={"model": "another"})
    if case.endswith("other tokens"):
        generation = _regrouped(generation)
    if case == "no token strings":
        generation = generation.model_copy(update={"tokens": ()})
    if case.startswith("async"):
        scores = asyncio.run(backend.ascore_generation(question(), generation, generation.text, [[BLACK]]))
    else:
        scores = backend.score_generation(question(), generation, generation.text, [[BLACK]])
    assert server.requests == 1 + 2
    assert scores == backend.score_text(question(), generation.text, [[BLACK]])
    backend.close()


def test_a_generation_whose_text_is_not_the_scored_text_is_not_row_0(server: FakeServer) -> None:
    backend = backend_for(server.base_url)
    generation = backend.generate(question())
    text = generation.text[:-4]
    scores = backend.score_generation(question(), generation, text, [[BLACK]])
    assert server.requests == 1 + 2
    assert "".join(scores.tokens) == text
    backend.close()


@pytest.mark.parametrize("server", ["no_scoring", "ignore_scoring"], indirect=True)
def test_score_generation_on_a_server_without_scoring_says_so_once(server: FakeServer) -> None:
    backend = backend_for(server.base_url)
    generation = backend.generate(question())
    with pytest.raises(ScoringUnavailable, match="prompt_logprobs"):
        backend.score_generation(question(), generation, generation.text, [[BLACK]])
    asked = server.requests
    with pytest.raises(ScoringUnavailable):
        backend.score_generation(question(), generation, generation.text, [[BLACK]])
    backend.close()
    assert server.requests == asked == 2


@pytest.mark.parametrize("server", ["no_scoring", "ignore_scoring"], indirect=True)
def test_a_server_without_scoring_says_so_once(server: FakeServer) -> None:
    backend = backend_for(server.base_url)
    with pytest.raises(ScoringUnavailable, match="prompt_logprobs"):
        backend.score_text(question(), "an answer")
    assert backend.scoring_available is False
    asked = server.requests
    with pytest.raises(ScoringUnavailable):
        backend.score_text(question(), "an answer")
    backend.close()
    assert server.requests == asked  # known now: no second request


def test_scoring_can_be_switched_off(server: FakeServer) -> None:
    backend = backend_for(server.base_url, scoring="off")
    with pytest.raises(ScoringUnavailable, match="scoring switched off"):
        backend.score_text(question(), "an answer")
    backend.close()
    assert server.requests == 0


@pytest.mark.parametrize("server", sorted(FAULTS), indirect=True)
def test_each_fault_becomes_a_backend_error_with_its_cause(server: FakeServer) -> None:
    error, message = FAULTS[server.mode]
    backend = backend_for(server.base_url)
    with pytest.raises(error, match=message) as caught:
        backend.generate(question())
    backend.close()
    assert server.mode == "no_choices" or caught.value.__cause__ is not None


def test_connection_refused_becomes_a_backend_error() -> None:
    backend = backend_for(f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(BackendError, match="APIConnectionError") as caught:
        backend.generate(question())
    backend.close()
    assert not isinstance(caught.value, BackendTimeout)
    assert caught.value.__cause__ is not None


def policy(on_error: str) -> Policy:
    return Policy.model_validate(
        {"version": 1, "name": "faults", "budget": {"max_attempts": 3, "max_seconds": 20}, "rules": [],
         "otherwise": "accept", "on_error": on_error, "accept_uncalibrated": True}
    )  # fmt: skip


@pytest.mark.parametrize("server", sorted(FAULTS), indirect=True)
def test_each_fault_ends_in_on_error_with_the_error_kept(server: FakeServer) -> None:
    error, message = FAULTS[server.mode]
    backend = backend_for(server.base_url)
    result = Guard(backend, estimator=AgreementEstimator(), policy=policy("abstain")).run(question())
    backend.close()
    assert result.status == "abstained"
    assert result.answer is None
    assert result.final_decision.rule == "on_error"
    assert result.error is not None
    assert (result.error.stage, result.error.type) == ("backend", error.__name__)
    assert message in result.error.message


def test_connection_refused_ends_in_on_error() -> None:
    backend = backend_for(f"http://127.0.0.1:{closed_port()}/v1")
    result = Guard(backend, estimator=AgreementEstimator(), policy=policy("escalate")).run(question())
    backend.close()
    assert result.status == "escalated"
    assert result.error is not None
    assert result.error.type == "BackendError"


@pytest.mark.parametrize("server", ["500"], indirect=True)
def test_retries_on_error_stay_within_the_attempt_budget(server: FakeServer) -> None:
    backend = backend_for(server.base_url)
    result = Guard(backend, estimator=AgreementEstimator(), policy=policy("re_ask")).run(question())
    backend.close()
    assert result.status == "abstained"  # the re-ask on the last attempt becomes on_exhausted
    assert len(result.attempts) == 3
    assert server.requests == 3  # max_retries=0: the client itself never retries


@pytest.mark.parametrize("server", ["429"], indirect=True)
def test_async_guard_keeps_the_error_too(server: FakeServer) -> None:
    backend = backend_for(server.base_url)

    async def run() -> Any:
        try:
            return await Guard(backend, estimator=AgreementEstimator(), policy=policy("abstain")).arun(question())
        finally:
            await backend.aclose()

    result = asyncio.run(run())
    assert result.status == "abstained"
    assert result.error is not None
    assert "HTTP 429" in result.error.message


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="`timeout` must be > 0"):
        OpenAICompatibleBackend("http://127.0.0.1:1/v1", "m", timeout=0)
    with pytest.raises(ValueError, match=r"`top_logprobs` must be in 0\.\.20"):
        OpenAICompatibleBackend("http://127.0.0.1:1/v1", "m", top_logprobs=21)
    with pytest.raises(ValueError, match="`max_images` must be an int >= 1 or None, got 0"):
        OpenAICompatibleBackend("http://127.0.0.1:1/v1", "m", max_images=0)


def test_a_declared_image_limit_makes_more_views_replace_the_image() -> None:
    from guardrail.loop import max_images, views_placement

    one = OpenAICompatibleBackend("http://127.0.0.1:1/v1", "m", max_images=1)
    assert max_images(one) == 1
    assert views_placement("auto", 2, max_images=max_images(one), present=1) == (True, 1)
    assert max_images(OpenAICompatibleBackend("http://127.0.0.1:1/v1", "m")) is None


def test_missing_openai_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ImportError, match=r"pip install 'lvlm-guardrail\[openai\]'"):
        OpenAICompatibleBackend("http://127.0.0.1:1/v1", "m")
    assert "lvlm-guardrail[openai]" in INSTALL_HINT


def test_exports_are_lazy() -> None:
    import subprocess

    code = (
        "import sys, guardrail, guardrail.backends as b, guardrail.confidence as c; "
        "print(sorted(m for m in ('torch', 'transformers', 'openai', 'langchain_openai') if m in sys.modules)); "
        "print(b.OpenAICompatibleBackend.__name__, b.LangChainBackend.__name__, b.ScoringUnavailable.__name__, "
        "c.AgreementEstimator.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "OpenAICompatibleBackend LangChainBackend ScoringUnavailable AgreementEstimator"


@pytest.mark.parametrize("server", ["slow"], indirect=True)
def test_a_slow_server_is_cut_off_by_the_time_budget(server: FakeServer) -> None:
    backend = backend_for(server.base_url, timeout=5.0)
    spent = Policy.model_validate(
        {"version": 1, "name": "fast", "budget": {"max_attempts": 3, "max_seconds": 0.3}, "rules": [],
         "otherwise": "accept", "on_error": "re_ask", "on_exhausted": "escalate", "accept_uncalibrated": True}
    )  # fmt: skip
    result = Guard(backend, estimator=AgreementEstimator(), policy=spent).run(question())
    assert result.status == "escalated"
    assert result.error is not None
    assert (result.error.stage, result.error.type) == ("budget", "BackendTimeout")
    assert server.requests == 1
    time.sleep(1.0)  # let the abandoned request finish before the server stops
    backend.close()


def test_async_calls_work_across_event_loops(server: FakeServer) -> None:
    backend = backend_for(server.base_url)
    first = asyncio.run(backend.agenerate(question()))
    second = asyncio.run(backend.agenerate(question()))
    asyncio.run(backend.aclose())
    assert first.text == second.text


def test_the_answer_tail_is_cut_from_the_prompt_tokens() -> None:
    from guardrail.backends.openai import _answer_tail

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"7": {"logprob": logprob, "rank": 1, "decoded_token": token}}

    entries = [None, entry("USER", -1.0), entry(":\nASSISTANT: re", -0.5), entry("d c", -0.2), entry("ircle", -0.1)]
    assert _answer_tail(entries, "red circle", "m") == (("re", "d c", "ircle"), (-0.5, -0.2, -0.1), True)
    # the answer's first token starts exactly where the answer does: nothing cut
    assert _answer_tail(entries, "d circle", "m") == (("d c", "ircle"), (-0.2, -0.1), False)
    with pytest.raises(ScoringUnavailable, match="does not end with the answer text"):
        _answer_tail(entries, "blue", "m")
    two = {"7": {"logprob": -0.1, "decoded_token": "a"}, "8": {"logprob": -2.0, "decoded_token": "b"}}
    with pytest.raises(BackendError, match="malformed prompt_logprobs entry"):
        _answer_tail([None, two], "a", "m")


def test_finish_reason_stop_and_the_options_sent(server: FakeServer) -> None:
    backend = backend_for(server.base_url, max_tokens=500)
    generation = backend.generate(question(), GenerationOptions(attempt=1, stop=("</vision>",)))
    backend.close()
    assert server.bodies[0]["stop"] == ["</vision>"]
    assert generation.finish_reason == "stop"
    assert "</vision>" not in generation.text
    assert generation.options == GenerationOptions(
        attempt=1, seed=1, temperature=0.0, max_new_tokens=500, stop=("</vision>",)
    )


def test_finish_reason_length_when_the_token_limit_cuts_the_answer(server: FakeServer) -> None:
    backend = backend_for(server.base_url)
    generation = asyncio.run(backend.agenerate(question(), GenerationOptions(max_new_tokens=3)))
    assert (generation.finish_reason, generation.usage.output_tokens) == ("length", 3)


PREFIX = "<think><vision>I see a blue circle.</vision>"


def test_an_assistant_prefix_is_continued_with_vllm_extensions(server: FakeServer) -> None:
    """The protocol: the prefix goes as a final assistant message that the server continues, and its tokens' log-probs
    come from the prompt's (the fake server does not really continue; a vLLM server does, see the vLLM tests)."""
    backend = backend_for(server.base_url)
    generation = backend.generate(question(), GenerationOptions(assistant_prefix=PREFIX))
    backend.close()
    body = server.bodies[0]
    assert body["messages"][-1] == {"role": "assistant", "content": PREFIX}
    assert (body["continue_final_message"], body["add_generation_prompt"], body["prompt_logprobs"]) == (True, False, 0)
    assert generation.text.startswith(PREFIX)
    assert generation.options is not None
    assert generation.options.assistant_prefix == PREFIX


@pytest.mark.parametrize("server", ["ignore_scoring", "no_scoring"], indirect=True)
def test_a_server_that_cannot_continue_a_prefix_is_refused(server: FakeServer) -> None:
    backend = backend_for(server.base_url)
    with pytest.raises(BackendError, match=r"cannot continue from an assistant prefix|HTTP 422"):
        backend.generate(question(), GenerationOptions(assistant_prefix=PREFIX))
    backend.close()
