"""The decoupled estimator against fake backends (one character = one token), so each rule is visible."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from guardrail import BackendError, CalibrationError, EstimatorError, Generation, GenerationOptions, Request, Signals
from guardrail.backends import ScoringBackend, TeacherForcedScores
from guardrail.confidence import AsyncEstimator, DecoupledEstimator, VisualNormalization
from guardrail.confidence.perturb import PerturbationKind
from guardrail.responses import parse_response

STRUCTURED = (
    "<vision>red circle</vision><reasoning>so red</reasoning>\\boxed{red}"
    "<vision_confidence>8</vision_confidence><reasoning_confidence>6</reasoning_confidence>"
)
IMAGE = Image.new("RGB", (112, 112), (200, 30, 30))  # 8 x 8 patches of 14 px


def _generation(text: str, prob: float = 0.9) -> Generation:
    return Generation(text=text, token_ids=tuple(ord(c) for c in text), token_logprobs=(math.log(prob),) * len(text))


class FakeScoringBackend:
    """Every token has probability ``prob`` under the original image. Under a perturbed image the perception
    tokens drop to ``prob * drop`` when ``grounded`` (the answer depends on the pixels) and stay otherwise."""

    name = "fake-white-box"
    patch_size = 14

    def __init__(self, *, grounded: bool = True, prob: float = 0.9, drop: float = 0.1) -> None:
        self.grounded, self.prob, self.drop = grounded, prob, drop
        self.calls: list[list[list[Image.Image]]] = []

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        return _generation(STRUCTURED, self.prob)

    def model_images(self, request: Request) -> list[Image.Image]:
        return [IMAGE.copy() for _ in request.images]

    def token_offsets(self, token_ids: Sequence[int]) -> list[tuple[int, int]]:
        return [(i, i + 1) for i in range(len(token_ids))]

    def score(
        self,
        request: Request,
        token_ids: Sequence[int],
        variants: Sequence[Sequence[Image.Image]] = (),
        *,
        distributions: bool = False,
    ) -> TeacherForcedScores:
        self.calls.append([list(v) for v in variants])
        text = "".join(chr(i) for i in token_ids)
        start, end = parse_response(text).vision
        vision = torch.zeros(len(token_ids), dtype=torch.bool)
        vision[start:end] = True
        rows = torch.full((1 + len(variants), len(token_ids)), math.log(self.prob))
        if self.grounded:
            rows[1:, vision] = math.log(self.prob * self.drop)
        if not distributions:
            return TeacherForcedScores(token_logprobs=rows)
        shape = rows.shape
        return TeacherForcedScores(
            token_logprobs=rows, entropy=torch.full(shape, 0.5), margin=torch.full(shape, 0.7), kl_full=rows * 0
        )


class FakeBlackBox:
    name = "fake-api"

    def generate(self, request: Request, options: GenerationOptions) -> Generation:
        return _generation(STRUCTURED)


@pytest.fixture
def request_with_image() -> Request:
    return Request.from_question("What colour is the shape?", [IMAGE])


def _in_unit(value: float | None) -> bool:
    return value is not None and 0.0 <= value <= 1.0


def test_fake_is_a_scoring_backend() -> None:
    assert isinstance(FakeScoringBackend(), ScoringBackend)
    assert not isinstance(FakeBlackBox(), ScoringBackend)


def test_aestimate_matches_estimate(request_with_image: Request) -> None:
    estimator = DecoupledEstimator()
    assert isinstance(estimator, AsyncEstimator)
    gen = _generation(STRUCTURED)
    signals = asyncio.run(estimator.aestimate(FakeScoringBackend(), request_with_image, gen))
    assert signals == estimator.estimate(FakeScoringBackend(), request_with_image, gen)


def test_white_box_signals(request_with_image: Request) -> None:
    backend = FakeScoringBackend()
    signals = DecoupledEstimator().estimate(backend, request_with_image, _generation(STRUCTURED))
    assert isinstance(signals, Signals)
    assert _in_unit(signals.visual)
    assert _in_unit(signals.reasoning)
    assert _in_unit(signals.holistic)
    assert signals.problems == ()
    f = signals.features
    assert f["vision_tokens"] == len("red circle")
    assert f["answer_tokens"] == len("red")
    assert f["reasoning_tokens"] == len("so red") + len("red")
    assert f["verbalized_vision"] == 0.8
    assert f["verbalized_reasoning"] == 0.6
    assert "verbalized_overall" not in f  # nothing reads it: the calibrator combines the calibrated parts
    kl = 0.9 * min(-math.log(0.1), 20.0)
    assert f["vision_kl"] == pytest.approx(kl, rel=1e-5)
    assert f["vision_surprisal"] == pytest.approx(-math.log(0.9), rel=1e-5)
    assert f["visual_score"] == pytest.approx(math.log(kl + 1e-8) - math.log(-math.log(0.9) + 1e-8), rel=1e-5)
    assert signals.visual == pytest.approx(1 / (1 + math.exp(-f["visual_score"])), rel=1e-6)
    assert signals.reasoning == pytest.approx(0.9)
    assert signals.holistic == pytest.approx(0.9)
    assert signals.sources["visual"] == ("vision_kl", "vision_surprisal", "visual_score")
    assert signals.sources["reasoning"] == ("reasoning_mean_prob",)
    assert signals.sources["holistic"] == ("answer_mean_prob",)


def test_grounded_answers_get_higher_visual_certainty(request_with_image: Request) -> None:
    norm = VisualNormalization(mean=0.0, std=5.0)
    gen = _generation(STRUCTURED)
    grounded = DecoupledEstimator(normalization=norm).estimate(FakeScoringBackend(), request_with_image, gen)
    blind = DecoupledEstimator(normalization=norm).estimate(FakeScoringBackend(grounded=False), request_with_image, gen)
    assert grounded.visual is not None
    assert blind.visual is not None
    assert grounded.visual > 0.5 > blind.visual


def test_k_draws_are_distinct_and_batched_in_one_call(request_with_image: Request) -> None:
    backend = FakeScoringBackend()
    DecoupledEstimator(draws=4).estimate(backend, request_with_image, _generation(STRUCTURED))
    assert len(backend.calls) == 1
    variants = [np.asarray(v[0]) for v in backend.calls[0]]
    assert len(variants) == 4
    assert len({v.tobytes() for v in variants}) == 4
    assert all(0.6 < (v == 0).all(-1).mean() < 1.0 for v in variants)


@pytest.mark.parametrize(
    ("perturbation", "probability"), [("grey", 0.8), ("blur", 0.8), ("blackout", 1.0), ("blackout", 0.0)]
)
def test_deterministic_perturbations_are_drawn_once(
    request_with_image: Request, perturbation: PerturbationKind, probability: float
) -> None:
    backend = FakeScoringBackend()
    estimator = DecoupledEstimator(draws=4, perturbation=perturbation, blackout_probability=probability)
    assert not estimator.random_perturbation
    estimator.estimate(backend, request_with_image, _generation(STRUCTURED))
    # One copy, scored unless it holds the original's very pixels (blurring this uniform image, blacking out no patch)
    unchanged = perturbation == "blur" or probability == 0.0
    assert len(backend.calls[0]) == (0 if unchanged else 1)


def test_whole_image_blackout_is_black() -> None:
    backend = FakeScoringBackend()
    request = Request.from_question("q", [Image.new("RGB", (64, 64), (200, 30, 30))])
    DecoupledEstimator(blackout_probability=1.0).estimate(backend, request, _generation(STRUCTURED))
    (variant,) = backend.calls[0]
    assert not np.asarray(variant[0]).any()


def test_full_distribution_uses_entropy(request_with_image: Request) -> None:
    signals = DecoupledEstimator(full_distribution=True).estimate(
        FakeScoringBackend(), request_with_image, _generation(STRUCTURED)
    )
    assert signals.features["vision_entropy"] == 0.5
    assert signals.features["answer_margin"] == pytest.approx(0.7)
    assert signals.features["vision_kl_full"] == 0.0
    assert signals.sources["visual"] == ("vision_kl", "vision_entropy", "visual_score")


def test_untagged_response_uses_the_whole_text(request_with_image: Request) -> None:
    text = "It is red."
    signals = DecoupledEstimator().estimate(FakeScoringBackend(), request_with_image, _generation(text))
    assert signals.features["vision_tokens"] == len(text)
    assert signals.features["answer_tokens"] == len(text)
    assert "verbalized_vision" not in signals.features
    assert signals.problems == (
        "no <vision> span: the whole response serves as the perception span",
        "no \\boxed{} answer: the whole response serves as the answer tokens",
    )


def test_malformed_score_is_recorded(request_with_image: Request) -> None:
    text = STRUCTURED.replace(">8<", ">12<")
    signals = DecoupledEstimator().estimate(FakeScoringBackend(), request_with_image, _generation(text))
    assert "verbalized_vision" not in signals.features
    assert "verbalized_overall" not in signals.features
    assert signals.problems == ("vision_confidence 12 is out of range 0..10; treated as absent",)
    assert _in_unit(signals.visual)  # a malformed score never costs the measured probe
    assert signals.features["verbalized_reasoning"] == 0.6  # the valid one is still read


def test_black_box_backend_gets_no_visual_component(request_with_image: Request) -> None:
    signals = DecoupledEstimator().estimate(FakeBlackBox(), request_with_image, _generation(STRUCTURED))
    assert signals.visual is None
    assert signals.reasoning == 0.6  # the verbalized reasoning confidence
    assert signals.holistic == pytest.approx(0.9)
    assert signals.sources["reasoning"] == ("verbalized_reasoning",)
    assert signals.problems == ("backend 'fake-api' cannot re-score answers: visual certainty not measured",)


def test_request_without_image(request_with_image: Request) -> None:
    signals = DecoupledEstimator().estimate(
        FakeScoringBackend(), Request.from_question("2+2?"), _generation(STRUCTURED)
    )
    assert signals.visual is None
    assert signals.reasoning is not None
    assert signals.problems == ("request has no image: visual certainty not measured",)


def test_visual_normalization_fit_apply_and_round_trip() -> None:
    norm = VisualNormalization.fit([1.0, 3.0, float("nan"), 5.0])
    assert norm.mean == pytest.approx(3.0)
    assert norm.std == pytest.approx(math.sqrt(8 / 3))
    assert norm.apply(3.0) == pytest.approx(0.5)
    assert VisualNormalization.model_validate_json(norm.model_dump_json()) == norm
    with pytest.raises(CalibrationError, match="at least 2 finite values"):
        VisualNormalization.fit([1.0])
    with pytest.raises(CalibrationError, match="`scores\\[1\\]` must be a finite number, got inf"):
        VisualNormalization.fit([1.0, float("inf")])
    with pytest.raises(CalibrationError, match="all equal"):
        VisualNormalization.fit([2.0, 2.0])


def test_rescoring_failure_is_an_estimator_error(request_with_image: Request) -> None:
    class Failing(FakeScoringBackend):
        def score(self, *args: object, **kwargs: object) -> TeacherForcedScores:
            raise BackendError("out of memory")

    with pytest.raises(EstimatorError, match="teacher-forced re-scoring failed: out of memory"):
        DecoupledEstimator().estimate(Failing(), request_with_image, _generation(STRUCTURED))


def test_invalid_parameters_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="`draws` must be an int >= 1"):
        DecoupledEstimator(draws=0)
    with pytest.raises(ValueError, match="`perturbation` must be one of"):
        DecoupledEstimator(perturbation="rotate")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`blackout_probability` must be in"):
        DecoupledEstimator(blackout_probability=1.2)


def test_token_text_mismatch_falls_back_to_all_tokens(request_with_image: Request) -> None:
    gen = _generation(STRUCTURED)
    gen = gen.model_copy(update={"text": STRUCTURED + " extra"})
    signals = DecoupledEstimator().estimate(FakeScoringBackend(), request_with_image, gen)
    assert signals.features["vision_tokens"] == len(STRUCTURED)
    assert signals.features["answer_tokens"] == len(STRUCTURED)
    assert signals.problems == ("the token ids do not decode to the response text: spans fall back to all tokens",)
    assert signals.features["verbalized_vision"] == 0.8
