"""AgreementEstimator: which signal produced each score, what is missing and why, sync and async alike."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from PIL import Image

from guardrail import (
    BackendError,
    EstimatorError,
    Generation,
    GenerationOptions,
    Guard,
    Policy,
    Request,
    UncalibratedWarning,
)
from guardrail.backends.openai import OpenAICompatibleBackend
from guardrail.confidence.blackbox import NO_SCORING, AgreementEstimator
from guardrail.responses import normalize_answer
from tests.support.fake_openai_server import FakeServer

IMAGE = Image.fromarray(np.random.default_rng(0).integers(1, 256, size=(28, 28, 3), dtype=np.uint8))
STRUCTURED = (
    "<think><vision>a red circle</vision><reasoning>so red</reasoning></think> \\boxed{red} "
    "<confidence><vision_confidence>8</vision_confidence><reasoning_confidence>6</reasoning_confidence></confidence>"
)


def question(*images: Image.Image) -> Request:
    return Request.from_question("What colour is the shape?", list(images))


@dataclass
class AnswersModel:
    """An in-process black-box model: answers ``answers[i]`` on its i-th call (the last repeats); no log-probs."""

    answers: tuple[str, ...] = ("red",)
    fail_on: int | None = None
    structured: bool = True
    name: str = "answers"
    calls: list[Request] = field(default_factory=list)
    options: list[GenerationOptions | None] = field(default_factory=list)

    def generate(self, request: Request, options: GenerationOptions | None = None) -> Generation:
        self.calls.append(request)
        self.options.append(options)
        if self.fail_on is not None and len(self.calls) - 1 == self.fail_on:
            raise BackendError("HTTP 500 server error")
        answer = self.answers[min(len(self.calls) - 1, len(self.answers) - 1)]
        text = STRUCTURED.replace("a red circle", f"a {answer} circle") if self.structured else "\\boxed{red}"
        return Generation(text=text.replace("{red}", "{" + answer + "}"), answer=answer, model=self.name)


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[tuple[FakeServer, OpenAICompatibleBackend]]:
    with FakeServer(getattr(request, "param", "ok")) as server:
        backend = OpenAICompatibleBackend(server.base_url, "fake-vlm", timeout=5)
        yield server, backend
        backend.close()


def test_server_scoring_gives_the_perturbation_kl(served: tuple[FakeServer, OpenAICompatibleBackend]) -> None:
    server, backend = served
    request = question(IMAGE)
    signals = AgreementEstimator().estimate(backend, request, backend.generate(request))
    assert server.requests == 1 + 1  # the answer (row 0 of the scores), then the blackened copy scored
    assert signals.sources["visual"] == ("vision_kl", "vision_surprisal", "visual_score")
    # -0.1 under the original, -2.0 under the blackened copy: kl_t = p (log p - log q) on every vision token
    assert signals.features["vision_kl"] == pytest.approx(math.exp(-0.1) * 1.9)
    assert signals.features["vision_surprisal"] == pytest.approx(0.1)
    assert signals.visual == pytest.approx(1 / (1 + math.exp(-math.log(math.exp(-0.1) * 1.9 / 0.1))), rel=1e-6)
    assert signals.reasoning == pytest.approx(math.exp(-0.1))
    assert signals.sources["reasoning"] == ("reasoning_mean_prob",)
    assert signals.holistic == pytest.approx(math.exp(-0.1))
    assert "visual_agreement" not in signals.features
    assert signals.features["verbalized_vision"] == 0.8
    assert not any(NO_SCORING in p for p in signals.problems)


@pytest.mark.parametrize("served", ["no_scoring"], indirect=True)
def test_without_server_scoring_visual_comes_from_agreement(
    served: tuple[FakeServer, OpenAICompatibleBackend],
) -> None:
    server, backend = served
    request = question(IMAGE)
    signals = AgreementEstimator(draws=3).estimate(backend, request, backend.generate(request))
    assert any(p.startswith(NO_SCORING) for p in signals.problems), signals.problems
    assert signals.sources["visual"] == ("visual_agreement", "vision_min_prob")
    assert signals.features["visual_agreement"] == 1.0  # every view keeps the percept "a red circle"
    assert signals.features["vision_min_prob"] == pytest.approx(math.exp(-0.1))
    assert signals.visual == pytest.approx((1.0 + math.exp(-0.1)) / 2)  # agreement and the percept's token prob
    assert signals.features["visual_requeries"] == 3
    assert server.requests == 1 + 1 + 3  # the answer, the refused scoring request, three re-queries
    assert "vision_kl" not in signals.features


@pytest.mark.parametrize("served", ["no_scoring"], indirect=True)
def test_answers_that_flip_under_perturbation_disagree(served: tuple[FakeServer, OpenAICompatibleBackend]) -> None:
    _, backend = served
    request = question(IMAGE)
    estimator = AgreementEstimator(draws=2, perturbation="blackout", probability=1.0, agreement="answer")
    signals = estimator.estimate(backend, request, backend.generate(request))
    assert signals.features["visual_agreement"] == 0.0  # every re-query saw a black image and answered "black"
    assert signals.features["answer_agreement"] == 0.0
    assert signals.features["percept_agreement"] == 1.0  # the fake server's percept never changes


@pytest.mark.parametrize("served", ["no_scoring"], indirect=True)
def test_async_twin_measures_the_same(served: tuple[FakeServer, OpenAICompatibleBackend]) -> None:
    _, backend = served
    request = question(IMAGE)
    generation = backend.generate(request)
    estimator = AgreementEstimator(draws=2)
    sync = estimator.estimate(backend, request, generation)

    async def measure() -> Any:
        try:
            return await estimator.aestimate(backend, request, generation)
        finally:
            await backend.aclose()

    assert asyncio.run(measure()) == sync


def test_without_logprobs_reasoning_is_the_verbalized_score() -> None:
    model = AnswersModel()
    request = question(IMAGE)
    signals = AgreementEstimator(draws=2).estimate(model, request, model.generate(request))
    assert signals.reasoning == 0.6
    assert signals.sources["reasoning"] == ("verbalized_reasoning",)
    assert signals.holistic is None
    assert "backend 'answers' returned no token log-probs" in signals.problems
    assert any("cannot re-score on the server" in p for p in signals.problems)
    assert signals.visual == 1.0
    assert len(model.calls) == 3


def test_nothing_measurable_stays_unknown_with_reasons() -> None:
    model = AnswersModel()
    generation = Generation(text="red", answer=None, model="answers")
    signals = AgreementEstimator().estimate(model, question(), generation)
    assert (signals.visual, signals.reasoning, signals.holistic) == (None, None, None)
    assert "request has no image: visual certainty not measured" in signals.problems
    assert any("reasoning not measured" in p for p in signals.problems)
    assert model.calls == []


def test_a_failed_requery_is_an_estimator_error() -> None:
    model = AnswersModel(fail_on=2)
    request = question(IMAGE)
    generation = model.generate(request)
    with pytest.raises(EstimatorError, match="perturbed re-query 1 failed: HTTP 500") as caught:
        AgreementEstimator(draws=3).estimate(model, request, generation)
    assert isinstance(caught.value.__cause__, BackendError)


def test_agreement_counts_matching_answers() -> None:
    model = AnswersModel(answers=("red", "Red.", "blue", "red "))
    request = question(IMAGE)
    signals = AgreementEstimator(draws=3, agreement="answer").estimate(model, request, model.generate(request))
    assert signals.visual == pytest.approx(2 / 3)


def test_percept_agreement_is_the_word_overlap_of_the_percepts() -> None:
    model = AnswersModel(answers=("red", "Red.", "blue", "red "))
    request = question(IMAGE)
    signals = AgreementEstimator(draws=3).estimate(model, request, model.generate(request))
    # percepts "a red circle", "a Red. circle", "a blue circle", "a red  circle": Jaccard 1, 1/2, 1
    assert signals.visual == pytest.approx((1 + 0.5 + 1) / 3)
    assert signals.features["percept_agreement"] == pytest.approx(5 / 6)
    assert signals.features["answer_agreement"] == pytest.approx(2 / 3)
    assert signals.sources["visual"] == ("visual_agreement",)  # no log-probs: agreement alone


def test_without_a_percept_the_answers_are_compared() -> None:
    model = AnswersModel(answers=("red", "red", "blue"), structured=False)
    request = question(IMAGE)
    signals = AgreementEstimator(draws=2).estimate(model, request, model.generate(request))
    assert signals.visual == 0.5
    assert "percept_agreement" not in signals.features
    assert "the answer has no <vision> span: visual agreement of the final answers" in signals.problems


@pytest.mark.parametrize("kind", ["stability", "blackout", "grey"])
def test_requeries_see_changed_images(kind: str) -> None:
    model = AnswersModel()
    request = question(IMAGE)
    AgreementEstimator(draws=2, perturbation=kind).estimate(model, request, model.generate(request))  # type: ignore[arg-type]
    sent = [call.images[0] for call in model.calls[1:]]
    assert len(sent) == (1 if kind == "grey" else 2)  # every grey copy is the same image: asked once
    assert all(block != request.images[0] for block in sent)


def test_the_guard_accepts_with_sources_recorded(served: tuple[FakeServer, OpenAICompatibleBackend]) -> None:
    _, backend = served
    policy = Policy.model_validate({"version": 1, "name": "t", "rules": [], "otherwise": "accept"})
    guard = Guard(backend, estimator=AgreementEstimator(), policy=policy, allow_uncalibrated=True)
    result = guard.run(question(IMAGE))
    assert result.status == "accepted"
    assert result.answer == "red"
    assert result.confidence is not None
    assert result.confidence.sources["visual"] == ("vision_kl", "vision_surprisal", "visual_score")
    assert result.calibrated is False  # no artifact: raw black-box scores, accepted only through the opt-in


def test_without_an_artifact_the_black_box_guard_warns_and_does_not_accept(
    served: tuple[FakeServer, OpenAICompatibleBackend],
) -> None:
    _, backend = served
    policy = Policy.model_validate({"version": 1, "name": "t", "rules": [], "otherwise": "accept"})
    with pytest.warns(UncalibratedWarning, match="guardrail calibrate"):
        guard = Guard(backend, estimator=AgreementEstimator(), policy=policy)
    result = guard.run(question(IMAGE))
    assert (result.status, result.final_decision.rule, result.calibrated) == ("abstained", "on_uncalibrated", False)


def test_with_an_artifact_the_black_box_guard_is_calibrated(served: tuple[FakeServer, OpenAICompatibleBackend]) -> None:
    from guardrail import load_artifact
    from guardrail.reference import reference_model_path

    _, backend = served
    artifact = load_artifact(reference_model_path() / "guardrail_calibration.json")
    estimator = AgreementEstimator(normalization=artifact.visual_normalization)
    policy = Policy.model_validate({"version": 1, "name": "t", "rules": [], "otherwise": "accept"})
    guard = Guard(backend, estimator=estimator, calibrator=artifact.decoupled_calibrator(), policy=policy)  # no warning
    result = guard.run(question(IMAGE))
    assert guard.calibrated
    assert result.calibrated is True
    assert result.final_decision.rule != "on_uncalibrated"


def test_normalize_answer() -> None:
    assert normalize_answer("  The  Circle. ") == "the circle"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"draws": 0}, "`draws` must be an int >= 1"),
        ({"probability": 1.5}, r"`probability` must be in \[0, 1\]"),
        ({"perturbation": "zoom"}, "`perturbation` must be one of"),
        ({"agreement": "reasoning"}, "`agreement` must be one of percept, answer"),
        ({"patch_size": 0}, "`patch_size` must be an int >= 1"),
        ({"reask_draws": -1}, "`reask_draws` must be an int >= 0"),
        ({"reask_temperature": 0.0}, "`reask_temperature` must be > 0"),
    ],
)
def test_parameters_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AgreementEstimator(**kwargs)


def test_without_generation_logprobs_the_scored_row_gives_reasoning() -> None:
    with FakeServer("ok") as server:
        backend = OpenAICompatibleBackend(server.base_url, "fake-vlm", timeout=5, logprobs=False)
        request = question(IMAGE)
        signals = AgreementEstimator().estimate(backend, request, backend.generate(request))
        backend.close()
    assert signals.features["logprobs_from_scoring"] == 1.0
    assert signals.sources["reasoning"] == ("reasoning_mean_prob",)
    assert signals.reasoning == pytest.approx(math.exp(-0.1))
    assert signals.visual is not None


def test_opt_in_reasks_give_reasoning_agreement_when_nothing_else_does() -> None:
    model = AnswersModel(answers=("red", "red", "red", "blue", "red"), structured=False)
    request = question(IMAGE)
    signals = AgreementEstimator(draws=2, reask_draws=2).estimate(model, request, model.generate(request))
    assert signals.visual == 1.0
    assert signals.reasoning == 0.5
    assert signals.sources["reasoning"] == ("reasoning_agreement",)
    reasks = model.options[3:]
    assert [(o.attempt, o.temperature) for o in reasks if o is not None] == [(1, 0.7), (2, 0.7)]
    assert model.calls[3] == request  # re-asks keep the original images


def test_reasks_are_skipped_when_a_verbalized_score_exists() -> None:
    model = AnswersModel()
    request = question(IMAGE)
    signals = AgreementEstimator(draws=1, reask_draws=3).estimate(model, request, model.generate(request))
    assert signals.sources["reasoning"] == ("verbalized_reasoning",)
    assert len(model.calls) == 2


def test_async_reasks_match_sync() -> None:
    request = question(IMAGE)
    estimator = AgreementEstimator(draws=1, reask_draws=2)
    sync_model = AnswersModel(answers=("red", "red", "blue"), structured=False)
    sync = estimator.estimate(sync_model, request, sync_model.generate(request))
    async_model = AnswersModel(answers=("red", "red", "blue"), structured=False)
    generation = async_model.generate(request)
    assert asyncio.run(estimator.aestimate(async_model, request, generation)) == sync


def test_log_probs_can_be_left_unused() -> None:
    model = AnswersModel(structured=False)
    request = question(IMAGE)
    generation = model.generate(request).model_copy(update={"token_logprobs": (-0.1,) * 11, "tokens": ()})
    used = AgreementEstimator(draws=1).estimate(model, request, generation)
    assert used.sources["reasoning"] == ("reasoning_mean_prob",)
    unused = AgreementEstimator(draws=1, reask_draws=2, use_logprobs=False).estimate(model, request, generation)
    assert unused.sources["reasoning"] == ("reasoning_agreement",)
    assert unused.holistic is None
    assert "token log-probs not used (use_logprobs=False)" in unused.problems
